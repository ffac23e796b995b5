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

/// Send `groups` of `pkts` with one `sendmsg`/`sendmmsg`. Returns how many groups were
/// sent (at least one, or an error about the first). With `tos_cmsg`, each datagram
/// carries its TOS in a control message; without, the caller has set it on the socket
/// (cheaper per packet when it rarely changes).
pub(crate) fn send_batch(
    fd: RawFd,
    arena: &[u8],
    pkts: &[TxPacket],
    groups: &[TxGroup],
    nonblocking: bool,
    tos_cmsg: bool,
    connected: Option<SocketAddr>,
) -> io::Result<usize> {
    if let [g] = groups {
        let p = &pkts[g.first];
        if g.count == 1 && p.payload.is_empty() && p.src.is_none() && !tos_cmsg {
            let dest = (connected != Some(p.dest)).then_some(&p.dest);
            return send_one(fd, &arena[p.start..p.start + p.len], dest, nonblocking);
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
        for p in &pkts[g.first..g.first + g.count] {
            let header = &arena[p.start..p.start + p.len];
            iovs[next_iov].write(libc::iovec {
                iov_base: header.as_ptr() as *mut c_void,
                iov_len: header.len(),
            });
            next_iov += 1;
            if !p.payload.is_empty() {
                iovs[next_iov].write(libc::iovec {
                    iov_base: p.payload.as_ptr() as *mut c_void,
                    iov_len: p.payload.len(),
                });
                next_iov += 1;
            }
        }
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
    let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
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

/// One datagram from one contiguous buffer, with no control message: `sendto`, which
/// spares the kernel copying in a `msghdr` and an iovec array (measured on loopback: 0.1 us
/// per send, a tenth of what separates a Homa round trip from the UDP floor).
/// One datagram with `sendto`: to `dest`, or (`None`) to the connected peer.
fn send_one(
    fd: RawFd,
    bytes: &[u8],
    dest: Option<&SocketAddr>,
    nonblocking: bool,
) -> io::Result<usize> {
    let mut name = MaybeUninit::uninit();
    let name_len = dest.map_or(0, |d| write_sockaddr(d, &mut name));
    let name_ptr = if dest.is_some() {
        name.as_ptr().cast::<libc::sockaddr>()
    } else {
        std::ptr::null()
    };
    let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
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
