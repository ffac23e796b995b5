//! The socket boundary: every system call the runtime makes beyond what `std` and
//! `socket2` offer, and every `unsafe` block of the crate.
//!
//! Batching (`sendmmsg`/`recvmmsg`), per-packet priority (an `IP_TOS`/`IPV6_TCLASS`
//! control message on every datagram), UDP GSO (`UDP_SEGMENT`) and GRO (`UDP_GRO`),
//! ICMP errors (`IP_RECVERR`), `ppoll`, `eventfd`, `timerfd` and interface discovery.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use bytes::BytesMut;
use libc::{c_int, c_void, socklen_t};

/// UDP GSO (`UDP_SEGMENT`) needs Linux 4.18, GRO (`UDP_GRO`) 5.0.
pub(crate) use libc::{SOL_UDP, UDP_GRO, UDP_SEGMENT};
/// IP protocol number of Homa.
pub(crate) const IPPROTO_HOMA: c_int = 146;
/// Most datagrams one `sendmmsg`/`recvmmsg` call handles.
pub(crate) const MAX_BATCH: usize = 64;
/// Most segments one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`).
pub(crate) const MAX_GSO_SEGMENTS: usize = 64;
/// Most bytes one GSO send may carry (it must fit one IP packet's length field).
pub(crate) const MAX_GSO_BYTES: usize = 65_000;
/// Receive slot size: a whole UDP datagram, a GRO aggregate, or a raw IPv4 packet.
pub(crate) const RX_SLOT: usize = 65_536;

/// Room for the control messages of one datagram (TOS + GSO size + PKTINFO, or GRO + TOS).
const CMSG_BUF: usize = 128;
type CmsgBuf = [u64; CMSG_BUF / 8];

fn cvt(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Nanoseconds of `CLOCK_MONOTONIC` (the clock `Instant` and `timerfd` use).
pub(crate) fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Whether a datagram with a payload waits in the socket's receive queue (`FIONREAD`
/// gives the size of the first one on a UDP socket).
pub(crate) fn input_queued(fd: RawFd) -> bool {
    let mut n: c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    r == 0 && n > 0
}

/// Set an integer socket option.
pub(crate) fn setsockopt_int(fd: RawFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its exact size is passed; the kernel only reads it.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const c_int).cast::<c_void>(),
            size_of::<c_int>() as socklen_t,
        )
    })
    .map(drop)
}

