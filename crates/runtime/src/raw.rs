//! Raw IP protocol 146: one raw socket per address family and process, shared by every
//! raw-mode Homa socket of the process.
//!
//! The kernel gives a copy of every protocol-146 packet addressed to the host to every raw
//! socket of that protocol, so each process sees all Homa traffic. A reader thread per
//! family takes the packets, finds the Homa socket by destination port in a process-wide
//! registry, and feeds its engine. A classic BPF filter on the raw socket, rewritten
//! whenever the process's set of ports changes, makes the kernel drop the packets for
//! other processes' ports before copying them to this one: without it, a host running a
//! raw-mode client and a raw-mode server in two processes did all the receive work twice,
//! and on a 2-core testbed that halved what each could carry.
//!
//! **Port uniqueness per host.** Each raw-mode Homa socket also binds a UDP socket to the
//! same address and port and keeps it open for its lifetime (it reads nothing from it).
//! The kernel grants an (address, port) to one UDP socket only, so two processes using
//! this runtime (in UDP or raw mode) can never hold the same Homa address and port; a
//! process silently drops raw packets for addresses and ports it has not reserved, and
//! they reach the process that has. As with UDP, sockets on one port and different
//! addresses can coexist (in one process or several): a packet goes to the socket bound
//! to its destination address, else to the one bound to the wildcard address. The
//! exception the scheme cannot see is a port used by the Linux Homa kernel module itself,
//! which has its own port space.

use crate::sys::{self, RxMeta, IPPROTO_HOMA, RX_SLOT};
use bytes::BytesMut;
use homa_core::RpcError;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Packets the reader takes per receive call. More than a UDP driver's batch: the one
/// reader serves every raw-mode socket of the process, and when it falls behind each call
/// also costs a lock, an engine step and a send round per socket (on a 2-core testbed
/// under load, 32 instead of 8 carried about 5% more and cut the median slowdown of short
/// messages by a seventh). An idle reader still returns with the first packet.
const RX_BATCH: usize = 32;

/// A Homa socket as the reader sees it: what takes the packets for the port it holds.
/// The runtime's socket state implements it; the reader knows it by this trait alone, so
/// that this file sits below the socket code rather than beside it in a circle.
pub(crate) trait RawReceiver: Send + Sync {
    /// Feed `packets` (sender, Homa packet), all for this socket's port, to its engine.
    fn receive_raw(&self, packets: &mut dyn Iterator<Item = (SocketAddr, Option<IpAddr>, &[u8])>);
    /// What ICMP said of this socket's RPCs: noted for it ([`Noted`]) by the thread that
    /// read the error queue, which may hold another socket's lock, or this one's.
    fn noted(&self) -> &Noted;
    /// Act on what was noted now (called by the reader, which holds no socket's lock).
    fn act_on_noted(&self);
}

/// A host's answer, through ICMP, that a socket's client RPCs to it cannot be served:
/// those to `port` (all of them: `None`) of `ip` fail with `why`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unreachable {
    pub ip: IpAddr,
    pub port: Option<u16>,
    pub why: RpcError,
}

/// [`Unreachable`] answers waiting for their socket, which takes them at its next input
/// or tick: the thread that reads them may hold that socket's lock already. At most
/// [`MAX_NOTED`] wait: a flood of forged answers about distinct peers, between two ticks
/// of an idle socket, must not grow it without bound (those beyond are dropped, and
/// their RPCs, if any, time out).
#[derive(Debug, Default)]
pub(crate) struct Noted {
    any: AtomicBool,
    list: Mutex<Vec<Unreachable>>,
}

/// Most answers a socket keeps waiting (see [`Noted`]).
const MAX_NOTED: usize = 64;

impl Noted {
    fn push(&self, u: Unreachable) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() < MAX_NOTED && !list.contains(&u) {
            list.push(u);
        }
        self.any.store(true, Ordering::Release);
    }

    /// What was noted since the last take (nothing, after one plain load, almost always:
    /// every input and tick of every socket asks).
    pub(crate) fn take(&self) -> Vec<Unreachable> {
        if !self.any.load(Ordering::Relaxed) || !self.any.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut *self.list.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }
}

