//! From the kernel to the engine, a batch at a time: the receive buffers (one slot per
//! datagram of a receive call, 8 to 64 offered per call), the receive calls themselves, and feeding
//! what one call brought to the engine as one batch (GRO aggregates split into packets,
//! long payloads kept by reference, one grant round for the batch). Also the socket's
//! error queue (ICMP) and the raw-IP reader's hand-over.

use super::{clock, trace_packet, Guard, Inner, State};
use crate::sys::{RxMeta, RX_SLOT};
use crate::{raw, sys};
use bytes::{Bytes, BytesMut};
use homa_core::{Time, KEEP_MIN, RUN_KEEP_MIN};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Datagrams one receive call takes at first, and at least...
pub(super) const RX_BATCH_FIRST: usize = 8;

/// ...and at most, while receives find more waiting than they offered room for.
pub(crate) const RX_BATCH_MAX: usize = sys::MAX_BATCH;

/// Receives in a row that fill a quarter of their offer or less before the offer halves
/// (see [`RxBufs::offer`]).
pub(super) const OFFER_SHRINK_AFTER: u32 = 16;

/// Datagrams shorter than this do not share their slot with the engine (it costs two
/// reference-count updates, and the engine would copy their payloads anyway: see
/// [`KEEP_MIN`]). Nor do datagrams that fill less than half of their slot: a payload
/// kept by reference pins the whole slot, so a slot less than half full would pin over
/// twice the bytes its messages are charged for (a peer sending 8 KB datagrams into
/// 64 KiB slots would hold 8 times its share of `max_incoming_held`). GRO aggregates
/// follow another rule: see [`worth_sharing`].
pub(super) const SHARE_MIN: usize = KEEP_MIN;

/// Slots are cut to the longest datagram seen (rounded up to this) once long datagrams
/// have been coming in and none was longer than [`FIT_MAX`]: see [`RxBufs::fit`].
pub(super) const FIT_ROUND: usize = 1024;

/// Longest datagram for which slots are cut to size (a quarter of `RX_SLOT`: jumbo
/// frames of 9,000 bytes without GRO, not the 64 KiB aggregates of loopback or GRO).
pub(super) const FIT_MAX: usize = RX_SLOT / 4;

/// A datagram at least this long is part of a long message (a short one fits in less,
/// and so do control packets): what GRO can coalesce.
pub(super) const BULK_DATAGRAM: usize = 1200;

/// Datagrams GRO could coalesce (long ones, or several received at once) a socket receives
/// before it turns UDP GRO on. Until then, a blocking receive can use `recvfrom`, cheaper
/// than the `recvmsg` GRO needs (see `sys::recv_one`): a socket that only ever sees short
/// messages one at a time never pays for GRO. With GRO on, a peer's batch of same-size
/// short packets sent as one GSO send arrives as one datagram, which the kernel neither
/// splits nor queues packet by packet.
pub(super) const GRO_AFTER: u32 = 64;

/// Bytes of spare receive buffers kept (see [`Spares`]): 128 slots of `RX_SLOT` bytes, or
/// more slots once they are cut to size. A count of slots was too few for jumbo frames: a
/// 1 MB message received in 9,000-byte datagrams holds 112 slots until its application
/// lets go, so a server receiving W4's long requests (testbed, 3 Gbps) gave most of them
/// back to `malloc` and took new ones, 2-3% of the machine's samples.
pub(super) const MAX_SPARE_BYTES: usize = 128 * RX_SLOT;

