//! From the engine to the kernel, a batch at a time: the packets the engine has ready are
//! gathered into one batch (headers in an arena, payloads sent from the messages
//! themselves), cut into groups (runs of same-size packets to one peer become one UDP GSO
//! send) and sent with one `sendmsg`/`sendmmsg`. One thread sends at a time; others leave
//! their packets to it, or send urgent ones themselves. A full socket buffer keeps what
//! did not go out for later (non-blocking senders); errors that say a peer cannot be
//! reached fail its RPCs at once.

use super::{trace_packet, Flavor, Guard, Inner, Io, State};
use crate::sys::{self, TxGroup, TxPacket, MAX_BATCH, MAX_GSO_BYTES, MAX_GSO_SEGMENTS};
use bytes::Bytes;
use homa_core::Time;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;

/// Most bytes (headers and payloads) gathered for one send call.
pub(super) const TX_BATCH_BYTES: usize = 1 << 20;

/// Room for the packets of one batch in raw mode (whole packets); UDP batches need only
/// their headers there.
pub(super) const TX_ARENA: usize = 256 << 10;

/// Payloads up to this size are copied into the batch buffer behind their header
/// rather than sent from the message by a second iovec.
pub(super) const INLINE_PAYLOAD: usize = 2048;

/// Batches of at least this many bytes are sent with the socket's lock released.
pub(super) const UNLOCKED_SEND_BYTES: usize = 32 << 10;

/// Send calls in a row at one TOS other than the socket's after which the socket's TOS is
/// changed to it (see [`Tx::tos_for`]).
pub(super) const TOS_SWITCH_AFTER: u32 = 8;

/// Most packets [`Inner::send_urgent`] sends per call.
pub(super) const MAX_URGENT: usize = 16;

/// The group of a batch holding one packet, sent as one datagram.
pub(super) const ONE_DATAGRAM: [TxGroup; 1] = [TxGroup {
    first: 0,
    count: 1,
    segment: 0,
}];

/// The outgoing-packet buffers. The State holds them while no thread sends.
pub(crate) struct Tx {
    /// Headers (UDP) or whole packets (raw IP) of the batch.
    arena: Vec<u8>,
    pkts: Vec<TxPacket>,
    /// How `pkts` go out: one datagram each, or runs of them as UDP GSO sends.
    groups: Vec<TxGroup>,
    pending: VecDeque<Pending>,
    gso: bool,
    /// Destinations whose route refused a GSO send (at most [`NO_GSO_MAX`]; past that,
    /// `gso` is turned off): their packets go one datagram each.
    no_gso: Vec<IpAddr>,
    /// The TOS set on the UDP socket (see [`Tx::tos_for`]).
    cur_tos: Option<u8>,
    /// Consecutive send calls that wanted another TOS than the socket's: (that TOS, how
    /// many).
    other_tos: (u8, u32),
    /// Every destination of `pkts` has sent us a packet within [`CONFIRM_HEARD_NANOS`]:
    /// the batch goes with `MSG_CONFIRM` (see [`sys::send_flags`]).
    confirm: bool,
}

/// The most destinations that refused GSO a socket remembers before it stops using GSO
/// for all (a route through a tunnel or IPsec, or with a smaller MTU, refuses it).
const NO_GSO_MAX: usize = 16;

/// A peer heard from within this long answers, for `MSG_CONFIRM`. The kernel wants a
/// confirmation within its reachable time (15-45 s by default) to skip probing; a tenth
/// of a second keeps it to peers in conversation with us.
const CONFIRM_HEARD_NANOS: u64 = 100_000_000;

/// Whether every destination of `pkts` has been heard from within
/// [`CONFIRM_HEARD_NANOS`] of `now` (one lookup per run of packets to one address).
fn all_heard(ep: &mut homa_core::Endpoint, pkts: &[TxPacket], now: Time) -> bool {
    let since = Time(now.0.saturating_sub(CONFIRM_HEARD_NANOS));
    let mut last = None;
    pkts.iter().all(|p| {
        let ip = p.dest.ip();
        last.replace(ip) == Some(ip) || ep.heard_from_since(ip, since)
    })
}