/// A socket holding a port: the address it is bound to (`None`: any), and the socket.
type Holder = (Option<IpAddr>, Weak<dyn RawReceiver>);

/// The raw socket of one address family.
pub(crate) struct RawFamily {
    sock: socket2::Socket,
    v6: bool,
    /// By port: the sockets holding it, with the address each is bound to (`None`: the
    /// wildcard address).
    ports: Mutex<HashMap<u16, Vec<Holder>>>,
    /// The source address the kernel picks toward each destination, and when it was
    /// looked up (the sender's clock, nanoseconds).
    sources: Mutex<HashMap<IpAddr, (IpAddr, u64)>>,
    /// Packets too short to carry a port, or for ports no socket of this process holds.
    pub(crate) unclaimed: AtomicU64,
    /// No socket uses it any more and it has left [`FAMILIES`]: its reader ends.
    retired: AtomicBool,
}

/// How long a looked-up source address is trusted: the host's addresses can change
/// under a wildcard-bound socket, and the checksum must follow (it covers the source).
const SOURCE_TTL_NANOS: u64 = 1_000_000_000;

/// The open raw sockets, by (network namespace, IPv6?). A raw socket receives in the
/// namespace of the thread that made it, so a process whose threads bind sockets in
/// several namespaces (with setns) needs one per namespace. Each goes, with its reader
/// thread, when the last Homa socket using it closes (see
/// [`RawFamily::retire_if_idle`]): a raw socket and its reader hold their namespace.
static FAMILIES: Mutex<Vec<(FamilyKey, Arc<RawFamily>)>> = Mutex::new(Vec::new());

/// (network namespace inode, IPv6?).
type FamilyKey = (u64, bool);

/// The calling thread's network namespace, as the inode of its namespace file (0 if it
/// cannot be read: then all threads share one entry, as before namespaces were told apart).
fn current_netns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino())
}

/// The process's raw socket for IPv4 or IPv6, opened (with its reader thread) on first
/// use. Fails with `PermissionDenied` without `CAP_NET_RAW`.
pub(crate) fn family(v6: bool) -> io::Result<Arc<RawFamily>> {
    let key = (current_netns(), v6);
    let mut fams = FAMILIES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, f)) = fams.iter().find(|(k, _)| *k == key) {
        return Ok(f.clone());
    }
    let domain = if v6 {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let sock = socket2::Socket::new(
        domain,
        socket2::Type::RAW.cloexec(),
        Some(socket2::Protocol::from(IPPROTO_HOMA)),
    )?;
    sys::size_buffers(
        &sock,
        (16 << 20, 16 << 20),
        "the raw-IP socket this process's Homa sockets share",
        "none: it asks for 16 MiB",
    );
    // Nothing until a port is registered.
    sys::attach_port_filter(sock.as_raw_fd(), v6, &[])?;
    if v6 {
        let fd = sock.as_raw_fd();
        // Where each packet arrived (IPv4 packets come with their header, which says).
        sys::setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        // An unconnected IPv6 raw socket learns a path's MTU from Packet Too Big only
        // with IPV6_RECVERR (IPv4's learns it regardless): without, packets longer than
        // a smaller hop's MTU were dropped there for ever. The errors it queues are read
        // by `drain_errors` (and the reader below), which acts on the port and protocol
        // unreachables among them; the one each reports on the socket's next call is
        // retried as an earlier datagram's.
        //
        // The IPv4 socket has no IP_RECVERR, so it sees no ICMP error at all: with it,
        // every error about any protocol-146 packet of the host (all of them match an
        // unbound raw socket) is reported on this shared socket's next call, and a flood
        // of forged ones (250,000 a second, in a test) kept its receives and sends
        // failing until RPCs to a healthy server timed out.
        sys::setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)?;
    }
    let fam = Arc::new(RawFamily {
        sock,
        v6,
        ports: Mutex::new(HashMap::new()),
        sources: Mutex::new(HashMap::new()),
        unclaimed: AtomicU64::new(0),
        retired: AtomicBool::new(false),
    });
    let reader = fam.clone();
    std::thread::Builder::new()
        .name(format!("homa-raw{}", if v6 { 6 } else { 4 }))
        .spawn(move || reader.read_loop())?;
    fams.push((key, fam.clone()));
    Ok(fam)
}

