use super::pool::{small_keep, small_keep_max, SMALL_MAX};
use super::*;
use std::ops::Range;

#[test]
fn a_buffer_starts_with_the_head_it_is_given() {
    let mut pool = BufferPool::new(64, 10);
    // One chunk: the head, then the rest as it comes.
    let mut b = MessageBuf::new(5, &mut pool, Received::copied(&[1, 2, 3]), false);
    assert!(b.write(3, Received::copied(&[4, 5]), &mut pool));
    assert_eq!(b, [1, 2, 3, 4, 5]);
    // A head longer than the message is cut to it.
    assert_eq!(
        MessageBuf::new(2, &mut pool, Received::copied(&[9, 8, 7]), false),
        [9, 8]
    );
    // Pages: the head lands at offset 0, across a page boundary.
    let all: Vec<u8> = (1..=100).collect();
    let mut big = MessageBuf::new(100, &mut pool, Received::copied(&all[..70]), false);
    assert!(big.write(70, Received::copied(&all[70..]), &mut pool));
    assert_eq!(big, all);
}

#[test]
fn bytes_out_of_order_and_again_land_where_they_belong() {
    let mut pool = BufferPool::new(64, 10);
    let mut b = MessageBuf::new(40, &mut pool, Received::copied(&[]), false);
    assert!(b.write(10, Received::copied(&[1; 30]), &mut pool));
    assert!(b.write(0, Received::copied(&[2; 12]), &mut pool)); // overlaps
    assert!(b.write(35, Received::copied(&[3; 5]), &mut pool)); // again, changed
    let mut want = vec![2u8; 12];
    want.extend([1; 23]);
    want.extend([3; 5]);
    assert_eq!(b.as_slice().unwrap(), &want[..]);
    // In pages: the last page first, then the others.
    let data: Vec<u8> = (0..150u32).map(|i| i as u8).collect();
    let mut big = MessageBuf::new(150, &mut pool, Received::copied(&[]), false);
    for at in [140, 20, 0, 60, 100] {
        let end = (at + 40).min(150);
        assert!(big.write(at, Received::copied(&data[at..end]), &mut pool));
    }
    assert_eq!(big, data);
}

#[test]
fn large_messages_take_pages_as_bytes_arrive_and_recycle_them() {
    let mut pool = BufferPool::new(64, 10);
    let data: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
    let mut big = MessageBuf::new(200, &mut pool, Received::copied(&[]), false);
    assert!(big.write(0, Received::copied(&data[..50]), &mut pool));
    let taken = |b: &MessageBuf| match &b.storage {
        Storage::Pages(p) => p.iter().filter(|p| p.capacity() > 0).count(),
        _ => usize::MAX,
    };
    assert_eq!(taken(&big), 1, "only the page written to");
    assert!(big.write(50, Received::copied(&data[50..130]), &mut pool)); // spans pages
    assert!(big.write(130, Received::copied(&data[130..]), &mut pool));
    assert_eq!(taken(&big), 4);
    assert!(big.as_slice().is_none());
    assert_eq!(
        big.chunks().map(<[u8]>::len).collect::<Vec<_>>(),
        [64, 64, 64, 8]
    );
    assert_eq!(big, data);
    assert_eq!(big.to_vec(), data);
    big.recycle(&mut pool);
    assert_eq!(pool.pages.len(), 4);
    let mut again = MessageBuf::new(130, &mut pool, Received::copied(&[]), false);
    assert_eq!(pool.pages.len(), 4, "nothing taken before bytes arrive");
    assert!(again.write(0, Received::copied(&data[..130]), &mut pool));
    assert_eq!(pool.pages.len(), 1);
    assert_eq!(again, &data[..130]);
    // No more pages kept than the pool was told.
    let mut pool = BufferPool::new(64, 2);
    let mut m = MessageBuf::new(200, &mut pool, Received::copied(&[]), false);
    assert!(m.write(0, Received::copied(&data), &mut pool));
    m.recycle(&mut pool);
    assert_eq!(pool.pages.len(), 2);
}