impl Tx {
    /// Buffers for batches of packets up to `max_packet` bytes; `gso`: UDP GSO may be
    /// used.
    pub(super) fn new(max_packet: usize, gso: bool) -> Tx {
        Tx {
            arena: vec![0; TX_ARENA + max_packet],
            pkts: Vec::with_capacity(MAX_BATCH),
            groups: Vec::with_capacity(MAX_BATCH),
            pending: VecDeque::new(),
            gso,
            no_gso: Vec::new(),
            cur_tos: None,
            other_tos: (0, 0),
            confirm: false,
        }
    }

    /// How a UDP send call at `tos` carries its TOS: `true` if the socket's own TOS is
    /// `tos` (set here when needed), `false` if each datagram must carry it in a control
    /// message.
    ///
    /// A socket's TOS is changed only for a lasting change of priority (the first send,
    /// or [`TOS_SWITCH_AFTER`] calls in a row at one other TOS): a control message costs
    /// little, a `setsockopt` is a system call. Long messages' DATA, GRANTs and short
    /// messages go at different priorities, and switching the socket's TOS for each run
    /// cost 1.8 `setsockopt` per RPC on the testbed (W4, 1 Gbps). Steady traffic at one
    /// priority (small RPCs) still leaves with no control message, by `sendto`.
    pub(super) fn tos_for(&mut self, fd: RawFd, v6: bool, tos: u8) -> bool {
        if self.cur_tos == Some(tos) {
            self.other_tos.1 = 0;
            return true;
        }
        if self.other_tos.0 == tos {
            self.other_tos.1 += 1;
        } else {
            self.other_tos = (tos, 1);
        }
        if self.cur_tos.is_some() && self.other_tos.1 < TOS_SWITCH_AFTER {
            return false;
        }
        let (level, name) = if v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
        } else {
            (libc::IPPROTO_IP, libc::IP_TOS)
        };
        if sys::setsockopt_int(fd, level, name, tos as i32).is_ok() {
            self.cur_tos = Some(tos);
            self.other_tos.1 = 0;
            true
        } else {
            false
        }
    }

    /// Keep the packets of groups `from..` for later (the socket buffer is full).
    pub(super) fn keep_pending(&mut self, from: usize) {
        for g in &self.groups[from..] {
            for p in &self.pkts[g.first..g.first + g.count] {
                self.pending.push_back(Pending {
                    header: self.arena[p.start..p.start + p.len].to_vec(),
                    pkt: TxPacket {
                        start: 0,
                        ..p.clone()
                    },
                });
            }
        }
        self.pkts.clear();
        self.groups.clear();
    }
}

/// An outgoing packet kept because the socket buffer was full (non-blocking senders).
pub(super) struct Pending {
    /// The header (or, raw IP, the whole packet), copied out of the batch buffer.
    header: Vec<u8>,
    /// Its description, with `start` 0 in `header`.
    pkt: TxPacket,
}

/// What a send round ran into.
#[derive(Debug, Default)]
pub(super) struct SendOutcome {
    /// An ICMP error was reported: read the error queue.
    refused: bool,
    /// Destinations the kernel refused to send to for good (see `lasting_send_error`),
    /// with the error: their client RPCs fail at once.
    unsendable: Vec<(SocketAddr, i32)>,
    /// The socket buffer is full (non-blocking senders): packets wait in `Tx::pending`.
    blocked: bool,
}

/// A client-only UDP socket that has only ever sent to one peer is connected to it: the
/// kernel then sends without a route lookup per datagram (0.4 us of a 12.7 us loopback
/// round trip). Connected, it receives only from that peer, which is all a socket that
/// takes no requests or one-way messages and has sent to no one else hears from. (The
/// server role and one-way messages are only ever turned off after binding, by a drain,
/// so a socket that was not eligible then never becomes so.) Before it sends to anyone
/// else, and before a wake-up datagram ([`Inner::send_kick`]) comes from the kick socket,
/// it is disconnected for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UdpPeer {
    /// Not eligible: raw IP, or a socket that takes requests or one-way messages (they
    /// come from anyone).
    Never,
    /// Eligible, has sent nothing yet.
    Fresh,
    Connected(SocketAddr),
    /// Was connected, or about to send to a second peer: stays unconnected.
    Many,
}

