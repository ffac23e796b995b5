//! Socket helpers and the control messages of UDP GSO and GRO.

use super::*;

pub(crate) fn setsockopt_int(fd: RawFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: the option value is a live c_int and its size is passed with it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            ptr::from_ref(&value).cast::<c_void>(),
            size_of::<c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn getsockopt_int(fd: RawFd, level: c_int, name: c_int) -> io::Result<c_int> {
    let mut value: c_int = 0;
    let mut len = size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `value` is a writable c_int and `len` says how big it is.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            ptr::from_mut(&mut value).cast::<c_void>(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A client and a server socket on 127.0.0.1 set up for `variant`.
pub(crate) fn socket_pair(variant: Variant) -> Result<(UdpSocket, UdpSocket), String> {
    let open = || -> io::Result<UdpSocket> {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let r = socket2::SockRef::from(&s);
        r.set_recv_buffer_size(SOCKET_BUFFER)?;
        r.set_send_buffer_size(SOCKET_BUFFER)?;
        if !variant.uring() {
            // Bounds the blocking recvmmsg (the io_uring variants time their waits).
            s.set_read_timeout(Some(LOSS_TIMEOUT))?;
        }
        Ok(s)
    };
    let client = open().map_err(|e| format!("UDP socket: {e}"))?;
    let server = open().map_err(|e| format!("UDP socket: {e}"))?;
    if variant.gso() {
        for s in [&client, &server] {
            let fd = s.as_raw_fd();
            getsockopt_int(fd, SOL_UDP, UDP_SEGMENT)
                .map_err(|e| format!("UDP_SEGMENT (GSO, Linux 4.18): {e}"))?;
            setsockopt_int(fd, SOL_UDP, UDP_GRO, 1)
                .map_err(|e| format!("UDP_GRO (Linux 5.0): {e}"))?;
        }
    }
    Ok((client, server))
}

pub(crate) fn local_v4(s: &UdpSocket) -> Result<SocketAddrV4, String> {
    match s.local_addr() {
        Ok(SocketAddr::V4(a)) => Ok(a),
        Ok(a) => Err(format!("unexpected local address {a}")),
        Err(e) => Err(format!("local address: {e}")),
    }
}

pub(crate) fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// The IPv4 address in the first `len` bytes of `sa` as the kernel wrote it.
pub(crate) fn from_sockaddr_in(sa: &libc::sockaddr_in, len: usize) -> Option<SocketAddrV4> {
    (len >= size_of::<libc::sockaddr_in>() && c_int::from(sa.sin_family) == libc::AF_INET).then(
        || {
            SocketAddrV4::new(
                Ipv4Addr::from(sa.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sa.sin_port),
            )
        },
    )
}

/// The IPv4 address in a `sockaddr_in` the kernel wrote as bytes (io_uring's name area).
pub(crate) fn sockaddr_in_bytes(b: &[u8]) -> Option<SocketAddrV4> {
    let family = libc::sa_family_t::from_ne_bytes(b.get(..2)?.try_into().ok()?);
    if c_int::from(family) != libc::AF_INET || b.len() < size_of::<libc::sockaddr_in>() {
        return None;
    }
    let port = u16::from_be_bytes([b[2], b[3]]);
    Some(SocketAddrV4::new(
        Ipv4Addr::new(b[4], b[5], b[6], b[7]),
        port,
    ))
}

pub(crate) fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain data (pointers and integers); all zero is a valid value
    // (no name, no iovecs, no control data).
    unsafe { std::mem::zeroed() }
}

// ------------------------------------------------------------------ control messages

/// A control-message buffer, aligned as `cmsghdr` requires.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CtrlBuf(pub(crate) [u8; CTRL_LEN]);

const _: () = assert!(std::mem::align_of::<libc::cmsghdr>() <= 8);

/// `CMSG_ALIGN`: control messages are padded to the size of a `long`.
pub(crate) const fn cmsg_align(n: usize) -> usize {
    let a = size_of::<libc::c_long>();
    (n + a - 1) & !(a - 1)
}

/// Offset of a control message's data (`CMSG_LEN(0)`).
pub(crate) const CMSG_HDR: usize = cmsg_align(size_of::<libc::cmsghdr>());

/// Write a `UDP_SEGMENT` control message of `segment` bytes at the start of `buf`;
/// returns the control length to send (`CMSG_SPACE(sizeof(u16))`).
pub(crate) fn put_segment_cmsg(buf: &mut CtrlBuf, segment: u16) -> usize {
    const SPACE: usize = CMSG_HDR + cmsg_align(size_of::<u16>());
    const _: () = assert!(SPACE <= CTRL_LEN);
    let base = buf.0.as_mut_ptr();
    let hdr = base.cast::<libc::cmsghdr>();
    // SAFETY: `buf` is 8-aligned (enough for cmsghdr, checked above) and has room for
    // the header and the u16 after it (SPACE <= CTRL_LEN). The fields are written one by
    // one through the raw pointer, so private padding fields some libcs have are left as
    // they were (zero or not, the kernel ignores them).
    unsafe {
        (*hdr).cmsg_len = (CMSG_HDR + size_of::<u16>()) as _;
        (*hdr).cmsg_level = SOL_UDP;
        (*hdr).cmsg_type = UDP_SEGMENT;
        base.add(CMSG_HDR).cast::<u16>().write_unaligned(segment);
    }
    SPACE
}

/// The segment size in a `UDP_GRO` control message among `control` (the bytes the
/// kernel wrote), or 0 when there is none (a plain datagram).
pub(crate) fn gro_segment(control: &[u8]) -> usize {
    let mut at = 0;
    while at + size_of::<libc::cmsghdr>() <= control.len() {
        // SAFETY: the header's bytes lie within `control` (checked by the loop
        // condition); read_unaligned copes with any alignment, and cmsghdr is plain
        // integers, so any bytes are a valid value.
        let h = unsafe {
            control
                .as_ptr()
                .add(at)
                .cast::<libc::cmsghdr>()
                .read_unaligned()
        };
        // (`as _`: cmsg_len is a size_t with glibc, a socklen_t with musl.)
        let len: usize = h.cmsg_len as _;
        if len < CMSG_HDR || len > control.len() - at {
            break;
        }
        if h.cmsg_level == SOL_UDP && h.cmsg_type == UDP_GRO && len >= CMSG_HDR + 4 {
            let d = &control[at + CMSG_HDR..at + CMSG_HDR + 4];
            let v = c_int::from_ne_bytes([d[0], d[1], d[2], d[3]]);
            return usize::try_from(v).unwrap_or(0);
        }
        at += cmsg_align(len);
    }
    0
}

/// Hand each datagram of a receive (several when GRO aggregated them) to `f`; returns
/// how many.
pub(crate) fn for_each_segment(payload: &[u8], segment: usize, mut f: impl FnMut(&[u8])) -> usize {
    if segment == 0 || payload.len() <= segment {
        f(payload);
        return 1;
    }
    let mut n = 0;
    for d in payload.chunks(segment) {
        f(d);
        n += 1;
    }
    n
}

/// Errors after which a datagram is simply lost (the loss timeout recovers), rather
/// than the benchmark being wrong.
pub(crate) fn send_error_is_drop(errno: c_int) -> bool {
    matches!(
        errno,
        libc::ENOBUFS | libc::EAGAIN | libc::ECONNREFUSED | libc::ENOMEM
    )
}