#[test]
fn short_message_chunks_are_reused_clean() {
    let mut pool = BufferPool::new(65_536, 0);
    let mut a = MessageBuf::new(100, &mut pool, Received::copied(&[5; 100]), false);
    assert!(a.write(0, Received::copied(&[6; 10]), &mut pool));
    let ptr = a.as_slice().unwrap().as_ptr();
    a.recycle(&mut pool);
    // Reused for any message of the same size class, holding only its own bytes.
    let mut b = MessageBuf::new(90, &mut pool, Received::copied(&[1, 2]), false);
    assert!(b.write(2, Received::copied(&[0; 88]), &mut pool));
    assert_eq!(b.as_slice().unwrap().as_ptr(), ptr);
    let mut want = vec![0; 90];
    want[..2].copy_from_slice(&[1, 2]);
    assert_eq!(b, want);
    assert_eq!(b.chunks().map(<[u8]>::len).collect::<Vec<_>>(), [90]);
    // Not for another class.
    let mut c = MessageBuf::new(20, &mut pool, Received::copied(&[]), false);
    assert!(c.write(0, Received::copied(&[0; 20]), &mut pool));
    assert_ne!(c.as_slice().unwrap().as_ptr(), ptr);
    assert_eq!(c, [0; 20]);
    // At most small_keep_max of a size are kept; chunks of longer messages are not.
    let class = BufferPool::class(100).unwrap();
    let (keep, keep_max) = (small_keep(class), small_keep_max(class));
    assert_eq!((keep, keep_max), (512, 16_384));
    for _ in 0..keep_max + 3 {
        MessageBuf::new(
            100,
            &mut BufferPool::new(65_536, 0),
            Received::copied(&[]),
            false,
        )
        .recycle(&mut pool);
    }
    let mut long = MessageBuf::new(SMALL_MAX + 1, &mut pool, Received::copied(&[]), false);
    assert!(long.write(0, Received::copied(&[1; SMALL_MAX + 1]), &mut pool));
    assert_eq!(long.chunks().next().map(<[u8]>::len), Some(SMALL_MAX + 1));
    long.recycle(&mut pool);
    let kept = |pool: &BufferPool| pool.small.iter().map(Vec::len).sum::<usize>();
    assert_eq!(kept(&pool), keep_max);
    // Chunks taken again stay; what goes unused is trimmed by halves, down to keep.
    pool.trim();
    assert_eq!(
        kept(&pool),
        keep_max,
        "the low-water mark starts at the first trim"
    );
    let taken: Vec<_> = (0..1000)
        .map(|_| MessageBuf::new(100, &mut pool, Received::copied(&[]), false))
        .collect();
    taken.into_iter().for_each(|m| m.recycle(&mut pool));
    pool.trim();
    let unused = keep_max - 1000;
    assert_eq!(kept(&pool), keep_max - unused.div_ceil(2));
    for _ in 0..20 {
        pool.trim();
    }
    assert_eq!(kept(&pool), keep);
}

#[test]
fn long_shared_packets_are_kept_by_reference_without_duplicates() {
    let page = 16 * 1024;
    let len = 5 * KEEP_MIN;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    // The "receive buffers": one shared buffer per packet.
    let shared = |from: usize, to: usize| Bytes::copy_from_slice(&data[from..to]);
    let mut pool = BufferPool::new(page, 10);
    let first = shared(0, 2 * KEEP_MIN);
    let mut m = MessageBuf::new(len, &mut pool, kept(&first), true);
    // Out of order, then a retransmission overlapping both neighbours, then a short
    // tail (copied: shorter than KEEP_MIN).
    let third = shared(3 * KEEP_MIN, 4 * KEEP_MIN + 10);
    assert!(m.write(3 * KEEP_MIN, kept(&third), &mut pool));
    let resend = shared(KEEP_MIN, 4 * KEEP_MIN);
    assert!(m.write(KEEP_MIN, kept(&resend), &mut pool));
    let tail = shared(4 * KEEP_MIN + 10, len);
    assert!(m.write(4 * KEEP_MIN + 10, Received::copied(&tail), &mut pool));
    assert_eq!(m, data);
    assert_eq!(
        m.chunks().map(<[u8]>::len).collect::<Vec<_>>(),
        [2 * KEEP_MIN, KEEP_MIN, KEEP_MIN + 10, KEEP_MIN - 10]
    );
    // The first three chunks are the shared buffers themselves, not copies.
    let ptrs: Vec<_> = m.chunks().map(<[u8]>::as_ptr).collect();
    assert_eq!(ptrs[0], first.as_ptr());
    assert_eq!(ptrs[1], resend[KEEP_MIN..].as_ptr());
    assert_eq!(ptrs[2], third.as_ptr());
    assert!(pool.pages.is_empty(), "no pages taken");
    // A message kept in one packet is contiguous.
    let whole = shared(0, 3 * KEEP_MIN);
    let one = MessageBuf::new(3 * KEEP_MIN, &mut pool, kept(&whole), true);
    assert_eq!(one.as_slice(), Some(&data[..3 * KEEP_MIN]));
}