impl Inner {
    /// Send everything the engine has ready, in `sendmmsg` batches of up to 64 packets
    /// (runs of same-size packets to one destination coalesced with GSO).
    ///
    /// The packets are gathered under the socket's lock; a batch of
    /// `UNLOCKED_SEND_BYTES` or more is then sent with the lock released (on loopback a
    /// send also delivers to the receiver and wakes it, which takes microseconds that
    /// other threads of this socket should not wait through), a smaller one under it,
    /// which costs less than letting the lock go and taking it back. One thread
    /// sends at a time (it owns the [`Tx`] buffers meanwhile); a thread that finds them
    /// taken leaves its packets in the engine and notes that the sender must come back.
    /// Returns false if packets are left waiting for a full socket buffer (non-blocking
    /// senders only).
    pub(crate) fn flush(&self, st: &mut Guard<'_>, now: Time) -> bool {
        if !st.tx_has_pending && !st.ep.may_transmit() {
            return true;
        }
        let Some(mut tx) = st.tx.take() else {
            st.tx_again = true;
            self.send_urgent(st, now);
            return true;
        };
        let mut drained = true;
        let mut now = now;
        loop {
            st.tx_again = false;
            // Packets a full socket buffer left go first. While it stays full, the rest
            // stay in the engine, in SRPT order, rather than queue here behind them.
            if !tx.pending.is_empty() {
                let mut out = SendOutcome::default();
                let sent = self.send_pending(&mut tx, &mut out);
                if out.refused {
                    self.drain_errors(st);
                }
                for (dest, errno) in out.unsendable {
                    self.fail_unsendable(st, dest, errno);
                }
                if !sent {
                    st.send_buffer_full += 1;
                    drained = false;
                    break;
                }
            }
            let full = self.gather(st, &mut tx, now);
            if tx.pkts.is_empty() {
                break;
            }
            // Small batches go out under the lock: a short send is cheaper than the
            // hand-offs that releasing and retaking the lock cause when other threads
            // wait for it (measured: 32 outstanding 100-byte RPCs ran at half the rate).
            let bytes: usize = tx.pkts.iter().map(TxPacket::wire_len).sum();
            let connected = self.settle_peer(st, &tx);
            tx.confirm = all_heard(&mut st.ep, &tx.pkts, now);
            let out = if bytes >= UNLOCKED_SEND_BYTES {
                // Addressed: a kick may disconnect the socket meanwhile.
                st.unlocked(|| self.send_tx(&mut tx, None))
            } else {
                self.send_tx(&mut tx, connected)
            };
            if out.refused {
                self.drain_errors(st);
            }
            for (dest, errno) in out.unsendable {
                self.fail_unsendable(st, dest, errno);
            }
            if out.blocked {
                st.send_buffer_full += 1;
                drained = false;
                break;
            }
            if !full && !st.tx_again {
                break;
            }
            // The next batch leaves after this one: stamp it with the time it is handed
            // over, not the time this flush began (the engine times NEED_ACKs from it).
            now = now.max(super::clock());
        }
        st.gso_on = tx.gso;
        if tx.pending.is_empty() && st.urgent_left.is_empty() {
            // Everything polled so far has left (what other threads polled meanwhile
            // they sent under the lock): the engine's timers that count from a packet's
            // departure start now, not when it was gathered, which a long flush, a wait
            // for the lock or a preempted thread can put milliseconds earlier (a server's
            // NEED_ACK then followed its response's last DATA by microseconds).
            st.ep.transmitted(super::clock());
        }
        if !st.urgent_left.is_empty() {
            tx.pending.extend(st.urgent_left.drain(..));
        }
        st.tx_has_pending = !tx.pending.is_empty();
        st.tx = Some(tx);
        // Packets left for a full socket buffer, or data the pacer holds back (which a
        // driver that looked while we were sending did not count: see `next_wake`).
        if st.tx_has_pending || st.ep.pacer_deadline().is_some() {
            self.kick(st);
        }
        drained
    }