/// Read an integer socket option.
pub(crate) fn getsockopt_int(fd: RawFd, level: c_int, name: c_int) -> io::Result<c_int> {
    let mut value: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` holds the buffer's size.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut c_int).cast::<c_void>(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// Ask for socket buffers of these sizes, past the sysctl limits when privileged.
pub(crate) fn size_buffers(sock: &socket2::Socket, rcv: usize, snd: usize) {
    let fd = sock.as_raw_fd();
    let clamp = |v: usize| v.min(i32::MAX as usize / 2) as i32;
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, clamp(rcv)).is_err() {
        let _ = sock.set_recv_buffer_size(rcv);
    }
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, clamp(snd)).is_err() {
        let _ = sock.set_send_buffer_size(snd);
    }
}

// ---------------------------------------------------------------------- addresses

fn write_sockaddr(addr: &SocketAddr, out: &mut MaybeUninit<libc::sockaddr_storage>) -> socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { out.as_mut_ptr().cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>() as socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { out.as_mut_ptr().cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>() as socklen_t
        }
    }
}

/// The address the kernel wrote into `storage`: `None` for a family other than IPv4 and
/// IPv6, or a length too short for it.
///
/// # Safety
/// The first `len` bytes of `storage` must be initialised (the kernel wrote an address of
/// `len` bytes there). Nothing past them is read.
unsafe fn read_sockaddr(
    storage: &MaybeUninit<libc::sockaddr_storage>,
    len: socklen_t,
) -> Option<SocketAddr> {
    // The kernel reports an address's full length even if it wrote only the first part.
    let len = (len as usize).min(size_of::<libc::sockaddr_storage>());
    if len < size_of::<libc::sa_family_t>() {
        return None;
    }
    let p = storage.as_ptr();
    // SAFETY: `ss_family` is the first field, within the `len` initialised bytes.
    let family = unsafe { std::ptr::addr_of!((*p).ss_family).read() };
    match family as c_int {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: sockaddr_storage is aligned for every address type, and the
            // sockaddr_in's bytes are all among the `len` initialised ones.
            let sin = unsafe { p.cast::<libc::sockaddr_in>().read() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { p.cast::<libc::sockaddr_in6>().read() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------- control messages

/// Appends control messages to a zeroed, 8-byte-aligned buffer.
struct CmsgWriter<'a> {
    buf: &'a mut CmsgBuf,
    len: usize,
}

impl CmsgWriter<'_> {
    fn push<T: Copy>(&mut self, level: c_int, ty: c_int, value: T) {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(size_of::<T>() as u32) as usize,
                libc::CMSG_LEN(size_of::<T>() as u32) as usize,
            )
        };
        assert!(self.len + space <= CMSG_BUF, "control buffer too small");
        // SAFETY: the header and its data lie within `buf` (checked just above); `buf` is
        // 8-byte aligned and `len` is a multiple of CMSG_SPACE's alignment, so the header is
        // aligned; CMSG_DATA points just past the header, inside the same space; the data is
        // written unaligned because control data has no alignment guarantee for `T`.
        unsafe {
            let hdr = self
                .buf
                .as_mut_ptr()
                .cast::<u8>()
                .add(self.len)
                .cast::<libc::cmsghdr>();
            (*hdr).cmsg_level = level;
            (*hdr).cmsg_type = ty;
            (*hdr).cmsg_len = len as _;
            libc::CMSG_DATA(hdr).cast::<T>().write_unaligned(value);
        }
        self.len += space;
    }
}

// ---------------------------------------------------------------------- batched send

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

// ---------------------------------------------------------------------- batched receive

/// What `recv_batch` learnt about one received datagram.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RxMeta {
    pub from: Option<SocketAddr>,
    /// GRO segment size when several datagrams were coalesced; 0 otherwise.
    pub segment: usize,
    /// The datagram did not fit its slot.
    pub truncated: bool,
}

/// Where one datagram is received: the spare capacity of `slot`, emptied first, up to
/// `RX_SLOT` bytes.
fn slot_iovec(slot: &mut BytesMut) -> libc::iovec {
    slot.clear();
    let spare = slot.spare_capacity_mut();
    libc::iovec {
        iov_base: spare.as_mut_ptr().cast::<c_void>(),
        iov_len: spare.len().min(RX_SLOT),
    }
}

/// Receive up to `metas.len()` datagrams, one into each of `slots` (each emptied first and
/// given the received length; a slot should have `RX_SLOT` bytes of capacity). Returns
/// how many (0 when nothing is waiting and `nonblocking`).
pub(crate) fn recv_batch(
    fd: RawFd,
    slots: &mut [BytesMut],
    metas: &mut [RxMeta],
    nonblocking: bool,
) -> io::Result<usize> {
    let n = metas.len().min(MAX_BATCH).min(slots.len());
    if n == 0 {
        return Ok(0);
    }
    let mut names: [MaybeUninit<libc::sockaddr_storage>; MAX_BATCH] =
        [const { MaybeUninit::uninit() }; MAX_BATCH];
    // The kernel writes the control data and says how much (msg_controllen); nothing
    // past that is read, so these buffers need no zeroing.
    let mut ctrl: [MaybeUninit<CmsgBuf>; MAX_BATCH] = [const { MaybeUninit::uninit() }; MAX_BATCH];
    let mut iovs: [MaybeUninit<libc::iovec>; MAX_BATCH] =
        [const { MaybeUninit::uninit() }; MAX_BATCH];
    let mut hdrs: [MaybeUninit<libc::mmsghdr>; MAX_BATCH] =
        [const { MaybeUninit::uninit() }; MAX_BATCH];
    for i in 0..n {
        iovs[i].write(slot_iovec(&mut slots[i]));
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = names[i].as_mut_ptr().cast::<c_void>();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as socklen_t;
        msg.msg_iov = iovs[i].as_mut_ptr();
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl[i].as_mut_ptr().cast::<c_void>();
        msg.msg_controllen = CMSG_BUF as _;
        hdrs[i].write(libc::mmsghdr {
            msg_hdr: msg,
            msg_len: 0,
        });
    }
    // Blocking: return as soon as one datagram is there (without MSG_WAITFORONE,
    // recvmmsg would wait for all `n`).
    let flags = if nonblocking {
        libc::MSG_DONTWAIT
    } else {
        libc::MSG_WAITFORONE
    };
    let got = loop {
        // SAFETY: the first `n` headers are initialised and point to buffers (`names`,
        // `iovs` -> the slots' spare capacity, `ctrl`) that outlive the call and have the sizes given.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                n as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(e),
        }
    };
    for i in 0..got {
        // SAFETY: the first `n` headers were initialised above; the kernel updated the
        // first `got` of them (msg_len, msg_namelen, msg_controllen, msg_flags).
        let h = unsafe { hdrs[i].assume_init_ref() };
        // SAFETY: the kernel wrote `msg_len` bytes (at most the iovec's length, so within
        // the slot's capacity) at the start of slot i's spare capacity.
        unsafe {
            let iov_len = iovs[i].assume_init_ref().iov_len;
            slots[i].set_len((h.msg_len as usize).min(iov_len));
        }
        let mut meta = RxMeta {
            // SAFETY: the kernel wrote an address of `msg_namelen` bytes into names[i]
            // (zero length, as for some raw sockets, gives None).
            from: if h.msg_hdr.msg_namelen > 0 {
                unsafe { read_sockaddr(&names[i], h.msg_hdr.msg_namelen) }
            } else {
                None
            },
            segment: 0,
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        };
        // SAFETY: the kernel set msg_controllen to the bytes of control data it wrote into
        // ctrl[i]; CMSG_FIRSTHDR/CMSG_NXTHDR stay within that length.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
            while !c.is_null() {
                if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                    let v = libc::CMSG_DATA(c).cast::<c_int>().read_unaligned();
                    meta.segment = v.max(0) as usize;
                }
                c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
            }
        }
        metas[i] = meta;
    }
    Ok(got)
}

/// Block until one datagram arrives and receive it into `slot` as `recv_batch` does.
/// Returns 1, or 0 if interrupted.
///
/// With `gro`, `recvmsg` (for a single datagram it costs less than `recvmmsg`), whose
/// control message gives the segment size of a GRO aggregate. Without, `recvfrom`, which
/// costs the kernel less again: no `msghdr` and iovec array to copy in and out (measured
/// on loopback: ~0.18 us per receive, 0.35 us of a 100-byte round trip). Only correct
/// while GRO is off on the socket, when the kernel never hands over an aggregate.
pub(crate) fn recv_one(
    fd: RawFd,
    slot: &mut BytesMut,
    meta: &mut RxMeta,
    gro: bool,
) -> io::Result<usize> {
    if !gro {
        return recv_from(fd, slot, meta);
    }
    let mut name = MaybeUninit::<libc::sockaddr_storage>::uninit();
    let mut ctrl = MaybeUninit::<CmsgBuf>::uninit();
    let mut iov = slot_iovec(slot);
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = name.as_mut_ptr().cast::<c_void>();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.as_mut_ptr().cast::<c_void>();
    msg.msg_controllen = CMSG_BUF as _;
    // SAFETY: every pointer in `msg` refers to a live buffer of the size given.
    let r = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    let Some(len) = received_len(r)? else {
        return Ok(0);
    };
    // SAFETY: the kernel wrote `len` bytes (at most the iovec's length, within the slot's
    // capacity) at the start of the slot's spare capacity.
    unsafe { slot.set_len(len.min(iov.iov_len)) };
    *meta = RxMeta {
        // SAFETY: the kernel wrote an address of msg_namelen bytes.
        from: if msg.msg_namelen > 0 {
            unsafe { read_sockaddr(&name, msg.msg_namelen) }
        } else {
            None
        },
        segment: 0,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
    };
    // SAFETY: as in recv_batch, the walk stays within the msg_controllen bytes the kernel
    // wrote.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                let v = libc::CMSG_DATA(c).cast::<c_int>().read_unaligned();
                meta.segment = v.max(0) as usize;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(1)
}

/// The length a single-datagram receive call returned (`r`), or `None` when it was
/// interrupted or found nothing.
fn received_len(r: isize) -> io::Result<Option<usize>> {
    if r >= 0 {
        return Ok(Some(r as usize));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(None),
        _ => Err(e),
    }
}

/// `recv_one` without control messages: `recvfrom`.
fn recv_from(fd: RawFd, slot: &mut BytesMut, meta: &mut RxMeta) -> io::Result<usize> {
    let mut name = MaybeUninit::<libc::sockaddr_storage>::uninit();
    let mut name_len = size_of::<libc::sockaddr_storage>() as socklen_t;
    let iov = slot_iovec(slot);
    // SAFETY: the buffer is the slot's spare capacity of `iov_len` bytes and `name` has
    // room for `name_len` bytes; both outlive the call. With MSG_TRUNC the kernel returns
    // the datagram's real length even when it did not fit.
    let r = unsafe {
        libc::recvfrom(
            fd,
            iov.iov_base,
            iov.iov_len,
            libc::MSG_TRUNC,
            name.as_mut_ptr().cast::<libc::sockaddr>(),
            &mut name_len,
        )
    };
    let Some(len) = received_len(r)? else {
        return Ok(0);
    };
    // SAFETY: the kernel wrote min(len, iov_len) bytes at the start of the slot's spare
    // capacity.
    unsafe { slot.set_len(len.min(iov.iov_len)) };
    *meta = RxMeta {
        // SAFETY: the kernel wrote an address of `name_len` bytes.
        from: if name_len > 0 {
            unsafe { read_sockaddr(&name, name_len) }
        } else {
            None
        },
        segment: 0,
        truncated: len > iov.iov_len,
    };
    Ok(1)
}

/// Read one entry of the socket's error queue (`IP_RECVERR`): the destination of the
/// datagram that caused it and the error. `None` when the queue is empty.
pub(crate) fn recv_error(fd: RawFd) -> io::Result<Option<(Option<SocketAddr>, i32)>> {
    let mut name = MaybeUninit::<libc::sockaddr_storage>::uninit();
    let mut ctrl: [u64; 64] = [0; 64];
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast::<c_void>(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = name.as_mut_ptr().cast::<c_void>();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.as_mut_ptr().cast::<c_void>();
    msg.msg_controllen = size_of::<[u64; 64]>() as _;
    // SAFETY: every pointer in `msg` refers to a live local buffer of the size given.
    let r = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    let dest = if msg.msg_namelen > 0 {
        // SAFETY: the kernel wrote an address of msg_namelen bytes.
        unsafe { read_sockaddr(&name, msg.msg_namelen) }
    } else {
        None
    };
    let mut errno = 0;
    // SAFETY: as in recv_batch, the walk stays within msg_controllen bytes of `ctrl`;
    // sock_extended_err is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let lvl = (*c).cmsg_level;
            let ty = (*c).cmsg_type;
            if (lvl == libc::IPPROTO_IP && ty == libc::IP_RECVERR)
                || (lvl == libc::IPPROTO_IPV6 && ty == libc::IPV6_RECVERR)
            {
                let ee = libc::CMSG_DATA(c)
                    .cast::<libc::sock_extended_err>()
                    .read_unaligned();
                errno = ee.ee_errno as i32;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Some((dest, errno)))
}

// ---------------------------------------------------------------------- waiting

/// What `poll` saw.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Polled {
    pub readable: bool,
    pub error: bool,
}

/// Wait until `sock` is readable or has an error, `wake` (if any) is readable, or the
/// timeout passes (`None`: no timeout). Nanosecond precision (`ppoll`).
pub(crate) fn poll(
    sock: RawFd,
    wake: Option<&EventFd>,
    timeout: Option<Duration>,
) -> io::Result<Polled> {
    let pollin = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [pollin(sock), pollin(wake.map_or(-1, |w| w.0.as_raw_fd()))];
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as _,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is a valid array of two pollfds (a negative fd is ignored), `tsp` is
    // null or points to a live timespec, and no signal mask is passed.
    let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, tsp, std::ptr::null()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(Polled::default());
        }
        return Err(e);
    }
    if fds[1].revents & libc::POLLIN != 0 {
        if let Some(w) = wake {
            w.drain();
        }
    }
    Ok(Polled {
        readable: fds[0].revents & libc::POLLIN != 0,
        error: fds[0].revents & libc::POLLERR != 0,
    })
}

/// A non-blocking eventfd: wakes a thread from [`poll`] without a datagram.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new fd.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
    /// Make it readable (until drained).
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast::<c_void>(), 8) };
    }
    fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast::<c_void>(), 8) };
    }
}

/// Make this thread's timed waits precise: the default 50 us timer slack would delay
/// the pacer's sub-microsecond deadlines (background thread only).
pub(crate) fn set_precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and affects only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

/// A `timerfd` on CLOCK_MONOTONIC, armed at absolute times. The tokio driver polls one
/// (tokio's own timers have millisecond resolution; the pacer needs microseconds); the
/// blocking flavour's background thread sleeps on one, which other threads can move
/// later without waking it (see `Inner::after_input`).
#[derive(Debug)]
pub(crate) struct TimerFd(OwnedFd);

impl TimerFd {
    /// `nonblocking`: reads return at once (for polling) instead of waiting for expiry.
    pub(crate) fn new(nonblocking: bool) -> io::Result<TimerFd> {
        let flags = libc::TFD_CLOEXEC | if nonblocking { libc::TFD_NONBLOCK } else { 0 };
        // SAFETY: timerfd_create takes no pointers; a non-negative result is a new fd.
        let fd = cvt(unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, flags) })?;
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(TimerFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
    /// Fire at `at_nanos` of CLOCK_MONOTONIC (at once if that has passed); `None` disarms.
    /// Re-arming forgets an expiry not yet read.
    pub(crate) fn set(&self, at_nanos: Option<u64>) {
        let at = at_nanos.map_or(0, |n| n.max(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                tv_nsec: (at % 1_000_000_000) as _,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not requested.
        unsafe {
            libc::timerfd_settime(
                self.0.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
    }
    /// Read the expiry count: clears a non-blocking timer's readiness; waits for the
    /// expiry on a blocking one (or for a signal).
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own timerfd.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast::<c_void>(), 8) };
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

// ---------------------------------------------------------------------- interfaces

/// An interface as `getifaddrs` lists it.
#[derive(Debug, Clone)]
pub(crate) struct Interface {
    pub name: String,
    pub addr: Option<IpAddr>,
    pub up: bool,
    pub loopback: bool,
}

/// Every (interface, address) pair of the host.
pub(crate) fn interfaces() -> Vec<Interface> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned, valid until freeifaddrs;
        // ifa_name is a NUL-terminated string and ifa_addr is null or a sockaddr whose
        // family field says how long it is.
        unsafe {
            let ifa = &*p;
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            let addr = if ifa.ifa_addr.is_null() {
                None
            } else {
                match (*ifa.ifa_addr).sa_family as c_int {
                    libc::AF_INET => {
                        let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                        Some(IpAddr::V4(Ipv4Addr::from(
                            sin.sin_addr.s_addr.to_ne_bytes(),
                        )))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                        Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                    }
                    _ => None,
                }
            };
            let flags = ifa.ifa_flags as c_int;
            out.push(Interface {
                name,
                addr,
                up: flags & libc::IFF_UP != 0,
                loopback: flags & libc::IFF_LOOPBACK != 0,
            });
            p = ifa.ifa_next;
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Most ports [`attach_port_filter`] lists; past it every packet is let through.
pub(crate) const MAX_FILTER_PORTS: usize = 200;

/// The classic BPF program of [`attach_port_filter`]: load the Homa destination port
/// (IPv4 raw sockets see the IP header first, so skip `4 * IHL` bytes; IPv6 ones start at
/// the Homa header), accept it if it is one of `ports`, drop the packet otherwise.
pub(crate) fn port_filter(v6: bool, ports: &[u16]) -> Vec<libc::sock_filter> {
    const LDX_B_MSH: u16 = 0xb1; // X = 4 * (P[k] & 0xf)
    const LD_H_IND: u16 = 0x48; // A = P[X + k] (16 bits)
    const LD_H_ABS: u16 = 0x28; // A = P[k] (16 bits)
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut prog = if v6 {
        vec![op(LD_H_ABS, 0, 0, 2)]
    } else {
        vec![op(LDX_B_MSH, 0, 0, 0), op(LD_H_IND, 0, 0, 2)]
    };
    if ports.len() > MAX_FILTER_PORTS {
        return vec![op(RET_K, 0, 0, u32::MAX)];
    }
    let n = ports.len();
    for (i, &p) in ports.iter().enumerate() {
        // Jump over the remaining comparisons and the reject to the accept.
        prog.push(op(JEQ_K, (n - i) as u8, 0, u32::from(p)));
    }
    prog.push(op(RET_K, 0, 0, 0));
    prog.push(op(RET_K, 0, 0, u32::MAX));
    prog
}

/// Let the kernel hand this raw socket only protocol-146 packets for `ports` (the Homa
/// ports this process holds). Every raw socket of a protocol gets a copy of every packet,
/// so without a filter each process using raw mode would copy and drop all the host's
/// Homa traffic meant for the others.
pub(crate) fn attach_port_filter(fd: RawFd, v6: bool, ports: &[u16]) -> io::Result<()> {
    let mut prog = port_filter(v6, ports);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies the
    // program and only reads from the buffer, whose exact size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast::<c_void>(),
            size_of::<libc::sock_fprog>() as socklen_t,
        )
    })
    .map(drop)
}

#[cfg(test)]
mod filter_tests {
    use super::*;

    /// Runs a classic BPF program of the shapes `port_filter` emits over `packet`.
    fn run(prog: &[libc::sock_filter], packet: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let half = |at: usize| -> Option<u32> {
            Some(u32::from(u16::from_be_bytes([
                *packet.get(at)?,
                *packet.get(at + 1)?,
            ])))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                0xb1 => x = 4 * u32::from(packet[i.k as usize] & 0xf),
                0x48 => match half(x as usize + i.k as usize) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0x28 => match half(i.k as usize) {
                    Some(v) => a = v,
                    None => return 0,
                },
                0x15 => pc += if a == i.k { i.jt } else { i.jf } as usize,
                0x06 => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn v4_packet(ihl: u8, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; ihl as usize * 4 + 40];
        p[0] = 0x40 | ihl;
        let h = ihl as usize * 4;
        p[h + 2..h + 4].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn port_filter_accepts_exactly_the_listed_ports() {
        let prog = port_filter(false, &[4000, 4001, 40_000]);
        for (port, ihl, pass) in [(4000, 5, true), (40_000, 6, true), (4002, 5, false)] {
            assert_eq!(run(&prog, &v4_packet(ihl, port)) != 0, pass, "port {port}");
        }
        assert_eq!(run(&port_filter(false, &[]), &v4_packet(5, 4000)), 0);
        let v6 = port_filter(true, &[7]);
        assert_ne!(run(&v6, &[0, 1, 0, 7, 0, 0]), 0);
        assert_eq!(run(&v6, &[0, 1, 0, 8, 0, 0]), 0);
        assert_eq!(run(&v6, &[0, 1]), 0, "too short to carry a port");
        let many: Vec<u16> = (1..=MAX_FILTER_PORTS as u16 + 1).collect();
        assert_ne!(
            run(&port_filter(false, &many), &v4_packet(5, 9)),
            0,
            "all pass"
        );
    }
}

/// An `ifreq` naming `name` (None if the name does not fit).
fn ifreq_for(name: &str) -> Option<libc::ifreq> {
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() {
        return None;
    }
    for (d, &s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = s as libc::c_char;
    }
    Some(req)
}

/// A datagram socket to ask the kernel about interfaces: made by the calling thread, so
/// it answers for that thread's network namespace (`/sys/class/net` shows the namespace
/// `/sys` was mounted in, which differs for a thread that only called `setns`).
fn query_socket() -> Option<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned by the OwnedFd from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    // SAFETY: fd is a fresh descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The MTU of interface `name`, from the kernel (SIOCGIFMTU).
pub(crate) fn interface_mtu(name: &str) -> Option<u32> {
    let sock = query_socket()?;
    let mut req = ifreq_for(name)?;
    // SAFETY: `req` is a valid ifreq the kernel fills in; the fd is open.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    // SAFETY: after SIOCGIFMTU succeeds the union holds ifru_mtu.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    (r == 0 && mtu > 0).then_some(mtu as u32)
}

/// The legacy `struct ethtool_cmd` of <linux/ethtool.h> (ETHTOOL_GSET), which every
/// driver that reports a speed still answers.
#[repr(C)]
#[derive(Default)]
struct EthtoolCmd {
    cmd: u32,
    supported: u32,
    advertising: u32,
    speed: u16,
    duplex: u8,
    port: u8,
    phy_address: u8,
    transceiver: u8,
    autoneg: u8,
    mdio_support: u8,
    maxtxpkt: u32,
    maxrxpkt: u32,
    speed_hi: u16,
    eth_tp_mdix: u8,
    eth_tp_mdix_ctrl: u8,
    lp_advertising: u32,
    reserved: [u32; 2],
}

/// The link speed of interface `name` in Mbit/s, from the kernel (SIOCETHTOOL); None when
/// the driver reports none (loopback) or an unknown speed.
pub(crate) fn interface_speed_mbps(name: &str) -> Option<u32> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GSET: u32 = 1;
    let sock = query_socket()?;
    let mut req = ifreq_for(name)?;
    let mut cmd = EthtoolCmd {
        cmd: ETHTOOL_GSET,
        ..EthtoolCmd::default()
    };
    req.ifr_ifru.ifru_data = (&mut cmd as *mut EthtoolCmd).cast::<libc::c_char>();
    // SAFETY: `req` names the interface and points at `cmd`, which outlives the call and
    // has the layout the kernel writes for ETHTOOL_GSET.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    let speed = u32::from(cmd.speed) | (u32::from(cmd.speed_hi) << 16);
    (r == 0 && speed != 0 && speed != u32::MAX && speed != 0xFFFF).then_some(speed)
}

#[cfg(test)]
mod interface_tests {
    use super::*;

    #[test]
    fn loopback_mtu_and_speed_come_from_the_kernel() {
        let sysfs: Option<u32> = std::fs::read_to_string("/sys/class/net/lo/mtu")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        assert_eq!(interface_mtu("lo"), sysfs);
        assert!(interface_mtu("lo").is_some());
        assert_eq!(
            interface_speed_mbps("lo"),
            None,
            "loopback reports no speed"
        );
        assert_eq!(interface_mtu("no-such-if0"), None);
        assert_eq!(interface_mtu("a-name-longer-than-ifnamsiz"), None);
        assert_eq!(interface_mtu(""), None);
    }
}

#[cfg(test)]
mod address_tests {
    use super::*;

    /// `read_sockaddr` reads only the bytes the kernel wrote: a sockaddr_in written into
    /// otherwise uninitialised storage, and lengths that are too short for the family.
    #[test]
    fn addresses_are_read_from_the_written_bytes_only() {
        let want: SocketAddr = "10.1.2.3:4567".parse().unwrap();
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::uninit();
        let len = write_sockaddr(&want, &mut storage);
        assert_eq!(len as usize, size_of::<libc::sockaddr_in>());
        // SAFETY: write_sockaddr initialised the first `len` bytes.
        unsafe {
            assert_eq!(read_sockaddr(&storage, len), Some(want));
            assert_eq!(read_sockaddr(&storage, len - 1), None, "too short for IPv4");
            assert_eq!(read_sockaddr(&storage, 0), None);
            // A length past the storage (as the kernel reports for long addresses) is
            // read within the storage.
            assert_eq!(read_sockaddr(&storage, 4096), Some(want));
        }
        let want6: SocketAddr = "[fe80::1%3]:9".parse().unwrap();
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::uninit();
        let len = write_sockaddr(&want6, &mut storage);
        // SAFETY: as above.
        unsafe {
            assert_eq!(read_sockaddr(&storage, len), Some(want6));
            assert_eq!(read_sockaddr(&storage, len - 1), None, "too short for IPv6");
        }
        let mut unix = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        // SAFETY: zeroed storage is a valid sockaddr_storage.
        unsafe {
            (*unix.as_mut_ptr()).ss_family = libc::AF_UNIX as libc::sa_family_t;
            assert_eq!(read_sockaddr(&unix, 110), None, "not an IP address");
        }
    }
}
