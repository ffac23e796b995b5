//! The socket boundary: every system call the runtime makes beyond what `std` and
//! `socket2` offer, and every `unsafe` block of the crate but the tokio flavour's
//! registrations of its descriptors with the reactor (`aio.rs`).
//!
//! Batching (`sendmmsg`/`recvmmsg`), per-packet priority (an `IP_TOS`/`IPV6_TCLASS`
//! control message on every datagram), UDP GSO (`UDP_SEGMENT`) and GRO (`UDP_GRO`),
//! ICMP errors (`IP_RECVERR`), `ppoll`, `eventfd`, `timerfd` and interface discovery.
//!
//! [`tx`] sends, [`rx`] receives, [`wait`] waits, [`iface`] asks about interfaces; this
//! file holds what they share: socket options, socket addresses to and from the kernel's
//! form, and the control-message writer.

use std::io;
use std::mem::{size_of, size_of_val, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use libc::{c_int, c_void, socklen_t};

mod iface;
mod rx;
mod tx;
mod wait;

pub(crate) use iface::*;
pub(crate) use rx::*;
pub(crate) use tx::*;
pub(crate) use wait::*;

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

/// Room for the control messages of one datagram (sending: TOS + GSO size + PKTINFO;
/// receiving: GRO + PKTINFO).
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

/// Ask for socket buffers of these sizes for `whose` socket, past the sysctl limits when
/// privileged. A process without `CAP_NET_ADMIN` (in the initial user namespace: a
/// container's root does not count) gets at most `net.core.rmem_max` / `wmem_max`
/// (212,992 bytes on many distributions), whatever it asks. Say so, since a small receive
/// buffer drops the bursts that grants release (they then cost RESENDs) and nothing else
/// would show why; once per process, as a process opens many sockets with the same
/// options (once a subscriber listens: a warning no one heard is said again later).
/// `ask_less` says how to ask for less. Returns the receive and send buffers granted, in
/// bytes of the request (half what the kernel reports).
pub(crate) fn size_buffers(
    sock: &socket2::Socket,
    (rcv, snd): (usize, usize),
    whose: &str,
    ask_less: &str,
) -> (usize, usize) {
    let fd = sock.as_raw_fd();
    let clamp = |v: usize| v.min(i32::MAX as usize / 2) as i32;
    let (rcv, snd) = (clamp(rcv), clamp(snd));
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcv).is_err() {
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, rcv);
    }
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, snd).is_err() {
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, snd);
    }
    let (got_rcv, got_snd) = buffer_sizes(fd);
    let short: Vec<String> = [
        ("receive", got_rcv, rcv, "net.core.rmem_max"),
        ("send", got_snd, snd, "net.core.wmem_max"),
    ]
    .into_iter()
    .filter(|&(_, got, asked, _)| got < asked as usize)
    .map(|(what, got, asked, sysctl)| {
        format!("{what} {got} of {asked} bytes (`sysctl -w {sysctl}={asked}` to give it all)")
    })
    .collect();
    static SAID: AtomicBool = AtomicBool::new(false);
    if !short.is_empty()
        && tracing::enabled!(tracing::Level::WARN)
        && !SAID.swap(true, Ordering::Relaxed)
    {
        let receive_short = got_rcv < rcv as usize;
        tracing::warn!(
            "the kernel granted {whose} smaller buffers than asked: {}. Without CAP_NET_ADMIN \
             it caps them at those sysctls; raise them, or ask for less ({ask_less}).{} Said \
             once per process.",
            short.join(", "),
            if receive_short {
                " Until then Homa grants no more than the receive buffer holds: long \
                 messages arrive several times more slowly, and several senders starting \
                 messages at once can overflow it (losses, then RESENDs)."
            } else {
                ""
            }
        );
    }
    (got_rcv, got_snd)
}

/// Datagrams the kernel has dropped for the socket since it was opened (receive buffer
/// full, mostly): `SO_MEMINFO`'s drop count, or 0 where the kernel does not say.
pub(crate) fn kernel_drops(fd: RawFd) -> u64 {
    // `SO_MEMINFO` where its number is the generic one (not on sparc, mips or parisc).
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64"
    ))]
    {
        const SO_MEMINFO: c_int = 55;
        let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
        let mut len = size_of_val(&info) as socklen_t;
        // SAFETY: `info` and `len` are valid for writes and `len` holds the buffer's size.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_MEMINFO,
                info.as_mut_ptr().cast::<c_void>(),
                &mut len,
            )
        };
        if r == 0 && len as usize >= size_of_val(&info) {
            return info[libc::SK_MEMINFO_DROPS as usize] as u64;
        }
    }
    let _ = fd;
    0
}

/// `SO_RCVBUF` and `SO_SNDBUF`: the bytes the kernel granted (it reports twice that, the
/// rest being its allowance for bookkeeping), or 0 where it will not say.
pub(crate) fn buffer_sizes(fd: RawFd) -> (usize, usize) {
    let get = |name| getsockopt_int(fd, libc::SOL_SOCKET, name).map_or(0, |v| v.max(0) as usize);
    (get(libc::SO_RCVBUF) / 2, get(libc::SO_SNDBUF) / 2)
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