    /// Take what the engine has to send into `tx` (a batch). Returns whether the batch
    /// filled up (more may be waiting).
    ///
    /// UDP: only the headers are written into the batch buffer; each payload stays in its
    /// message and goes to the kernel by a vectored send, so the sender copies each byte
    /// once (into the kernel). Raw IP writes whole packets: the Linux-compatible checksum
    /// covers the payload.
    pub(super) fn gather(&self, st: &mut State, tx: &mut Tx, now: Time) -> bool {
        tx.pkts.clear();
        tx.groups.clear();
        let raw = matches!(self.io, Io::Raw { .. });
        let room = if raw {
            st.max_packet
        } else {
            homa_wire::MAX_HEADER_LEN + INLINE_PAYLOAD
        };
        let mut used = 0;
        let mut bytes = 0;
        while tx.pkts.len() < MAX_BATCH && used + room <= tx.arena.len() && bytes < TX_BATCH_BYTES {
            let buf = &mut tx.arena[used..used + room];
            let (t, len, payload) = if raw {
                let Some(t) = st.ep.poll_transmit(now, buf) else {
                    break;
                };
                (t, t.len, bytes::Bytes::new())
            } else {
                let Some(p) = st.ep.poll_transmit_parts(now, buf) else {
                    break;
                };
                // The engine copies a payload of up to INLINE_PAYLOAD bytes behind its
                // header (`room`): one iovec is cheaper for short ones.
                (p.transmit, p.header_len, p.payload)
            };
            let src = self.finish_packet(&mut tx.arena[used..used + len], &t, now);
            // Raw sockets take no port (IPv6 ones reject any but 0 or the protocol).
            let dest = self.wire_dest(st, t.dest);
            let header = &tx.arena[used..used + len];
            if tracing::enabled!(tracing::Level::TRACE) {
                trace_packet("tx", t.dest.ip(), header, t.len);
            }
            tx.pkts.push(TxPacket {
                dest,
                start: used,
                len,
                payload,
                tos: homa_wire::priority_to_tos(t.priority),
                src,
            });
            used += len;
            bytes += t.len;
        }
        group(&tx.pkts, tx.gso, &tx.no_gso, &mut tx.groups);
        tx.pkts.len() == MAX_BATCH || used + room > tx.arena.len() || bytes >= TX_BATCH_BYTES
    }

    /// Where a packet for `dest` is sent: raw sockets take no port (IPv6 ones reject any
    /// but 0 or the protocol); a link-local IPv6 peer, the interface it was heard on
    /// (the engine's addresses carry no scope).
    fn wire_dest(&self, st: &State, dest: SocketAddr) -> SocketAddr {
        let dest = st.scopes.scoped(dest);
        match (&self.io, dest) {
            (Io::Udp { .. }, _) => dest,
            (Io::Raw { .. }, SocketAddr::V6(a)) => {
                SocketAddr::V6(std::net::SocketAddrV6::new(*a.ip(), 0, 0, a.scope_id()))
            }
            (Io::Raw { .. }, SocketAddr::V4(a)) => SocketAddr::new(IpAddr::V4(*a.ip()), 0),
        }
    }

    /// Say which source address packet `t` goes from (`None`: the kernel chooses): the
    /// engine's choice ([`Transmit::src`](homa_core::Transmit::src)), else for raw IP
    /// the bound address. Raw IP: fill the Linux-compatible checksum, which covers it
    /// (`now`: the time the packet was polled at).
    pub(super) fn finish_packet(
        &self,
        pkt: &mut [u8],
        t: &homa_core::Transmit,
        now: Time,
    ) -> Option<IpAddr> {
        let Io::Raw { fam, bound_ip, .. } = &self.io else {
            return t.src;
        };
        let chosen = t.src.or(*bound_ip);
        let src = chosen.unwrap_or_else(|| fam.source_for(t.dest.ip(), now));
        match (src, t.dest.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => homa_wire::checksum::fill_ipv4(s, d, pkt),
            (IpAddr::V6(s), IpAddr::V6(d)) => homa_wire::checksum::fill_ipv6(s, d, pkt),
            _ => {}
        }
        chosen
    }

