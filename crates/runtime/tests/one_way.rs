//! One-way messages (this implementation's extension) over loopback sockets: delivered
//! whole and once, acknowledged to the sender, refused by a socket that does not take
//! them, in both flavours.

mod common;

use common::*;
use homa::{MessageKind, Options, RecvError, RpcError, Socket, Transport};
use std::collections::BTreeMap;
use std::time::Duration;

const SIZES: [usize; 6] = [1, 1400, 65_536, 65_537, 200_000, 1_000_000];

fn one_way_opts() -> Options {
    Options {
        one_way: true,
        ..server_opts(Transport::Udp)
    }
}

#[test]
fn every_size_arrives_whole_and_its_sender_learns_it() {
    for bind in [V4, V6] {
        let receiver = Socket::bind_with(addr(bind), one_way_opts()).unwrap();
        let dest = receiver.local_addr();
        let sender = Socket::bind_with(addr(bind), client_opts(Transport::Udp)).unwrap();
        let mut sent = BTreeMap::new();
        for (i, &len) in SIZES.iter().enumerate() {
            let data = pattern(len, i as u64);
            let id = sender
                .send_message(dest, data.clone(), 100 + i as u64)
                .unwrap();
            sent.insert(id, (100 + i as u64, data));
        }
        // The receiver takes each once, from recv_request (work from a peer), bytes
        // intact; nothing is owed back.
        let mut got = Vec::new();
        for _ in SIZES {
            let m = receiver
                .recv_request_timeout(Duration::from_secs(20))
                .unwrap();
            assert_eq!(m.kind(), MessageKind::OneWay);
            assert!(!m.is_request());
            assert_eq!(m.peer(), sender.local_addr());
            assert!(receiver.reply(&m, "no").is_err(), "nothing to answer");
            got.push(m.to_vec());
        }
        for (_, data) in sent.values() {
            let i = got
                .iter()
                .position(|g| g == data)
                .expect("each message arrives");
            got.swap_remove(i);
        }
        // The sender learns of each delivery, with its id and cookie.
        for _ in SIZES {
            let d = sender.recv_timeout(Duration::from_secs(20)).unwrap();
            assert_eq!(d.kind(), MessageKind::Delivered);
            assert_eq!((d.len(), d.is_empty()), (0, true));
            assert_eq!(d.peer(), dest);
            let (cookie, _) = sent.remove(&d.id()).expect("a message we sent, once");
            assert_eq!(d.cookie(), cookie);
        }
        assert!(receiver
            .recv_request_timeout(Duration::from_millis(50))
            .is_err_and(|e| matches!(e, RecvError::TimedOut)));
        let m = sender.metrics();
        assert_eq!(m.one_way_acked, SIZES.len() as u64);
        assert_eq!(receiver.metrics().one_way_delivered, SIZES.len() as u64);
    }
}

#[test]
fn deliver_waits_for_the_acknowledgement() {
    let receiver = Socket::bind_with(addr(V4), one_way_opts()).unwrap();
    let dest = receiver.local_addr();
    let sender = Socket::bind_with(addr(V4), client_opts(Transport::Udp)).unwrap();
    for i in 0..20u64 {
        sender.deliver(dest, pattern(3000, i)).unwrap();
        // Delivered means the receiving socket has it: it is there to take at once.
        let m = receiver.recv_request_timeout(OUTCOME_DEADLINE).unwrap();
        assert!(m == pattern(3000, i));
    }
    // Both ends' counts are exported too.
    let text = homa::metrics::to_prometheus(&receiver.metrics(), &[]);
    assert!(
        text.contains("\nhoma_one_way_delivered_total 20\n"),
        "{text}"
    );
    let text = homa::metrics::to_prometheus(&sender.metrics(), &[]);
    assert!(text.contains("\nhoma_one_way_acked_total 20\n"), "{text}");
    // recv_id waits for one delivery; a private send is seen by recv_id only.
    let id = sender.send_message_private(dest, "private", 7).unwrap();
    assert!(sender
        .recv_timeout(Duration::from_millis(100))
        .is_err_and(|e| matches!(e, RecvError::TimedOut)));
    let d = sender.recv_id(id).unwrap();
    assert_eq!((d.kind(), d.cookie()), (MessageKind::Delivered, 7));
    assert!(receiver.recv_request().unwrap() == b"private");
}

#[test]
fn a_receiver_closed_right_after_taking_them_still_acknowledges_them() {
    // The receiver's ticks are 100 s apart: what it owes goes at the end of the receive
    // batch that took the messages, or at its close (fewer than an ACK packet's worth,
    // so not for that). Dropped right after taking them, it must still have told each
    // sender the message arrived: otherwise the sender asks a closed port and fails a
    // delivered message.
    let mut opts = one_way_opts();
    opts.config.tick_nanos = 100_000_000_000;
    let receiver = Socket::bind_with(addr(V4), opts).unwrap();
    let dest = receiver.local_addr();
    let sender = Socket::bind_with(addr(V4), client_opts(Transport::Udp)).unwrap();
    let mut ids: Vec<homa::RpcId> = (0..5u64)
        .map(|i| sender.send_message(dest, pattern(2000, i), i).unwrap())
        .collect();
    for _ in 0..5 {
        let m = receiver
            .recv_request_timeout(Duration::from_secs(20))
            .unwrap();
        assert_eq!(m.kind(), MessageKind::OneWay);
    }
    drop(receiver);
    for _ in 0..5 {
        match sender.recv_timeout(Duration::from_secs(20)) {
            Ok(d) => {
                assert_eq!(d.kind(), MessageKind::Delivered);
                let i = ids.iter().position(|&id| id == d.id()).expect("ours, once");
                ids.swap_remove(i);
            }
            Err(e) => panic!("a message the receiver took was not acknowledged: {e:?}"),
        }
    }
}