impl RawFamily {
    pub(crate) fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Read what the socket's error queue holds (at most a batch), noting for the sockets
    /// whose packets drew them the answers that say their RPCs cannot be served (see
    /// [`unreachable`]); Packet Too Big and the like, which the kernel has already acted
    /// on, are dropped. Returns how many were read. The sockets act on what was noted at
    /// their next input or tick, or at once through [`act_on_noted`](Self::act_on_noted).
    pub(crate) fn drain_errors(&self) -> usize {
        let mut read = 0;
        while read < 64 {
            let Ok(Some(e)) = sys::recv_error(self.fd()) else {
                break;
            };
            read += 1;
            if let Some((sport, u)) = unreachable(&e) {
                tracing::debug!(target: "homa", ip = %u.ip, port = ?u.port, why = %u.why, "ICMP: unreachable");
                for sock in self.holders(Some(sport)) {
                    sock.noted().push(u);
                }
            }
        }
        read
    }

    /// Have the sockets with answers noted act on them now (the reader, which holds no
    /// socket's lock).
    fn act_on_noted(&self) {
        for sock in self.holders(None) {
            if sock.noted().any() {
                sock.act_on_noted();
            }
        }
    }

    /// The live sockets holding `port` (every port: `None`), taken out of the registry's
    /// lock: the last reference to a socket dropped under it would deadlock.
    fn holders(&self, port: Option<u16>) -> Vec<Arc<dyn RawReceiver>> {
        let ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let live = |h: &Vec<Holder>| {
            h.iter()
                .filter_map(|(_, w)| w.upgrade())
                .collect::<Vec<_>>()
        };
        match port {
            Some(p) => ports.get(&p).map(live).unwrap_or_default(),
            None => ports.values().flat_map(live).collect(),
        }
    }

    pub(crate) fn is_registered(&self, port: u16) -> bool {
        let ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        ports
            .get(&port)
            .is_some_and(|h| h.iter().any(|(_, w)| w.strong_count() > 0))
    }

    /// `sock` holds `port` on address `bound` (`None`: the wildcard address). The UDP
    /// reservation made sure no live socket holds the same pair.
    pub(crate) fn register(&self, port: u16, bound: Option<IpAddr>, sock: Weak<dyn RawReceiver>) {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let holders = ports.entry(port).or_default();
        holders.retain(|(a, w)| *a != bound && w.strong_count() > 0);
        holders.push((bound, sock));
        self.refilter(&ports);
    }

    /// Leave the registry and end the reader if nothing else uses this family: no port
    /// held, and no reference but the registry's, the reader's and the `users` of the
    /// caller (a closing socket's own). A socket about to use it took it from the
    /// registry, under the same lock, so it is either counted here or finds a new one.
    pub(crate) fn retire_if_idle(self: &Arc<Self>, users: usize) {
        let mut fams = FAMILIES.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(self) > 2 + users
            || !self
                .ports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        {
            return;
        }
        fams.retain(|(_, f)| !Arc::ptr_eq(f, self));
        drop(fams);
        self.retired.store(true, Ordering::Release);
        // Wakes the reader from its receive, which then returns nothing (an unconnected
        // socket's shutdown says ENOTCONN, and wakes it all the same).
        let _ = self.sock.shutdown(std::net::Shutdown::Read);
    }

    /// Forget the sockets of `port` that are gone.
    pub(crate) fn unregister(&self, port: u16) {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let Some(holders) = ports.get_mut(&port) else {
            return;
        };
        holders.retain(|(_, w)| w.strong_count() > 0);
        if holders.is_empty() {
            ports.remove(&port);
            self.refilter(&ports);
        }
    }

    /// Have the kernel pass only packets for the ports held (called under the lock, so
    /// filters are installed in the order the port set changed).
    fn refilter(&self, ports: &HashMap<u16, Vec<Holder>>) {
        let mut list: Vec<u16> = ports.keys().copied().collect();
        list.sort_unstable();
        if let Err(e) = sys::attach_port_filter(self.fd(), self.v6, &list) {
            // Correct without it, only slower: unclaimed packets are dropped here.
            tracing::warn!(error = %e, "cannot install the raw socket's port filter");
        }
    }

