//! Sending: connected or not, whole batches with `sendmmsg`, runs of same-size packets as
//! UDP GSO sends, each packet with its priority in an `IP_TOS`/`IPV6_TCLASS` control message.

use super::*;

/// One datagram to send: a header (`arena[start..start + len]`) and a payload slice of the
/// message (sent from where it is, by a vectored send) to `dest` at IP TOS `tos`.
#[derive(Debug, Clone)]
pub(crate) struct TxPacket {
    pub dest: SocketAddr,
    pub start: usize,
    pub len: usize,
    pub payload: bytes::Bytes,
    pub tos: u8,
    /// Source address to put in the IP header (raw sockets shared by several bound
    /// addresses); `None` lets the kernel choose.
    pub src: Option<IpAddr>,
}

impl TxPacket {
    /// Bytes on the wire (Homa header and payload).
    pub fn wire_len(&self) -> usize {
        self.len + self.payload.len()
    }
}

/// Packets `first..first + count` sent as one datagram, or (with `segment > 0`) as one
/// UDP GSO send that the kernel cuts into datagrams of `segment` bytes (the last may be
/// shorter): same destination, TOS and source, all of one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TxGroup {
    pub first: usize,
    pub count: usize,
    pub segment: u16,
}

/// Connect the UDP socket `fd` to `peer`, or undo that (`None`: `AF_UNSPEC`). A connected
/// socket sends without a route lookup per datagram, but receives only from its peer.
pub(crate) fn udp_connect(fd: RawFd, peer: Option<&SocketAddr>) -> io::Result<()> {
    let mut name = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let len = match peer {
        Some(a) => write_sockaddr(a, &mut name),
        None => {
            // SAFETY: zeroed storage is a valid sockaddr_storage; only the family is set.
            unsafe { (*name.as_mut_ptr()).ss_family = libc::AF_UNSPEC as libc::sa_family_t };
            std::mem::size_of::<libc::sockaddr_storage>() as socklen_t
        }
    };
    // SAFETY: `name` is initialised for `len` bytes and outlives the call.
    let r = unsafe { libc::connect(fd, name.as_ptr().cast::<libc::sockaddr>(), len) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `flags` of a send call: `nonblocking` (`MSG_DONTWAIT`), and `confirm`: every
/// destination has been heard from just now, so the kernel may take its neighbour
/// (ARP or NDP) entry as confirmed (`MSG_CONFIRM`), as it does for TCP when an
/// acknowledgement arrives, and need not probe it.
pub(crate) fn send_flags(nonblocking: bool, confirm: bool) -> libc::c_int {
    let mut flags = 0;
    if nonblocking {
        flags |= libc::MSG_DONTWAIT;
    }
    if confirm {
        flags |= libc::MSG_CONFIRM;
    }
    flags
}

/// Send `groups` of `pkts` with one `sendmsg`/`sendmmsg` with `flags` (see
/// [`send_flags`]). Returns how many groups were sent (at least one, or an error about
/// the first). With `tos_cmsg`, each datagram carries its TOS in a control message;
/// without, the caller has set it on the socket (cheaper per packet when it rarely
/// changes).
pub(crate) fn send_batch(
    fd: RawFd,
    arena: &[u8],
    pkts: &[TxPacket],
    groups: &[TxGroup],
    flags: libc::c_int,
    tos_cmsg: bool,
    connected: Option<SocketAddr>,
) -> io::Result<usize> {
    if let [g] = groups {
        let p = &pkts[g.first];
        if g.count == 1 && p.payload.is_empty() && p.src.is_none() && !tos_cmsg {
            let dest = (connected != Some(p.dest)).then_some(&p.dest);
            return send_one(fd, &arena[p.start..p.start + p.len], dest, flags);
        }
    }
    // Every group's iovecs (two per packet) must fit in the one array below.
    let mut n = 0;
    let mut iov_count = 0;
    for g in groups.iter().take(MAX_BATCH) {
        if iov_count + 2 * g.count > 2 * MAX_BATCH {
            break;
        }
        iov_count += 2 * g.count;
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    let mut names: [MaybeUninit<libc::sockaddr_storage>; MAX_BATCH] =
        [const { MaybeUninit::uninit() }; MAX_BATCH];
    // Only the entries used are initialised: zeroing all 64 control buffers (8 KiB) on
    // every call showed in profiles of small RPCs.
    let mut ctrl: [MaybeUninit<CmsgBuf>; MAX_BATCH] = [const { MaybeUninit::uninit() }; MAX_BATCH];
    let mut iovs: [MaybeUninit<libc::iovec>; 2 * MAX_BATCH] =
        [const { MaybeUninit::uninit() }; 2 * MAX_BATCH];
    let mut hdrs: [MaybeUninit<libc::mmsghdr>; MAX_BATCH] =
        [const { MaybeUninit::uninit() }; MAX_BATCH];
    // Where each header's iovecs start: the pointers are set once all iovecs are
    // written, from one pointer to the whole array (a pointer to one element may not be
    // read past that element).
    let mut iov_starts = [0usize; MAX_BATCH];
    let mut next_iov = 0;
    for (i, g) in groups[..n].iter().enumerate() {
        let first = &pkts[g.first];
        // To the peer the socket is connected to: no address, so no route lookup.
        let name_len = if connected == Some(first.dest) {
            0
        } else {
            write_sockaddr(&first.dest, &mut names[i])
        };
        let iov_start = next_iov;
        next_iov += gather(
            arena,
            &pkts[g.first..g.first + g.count],
            &mut iovs[iov_start..],
        );
        let mut w = CmsgWriter {
            buf: ctrl[i].write([0u64; CMSG_BUF / 8]),
            len: 0,
        };
        match first.dest {
            _ if !tos_cmsg => {}
            SocketAddr::V4(_) => w.push(libc::IPPROTO_IP, libc::IP_TOS, first.tos as c_int),
            SocketAddr::V6(_) => w.push(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, first.tos as c_int),
        }
        if g.segment > 0 {
            w.push(SOL_UDP, UDP_SEGMENT, g.segment);
        }
        match first.src {
            Some(IpAddr::V4(src)) => w.push(
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from_ne_bytes(src.octets()),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                },
            ),
            Some(IpAddr::V6(src)) => w.push(
                libc::IPPROTO_IPV6,
                libc::IPV6_PKTINFO,
                libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: src.octets(),
                    },
                    ipi6_ifindex: 0,
                },
            ),
            None => {}
        }
        let ctrl_len = w.len;
        // SAFETY: msghdr is plain data; all-zero is a valid value that we then fill in.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        if name_len > 0 {
            msg.msg_name = names[i].as_mut_ptr().cast::<c_void>();
            msg.msg_namelen = name_len;
        }
        iov_starts[i] = iov_start;
        msg.msg_iovlen = (next_iov - iov_start) as _;
        if ctrl_len > 0 {
            msg.msg_control = ctrl[i].as_mut_ptr().cast::<c_void>();
            msg.msg_controllen = ctrl_len as _;
        }
        hdrs[i].write(libc::mmsghdr {
            msg_hdr: msg,
            msg_len: 0,
        });
    }
    let iov_base = iovs.as_mut_ptr().cast::<libc::iovec>();
    for (hdr, &start) in hdrs[..n].iter_mut().zip(&iov_starts) {
        // SAFETY: the first `n` headers were initialised above, and each one's iovecs
        // (`start..start + msg_iovlen`) lie within `iovs`, all written by now.
        unsafe { hdr.assume_init_mut().msg_hdr.msg_iov = iov_base.add(start) };
    }
    if n == 1 {
        // One datagram (or GSO send): sendmsg is measurably cheaper than sendmmsg.
        loop {
            // SAFETY: header 0 is initialised and points into `names`, `iovs`, `ctrl`,
            // `arena` and the packets' payloads, all alive for the call; the kernel only
            // reads them.
            let r = unsafe { libc::sendmsg(fd, &hdrs[0].assume_init_ref().msg_hdr, flags) };
            if r >= 0 {
                return Ok(1);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    loop {
        // SAFETY: the first `n` headers are initialised and point into `names`, `iovs`,
        // `ctrl`, `arena` and the payloads, which all outlive the call; the kernel reads
        // them and writes only `msg_len`.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                n as u32,
                flags,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Write the iovecs of one send call's packets (`pkts`, headers in `arena`) to the start of
/// `iovs`; returns how many were written (at most two per packet). Byte ranges that
/// continue the previous one are merged into it: packets whose payloads travel inline lie
/// back to back in the arena, so a GSO run of them is one iovec. The kernel walks, checks
/// and copies per iovec, and 64 small ones cost it more than their bytes do.
fn gather(arena: &[u8], pkts: &[TxPacket], iovs: &mut [MaybeUninit<libc::iovec>]) -> usize {
    let mut n = 0;
    // Where the last iovec ends.
    let mut end: *const u8 = std::ptr::null();
    for p in pkts {
        for part in [&arena[p.start..p.start + p.len], &p.payload[..]] {
            if part.is_empty() {
                continue;
            }
            if n > 0 && part.as_ptr() == end {
                // SAFETY: iovecs `..n` were written by this loop.
                unsafe { iovs[n - 1].assume_init_mut().iov_len += part.len() };
            } else {
                iovs[n].write(libc::iovec {
                    iov_base: part.as_ptr() as *mut c_void,
                    iov_len: part.len(),
                });
                n += 1;
            }
            end = part.as_ptr_range().end;
        }
    }
    n
}

/// One datagram from one contiguous buffer, with no control message: `sendto`, which
/// spares the kernel copying in a `msghdr` and an iovec array (measured on loopback: 0.1 us
/// per send, a tenth of what separates a Homa round trip from the UDP floor).
/// One datagram with `sendto`: to `dest`, or (`None`) to the connected peer.
fn send_one(
    fd: RawFd,
    bytes: &[u8],
    dest: Option<&SocketAddr>,
    flags: libc::c_int,
) -> io::Result<usize> {
    let mut name = MaybeUninit::uninit();
    let name_len = dest.map_or(0, |d| write_sockaddr(d, &mut name));
    let name_ptr = if dest.is_some() {
        name.as_ptr().cast::<libc::sockaddr>()
    } else {
        std::ptr::null()
    };
    loop {
        // SAFETY: `bytes` and `name` (initialised for `name_len` bytes when used) outlive
        // the call, which only reads them.
        let r = unsafe {
            libc::sendto(
                fd,
                bytes.as_ptr().cast::<c_void>(),
                bytes.len(),
                flags,
                name_ptr,
                name_len,
            )
        };
        if r >= 0 {
            return Ok(1);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(start: usize, len: usize, payload: bytes::Bytes) -> TxPacket {
        TxPacket {
            dest: "127.0.0.1:9".parse().unwrap(),
            start,
            len,
            payload,
            tos: 0,
            src: None,
        }
    }

    /// The (offset into `arena` or the payload's own address, length) of each iovec.
    fn gathered(arena: &[u8], pkts: &[TxPacket]) -> Vec<(usize, usize)> {
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; 8];
        let n = gather(arena, pkts, &mut iovs);
        iovs[..n]
            .iter()
            .map(|v| {
                // SAFETY: `gather` wrote the first `n`.
                let v = unsafe { v.assume_init_ref() };
                let base = v.iov_base as usize;
                let off = base.wrapping_sub(arena.as_ptr() as usize);
                (if off < arena.len() { off } else { base }, v.iov_len)
            })
            .collect()
    }

    #[test]
    fn packets_back_to_back_in_the_arena_go_as_one_iovec() {
        let arena = vec![7u8; 1000];
        // Three packets with inline payloads, one after the other: one iovec.
        let run = [
            pkt(0, 156, bytes::Bytes::new()),
            pkt(156, 156, bytes::Bytes::new()),
            pkt(312, 100, bytes::Bytes::new()),
        ];
        assert_eq!(gathered(&arena, &run), vec![(0, 412)]);
        // A gap in the arena starts a new iovec.
        let gap = [
            pkt(0, 156, bytes::Bytes::new()),
            pkt(200, 156, bytes::Bytes::new()),
        ];
        assert_eq!(gathered(&arena, &gap), vec![(0, 156), (200, 156)]);
    }

    #[test]
    fn payloads_sent_from_the_message_keep_their_own_iovecs() {
        let arena = vec![7u8; 1000];
        let body = bytes::Bytes::from(vec![1u8; 3000]);
        let (a, b) = (body.slice(..1500), body.slice(1500..));
        let at = a.as_ptr() as usize;
        let pkts = [pkt(0, 56, a), pkt(56, 56, b)];
        // Header, payload, header, payload: the two headers are adjacent in the arena
        // but a payload lies between them on the wire, and the two payload slices are
        // adjacent in memory but a header lies between them.
        assert_eq!(
            gathered(&arena, &pkts),
            vec![(0, 56), (at, 1500), (56, 56), (at + 1500, 1500)]
        );
        // The bytes the kernel would read, in order, are the packets' bytes.
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; 8];
        let n = gather(&arena, &pkts, &mut iovs);
        let wire: usize = iovs[..n]
            .iter()
            // SAFETY: `gather` wrote the first `n`.
            .map(|v| unsafe { v.assume_init_ref() }.iov_len)
            .sum();
        assert_eq!(wire, pkts.iter().map(TxPacket::wire_len).sum::<usize>());
    }
}