#[test]
fn a_kept_message_has_room_for_all_its_packets_from_the_first() {
    let kept_list = |m: &MessageBuf| match &m.storage {
        Storage::Kept(k) => (k.pieces.len(), k.pieces.capacity()),
        _ => panic!("not kept by reference"),
    };
    let mut pool = BufferPool::new(64 * 1024, 10);
    // 200,000 bytes in jumbo-frame payloads of 8,952 bytes (23 packets), in order
    // and then with the head arriving last.
    let (len, seg) = (200_000, 8_952);
    let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let packets = in_packets(&data, seg);
    // Write `rest` after `m`'s first packet: the message comes out whole, and its
    // list did not grow meanwhile.
    let fill = |mut m: MessageBuf, rest: &[&(usize, Bytes)], pool: &mut BufferPool| {
        let room = kept_list(&m).1;
        for (at, p) in rest {
            let r = if p.len() >= KEEP_MIN {
                kept(p)
            } else {
                Received::copied(p)
            };
            assert!(m.write(*at, r, pool));
        }
        assert_eq!(m, data);
        assert_eq!(kept_list(&m), (packets.len(), room), "the list never grew");
    };
    let (_, head) = &packets[0];
    let m = MessageBuf::new(len, &mut pool, kept(head), true);
    fill(m, &packets[1..].iter().collect::<Vec<_>>(), &mut pool);
    // The head last: the first packet to arrive says nothing of the others' length,
    // and the list is sized for the shortest packet kept by reference.
    let (at, second) = &packets[1];
    let mut m = MessageBuf::new(len, &mut pool, Received::copied(&[]), true);
    assert!(m.write(*at, kept(second), &mut pool));
    let rest: Vec<_> = packets[2..].iter().chain(&packets[..1]).collect();
    fill(m, &rest, &mut pool);
}

#[test]
fn a_message_kept_in_pieces_takes_no_more_than_its_share_of_them() {
    let len = 100_000;
    let first = Bytes::from(vec![1u8; 2 * KEEP_MIN]);
    let head = Received {
        bytes: &first,
        owner: Some(&first),
    };
    let mut pool = BufferPool::new(16 * 1024, 10);
    let mut m = MessageBuf::new(len, &mut pool, head, true);
    // Then one byte at a time: each is a piece of its own, up to the limit.
    let mut taken = 1;
    for at in 2 * KEEP_MIN..len {
        if !m.write(at, Received::copied(&[2]), &mut pool) {
            break;
        }
        taken += 1;
    }
    assert_eq!(taken, max_pieces(len));
    assert!(!m.write(len - 1, Received::copied(&[3]), &mut pool));
}

#[test]
fn a_long_piece_of_a_much_longer_buffer_is_copied_not_pinned() {
    // An 8 KB payload in a 64 KB receive buffer: keeping it would pin 8 times the
    // bytes the message is charged for. It is kept until the message is settled
    // (the buffer's other packets may be the message's too), then copied.
    let buffer = Bytes::from(vec![5u8; 64 * 1024]);
    let piece = &buffer[100..100 + KEEP_MIN];
    let r = Received {
        bytes: piece,
        owner: Some(&buffer),
    };
    assert!(!r.keepable() && r.may_keep());
    let mut pool = BufferPool::new(16 * 1024, 10);
    let mut m = MessageBuf::new(4 * KEEP_MIN, &mut pool, Received::copied(&[]), true);
    assert!(m.write(0, r, &mut pool));
    assert_eq!(m.open_buffer(), buffer.as_ptr() as usize);
    m.settle();
    assert_eq!(m.open_buffer(), 0);
    assert_ne!(
        m.chunks().next().unwrap().as_ptr(),
        piece.as_ptr(),
        "copied"
    );
    assert!(m.chunks().next().unwrap() == piece);
    drop(m);
    assert!(buffer.is_unique(), "nothing holds the receive buffer");
    // Half the buffer or more may be kept without weighing (a waiting message's
    // packets).
    let half = &buffer[..32 * 1024];
    let r = Received {
        bytes: half,
        owner: Some(&buffer),
    };
    assert!(r.keepable());
}