/// The driver's receive buffers: one slot per datagram of a batch, of `RX_SLOT` bytes
/// until the datagrams that arrive show that less will do (see [`fit`](Self::fit)). A
/// slot holding long packets is shared with the engine, which may keep their payloads
/// (the second copy, into pages, is saved); the slot then takes a spare buffer, and the
/// shared one becomes a spare once nothing holds it (see [`Spares`]).
pub(crate) struct RxBufs {
    pub(super) slots: Vec<BytesMut>,
    /// While slots are shorter than `RX_SLOT`: one buffer per slot for the rest of a
    /// datagram longer than it (empty otherwise).
    pub(super) spills: Vec<Vec<u8>>,
    pub(super) metas: Vec<RxMeta>,
    /// Slots the next batch receive offers the kernel (the first `offer`): doubled, up to
    /// `RX_BATCH_MAX`, when a receive fills them all; halved, down to `RX_BATCH_FIRST`,
    /// after [`OFFER_SHRINK_AFTER`] receives in a row filled a quarter or less. Every
    /// offered slot costs a receive header built in user space, used or not: a server of
    /// W4 traffic at 1 Gbps took 1-3 datagrams a call, and building 64 headers for them
    /// made `recv_batch` its largest user-space function. Shrinking slowly keeps the
    /// offer of a socket whose datagrams come in bursts, which would otherwise take a
    /// call for each doubling.
    pub(super) offer: usize,
    /// Receives in a row that filled a quarter of the offer or less.
    pub(super) sparse: u32,
    /// The capacity of every slot.
    pub(super) slot_size: usize,
    /// Longest datagram received while slots were `RX_SLOT` bytes.
    pub(super) longest: usize,
    /// A datagram spilled past a slot cut to size: slots stay `RX_SLOT` bytes from then
    /// on.
    pub(super) fixed: bool,
    /// The last receive filled every slot it offered.
    pub(super) last_full: bool,
    /// The last receive took more than one datagram: datagrams arrive together, so the
    /// next blocking receive takes whatever is queued in the same system call.
    pub(super) last_many: bool,
    /// More datagrams are probably queued: try a non-blocking receive before waiting.
    pub(super) probably_more: bool,
    /// UDP GRO is wanted (`Options::gro`, and the kernel has it) but not on yet: it is
    /// turned on once long datagrams, or many datagrams at once, arrive (see
    /// [`Inner::note_bulk`]). Cleared if that fails.
    pub(super) gro_wanted: bool,
    /// Datagrams GRO could have coalesced, received while it was off: long ones, and
    /// those that came several to a receive.
    pub(super) bulk_datagrams: u32,
    /// Buffers for the next slots, given back by the messages that kept parts of them.
    pub(super) spares: Arc<Spares>,
}

/// Receive buffers no message holds any more, for the next slots. A datagram shared with
/// the engine lies in a buffer that comes back here when the last message holding part of
/// it lets go (from whichever thread releases it; at once if none kept anything), so no
/// buffer is ever looked at to find out whether it is free. Looking cost a read of each
/// buffer's reference count, in memory long gone cold: 68-74% of `ingest_batch`'s samples
/// at W4, 3 Gbps, when four held buffers were looked at per replacement. Letting the
/// buffers go to `malloc` instead made it hand memory back to the kernel and fault it in
/// again, which cost more than the copy they save.
#[derive(Debug)]
pub(crate) struct Spares(Mutex<SpareBufs>);

#[derive(Debug)]
struct SpareBufs {
    /// Empty buffers of `size` bytes' capacity, the most recently given back last: reused
    /// newest first, so the kernel writes into memory that is likely still in the cache.
    bufs: VecDeque<BytesMut>,
    /// The slots' size: a buffer of another capacity (from before a resize) is let go.
    size: usize,
}