    /// The source address the kernel will use toward `dest` (for the checksum), found by
    /// connecting a scratch UDP socket, and cached for [`SOURCE_TTL_NANOS`] from `now`
    /// (the sender's clock reading: none is taken per packet here).
    pub(crate) fn source_for(&self, dest: IpAddr, now: homa_core::Time) -> IpAddr {
        let now = now.as_nanos();
        let mut cache = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&(s, at)) = cache.get(&dest) {
            if now.saturating_sub(at) < SOURCE_TTL_NANOS {
                return s;
            }
        }
        let any: IpAddr = if self.v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let src = UdpSocket::bind(SocketAddr::new(any, 0))
            .and_then(|s| {
                s.connect(SocketAddr::new(dest, 9))?;
                s.local_addr()
            })
            .map(|a| a.ip())
            .unwrap_or(any);
        cache.insert(dest, (src, now));
        src
    }

    fn read_loop(self: Arc<Self>) {
        let mut slots: Vec<BytesMut> = (0..RX_BATCH)
            .map(|_| BytesMut::with_capacity(RX_SLOT))
            .collect();
        let mut metas = vec![RxMeta::default(); RX_BATCH];
        // (destination port, sender, local address, slot, packet's range in the slot) of
        // one batch.
        type Entry = (
            u16,
            SocketAddr,
            Option<IpAddr>,
            usize,
            std::ops::Range<usize>,
        );
        let mut batch: Vec<Entry> = Vec::with_capacity(RX_BATCH);
        loop {
            let got = sys::recv_batch(self.fd(), &mut slots, &mut [], &mut metas, false);
            if self.retired.load(Ordering::Acquire) {
                return;
            }
            let n = match got {
                Ok(n) => n,
                Err(e) => {
                    // An ICMP error reported on the call (IPV6_RECVERR): read the queue,
                    // act on it and go on at once (a sender may have read the queue
                    // first). Anything else: say so, and pause.
                    if self.drain_errors() == 0 && !reported_icmp(&e) {
                        tracing::warn!(error = %e, "raw receive failed");
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    self.act_on_noted();
                    continue;
                }
            };
            batch.clear();
            for (i, m) in metas[..n].iter().enumerate() {
                let slot = &slots[i][..];
                match self.strip(m, slot) {
                    Some((from, to, homa)) if homa.len() >= 4 => {
                        let start = homa.as_ptr() as usize - slot.as_ptr() as usize;
                        let dport = u16::from_be_bytes([homa[2], homa[3]]);
                        batch.push((dport, from, to, i, start..start + homa.len()));
                    }
                    _ => {
                        self.unclaimed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // One lock, one engine step and one flush per socket per batch, not per
            // packet: under load the per-packet version fell behind and the kernel
            // dropped packets from the socket's full receive queue.
            batch.sort_by_key(|p| p.0);
            for group in batch.chunk_by(|a, b| a.0 == b.0) {
                self.dispatch(
                    group[0].0,
                    group
                        .iter()
                        .map(|(_, from, to, i, r)| (*from, *to, &slots[*i][r.clone()])),
                );
            }
        }
    }

    /// The sender, the local address, and the Homa packet: IPv4 raw sockets deliver the
    /// IP header too (its IHL gives its length, its total length the packet's end, and it
    /// names both addresses); IPv6 ones do not (the local address comes as
    /// `IPV6_PKTINFO`).
    fn strip<'a>(
        &self,
        m: &RxMeta,
        slot: &'a [u8],
    ) -> Option<(SocketAddr, Option<IpAddr>, &'a [u8])> {
        if self.v6 {
            // (The whole address: a link-local sender's scope is the interface to answer on.)
            return Some((m.from?, m.to, slot));
        }
        if slot.len() < 20 || slot[0] >> 4 != 4 {
            return None;
        }
        let ihl = (slot[0] & 0x0f) as usize * 4;
        let total = u16::from_be_bytes([slot[2], slot[3]]) as usize;
        let end = total.min(slot.len());
        if ihl < 20 || ihl > end {
            return None;
        }
        let src = Ipv4Addr::new(slot[12], slot[13], slot[14], slot[15]);
        let dst = Ipv4Addr::new(slot[16], slot[17], slot[18], slot[19]);
        let from = SocketAddr::new(IpAddr::V4(src), 0);
        Some((from, Some(IpAddr::V4(dst)), &slot[ihl..end]))
    }

    /// Feeds `packets` (all for port `dport`) to the sockets holding that port: each to
    /// the one bound to its destination address, else to the one bound to the wildcard
    /// address (as the kernel delivers UDP). A packet no socket takes (sent to another
    /// of the host's addresses, which another process may hold) is dropped, counted as
    /// unclaimed.
    fn dispatch<'a>(
        &self,
        dport: u16,
        packets: impl ExactSizeIterator<Item = (SocketAddr, Option<IpAddr>, &'a [u8])>,
    ) {
        let holders: Vec<(Option<IpAddr>, Arc<dyn RawReceiver>)> = {
            let ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
            ports.get(&dport).map_or_else(Vec::new, |h| {
                h.iter()
                    .filter_map(|(a, w)| Some((*a, w.upgrade()?)))
                    .collect()
            })
        };
        // Which holder takes a packet sent to `to` (`None`: the address is unknown, which
        // only a lone holder may take).
        let owner = |to: Option<IpAddr>| match to {
            Some(_) => holders
                .iter()
                .position(|(a, _)| a.is_some() && *a == to)
                .or_else(|| holders.iter().position(|(a, _)| a.is_none())),
            None => (holders.len() == 1).then_some(0),
        };
        // The common case, one socket on the port: no list of packets to sort out.
        if let [(bound, sock)] = &holders[..] {
            let total = packets.len();
            let mut taken = 0;
            let mut mine = packets
                .filter(|p| p.1.is_none() || bound.is_none() || p.1 == *bound)
                .inspect(|_| taken += 1);
            sock.receive_raw(&mut mine);
            drop(mine);
            self.unclaimed
                .fetch_add((total - taken) as u64, Ordering::Relaxed);
            return;
        }
        let packets: Vec<_> = packets.map(|p| (owner(p.1), p)).collect();
        let mut taken = 0;
        for (i, (_, sock)) in holders.iter().enumerate() {
            let mut mine = packets
                .iter()
                .filter(|(o, _)| *o == Some(i))
                .map(|&(_, p)| p)
                .peekable();
            if mine.peek().is_some() {
                let mut counted = mine.inspect(|_| taken += 1);
                sock.receive_raw(&mut counted);
            }
        }
        self.unclaimed
            .fetch_add((packets.len() - taken) as u64, Ordering::Relaxed);
    }
}

/// Whether `e` is what an ICMPv6 error reported on a call looks like (the errors the
/// kernel converts them to).
fn reported_icmp(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EPROTO
                | libc::EMSGSIZE
                | libc::EACCES
                | libc::ETIMEDOUT
        )
    )
}

/// The socket (by its port) and the RPCs an ICMP error says cannot be served, as the
/// Linux module reads them: port unreachable (what the module answers a packet for a port
/// it has no socket on) fails the RPCs to that port with `NoSuchSocket`, as the module's
/// own clients fail with ENOTCONN; protocol unreachable (a host running no Homa at all)
/// fails every RPC to the host with `Unreachable(EPROTONOSUPPORT)`, the module's error
/// for it. Anything else (a router's host unreachable, which may pass, Packet Too Big):
/// `None`, the RPCs go on and time out if nothing comes.
pub(crate) fn unreachable(e: &sys::QueuedError) -> Option<(u16, Unreachable)> {
    let (sport, dport) = e.ports?;
    let ip = e.dest?.ip();
    let (port, why) = if e.port_unreachable() {
        (Some(dport), RpcError::NoSuchSocket)
    } else if e.protocol_unreachable() {
        (None, RpcError::Unreachable(libc::EPROTONOSUPPORT))
    } else {
        return None;
    };
    Some((sport, Unreachable { ip, port, why }))
}