/// A message's bytes `data` arriving as packets of `seg` bytes of payload, each after
/// a 56-byte header, `per_buffer` packets to a buffer of at least `slot` bytes (a GRO
/// aggregate in a receive slot): (message offset, buffer, payload's place in it).
fn aggregates(
    data: &[u8],
    seg: usize,
    per_buffer: usize,
    slot: usize,
) -> Vec<(usize, Bytes, Range<usize>)> {
    let mut out = Vec::new();
    for run in (0..data.len()).step_by(seg * per_buffer) {
        let (mut buf, mut places) = (Vec::new(), Vec::new());
        for at in (run..data.len().min(run + seg * per_buffer)).step_by(seg) {
            buf.extend_from_slice(&[0xee; 56]);
            let end = (at + seg).min(data.len());
            places.push((at, buf.len()..buf.len() + end - at));
            buf.extend_from_slice(&data[at..end]);
        }
        buf.resize(buf.len().max(slot), 0);
        let buf = Bytes::from(buf);
        out.extend(places.into_iter().map(|(at, r)| (at, buf.clone(), r)));
    }
    out
}

/// Write every packet of `packets` into a new message of `data.len()` bytes, settle
/// it, and check its bytes.
fn receive_all(data: &[u8], packets: &[(usize, Bytes, Range<usize>)]) -> MessageBuf {
    let mut pool = BufferPool::new(64 * 1024, 10);
    let mut m = MessageBuf::new(data.len(), &mut pool, Received::copied(&[]), true);
    for (at, owner, r) in packets {
        let bytes = &owner[r.clone()];
        let data = Received {
            bytes,
            owner: Some(owner),
        };
        assert!(data.may_keep());
        assert!(m.write(*at, data, &mut pool));
    }
    m.settle();
    assert_eq!(m, data);
    m
}

#[test]
fn runs_of_short_packets_are_kept_where_they_fill_their_buffer() {
    let data: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
    let inside = |packets: &[(usize, Bytes, Range<usize>)], c: &[u8]| {
        packets
            .iter()
            .any(|(_, b, _)| b.as_ptr_range().contains(&c.as_ptr()))
    };
    // 1,416-byte payloads in aggregates of 40 packets (57 KB) in 64 KiB slots: every
    // piece stays where it arrived.
    let packets = aggregates(&data, 1416, 40, 64 * 1024);
    let m = receive_all(&data, &packets);
    assert_eq!(m.chunks().count(), packets.len());
    assert!(
        m.chunks().all(|c| inside(&packets, c)),
        "a piece was copied"
    );
    // Aggregates of 4 packets in 64 KiB slots (a ninth of each kept): each is weighed
    // when the next one comes, the last when the message is settled. Every piece is
    // then a copy, and no slot is held.
    let packets = aggregates(&data, 1416, 4, 64 * 1024);
    let m = receive_all(&data, &packets);
    assert!(
        !m.chunks().any(|c| inside(&packets, c)),
        "a piece still pins its slot"
    );
    let mut slots: Vec<Bytes> = packets.into_iter().map(|(_, b, _)| b).collect();
    slots.dedup_by(|a, b| a.as_ptr() == b.as_ptr());
    assert_eq!(slots.len(), data.len().div_ceil(4 * 1416));
    assert!(
        slots.iter().all(Bytes::is_unique),
        "the message holds a slot"
    );
    drop(m);
}