impl Spares {
    pub(super) fn new(size: usize) -> Spares {
        Spares(Mutex::new(SpareBufs {
            bufs: VecDeque::new(),
            size,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, SpareBufs> {
        // The lock guards only plain moves of buffers: a panic cannot leave it broken.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An empty slot: the spare given back last, else a new buffer (allocated, like
    /// anything freed here, outside the lock that releasing threads take too).
    pub(super) fn slot(&self) -> BytesMut {
        let (spare, size) = {
            let mut s = self.lock();
            (s.bufs.pop_back(), s.size)
        };
        spare.unwrap_or_else(|| BytesMut::with_capacity(size))
    }

    /// Keep `buf` (a buffer no message holds any more) for a later slot, letting the
    /// coldest spare go past [`MAX_SPARE_BYTES`].
    fn give(&self, mut buf: BytesMut) {
        buf.clear();
        let mut s = self.lock();
        if buf.capacity() != s.size {
            drop(s);
            return; // `buf` is freed here, unlocked
        }
        let coldest = if (s.bufs.len() + 1) * s.size > MAX_SPARE_BYTES {
            s.bufs.pop_front()
        } else {
            None
        };
        s.bufs.push_back(buf);
        drop(s);
        drop(coldest);
    }

    /// Slots are `size` bytes from now on: the spares of the old size go.
    fn resize(&self, size: usize) {
        let mut s = self.lock();
        s.size = size;
        s.bufs.clear();
    }

    /// Spares held now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().bufs.len()
    }

    /// `datagram` as bytes the engine may keep parts of; its buffer comes back to these
    /// spares once nothing holds it.
    pub(super) fn share(self: &Arc<Self>, datagram: BytesMut) -> Bytes {
        Bytes::from_owner(Shared {
            buf: datagram,
            spares: self.clone(),
        })
    }
}

/// The owner of a datagram's buffer while the engine may keep parts of it.
struct Shared {
    buf: BytesMut,
    spares: Arc<Spares>,
}

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.spares.give(std::mem::take(&mut self.buf));
    }
}

impl RxBufs {
    /// No slots yet (see [`ensure`](Self::ensure)); `gro_wanted`: UDP GRO may be turned
    /// on (see [`Inner::note_bulk`]).
    pub(crate) fn new(gro_wanted: bool) -> RxBufs {
        RxBufs {
            slots: Vec::new(),
            spills: Vec::new(),
            metas: Vec::new(),
            offer: RX_BATCH_FIRST,
            sparse: 0,
            slot_size: RX_SLOT,
            longest: 0,
            fixed: false,
            last_full: false,
            last_many: false,
            probably_more: false,
            gro_wanted,
            bulk_datagrams: 0,
            spares: Arc::new(Spares::new(RX_SLOT)),
        }
    }

    /// Make sure there are as many slots as the next receive offers: `RX_BATCH_FIRST`
    /// at first, more (up to `RX_BATCH_MAX`) once a receive filled all it offered. Slots
    /// are kept when the offer shrinks again. A socket that only ever sees one datagram
    /// at a time keeps 8 (512 KiB of address space; only the pages datagrams are written
    /// to are touched).
    pub(crate) fn ensure(&mut self) {
        if self.slots.len() < self.offer {
            self.add_slots(self.offer);
            self.metas.resize(self.offer, RxMeta::default());
        }
    }

    /// New slots of `slot_size` bytes (with spill buffers if that is less than `RX_SLOT`)
    /// up to `want` of them.
    fn add_slots(&mut self, want: usize) {
        let size = self.slot_size;
        self.slots
            .resize_with(want, || BytesMut::with_capacity(size));
        if size < RX_SLOT {
            self.spills
                .resize_with(want, || Vec::with_capacity(RX_SLOT - size));
        }
    }

    /// Cut the slots to the datagrams that arrive, once: when long datagrams have been
    /// coming in ([`GRO_AFTER`] of them) and none was longer than [`FIT_MAX`], as with
    /// jumbo frames of 9,000 bytes and no GRO, each slot becomes as long as the longest
    /// of them (rounded up to [`FIT_ROUND`]). Each such datagram then fills most of its
    /// slot, so a long message keeps it by reference instead of copying it again (in a
    /// 64 KiB slot it would pin seven times its bytes, so it was copied: 3-4% of the
    /// CPU of the testbed's processes at W4, 1 Gbps). Datagrams too short for the
    /// engine to keep ([`KEEP_MIN`]) are not worth it: nothing changes for them.
    ///
    /// A longer datagram later is not lost: it continues into the slot's spill buffer,
    /// is joined into a whole `RX_SLOT` slot ([`unspill`](Self::unspill)), and every
    /// slot is `RX_SLOT` bytes again for good.
    pub(super) fn fit(&mut self) {
        if self.fixed
            || self.slot_size < RX_SLOT
            || self.bulk_datagrams < GRO_AFTER
            || !(KEEP_MIN..=FIT_MAX).contains(&self.longest)
        {
            return;
        }
        self.resize(self.longest.next_multiple_of(FIT_ROUND));
    }

    /// Datagram `i` continued past its slot into its spill buffer: join the two in a new
    /// `RX_SLOT` slot, and make every slot that long from the next receive on.
    pub(super) fn unspill(&mut self, i: usize) {
        let mut whole = BytesMut::with_capacity(RX_SLOT);
        whole.extend_from_slice(&self.slots[i]);
        whole.extend_from_slice(&self.spills[i]);
        self.slots[i] = whole;
        self.metas[i].spilled = 0;
        self.fixed = true;
    }

    /// After a batch: slots back to `RX_SLOT` bytes if a datagram spilled, else cut to
    /// size if it is time (see [`fit`](Self::fit)). Returns whether their size changed.
    pub(super) fn after_batch(&mut self) -> bool {
        let before = self.slot_size;
        if self.fixed && self.slot_size < RX_SLOT {
            self.resize(RX_SLOT);
        } else {
            self.fit();
        }
        self.slot_size != before
    }

    /// Make every slot `size` bytes (and give them spill buffers if that is less than
    /// `RX_SLOT`). Buffers kept for reuse are of the old size: let them go.
    fn resize(&mut self, size: usize) {
        tracing::debug!(from = self.slot_size, to = size, "receive slots resized");
        self.slot_size = size;
        let n = self.slots.len();
        self.slots.clear();
        self.spills.clear();
        self.add_slots(n);
        self.spares.resize(size);
    }

    /// Slot `i`'s datagram as bytes the engine may keep parts of, and a spare in its
    /// place. The datagram's buffer becomes a spare again once nothing holds it: at once
    /// if the engine kept nothing, and the next slot replaced then takes it back.
    pub(super) fn share_slot(&mut self, i: usize) -> Bytes {
        let fresh = self.spares.slot();
        self.spares
            .share(std::mem::replace(&mut self.slots[i], fresh))
    }

    /// Note how many datagrams the last receive took (a batch receive, or `n` 0 or 1 of
    /// a single one), and set the next offer from it (see [`offer`](Self::offer)).
    /// Returns whether it filled every slot it offered (more is probably queued).
    pub(crate) fn note_received(&mut self, n: usize) -> bool {
        self.last_full = n == self.offer;
        self.last_many = n > 1;
        if n == 0 {
            return false;
        }
        if self.last_full {
            self.offer = (self.offer * 2).min(RX_BATCH_MAX);
            self.sparse = 0;
        } else if n * 4 <= self.offer {
            self.sparse += 1;
            if self.sparse >= OFFER_SHRINK_AFTER {
                self.offer = (self.offer / 2).max(RX_BATCH_FIRST);
                self.sparse = 0;
            }
        } else {
            self.sparse = 0;
        }
        self.last_full
    }

    /// The slots offered to the next receive call (call [`ensure`](Self::ensure)
    /// first), their spill buffers and their metadata.
    pub(crate) fn parts(&mut self) -> (&mut [BytesMut], &mut [Vec<u8>], &mut [RxMeta]) {
        let k = self.offer.min(self.slots.len());
        let spills = self.spills.len().min(k);
        (
            &mut self.slots[..k],
            &mut self.spills[..spills],
            &mut self.metas[..k],
        )
    }
}

/// Which receive call a driver makes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Recv {
    /// Block for one datagram (`recvfrom`/`recvmsg`: the cheapest for one).
    One,
    /// Block for the first datagram, then take whatever else is queued (`recvmmsg`).
    Batch,
    /// Take whatever is queued, without blocking.
    Queued,
}

/// How a driver's receive waits when nothing is queued.
pub(super) enum Await<'a> {
    /// In the receive call itself: `recvmmsg` for everything queued with the first
    /// datagram when datagrams come together, else the cheaper single receive.
    Block,
    /// In `ppoll` until `deadline` (`None`: no deadline) or a wake-up through `wake`; a
    /// deadline already passed does not wait.
    Poll {
        deadline: Option<Time>,
        wake: Option<&'a sys::EventFd>,
    },
}