    /// Send the batch in `tx` (called with the socket's lock held or released).
    pub(super) fn send_tx(&self, tx: &mut Tx, connected: Option<SocketAddr>) -> SendOutcome {
        let mut out = SendOutcome::default();
        let fd = self.tx_fd();
        let udp = matches!(self.io, Io::Udp { .. });
        let mut gi = 0;
        let mut earlier_errors = 0;
        while gi < tx.groups.len() {
            // UDP: the priority goes in the socket's TOS when every datagram of the call
            // has the one it holds (see `Tx::tos_for`), else in a control message per
            // datagram; either way the whole batch goes out in one call. The raw socket
            // is shared: a control message each.
            let tos_cmsg = !udp || {
                let tos = tx.pkts[tx.groups[gi].first].tos;
                let uniform = tx.groups[gi..].iter().all(|g| tx.pkts[g.first].tos == tos);
                !(uniform && tx.tos_for(fd, self.local.is_ipv6(), tos))
            };
            let groups = &tx.groups[gi..];
            self.counts.sent();
            match sys::send_batch(
                fd,
                &tx.arena,
                &tx.pkts,
                groups,
                sys::send_flags(self.nonblocking_tx(), tx.confirm),
                tos_cmsg,
                connected,
            ) {
                Ok(n) => gi += n.max(1),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tx.keep_pending(gi);
                    out.blocked = true;
                    break;
                }
                Err(e) if earlier_errors < 4 && self.earlier_datagrams_error(fd, &e) => {
                    // Not this send's error: an earlier datagram's ICMP error, reported
                    // (and so cleared) by this call. The error queue is read once the lock
                    // is back. Retry.
                    earlier_errors += 1;
                    out.refused = true;
                }
                Err(e)
                    if tx.groups[gi].segment > 0
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EINVAL | libc::EIO | libc::EMSGSIZE)
                        ) =>
                {
                    // GSO unusable on this destination's route (IPsec, no checksum
                    // offload, segments longer than its MTU: EMSGSIZE on recent kernels,
                    // EINVAL on older ones, where a single datagram is fragmented): send
                    // the segments one by one, and the destination's packets from now on.
                    // (Errors that single datagrams draw too are the destination's: below.)
                    let dest = tx.pkts[tx.groups[gi].first].dest.ip();
                    tracing::debug!(error = %e, %dest, "UDP GSO refused; single datagrams to this destination");
                    if !tx.no_gso.contains(&dest) {
                        tx.no_gso.push(dest);
                    }
                    if tx.no_gso.len() > NO_GSO_MAX {
                        tx.gso = false;
                        tx.no_gso.clear();
                    }
                    let g = tx.groups[gi];
                    let singles = (g.first..g.first + g.count).map(|first| TxGroup {
                        first,
                        count: 1,
                        segment: 0,
                    });
                    tx.groups.splice(gi..=gi, singles);
                }
                Err(e) => {
                    // Lost like any packet on a network; Homa's RESENDs recover it,
                    // unless the error says no packet to that peer will go.
                    let dest = tx.pkts[tx.groups[gi].first].dest;
                    tracing::debug!(error = %e, %dest, "send failed; packet dropped");
                    if let Some(errno) = lasting_send_error(&e) {
                        out.unsendable.push((dest, errno));
                    }
                    gi += 1;
                }
            }
        }
        tx.pkts.clear();
        tx.groups.clear();
        out
    }

    /// Send packets kept from a full socket buffer. Returns true when none are left.
    /// Their send errors are judged as [`send_tx`](Self::send_tx) judges its own, into
    /// `out`: an earlier datagram's error is retried, and one that says the destination
    /// cannot be sent to fails its RPCs.
    pub(super) fn send_pending(&self, tx: &mut Tx, out: &mut SendOutcome) -> bool {
        let fd = self.tx_fd();
        // Never blocking: a full buffer keeps them for later.
        let flags = sys::send_flags(true, false);
        let mut earlier_errors = 0;
        while let Some(p) = tx.pending.front() {
            let pkts = std::slice::from_ref(&p.pkt);
            self.counts.sent();
            match sys::send_batch(fd, &p.header, pkts, &ONE_DATAGRAM, flags, true, None) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if earlier_errors < 4 && self.earlier_datagrams_error(fd, &e) => {
                    earlier_errors += 1;
                    out.refused = true;
                }
                Err(e) => {
                    tracing::debug!(error = %e, dest = %p.pkt.dest, "send failed; packet dropped");
                    if let Some(errno) = lasting_send_error(&e) {
                        out.unsendable.push((p.pkt.dest, errno));
                    }
                    tx.pending.pop_front();
                }
                Ok(_) => {
                    tx.pending.pop_front();
                }
            }
        }
        true
    }

    /// Another thread owns the batch buffers and sends (long messages' data, for up to a
    /// batch of 64 KB packets, with the lock released): send from this thread, under the
    /// lock, what need not wait for it: control packets and short messages (see
    /// [`Endpoint::poll_transmit_urgent`](homa_core::Endpoint::poll_transmit_urgent)). Measured on 2 vCPUs, W4 at 8 Gbps over
    /// loopback: 23% of short requests found the buffers taken, and reached the server
    /// 86 us later at the median instead of 13 us.
    ///
    /// Each packet carries its TOS in a control message: the socket's own TOS belongs to
    /// the batch owner. A fresh client socket (not yet connected to its peer, see
    /// [`UdpPeer`]) leaves everything to the owner.
    pub(super) fn send_urgent(&self, st: &mut State, now: Time) {
        if matches!(st.udp_peer, UdpPeer::Fresh) {
            return;
        }
        let mut buf = [0u8; homa_wire::MAX_HEADER_LEN + INLINE_PAYLOAD];
        for _ in 0..MAX_URGENT {
            let Some(t) = st.ep.poll_transmit_urgent(now, &mut buf) else {
                return;
            };
            let connected = match st.udp_peer {
                UdpPeer::Connected(peer) if peer == t.dest && !st.peer_timed_out => Some(peer),
                // An unlocked sender addresses every packet: disconnecting is safe.
                UdpPeer::Connected(_) => {
                    self.unconnect(st);
                    None
                }
                _ => None,
            };
            let src = self.finish_packet(&mut buf[..t.len], &t, now);
            if tracing::enabled!(tracing::Level::TRACE) {
                trace_packet("tx", t.dest.ip(), &buf[..t.len], t.len);
            }
            let dest = self.wire_dest(st, t.dest);
            let pkt = TxPacket {
                dest,
                start: 0,
                len: t.len,
                payload: Bytes::new(),
                tos: homa_wire::priority_to_tos(t.priority),
                src,
            };
            let pkts = std::slice::from_ref(&pkt);
            let fd = self.tx_fd();
            let flags = sys::send_flags(self.nonblocking_tx(), false);
            self.counts.sent();
            let mut r = sys::send_batch(fd, &buf, pkts, &ONE_DATAGRAM, flags, true, connected);
            if r.as_ref()
                .is_err_and(|e| self.earlier_datagrams_error(fd, e))
            {
                // An earlier datagram's ICMP error, reported (and cleared) by this call.
                self.drain_errors(st);
                self.counts.sent();
                r = sys::send_batch(fd, &buf, pkts, &ONE_DATAGRAM, flags, true, connected);
            }
            match r {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    st.send_buffer_full += 1;
                    st.urgent_left.push(Pending {
                        header: buf[..t.len].to_vec(),
                        pkt,
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, dest = %t.dest, "send failed; packet dropped");
                    if let Some(errno) = lasting_send_error(&e) {
                        self.fail_unsendable(st, dest, errno);
                    }
                }
                Ok(_) => {}
            }
        }
    }

    /// Before `tx` goes out: connect a fresh client socket to its first peer, disconnect
    /// one about to send elsewhere, or whose peer let an RPC time out. Returns the peer
    /// that may be sent to without an address.
    ///
    /// (A connected socket keeps the source address it connected with. When the host's
    /// routes change under it, say to another uplink with the old one down, its sends
    /// still succeed, from an address the answers cannot reach, and every later RPC timed
    /// out: a tokio client lost all of them until it was made again. Unconnected, each
    /// send chooses its route and source afresh.)
    pub(super) fn settle_peer(&self, st: &mut State, tx: &Tx) -> Option<SocketAddr> {
        let mut dests = tx.pkts.iter().map(|p| p.dest);
        let mut pending = tx.pending.iter().map(|p| p.pkt.dest);
        match st.udp_peer {
            UdpPeer::Never | UdpPeer::Many => None,
            UdpPeer::Connected(peer) => {
                if !st.peer_timed_out && dests.all(|d| d == peer) && pending.all(|d| d == peer) {
                    Some(peer)
                } else {
                    self.unconnect(st);
                    None
                }
            }
            UdpPeer::Fresh => {
                let first = dests.next()?;
                if dests.all(|d| d == first) && pending.all(|d| d == first) {
                    match sys::udp_connect(self.tx_fd(), Some(&first)) {
                        Ok(()) => {
                            st.udp_peer = UdpPeer::Connected(first);
                            return Some(first);
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot connect the UDP socket"),
                    }
                }
                st.udp_peer = UdpPeer::Many;
                None
            }
        }
    }

    /// Disconnect a connected UDP socket for good (see [`UdpPeer`]). Under the lock, so
    /// that no send without an address (made only under it) is under way.
    pub(crate) fn unconnect(&self, st: &mut State) {
        if let UdpPeer::Connected(peer) = st.udp_peer {
            st.udp_peer = UdpPeer::Many;
            if let Err(e) = sys::udp_connect(self.tx_fd(), None) {
                tracing::warn!(error = %e, %peer, "cannot disconnect the UDP socket");
            }
        }
    }

    /// The kernel refused to send to `dest` with `errno`, which retrying will not cure:
    /// fail the client RPCs to it now, not a timeout later. (Raw IP sends to the address
    /// alone: every client RPC to that address fails.)
    ///
    /// A connected socket first disconnects for good instead: it keeps the source address
    /// and route it connected with, which a change of the host's addresses or routes can
    /// leave unusable while an unconnected send would choose afresh (a client bound to a
    /// wildcard address whose address was removed failed every call until it was made
    /// again). The packets are lost like any; the protocol's retransmissions send them
    /// again, addressed, and an error that persists then fails the RPCs.
    pub(super) fn fail_unsendable(&self, st: &mut State, dest: SocketAddr, errno: i32) {
        if matches!(st.udp_peer, UdpPeer::Connected(_)) {
            tracing::debug!(%dest, errno, "cannot send on the connected socket; disconnecting");
            self.unconnect(st);
            return;
        }
        let port = match self.io {
            Io::Udp { .. } => Some(dest.port()),
            Io::Raw { .. } => None,
        };
        let failed =
            st.ep
                .fail_client_rpcs_to(dest.ip(), port, homa_core::RpcError::Unreachable(errno));
        if failed > 0 {
            tracing::debug!(%dest, errno, failed, "cannot send; RPCs failed");
        }
    }

    /// Whether a send's error `e` was an earlier datagram's: with `IP_RECVERR` the kernel
    /// queues an ICMP error and also reports it on the socket's next call, whatever that
    /// call sends and to whom, and the send did not go. So a send to a healthy peer can
    /// fail with "no route to host" because another peer's router said so: retried, it
    /// goes. Port unreachable (`ECONNREFUSED`) is never a send's own; any other error is
    /// an earlier one's when the error queue holds one (the queue is read, and the
    /// errors acted on, by [`drain_errors`](Self::drain_errors)). A send that fails again
    /// right after is failing for its own reason: the report was cleared by the first.
    fn earlier_datagrams_error(&self, fd: RawFd, e: &std::io::Error) -> bool {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => true,
            Some(libc::EAGAIN | libc::EINTR) | None => false,
            Some(_) => match &self.io {
                Io::Udp { .. } => sys::error_queued(fd),
                // The shared socket's reader may have read the queue already: retried
                // (at most 4 times in a row), an error that is the send's own comes back.
                Io::Raw { .. } => true,
            },
        }
    }

    pub(super) fn nonblocking_tx(&self) -> bool {
        self.flavor != Flavor::Blocking
    }
}