#[test]
fn a_socket_that_does_not_take_them_refuses_and_requests_still_work() {
    // An ordinary server: takes requests, not one-way messages.
    let server = echo_server(V4, Transport::Udp, 1);
    let dest = server.local_addr();
    let client = Socket::bind_with(addr(V4), client_opts(Transport::Udp)).unwrap();
    let err = client.deliver(dest, "hello").unwrap_err();
    assert_eq!(err.rpc_error(), Some(RpcError::NotAccepted));
    let id = client.send_message(dest, "again", 3).unwrap();
    match client.recv_timeout(Duration::from_secs(20)) {
        Err(RecvError::Rpc {
            id: i,
            cookie,
            error,
            ..
        }) => {
            assert_eq!((i, cookie, error), (id, 3, RpcError::NotAccepted));
        }
        other => panic!("expected NotAccepted, got {other:?}"),
    }
    // The same pair still does RPCs.
    let resp = client.call(dest, "ping").unwrap();
    assert!(resp == answer(b"ping"));
}

/// A client (automatic port) that takes one-way messages hears from anyone, even after
/// it has sent to one peer only (a socket that takes nothing from strangers is then
/// connected to that peer, and the kernel drops every other sender's datagrams).
#[test]
fn a_client_that_takes_them_still_hears_from_everyone_after_calling_one_peer() {
    let server = echo_server(V4, Transport::Udp, 1);
    let listener = Socket::bind_with(
        addr(V4),
        Options {
            one_way: true,
            ..client_opts(Transport::Udp)
        },
    )
    .unwrap();
    assert!(listener.call(server.local_addr(), "ping").unwrap() == answer(b"ping"));
    let sender = Socket::bind_with(addr(V4), client_opts(Transport::Udp)).unwrap();
    sender
        .deliver(listener.local_addr(), "from someone else")
        .unwrap();
    let m = listener
        .recv_request_timeout(Duration::from_secs(20))
        .unwrap();
    assert_eq!(m.kind(), MessageKind::OneWay);
    assert!(m == b"from someone else");
}

#[test]
fn deliver_timeout_gives_up_a_message_the_receiver_has_no_room_for() {
    // The receiver holds what it took (nothing is read), with room for one 60 KB message:
    // the second waits for room (its sender kept waiting, told the receiver is busy),
    // and a bounded deliver gives it up. (The sender's own timeout is made far longer,
    // so that only the bound can end the wait, however slow the machine.)
    let mut opts = one_way_opts();
    opts.config.max_incoming_held = 100_000;
    let receiver = Socket::bind_with(addr(V4), opts).unwrap();
    let dest = receiver.local_addr();
    let sender = Socket::bind_with(addr(V4), patient(client_opts(Transport::Udp))).unwrap();
    sender
        .deliver_timeout(dest, pattern(60_000, 1), OUTCOME_DEADLINE)
        .unwrap();
    let err = sender
        .deliver_timeout(dest, pattern(60_000, 2), Duration::from_millis(200))
        .unwrap_err();
    assert!(
        matches!(err, homa::CallError::Recv(RecvError::TimedOut)),
        "{err:?}"
    );
    let held = receiver.recv_request_timeout(OUTCOME_DEADLINE).unwrap();
    assert!(held == pattern(60_000, 1));
}

#[cfg(feature = "tokio")]
mod tokio_flavour {
    use super::*;
    use homa::aio;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_way_messages_with_tokio() {
        let receiver = aio::Socket::bind_with(addr(V4), one_way_opts())
            .await
            .unwrap();
        let dest = receiver.local_addr();
        let sender = aio::Socket::bind_with(addr(V4), client_opts(Transport::Udp))
            .await
            .unwrap();
        for (i, &len) in SIZES.iter().enumerate() {
            let data = pattern(len, i as u64);
            sender.deliver(dest, data.clone()).await.unwrap();
            let m = receiver.recv_request().await.unwrap();
            assert_eq!(m.kind(), MessageKind::OneWay);
            assert!(m == data, "{len}-byte message corrupted");
        }
        let id = sender.send_message(dest, "x", 9).unwrap();
        let d = sender.recv().await.unwrap();
        assert_eq!(
            (d.kind(), d.id(), d.cookie()),
            (MessageKind::Delivered, id, 9)
        );
        assert!(receiver.recv().await.unwrap() == b"x");
        // A client-only socket takes none.
        let plain = aio::Socket::bind_with(addr(V4), server_opts(Transport::Udp))
            .await
            .unwrap();
        let err = sender.deliver(plain.local_addr(), "no").await.unwrap_err();
        assert_eq!(err.rpc_error(), Some(RpcError::NotAccepted));
        // Bounded: a receiver that holds what it took and has no room for more.
        let mut opts = one_way_opts();
        opts.config.max_incoming_held = 100_000;
        let full = aio::Socket::bind_with(addr(V4), opts).await.unwrap();
        let to = full.local_addr();
        let big = || pattern(60_000, 4);
        // (Only the bound may end the wait: see the blocking flavour's test.)
        let sender = aio::Socket::bind_with(addr(V4), patient(client_opts(Transport::Udp)))
            .await
            .unwrap();
        sender
            .deliver_timeout(to, big(), OUTCOME_DEADLINE)
            .await
            .unwrap();
        let err = sender
            .deliver_timeout(to, big(), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            matches!(err, homa::CallError::Recv(RecvError::TimedOut)),
            "{err:?}"
        );
        assert!(full.recv_request().await.unwrap() == big());
    }
}