/// What a driver's receive knows of the wait it is part of.
pub(super) struct Step {
    /// Not the first step of this wait: the packets of a long message may be queued.
    pub(super) more: bool,
    /// The caller takes a batch: a blocking receive takes everything queued.
    pub(super) batch: bool,
    /// Busy-poll this long before waiting (machines with cores to spare).
    pub(super) spin: Duration,
}

impl Inner {
    /// One receive of a driver (blocking flavour) into `rx`'s slots: what is queued, or
    /// else whatever comes first, waiting as `wait` says. Returns how many datagrams,
    /// and whether the socket reported an error (its error queue is then to be read).
    pub(super) fn receive(
        &self,
        fd: RawFd,
        rx: &mut RxBufs,
        step: Step,
        wait: Await<'_>,
    ) -> (usize, bool) {
        rx.ensure();
        // More is probably queued (the last receive filled its slots, or this driver is
        // still waiting after a step that got something: a long message is arriving), or
        // datagrams come together, or the caller takes a batch: a blocking receive takes
        // whatever is queued with the first, in the same system call. (A non-blocking
        // try first would cost a second call whenever nothing is there yet, as between
        // the packets of a message paced to a slow link.)
        let probably_more = rx.probably_more || step.more;
        let together = step.batch || rx.last_many || probably_more;
        let (slots, spills, metas) = rx.parts();
        let mut err = false;
        // A single receive reads control messages only where one may come.
        let cmsgs = self.gro_on() || self.arrival_addrs;
        let counts = &self.counts;
        let mut recv = |how: Recv| -> usize {
            counts.received();
            let r = match how {
                Recv::One => {
                    sys::recv_one(fd, &mut slots[0], spills.first_mut(), &mut metas[0], cmsgs)
                }
                Recv::Batch => sys::recv_batch(fd, slots, spills, metas, false),
                Recv::Queued => sys::recv_batch(fd, slots, spills, metas, true),
            };
            match r {
                Ok(n) => n,
                Err(e) => {
                    match e.raw_os_error() {
                        Some(libc::ECONNREFUSED) | Some(libc::EINTR) | Some(libc::EAGAIN) => {}
                        _ => tracing::debug!(error = %e, "receive failed"),
                    }
                    err = true;
                    0
                }
            }
        };
        // A driver that polls with a deadline tries a non-blocking receive first when more
        // is probably waiting (it saves the `ppoll`); a blocking one goes straight to its
        // receive, which returns at once if something is there: one system call per
        // wake-up.
        let mut n = 0;
        if probably_more && matches!(wait, Await::Poll { .. }) {
            n = recv(Recv::Queued);
        }
        let deadline = match wait {
            Await::Poll { deadline, .. } => deadline,
            Await::Block => None,
        };
        if n == 0 && !step.spin.is_zero() {
            let end = clock().plus_nanos(step.spin.as_nanos() as u64);
            let end = deadline.map_or(end, |d| d.min(end));
            while n == 0 && clock() < end {
                std::hint::spin_loop();
                n = recv(Recv::Queued);
            }
        }
        if n == 0 {
            match wait {
                Await::Block if together => n = recv(Recv::Batch),
                Await::Block => n = recv(Recv::One),
                Await::Poll { deadline, wake } => {
                    let timeout = deadline.map(|d| Duration::from_nanos(d.nanos_since(clock())));
                    if timeout == Some(Duration::ZERO) {
                        n = recv(Recv::Queued);
                    } else {
                        self.counts.waited();
                        match sys::poll(fd, wake, timeout) {
                            Ok(p) if p.readable => n = recv(Recv::Queued),
                            Ok(p) => err |= p.error,
                            Err(e) => {
                                tracing::warn!(error = %e, "ppoll failed");
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                }
            }
        }
        rx.note_received(n);
        rx.probably_more = rx.last_full || (n > 0 && step.more);
        (n, err)
    }

    /// Feed a batch the driver received (UDP mode): split GRO aggregates, then let the
    /// engine answer.
    ///
    /// `tick_now: false` (an application thread drives) holds a due tick back until the
    /// thread is about to wait again ([`tick_if_due`](Self::tick_if_due)): the message it
    /// returns with, and the reply its caller then sends, do not wait for the tick's
    /// work and system calls (possibly an `ioctl` and a timer re-arm). On 2 vCPUs at 2,500 RPC/s of 100 B, the server's turnaround (its
    /// thread woken by the request to the client woken by the response, `perf sched`)
    /// fell from 36-38 us to 27 us at the median. The tick is late by one handler's run
    /// at most, or the background thread runs it (see [`next_wake`](Self::next_wake)).
    pub(crate) fn ingest_batch(
        &self,
        st: &mut Guard<'_>,
        rx: &mut RxBufs,
        n: usize,
        tick_now: bool,
    ) {
        let now = clock();
        st.last_now = st.last_now.max(now);
        if !rx.last_full {
            st.drained_at = Some(now);
        }
        let kick_from = self.kick.as_ref().map(|k| k.from);
        let tick_before = st.ep.next_tick();
        // One grant round for the whole batch (see `Endpoint::begin_batch`).
        st.ep.begin_batch();
        for i in 0..n {
            if rx.metas[i].spilled > 0 {
                rx.unspill(i);
            }
            let (m, slot) = (&rx.metas[i], &mut rx.slots[i]);
            let Some(from) = m.from else { continue };
            if Some(from) == kick_from {
                continue;
            }
            if m.truncated || slot.is_empty() {
                // Empty, or longer than any Homa packet we accept: count it like any
                // malformed one.
                st.ep.handle_datagram(now, from.ip(), &[]);
                continue;
            }
            if slot.len() >= BULK_DATAGRAM || n > 1 {
                rx.bulk_datagrams = rx.bulk_datagrams.saturating_add(1);
            }
            if rx.slot_size == RX_SLOT {
                rx.longest = rx.longest.max(slot.len());
            }
            let to = m.to;
            if !worth_sharing(slot.len(), slot.capacity(), m.segment) {
                for seg in segments(slot, m.segment) {
                    self.ingest(st, now, (from, to), seg, None);
                }
                continue;
            }
            let segment = m.segment;
            let shared = rx.share_slot(i);
            for seg in segments(&shared, segment) {
                self.ingest(st, now, (from, to), seg, Some(&shared));
            }
        }
        st.ep.end_batch();
        if rx.after_batch() {
            self.rx_slot_bytes.store(rx.slot_size, Ordering::Relaxed);
        }
        if rx.gro_wanted && rx.bulk_datagrams >= GRO_AFTER {
            self.note_bulk(rx);
        }
        if st.ep.next_tick() != tick_before {
            // The clock started, or ticks spaced out while idle come every tick again:
            // whoever runs the timers must not sleep until the old deadline.
            self.kick(st);
        }
        if tick_now {
            self.tick(st, now, None);
        }
        self.deliver(st, now);
    }

    /// Feed one received Homa packet to the engine, sent from `from` to local address
    /// `to` (where known); `shared`: the buffer it lies in, which the engine may keep parts
    /// of.
    pub(crate) fn ingest(
        &self,
        st: &mut State,
        now: Time,
        (from, to): (SocketAddr, Option<IpAddr>),
        bytes: &[u8],
        shared: Option<&Bytes>,
    ) {
        st.scopes.learn(from);
        let from = from.ip();
        if tracing::enabled!(tracing::Level::TRACE) {
            trace_packet("rx", from, bytes, bytes.len());
        }
        match shared {
            Some(buf) => st.ep.handle_shared_datagram_to(now, from, to, bytes, buf),
            None => st.ep.handle_datagram_to(now, from, to, bytes),
        }
    }

    /// Whether UDP GRO is on for the socket.
    pub(crate) fn gro_on(&self) -> bool {
        self.gro_on.load(Ordering::Relaxed)
    }

    /// The receive slots' size in bytes (see [`RxBufs::fit`]).
    pub(crate) fn rx_slot_bytes(&self) -> usize {
        self.rx_slot_bytes.load(Ordering::Relaxed)
    }

    /// Long messages arrive: turn UDP GRO on, once (`rx`, locked by the caller, orders
    /// this before any later receive). Datagrams the kernel queued before are never
    /// aggregates: it splits them when GRO is off as they are queued.
    pub(super) fn note_bulk(&self, rx: &mut RxBufs) {
        rx.gro_wanted = false;
        let Some(fd) = self.udp_fd() else { return };
        match sys::setsockopt_int(fd, sys::SOL_UDP, sys::UDP_GRO, 1) {
            Ok(()) => {
                self.gro_on.store(true, Ordering::Relaxed);
                tracing::debug!(local = %self.local, "UDP GRO on: long messages arrive");
            }
            Err(e) => tracing::debug!(error = %e, "UDP GRO stays off"),
        }
    }

    /// Read the socket's error queue: ICMP "port unreachable" fails the RPCs to that
    /// address at once instead of after `timeout_ticks` of silence.
    pub(crate) fn drain_errors(&self, st: &mut State) {
        let Some(fd) = self.udp_fd() else {
            // Raw IP: the shared socket's queue holds every raw socket's errors; what they
            // say of RPCs is noted for each, to be acted on at its next input or tick
            // (this one's lock is held here, and perhaps another's).
            if let super::Io::Raw { fam, .. } = &self.io {
                fam.drain_errors();
            }
            return;
        };
        for _ in 0..64 {
            match sys::recv_error(fd) {
                Ok(Some(e)) => {
                    tracing::debug!(dest = ?e.dest, errno = e.errno, "ICMP error");
                    if let (Some(dest), libc::ECONNREFUSED) = (e.dest, e.errno) {
                        st.ep.handle_unreachable(dest);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// Whether a datagram of `len` bytes in a slot of `capacity` bytes is shared with the
/// engine, which may then keep its payloads by reference instead of copying them
/// (`segment`: the packets' length in a GRO aggregate, else 0).
///
/// A lone datagram must be at least [`SHARE_MIN`] and fill half of its slot. A GRO
/// aggregate (a run of packets sent as one GSO send, or coalesced by the receiving NIC)
/// is shared if its packets are at least [`RUN_KEEP_MIN`]: they are short (1,416 bytes
/// of payload at a 1,500-byte MTU) or under half of the aggregate, but usually all go
/// to one message, which the engine lets keep them as long as they are at least a
/// [`PIN_MAX`](homa_core::PIN_MAX)th of the aggregate's slot; otherwise it copies them
/// once the batch is handled (`MessageBuf::settle`). Shared even when short, an aggregate that starts a
/// message lets the message keep the longer ones that follow (a message copied from
/// its first packet on is copied into pages to its end). Copying every payload was a
/// quarter to a third of a testbed server's user time with GRO on.
pub(super) fn worth_sharing(len: usize, capacity: usize, segment: usize) -> bool {
    if segment > 0 && len > segment {
        segment >= RUN_KEEP_MIN
    } else {
        len >= SHARE_MIN && len * 2 >= capacity
    }
}

/// The packets of one received datagram: several when GRO coalesced them (`segment` is
/// then their common length; the last may be shorter).
pub(super) fn segments(datagram: &[u8], segment: usize) -> std::slice::Chunks<'_, u8> {
    let size = if segment > 0 { segment } else { datagram.len() };
    datagram.chunks(size.max(1))
}

/// The raw-IP reader hands each socket the packets for its port through this.
impl raw::RawReceiver for Inner {
    fn receive_raw(&self, packets: &mut dyn Iterator<Item = (SocketAddr, Option<IpAddr>, &[u8])>) {
        // A socket broken by a panic gets nothing more; the reader, shared by every
        // raw-mode socket of the process, goes on serving the others.
        let Some(mut st) = self.lock_unless_poisoned() else {
            return;
        };
        if st.shutdown {
            return;
        }
        let now = clock();
        st.ep.begin_batch();
        for (from, to, homa) in packets {
            self.ingest(&mut st, now, (from, to), homa, None);
        }
        st.ep.end_batch();
        self.after_input(&mut st, now);
        self.kick(&mut st);
    }

    fn noted(&self) -> &raw::Noted {
        &self.unreachable
    }

    fn act_on_noted(&self) {
        let Some(mut st) = self.lock_unless_poisoned() else {
            return;
        };
        if st.shutdown {
            return;
        }
        // (after_input takes what was noted, and hands the failed RPCs to their callers.)
        self.after_input(&mut st, clock());
        self.kick(&mut st);
    }
}