/// Cut `pkts` into send groups: runs of packets to the same destination at the same
/// priority, all of one size (the last may be shorter), become single GSO sends when
/// `gso` is on, except to the destinations in `no_gso`; everything else goes one
/// datagram per group.
pub(super) fn group(pkts: &[TxPacket], gso: bool, no_gso: &[IpAddr], out: &mut Vec<TxGroup>) {
    out.clear();
    let mut i = 0;
    while i < pkts.len() {
        let first = &pkts[i];
        let size = first.wire_len();
        let mut j = i + 1;
        let mut total = size;
        let run = gso && (no_gso.is_empty() || !no_gso.contains(&first.dest.ip()));
        while run && j < pkts.len() && j - i < MAX_GSO_SEGMENTS {
            let (m, prev) = (&pkts[j], &pkts[j - 1]);
            if m.dest != first.dest
                || m.tos != first.tos
                || m.src != first.src
                || prev.wire_len() != size
                || m.wire_len() > size
                || total + m.wire_len() > MAX_GSO_BYTES
            {
                break;
            }
            total += m.wire_len();
            j += 1;
        }
        let count = j - i;
        out.push(TxGroup {
            first: i,
            count,
            segment: if count > 1 { size as u16 } else { 0 },
        });
        i = j;
    }
}

/// The error number of a send error that says packets to that destination cannot go
/// out at all for now (no route, the path's MTU, an unusable address), as opposed to a
/// passing one (a full buffer, a firewall that drops some packets), which Homa's
/// retransmissions ride out.
pub(super) fn lasting_send_error(e: &std::io::Error) -> Option<i32> {
    let errno = e.raw_os_error()?;
    [
        libc::ENETUNREACH,
        libc::EHOSTUNREACH,
        libc::ENETDOWN,
        libc::EMSGSIZE,
        libc::EADDRNOTAVAIL,
        libc::EAFNOSUPPORT,
        libc::EACCES,
    ]
    .contains(&errno)
    .then_some(errno)
}