/// Taking a message's bytes as one `Bytes`: a chunk is handed over itself (it never goes
/// back to the pool), a message kept as one packet's payload is that payload, and pages
/// or several packets are copied into one buffer, the pages staying to be recycled.
#[test]
fn taking_the_bytes_copies_only_what_is_not_in_one_piece() {
    let mut pool = BufferPool::new(64, 10);
    let data: Vec<u8> = (0..200u32).map(|i| (i * 3) as u8).collect();
    // One chunk: the same memory.
    let mut short = MessageBuf::new(40, &mut pool, Received::copied(&data[..40]), false);
    let at = short.as_slice().unwrap().as_ptr();
    let b = short.take_bytes();
    assert_eq!(&b[..], &data[..40]);
    assert_eq!(b.as_ptr(), at, "handed over, not copied");
    short.recycle(&mut pool);
    assert!(
        pool.small.iter().all(Vec::is_empty),
        "the chunk left the pool"
    );
    // Pages: a copy, and the pages go back.
    let mut big = MessageBuf::new(200, &mut pool, Received::copied(&data), false);
    let b = big.take_bytes();
    assert_eq!(&b[..], &data[..]);
    big.recycle(&mut pool);
    assert_eq!(pool.pages.len(), 4, "the pages are recycled");
    // Kept as one packet: that packet's bytes; kept as several: a copy.
    let whole = Bytes::from(vec![7u8; 3 * KEEP_MIN]);
    let mut one = MessageBuf::new(3 * KEEP_MIN, &mut pool, kept(&whole), true);
    assert_eq!(one.take_bytes().as_ptr(), whole.as_ptr());
    let (a, z) = (whole.slice(..KEEP_MIN * 2), whole.slice(KEEP_MIN * 2..));
    let mut two = MessageBuf::new(3 * KEEP_MIN, &mut pool, kept(&a), true);
    assert!(two.write(2 * KEEP_MIN, kept(&z), &mut pool));
    let b = two.take_bytes();
    assert_eq!(&b[..], &whole[..]);
    assert_ne!(b.as_ptr(), whole.as_ptr());
}

/// `data` cut into packets' payloads of `seg` bytes (the last may be shorter), each in a
/// buffer of its own: (message offset, payload).
fn in_packets(data: &[u8], seg: usize) -> Vec<(usize, Bytes)> {
    (0..data.len())
        .step_by(seg)
        .map(|at| {
            (
                at,
                Bytes::copy_from_slice(&data[at..(at + seg).min(data.len())]),
            )
        })
        .collect()
}

/// All of `b`, as bytes lying in a buffer shared with the engine (`b` itself).
fn kept(b: &Bytes) -> Received<'_> {
    Received {
        bytes: &b[..],
        owner: Some(b),
    }
}

#[test]
fn a_message_up_to_a_page_in_jumbo_frames_is_kept_where_it_arrived() {
    let mut pool = BufferPool::new(64 * 1024, 10);
    // 30,000 bytes in payloads of 8,952 bytes, each in a buffer of its own: three long
    // packets and a short tail (which the runtime does not share: copied).
    let (len, seg) = (30_000, 8_952);
    let data: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
    let packets = in_packets(&data, seg);
    let mut m = MessageBuf::new(len, &mut pool, kept(&packets[0].1), true);
    for (at, p) in &packets[1..] {
        let r = if p.len() >= KEEP_MIN {
            kept(p)
        } else {
            Received::copied(p)
        };
        assert!(m.write(*at, r, &mut pool));
    }
    assert_eq!(m, data);
    assert!(m.within_page() && m.as_slice().is_none(), "kept in pieces");
    let ptrs: Vec<_> = m.chunks().map(<[u8]>::as_ptr).collect();
    let sent: Vec<_> = packets.iter().map(|(_, p)| p.as_ptr()).collect();
    assert_eq!(ptrs[..3], sent[..3], "the long payloads were not copied");
    assert_ne!(ptrs[3], sent[3], "the short tail was");
    m.recycle(&mut pool);
    assert!(
        pool.small.iter().all(Vec::is_empty),
        "no chunk was taken, none comes back"
    );
    // Copied into one chunk of its own length, as before: a message that came whole in
    // one datagram (kept, it would pin all of the datagram's receive slot); one whose
    // first packet lies in a GRO aggregate, which it would pin, however much of it the
    // packet fills; one whose first packet is not in a shared buffer.
    let one = MessageBuf::new(seg, &mut pool, kept(&packets[0].1), true);
    assert!(matches!(one.storage, Storage::One(_)), "one datagram");
    let aggregate = Bytes::from(data[..2 * seg].to_vec());
    let piece = aggregate.slice(..seg);
    let first = Received {
        bytes: &piece,
        owner: Some(&aggregate),
    };
    assert!(first.keepable() && !first.starts_a_run(len));
    for head in [first, Received::copied(&data[..seg])] {
        let m = MessageBuf::new(len, &mut pool, head, true);
        assert!(matches!(m.storage, Storage::One(_)), "one chunk");
    }
}
