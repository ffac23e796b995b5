//! Would io_uring make the Homa runtime's UDP data path cheaper?
//!
//! The runtime moves datagrams with `recvmmsg`/`sendmmsg`, sends a run of same-size packets
//! to one peer as a single UDP GSO send (`UDP_SEGMENT`), and receives with `UDP_GRO`, so
//! such a run arrives as one aggregate. This program measures that path against io_uring on
//! the same machine, in the same run, with the same workload:
//!
//! * a client thread keeps `--window` (default 64) requests of 100 bytes outstanding to a
//!   server thread over loopback UDP (IPv4); the first 8 bytes of a request carry its
//!   sequence number, and the server echoes each request as its 100-byte response;
//! * each side loops: take whatever has arrived, then send everything that calls for (the
//!   replies, or the requests that refill the window) at once.
//!
//! The variants, each implemented on both sides and given fresh sockets:
//!
//! * `mmsg`: `recvmmsg` with `MSG_WAITFORONE` (block for the first datagram, take up to
//!   64), then one `sendmmsg`;
//! * `mmsg_gso`: the same, but a run of same-size datagrams to one destination goes out as
//!   one `sendmsg` with a `UDP_SEGMENT` control message, and the receiving socket has
//!   `UDP_GRO` on and splits each aggregate by the segment size its control message
//!   reports. This is what the runtime does today;
//! * `uring`: a multishot `RecvMsgMulti` into a registered ring of provided buffers
//!   (refilled after use, re-armed when a completion says the multishot ended, including on
//!   `ENOBUFS`), and one `SendMsg` per datagram. One `io_uring_enter` per loop iteration
//!   (`submit_and_wait`) submits the sends and waits for their completions plus at least
//!   one more, so an iteration is one system call rather than two. The ring is set up with
//!   `DEFER_TASKRUN|SINGLE_ISSUER` where the kernel has it, and a standing multishot
//!   timeout bounds the waits (a timeout on each wait arms an hrtimer per sleep, which cost
//!   more);
//! * `uring_gso`: `uring` with the GSO sends and GRO receive of `mmsg_gso`.
//!
//! Each variant is measured in slices of 0.5 s, every slice after a 0.1 s warm-up on fresh
//! sockets and threads, and the variants take turns slice by slice (in a rotating order)
//! until each has had `--seconds` (default 3) of measured time, so drift in the machine's
//! state affects them alike. By default the server thread is pinned to one CPU and the
//! client to another, as if on two hosts (`--pin same` puts both on one CPU, where a wake-up
//! needs no inter-processor interrupt; `--pin none` leaves placement to the scheduler, which
//! makes results vary with where it happens to put the threads). Within a slice the program
//! counts the RPCs the client completed, the process CPU time (`getrusage(RUSAGE_SELF)`,
//! user + system, both threads), the CPU time of the `ksoftirqd` threads (network-stack
//! work the kernel deferred there is not the process's) and the system calls both sides
//! made. No receive waits longer than 100 ms, and a request unanswered for that long counts
//! as lost and is replaced (a late response to it is ignored), so a lost datagram neither
//! hangs a slice nor shrinks the window.
//!
//! It prints, per variant: RPC/s; CPU microseconds per RPC; both as ratios to `mmsg`;
//! `ksoftirqd` microseconds per RPC; system calls per RPC; RPCs per client loop iteration
//! (the batch size); the range over slices; lost requests. Then one JSON line,
//! `{"mmsg":{"rps":..,"cpu_us_per_rpc":..,"ksoftirqd_us_per_rpc":..,"syscalls_per_rpc":..},
//! "mmsg_gso":{..},"uring":{..},"uring_gso":{..}}`, with `null` for a variant that could
//! not run. Where the kernel refuses io_uring (too old, `ENOSYS`, `EPERM` from seccomp or
//! `kernel.io_uring_disabled`, no provided-buffer rings, no multishot receive), the io_uring
//! variants print `unavailable: <reason>` and the others still run.
//!
//! Run it with `cargo bench -p homa --bench syscalls`, or for longer runs and other windows
//! `cargo bench -p homa --bench syscalls -- --seconds 5 --window 64`; `--only uring,mmsg`
//! runs a subset (for profiling one). Use an otherwise idle machine with two CPUs or more.

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("syscalls: this benchmark needs Linux (recvmmsg, UDP GSO/GRO, io_uring)");
}

#[cfg(target_os = "linux")]
fn main() {
    bench::main();
}

#[cfg(target_os = "linux")]
mod bench {
    use std::collections::VecDeque;
    use std::io;
    use std::mem::{size_of, ManuallyDrop, MaybeUninit};
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
    use std::os::fd::{AsRawFd, RawFd};
    use std::ptr;
    use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
    use std::sync::{mpsc, Arc};
    use std::thread;
    use std::time::{Duration, Instant};

    use io_uring::{cqueue, opcode, types, IoUring};
    use libc::{c_int, c_void};

    /// Bytes in every request and response.
    const PAYLOAD: usize = 100;
    const DEFAULT_WINDOW: usize = 64;
    const MAX_WINDOW: usize = 4096;
    const DEFAULT_SECONDS: f64 = 3.0;
    /// Most datagrams one `recvmmsg` takes and one `sendmmsg` sends (as in the runtime).
    const MAX_BATCH: usize = 64;
    /// Most segments one GSO send carries (the runtime's limit; older kernels' maximum).
    const MAX_GSO_SEGMENTS: usize = 64;
    /// Most bytes one GSO send carries (it must fit one IP packet's length field).
    const MAX_GSO_BYTES: usize = 65_000;
    /// Receive buffer for one datagram when GRO is off.
    const SLOT: usize = 2048;
    /// Receive buffer for one datagram or GRO aggregate (the runtime's `RX_SLOT`).
    const GRO_SLOT: usize = 65_536;
    /// Room for a received datagram's control messages (GRO needs 24 bytes).
    const CTRL_LEN: usize = 64;
    /// Longest wait of a receive; a request unanswered this long counts as lost.
    const LOSS_TIMEOUT: Duration = Duration::from_millis(100);
    const SLICE: Duration = Duration::from_millis(500);
    const WARMUP: Duration = Duration::from_millis(100);
    /// Asked of both socket buffers (the kernel caps it at `net.core.[rw]mem_max`).
    const SOCKET_BUFFER: usize = 1 << 20;

    const SOL_UDP: c_int = 17;
    /// `UDP_SEGMENT` (GSO), Linux 4.18.
    const UDP_SEGMENT: c_int = 103;
    /// `UDP_GRO`, Linux 5.0.
    const UDP_GRO: c_int = 104;

    /// io_uring `user_data` of the multishot receive, of every send and of the tick.
    const RECV_UD: u64 = 1;
    const SEND_UD: u64 = 2;
    const TICK_UD: u64 = 3;
    /// Provided-buffer group of the receive ring.
    const BGID: u16 = 0;

    // ------------------------------------------------------------------ configuration

    struct Config {
        seconds: f64,
        window: usize,
        /// `--only a,b`: run just these variants (for profiling one).
        only: Option<Vec<String>>,
        pin: Pin,
    }

    /// Where the two threads run.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Pin {
        /// Client and server each on its own CPU, as on two hosts (the default).
        Split,
        /// Both on one CPU: wake-ups without inter-processor interrupts.
        Same,
        /// Wherever the scheduler puts them (it may move them between slices).
        Free,
    }

    impl Config {
        /// `--seconds S`, `--window N`, `--pin split|same|none` and `--only a,b` (also
        /// `--name=value`); anything else, such as the `--bench` cargo passes, is ignored.
        fn from_args(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
            let mut cfg = Config {
                seconds: DEFAULT_SECONDS,
                window: DEFAULT_WINDOW,
                only: None,
                pin: Pin::Split,
            };
            while let Some(arg) = args.next() {
                let (name, inline) = match arg.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (arg, None),
                };
                if !["--seconds", "--window", "--only", "--pin"].contains(&name.as_str()) {
                    continue;
                }
                let value = inline
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value"))?;
                if name == "--pin" {
                    cfg.pin = match value.as_str() {
                        "split" => Pin::Split,
                        "same" => Pin::Same,
                        "none" => Pin::Free,
                        _ => return Err(format!("--pin {value}: want split, same or none")),
                    };
                } else if name == "--only" {
                    let names: Vec<String> = value.split(',').map(str::to_string).collect();
                    if let Some(n) = names
                        .iter()
                        .find(|n| !Variant::ALL.iter().any(|v| v.name() == n.as_str()))
                    {
                        return Err(format!("--only: unknown variant {n}"));
                    }
                    cfg.only = Some(names);
                } else if name == "--seconds" {
                    cfg.seconds = value
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                        .ok_or_else(|| format!("--seconds {value}: want a number in (0, 3600]"))?;
                } else {
                    cfg.window = value
                        .parse::<usize>()
                        .ok()
                        .filter(|w| (1..=MAX_WINDOW).contains(w))
                        .ok_or_else(|| format!("--window {value}: want 1..={MAX_WINDOW}"))?;
                }
            }
            Ok(cfg)
        }

        /// The length of one measured slice and how many each variant gets.
        fn slices(&self) -> (Duration, usize) {
            let slice = SLICE.min(Duration::from_secs_f64(self.seconds));
            let rounds = (self.seconds / slice.as_secs_f64() - 1e-9).ceil().max(1.0);
            (slice, rounds as usize)
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Variant {
        Mmsg,
        MmsgGso,
        Uring,
        UringGso,
    }

    impl Variant {
        const ALL: [Variant; 4] = [
            Variant::Mmsg,
            Variant::MmsgGso,
            Variant::Uring,
            Variant::UringGso,
        ];

        fn name(self) -> &'static str {
            match self {
                Variant::Mmsg => "mmsg",
                Variant::MmsgGso => "mmsg_gso",
                Variant::Uring => "uring",
                Variant::UringGso => "uring_gso",
            }
        }

        fn gso(self) -> bool {
            matches!(self, Variant::MmsgGso | Variant::UringGso)
        }

        fn uring(self) -> bool {
            matches!(self, Variant::Uring | Variant::UringGso)
        }
    }

    // ------------------------------------------------------------------ socket helpers

    fn setsockopt_int(fd: RawFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
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

    fn getsockopt_int(fd: RawFd, level: c_int, name: c_int) -> io::Result<c_int> {
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
    fn socket_pair(variant: Variant) -> Result<(UdpSocket, UdpSocket), String> {
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

    fn local_v4(s: &UdpSocket) -> Result<SocketAddrV4, String> {
        match s.local_addr() {
            Ok(SocketAddr::V4(a)) => Ok(a),
            Ok(a) => Err(format!("unexpected local address {a}")),
            Err(e) => Err(format!("local address: {e}")),
        }
    }

    fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
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
    fn from_sockaddr_in(sa: &libc::sockaddr_in, len: usize) -> Option<SocketAddrV4> {
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
    fn sockaddr_in_bytes(b: &[u8]) -> Option<SocketAddrV4> {
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

    fn zeroed_msghdr() -> libc::msghdr {
        // SAFETY: msghdr is plain data (pointers and integers); all zero is a valid value
        // (no name, no iovecs, no control data).
        unsafe { std::mem::zeroed() }
    }

    // ------------------------------------------------------------------ control messages

    /// A control-message buffer, aligned as `cmsghdr` requires.
    #[derive(Clone, Copy)]
    #[repr(C, align(8))]
    struct CtrlBuf([u8; CTRL_LEN]);

    const _: () = assert!(std::mem::align_of::<libc::cmsghdr>() <= 8);

    /// `CMSG_ALIGN`: control messages are padded to the size of a `long`.
    const fn cmsg_align(n: usize) -> usize {
        let a = size_of::<libc::c_long>();
        (n + a - 1) & !(a - 1)
    }

    /// Offset of a control message's data (`CMSG_LEN(0)`).
    const CMSG_HDR: usize = cmsg_align(size_of::<libc::cmsghdr>());

    /// Write a `UDP_SEGMENT` control message of `segment` bytes at the start of `buf`;
    /// returns the control length to send (`CMSG_SPACE(sizeof(u16))`).
    fn put_segment_cmsg(buf: &mut CtrlBuf, segment: u16) -> usize {
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
    fn gro_segment(control: &[u8]) -> usize {
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
    fn for_each_segment(payload: &[u8], segment: usize, mut f: impl FnMut(&[u8])) -> usize {
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
    fn send_error_is_drop(errno: c_int) -> bool {
        matches!(
            errno,
            libc::ENOBUFS | libc::EAGAIN | libc::ECONNREFUSED | libc::ENOMEM
        )
    }

    // ------------------------------------------------------------------ send queue

    #[derive(Clone, Copy)]
    struct Datagram {
        dest: SocketAddrV4,
        start: usize,
        len: usize,
    }

    /// Datagrams to send, back to back in one buffer, and the send headers built for them:
    /// one per datagram, or with GSO one per run of same-size datagrams to one destination.
    struct TxQueue {
        bytes: Vec<u8>,
        datagrams: Vec<Datagram>,
        names: Vec<libc::sockaddr_in>,
        iovs: Vec<libc::iovec>,
        ctrls: Vec<CtrlBuf>,
        /// Per header: where its bytes start and its control length.
        layout: Vec<(usize, usize)>,
        hdrs: Vec<libc::mmsghdr>,
    }

    impl TxQueue {
        fn with_capacity(datagrams: usize) -> Self {
            TxQueue {
                bytes: Vec::with_capacity(datagrams * PAYLOAD),
                datagrams: Vec::with_capacity(datagrams),
                names: Vec::with_capacity(datagrams),
                iovs: Vec::with_capacity(datagrams),
                ctrls: Vec::with_capacity(datagrams),
                layout: Vec::with_capacity(datagrams),
                hdrs: Vec::with_capacity(datagrams),
            }
        }

        fn push(&mut self, dest: SocketAddrV4, data: &[u8]) {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(data);
            self.datagrams.push(Datagram {
                dest,
                start,
                len: data.len(),
            });
        }

        fn is_empty(&self) -> bool {
            self.datagrams.is_empty()
        }

        fn clear(&mut self) {
            self.bytes.clear();
            self.datagrams.clear();
        }

        /// Lay out the send headers for the queued datagrams and return how many. They
        /// point into `self`'s buffers, so from here until the kernel has finished with
        /// them (the send call returned, or every send completion arrived) the queue must
        /// not be changed or dropped; `headers` gives them to the kernel.
        fn build(&mut self, gso: bool) -> usize {
            self.names.clear();
            self.iovs.clear();
            self.ctrls.clear();
            self.layout.clear();
            self.hdrs.clear();
            let mut i = 0;
            while i < self.datagrams.len() {
                let first = self.datagrams[i];
                let mut count = 1;
                if gso && first.len > 0 && first.len <= usize::from(u16::MAX) {
                    while let Some(next) = self.datagrams.get(i + count) {
                        if count == MAX_GSO_SEGMENTS
                            || (count + 1) * first.len > MAX_GSO_BYTES
                            || next.dest != first.dest
                            || next.len != first.len
                            || next.start != first.start + count * first.len
                        {
                            break;
                        }
                        count += 1;
                    }
                }
                self.names.push(sockaddr_in(first.dest));
                self.iovs.push(libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: count * first.len,
                });
                let mut ctrl = CtrlBuf([0; CTRL_LEN]);
                let ctrl_len = if count > 1 {
                    put_segment_cmsg(&mut ctrl, first.len as u16)
                } else {
                    0
                };
                self.ctrls.push(ctrl);
                self.layout.push((first.start, ctrl_len));
                i += count;
            }
            // Every vector is complete: the addresses taken below stay valid until the
            // queue is next changed.
            let bytes = self.bytes.as_mut_ptr();
            let names = self.names.as_mut_ptr();
            let iovs = self.iovs.as_mut_ptr();
            let ctrls = self.ctrls.as_mut_ptr();
            for (k, &(start, ctrl_len)) in self.layout.iter().enumerate() {
                // The iovec is written through the pointer the header will hold.
                let iov = iovs.wrapping_add(k);
                // SAFETY: k < iovs.len(), so `iov` points to an initialised iovec, and
                // start + its length lies within `bytes` (it covers queued datagrams).
                unsafe { (*iov).iov_base = bytes.wrapping_add(start).cast::<c_void>() };
                let mut msg = zeroed_msghdr();
                msg.msg_name = names.wrapping_add(k).cast::<c_void>();
                msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                msg.msg_iov = iov;
                msg.msg_iovlen = 1;
                if ctrl_len > 0 {
                    msg.msg_control = ctrls.wrapping_add(k).cast::<c_void>();
                    msg.msg_controllen = ctrl_len as _;
                }
                self.hdrs.push(libc::mmsghdr {
                    msg_hdr: msg,
                    msg_len: 0,
                });
            }
            self.hdrs.len()
        }

        /// The headers `build` laid out (an `mmsghdr` starts with its `msghdr`).
        fn headers(&mut self) -> *mut libc::mmsghdr {
            self.hdrs.as_mut_ptr()
        }
    }

    // ------------------------------------------------------------------ transports

    #[derive(Default, Clone, Copy)]
    struct IoStats {
        syscalls: u64,
        /// Datagrams the kernel refused to send (ENOBUFS and the like).
        dropped_sends: u64,
        /// Receives that did not fit their buffer (never expected).
        truncated: u64,
        /// io_uring: multishot receives that ended with ENOBUFS, and all re-arms.
        enobufs: u64,
        rearms: u64,
    }

    /// One side's datagram I/O: queue datagrams, then `exchange` sends them and waits for
    /// what arrives.
    trait Transport {
        fn queue(&mut self) -> &mut TxQueue;

        /// Send everything queued, wait (at most `LOSS_TIMEOUT`) for datagrams and hand
        /// each to `deliver`, which may queue datagrams for the next call.
        fn exchange<F>(&mut self, deliver: F) -> Result<(), String>
        where
            F: FnMut(&mut TxQueue, SocketAddrV4, &[u8]);

        fn stats(&self) -> IoStats;
    }

    /// `recvmmsg`/`sendmmsg`, and with `gso` UDP GSO sends and GRO receives.
    struct MmsgIo {
        socket: UdpSocket,
        gso: bool,
        slot_len: usize,
        bufs: Vec<u8>,
        names: Vec<libc::sockaddr_in>,
        ctrls: Vec<CtrlBuf>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
        tx: TxQueue,
        stats: IoStats,
    }

    impl MmsgIo {
        fn new(socket: UdpSocket, gso: bool, window: usize) -> Self {
            let slot_len = if gso { GRO_SLOT } else { SLOT };
            MmsgIo {
                socket,
                gso,
                slot_len,
                bufs: vec![0; MAX_BATCH * slot_len],
                names: vec![sockaddr_in(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)); MAX_BATCH],
                ctrls: vec![CtrlBuf([0; CTRL_LEN]); MAX_BATCH],
                iovs: vec![
                    libc::iovec {
                        iov_base: ptr::null_mut(),
                        iov_len: 0,
                    };
                    MAX_BATCH
                ],
                hdrs: (0..MAX_BATCH)
                    .map(|_| libc::mmsghdr {
                        msg_hdr: zeroed_msghdr(),
                        msg_len: 0,
                    })
                    .collect(),
                tx: TxQueue::with_capacity(2 * window),
                stats: IoStats::default(),
            }
        }

        fn send(&mut self) -> Result<(), String> {
            let fd = self.socket.as_raw_fd();
            let n = self.tx.build(self.gso);
            let hdrs = self.tx.headers();
            let mut sent = 0;
            while sent < n {
                let batch = (n - sent).min(MAX_BATCH);
                let first = hdrs.wrapping_add(sent);
                let r = if self.gso && batch == 1 {
                    // One GSO send (or a lone datagram): sendmsg, as the runtime does.
                    // SAFETY: header `sent` was laid out by `build` and points into
                    // `self.tx`, which is not touched until this call returns.
                    let r = unsafe { libc::sendmsg(fd, first.cast::<libc::msghdr>(), 0) };
                    // sendmsg counts bytes (0 for an empty datagram); we count headers.
                    if r >= 0 {
                        1
                    } else {
                        r
                    }
                } else {
                    // SAFETY: headers sent..sent + batch were laid out by `build` and
                    // point into `self.tx`, untouched until the call returns; the kernel
                    // writes only their `msg_len`.
                    let r = unsafe { libc::sendmmsg(fd, first, batch as _, 0) };
                    r as isize
                };
                self.stats.syscalls += 1;
                if r >= 0 {
                    sent += r as usize;
                    continue;
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(errno) if send_error_is_drop(errno) => {
                        self.stats.dropped_sends += 1;
                        sent += 1;
                    }
                    _ => return Err(format!("send: {e}")),
                }
            }
            self.tx.clear();
            Ok(())
        }

        /// Block (at most the socket's receive timeout) for one datagram, then take up to
        /// `MAX_BATCH`. `Ok(None)` when the wait timed out.
        fn recv(&mut self) -> Result<Option<usize>, String> {
            let slot_len = self.slot_len;
            let bufs = self.bufs.as_mut_ptr();
            for (i, iov) in self.iovs.iter_mut().enumerate() {
                iov.iov_base = bufs.wrapping_add(i * slot_len).cast::<c_void>();
                iov.iov_len = slot_len;
            }
            let names = self.names.as_mut_ptr();
            let ctrls = self.ctrls.as_mut_ptr();
            let iovs = self.iovs.as_mut_ptr();
            for (i, h) in self.hdrs.iter_mut().enumerate() {
                let m = &mut h.msg_hdr;
                m.msg_name = names.wrapping_add(i).cast::<c_void>();
                m.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                m.msg_iov = iovs.wrapping_add(i);
                m.msg_iovlen = 1;
                m.msg_control = ctrls.wrapping_add(i).cast::<c_void>();
                m.msg_controllen = CTRL_LEN as _;
                m.msg_flags = 0;
            }
            loop {
                // SAFETY: all MAX_BATCH headers point to this struct's buffers with the
                // sizes given (names, iovecs -> `bufs` slots, control buffers), none of
                // which is touched until the call returns.
                let r = unsafe {
                    libc::recvmmsg(
                        self.socket.as_raw_fd(),
                        self.hdrs.as_mut_ptr(),
                        MAX_BATCH as _,
                        libc::MSG_WAITFORONE as _,
                        ptr::null_mut(),
                    )
                };
                self.stats.syscalls += 1;
                if r >= 0 {
                    return Ok(Some(r as usize));
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN) => return Ok(None),
                    _ => return Err(format!("recvmmsg: {e}")),
                }
            }
        }
    }

    impl Transport for MmsgIo {
        fn queue(&mut self) -> &mut TxQueue {
            &mut self.tx
        }

        fn exchange<F>(&mut self, mut deliver: F) -> Result<(), String>
        where
            F: FnMut(&mut TxQueue, SocketAddrV4, &[u8]),
        {
            if !self.tx.is_empty() {
                self.send()?;
            }
            let Some(got) = self.recv()? else {
                return Ok(());
            };
            for i in 0..got {
                let h = &self.hdrs[i].msg_hdr;
                let len = self.hdrs[i].msg_len as usize;
                if h.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || len > self.slot_len {
                    self.stats.truncated += 1;
                    continue;
                }
                let Some(src) = from_sockaddr_in(&self.names[i], h.msg_namelen as usize) else {
                    return Err("recvmmsg: datagram from a non-IPv4 source".into());
                };
                let ctrl_len: usize = h.msg_controllen as _;
                let ctrl_len = ctrl_len.min(CTRL_LEN);
                let segment = gro_segment(&self.ctrls[i].0[..ctrl_len]);
                let payload = &self.bufs[i * self.slot_len..i * self.slot_len + len];
                let tx = &mut self.tx;
                for_each_segment(payload, segment, |d| deliver(tx, src, d));
            }
            Ok(())
        }

        fn stats(&self) -> IoStats {
            self.stats
        }
    }

    /// An anonymous private mapping: page-aligned, zero-filled memory.
    struct Mapping {
        ptr: *mut u8,
        len: usize,
    }

    impl Mapping {
        fn new(len: usize) -> io::Result<Self> {
            // SAFETY: a new anonymous mapping at an address of the kernel's choosing
            // aliases no existing memory.
            let p = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                Err(io::Error::last_os_error())
            } else {
                Ok(Mapping {
                    ptr: p.cast::<u8>(),
                    len,
                })
            }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, not unmapped
            // since. Owners drop a mapping only once the kernel no longer uses it (see
            // `UringIo::drop`), and nothing else points into it.
            unsafe { libc::munmap(self.ptr.cast::<c_void>(), self.len) };
        }
    }

    /// The kernel's `struct io_uring_buf`, one entry of a provided-buffer ring. The ring's
    /// tail is the `resv` field of entry 0.
    #[repr(C)]
    struct RingEntry {
        addr: u64,
        len: u32,
        bid: u16,
        resv: u16,
    }

    const _: () = assert!(size_of::<RingEntry>() == size_of::<types::BufRingEntry>());

    /// A ring of `entries` receive buffers of `buf_len` bytes that the kernel picks from.
    struct BufRing {
        ring: Mapping,
        bufs: Mapping,
        entries: u16,
        buf_len: usize,
        /// Our tail: entries before it are (or will be, once published) the kernel's.
        tail: u16,
    }

    impl BufRing {
        /// `entries` must be a power of two no larger than 32768.
        fn new(entries: u16, buf_len: usize) -> io::Result<Self> {
            debug_assert!(entries.is_power_of_two() && entries <= 1 << 15);
            let ring = Mapping::new(usize::from(entries) * size_of::<RingEntry>())?;
            let bufs = Mapping::new(usize::from(entries) * buf_len)?;
            let mut r = BufRing {
                ring,
                bufs,
                entries,
                buf_len,
                tail: 0,
            };
            for bid in 0..entries {
                r.recycle(bid);
            }
            r.publish();
            Ok(r)
        }

        /// Give buffer `bid` back to the kernel (visible once `publish`ed).
        fn recycle(&mut self, bid: u16) {
            debug_assert!(bid < self.entries);
            let slot = usize::from(self.tail & (self.entries - 1));
            let e = self.ring.ptr.cast::<RingEntry>().wrapping_add(slot);
            let addr = self.bufs.ptr as u64 + u64::from(bid) * self.buf_len as u64;
            // SAFETY: slot < entries, so `e` lies within the ring mapping (page-aligned, so
            // aligned for RingEntry). The kernel reads only entries between its head and
            // the published tail; this one is at or past our tail, so nobody reads it while
            // it is written. Fields are written one by one, never `resv`, which in entry 0
            // is the tail the kernel may be reading.
            unsafe {
                ptr::addr_of_mut!((*e).addr).write(addr);
                ptr::addr_of_mut!((*e).len).write(self.buf_len as u32);
                ptr::addr_of_mut!((*e).bid).write(bid);
            }
            self.tail = self.tail.wrapping_add(1);
        }

        /// Make the recycled buffers visible to the kernel.
        fn publish(&self) {
            let tail = self.ring.ptr.cast::<RingEntry>();
            // SAFETY: entry 0's `resv` is the ring's tail: a u16 inside the mapping,
            // aligned, that we only ever access atomically and the kernel only reads (with
            // acquire semantics, matching the release store).
            let tail = unsafe { AtomicU16::from_ptr(ptr::addr_of_mut!((*tail).resv)) };
            tail.store(self.tail, Ordering::Release);
        }

        /// The first `len` bytes of buffer `bid`, which a completion handed to us.
        fn get(&self, bid: u16, len: usize) -> Option<&[u8]> {
            if bid >= self.entries || len > self.buf_len {
                return None;
            }
            // SAFETY: buffer `bid` lies within the buffer mapping (bid < entries,
            // len <= buf_len). The kernel filled it and owns it no more until we recycle
            // it, which needs `&mut self` and so cannot happen while this slice lives.
            Some(unsafe {
                std::slice::from_raw_parts(self.bufs.ptr.add(usize::from(bid) * self.buf_len), len)
            })
        }

        fn ring_addr(&self) -> u64 {
            self.ring.ptr as u64
        }
    }

    /// Set up a ring, preferring the modes recommended for networking.
    fn new_ring(sq: u32, cq: u32) -> Result<(IoUring, &'static str), String> {
        let mut last = None;
        for mode in ["DEFER_TASKRUN|SINGLE_ISSUER", "COOP_TASKRUN", "default"] {
            let mut b = IoUring::builder();
            b.setup_cqsize(cq);
            match mode {
                "DEFER_TASKRUN|SINGLE_ISSUER" => {
                    b.setup_single_issuer().setup_defer_taskrun();
                }
                "COOP_TASKRUN" => {
                    b.setup_coop_taskrun();
                }
                _ => {}
            }
            match b.build(sq) {
                Ok(ring) => return Ok((ring, mode)),
                // EINVAL: this kernel lacks the flag; try the next mode.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
                Err(e) => return Err(format!("io_uring_setup: {e}")),
            }
        }
        Err(format!(
            "io_uring_setup: {}",
            last.map_or_else(String::new, |e| e.to_string())
        ))
    }

    /// io_uring: a multishot `RecvMsgMulti` into a provided-buffer ring, `SendMsg` per send
    /// header, one `io_uring_enter` per `exchange` in the common case.
    struct UringIo {
        // Dropped first: closing the ring fd after `drop` has quiesced it.
        ring: IoUring,
        socket: UdpSocket,
        gso: bool,
        mode: &'static str,
        timeout: types::Timespec,
        /// A multishot timeout completing every `LOSS_TIMEOUT` bounds the waits (Linux
        /// 6.4); without, each wait carries the timeout itself (an hrtimer per wait).
        tick: bool,
        tick_armed: bool,
        recv_armed: bool,
        /// Sends submitted whose completion has not arrived.
        inflight: usize,
        cqes: Vec<cqueue::Entry>,
        stats: IoStats,
        // The kernel may use these until `quiesce` says it has stopped: freed only then.
        recv_hdr: ManuallyDrop<Box<libc::msghdr>>,
        bufs: ManuallyDrop<BufRing>,
        tx: ManuallyDrop<TxQueue>,
    }

    impl UringIo {
        fn new(socket: UdpSocket, gso: bool, window: usize) -> Result<Self, String> {
            let sq = (2 * window + 8).next_power_of_two().clamp(64, 8192) as u32;
            let (ring, mode) = new_ring(sq, 4 * sq)?;
            if !ring.params().is_feature_ext_arg() {
                return Err("no IORING_FEAT_EXT_ARG (Linux 5.11) for timed waits".into());
            }
            let entries = (2 * window).next_power_of_two().clamp(64, 1 << 15) as u16;
            let buf_len = if gso { GRO_SLOT } else { SLOT };
            let bufs =
                BufRing::new(entries, buf_len).map_err(|e| format!("buffer ring memory: {e}"))?;
            // SAFETY: the ring memory is a page-aligned mapping of `entries` entries that
            // lives in `self.bufs` until `drop`, which unregisters it (or leaks it when the
            // kernel might still use it). The buffers it names are in the same struct.
            unsafe {
                ring.submitter()
                    .register_buf_ring_with_flags(bufs.ring_addr(), entries, BGID, 0)
            }
            .map_err(|e| format!("register_buf_ring (Linux 5.19): {e}"))?;
            let mut recv_hdr = Box::new(zeroed_msghdr());
            // The multishot receive reads only these two: the room for the source address
            // and for control messages at the head of each buffer.
            recv_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            recv_hdr.msg_controllen = CTRL_LEN as _;
            Ok(UringIo {
                ring,
                socket,
                gso,
                mode,
                timeout: types::Timespec::from(LOSS_TIMEOUT),
                tick: true,
                tick_armed: false,
                recv_armed: false,
                inflight: 0,
                cqes: Vec::with_capacity(4 * sq as usize),
                stats: IoStats::default(),
                recv_hdr: ManuallyDrop::new(recv_hdr),
                bufs: ManuallyDrop::new(bufs),
                tx: ManuallyDrop::new(TxQueue::with_capacity(2 * window)),
            })
        }

        fn describe(&self) -> String {
            format!(
                "{}, {} provided buffers of {} B",
                self.mode, self.bufs.entries, self.bufs.buf_len
            )
        }

        /// Submit what is queued and wait for `want` completions, or (at most) until the
        /// tick or the timeout ends the wait.
        fn enter(&mut self, want: usize) -> Result<(), String> {
            self.enter_with(want, !self.tick)
        }

        /// `enter`, with `timed`: the wait itself ends after `LOSS_TIMEOUT`.
        fn enter_with(&mut self, want: usize, timed: bool) -> Result<(), String> {
            let r = if timed {
                let args = types::SubmitArgs::new().timespec(&self.timeout);
                self.ring.submitter().submit_with_args(want, &args)
            } else {
                self.ring.submitter().submit_and_wait(want)
            };
            self.stats.syscalls += 1;
            match r {
                Ok(_) => Ok(()),
                Err(e) => match e.raw_os_error() {
                    // ETIME: the wait timed out. EBUSY: completions overflowed the ring;
                    // reaping them makes room.
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY) => Ok(()),
                    _ => Err(format!("io_uring_enter: {e}")),
                },
            }
        }

        /// Take the completions: sends are accounted here, receives kept in `self.cqes`.
        fn reap(&mut self) -> Result<(), String> {
            let mut error = None;
            for cqe in self.ring.completion() {
                if cqe.user_data() != SEND_UD {
                    self.cqes.push(cqe);
                    continue;
                }
                self.inflight -= 1;
                let r = cqe.result();
                if r < 0 {
                    if send_error_is_drop(-r) {
                        self.stats.dropped_sends += 1;
                    } else {
                        error = Some(io::Error::from_raw_os_error(-r));
                    }
                }
            }
            match error {
                None => Ok(()),
                Some(e) => Err(format!("SendMsg: {e}")),
            }
        }

        /// Queue the send headers built from `self.tx`, and the receive and the tick if they
        /// are not armed.
        fn push_sqes(&mut self) -> Result<(), String> {
            let fd = types::Fd(self.socket.as_raw_fd());
            let n = if self.tx.is_empty() {
                0
            } else {
                self.tx.build(self.gso)
            };
            let hdrs = self.tx.headers();
            let recv_hdr: *const libc::msghdr = &**self.recv_hdr;
            let mut k = 0;
            let mut attempts = 0;
            loop {
                let mut sq = self.ring.submission();
                while k < n {
                    let sqe = opcode::SendMsg::new(fd, hdrs.wrapping_add(k).cast::<libc::msghdr>())
                        .build()
                        .user_data(SEND_UD);
                    // SAFETY: the entry points to send header k, which points into
                    // `self.tx`. `exchange` changes `self.tx` only after every send's
                    // completion arrived, and `drop` frees it only then, so it outlives the
                    // kernel's use.
                    if unsafe { sq.push(&sqe) }.is_err() {
                        break;
                    }
                    k += 1;
                    self.inflight += 1;
                }
                if k == n && !self.recv_armed {
                    let sqe = opcode::RecvMsgMulti::new(fd, recv_hdr, BGID)
                        .build()
                        .user_data(RECV_UD);
                    // SAFETY: the entry points to `self.recv_hdr` and selects buffers from
                    // the ring registered as BGID; both live until `drop` has seen the
                    // receive's final completion (or leaks them).
                    if unsafe { sq.push(&sqe) }.is_ok() {
                        self.recv_armed = true;
                    }
                }
                if k == n && self.tick && !self.tick_armed {
                    let sqe = opcode::Timeout::new(&self.timeout)
                        .count(0)
                        .flags(types::TimeoutFlags::MULTISHOT)
                        .build()
                        .user_data(TICK_UD);
                    // SAFETY: the entry points to `self.timeout`, which the kernel copies
                    // when it takes the entry (in this `submit`), and which lives as long
                    // as the ring anyway.
                    if unsafe { sq.push(&sqe) }.is_ok() {
                        self.tick_armed = true;
                    }
                }
                drop(sq);
                if k == n && self.recv_armed && (self.tick_armed || !self.tick) {
                    return Ok(());
                }
                attempts += 1;
                if attempts > 8 {
                    return Err("submission queue stays full".into());
                }
                // The submission queue is full: hand it to the kernel and go on.
                self.ring
                    .submit()
                    .map_err(|e| format!("io_uring_enter: {e}"))?;
                self.stats.syscalls += 1;
            }
        }

        /// Stop the kernel using our memory: cancel the receive and wait for it and every
        /// send to complete. Returns whether that happened.
        fn quiesce(&mut self) -> bool {
            if self.recv_armed {
                let timeout = types::Timespec::from(Duration::from_secs(1));
                // NotFound means it already ended; its final completion is still to reap.
                let _ = self.ring.submitter().register_sync_cancel(
                    Some(timeout),
                    types::CancelBuilder::user_data(RECV_UD).all(),
                );
            }
            for _ in 0..20 {
                self.cqes.clear();
                let _ = self.reap();
                for cqe in &self.cqes {
                    if cqe.user_data() == RECV_UD && !cqueue::more(cqe.flags()) {
                        self.recv_armed = false;
                    }
                }
                if !self.recv_armed && self.inflight == 0 {
                    let _ = self.ring.submitter().unregister_buf_ring(BGID);
                    return true;
                }
                if self.enter_with(1, true).is_err() {
                    break;
                }
            }
            false
        }
    }

    impl Transport for UringIo {
        fn queue(&mut self) -> &mut TxQueue {
            &mut self.tx
        }

        fn exchange<F>(&mut self, mut deliver: F) -> Result<(), String>
        where
            F: FnMut(&mut TxQueue, SocketAddrV4, &[u8]),
        {
            self.push_sqes()?;
            // One system call: submit the sends, wait for their completions and at least one
            // more (a receive), or for the loss timeout.
            self.cqes.clear();
            self.enter(self.inflight + 1)?;
            self.reap()?;
            // Rarely a receive completes before all sends have; they own `self.tx` till then.
            let mut waits = 0;
            while self.inflight > 0 {
                if waits == 50 {
                    return Err(format!("{} sends not completed after 5 s", self.inflight));
                }
                self.enter(1)?;
                self.reap()?;
                waits += 1;
            }
            self.tx.clear();
            let cqes = std::mem::take(&mut self.cqes);
            for cqe in &cqes {
                if cqe.user_data() == TICK_UD {
                    if !cqueue::more(cqe.flags()) {
                        self.tick_armed = false;
                        if cqe.result() == -libc::EINVAL {
                            // No multishot timeouts (before Linux 6.4): time each wait.
                            self.tick = false;
                        }
                    }
                    continue;
                }
                if cqe.user_data() != RECV_UD {
                    return Err(format!("unexpected completion {}", cqe.user_data()));
                }
                if !cqueue::more(cqe.flags()) {
                    // The multishot ended: re-armed by the next `push_sqes`, after the
                    // buffers below are back in the ring.
                    self.recv_armed = false;
                    self.stats.rearms += 1;
                }
                let r = cqe.result();
                if r < 0 {
                    if r == -libc::ENOBUFS {
                        // The buffer ring ran dry; the datagrams wait in the socket.
                        self.stats.enobufs += 1;
                        continue;
                    }
                    let e = io::Error::from_raw_os_error(-r);
                    return Err(format!("multishot RecvMsg (Linux 6.0): {e}"));
                }
                let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                    return Err("receive completion without a buffer".into());
                };
                {
                    let buf = self
                        .bufs
                        .get(bid, r as usize)
                        .ok_or("receive completion names no buffer of ours")?;
                    let out = types::RecvMsgOut::parse(buf, &self.recv_hdr)
                        .map_err(|()| "malformed io_uring_recvmsg_out")?;
                    if out.is_payload_truncated() || out.is_control_data_truncated() {
                        self.stats.truncated += 1;
                    } else {
                        let src = sockaddr_in_bytes(out.name_data())
                            .ok_or("RecvMsg: datagram from a non-IPv4 source")?;
                        let segment = gro_segment(out.control_data());
                        let tx = &mut *self.tx;
                        for_each_segment(out.payload_data(), segment, |d| deliver(tx, src, d));
                    }
                }
                self.bufs.recycle(bid);
            }
            self.bufs.publish();
            self.cqes = cqes;
            Ok(())
        }

        fn stats(&self) -> IoStats {
            self.stats
        }
    }

    impl Drop for UringIo {
        fn drop(&mut self) {
            if self.quiesce() {
                // SAFETY: the receive has delivered its final completion and every send
                // has completed, so the kernel holds no pointer into these any more; each
                // is dropped exactly once, here, and not used after.
                unsafe {
                    ManuallyDrop::drop(&mut self.tx);
                    ManuallyDrop::drop(&mut self.bufs);
                    ManuallyDrop::drop(&mut self.recv_hdr);
                }
            }
            // Otherwise the kernel might still write into the receive buffers or read the
            // send buffers: leak them (never expected; a few MiB at most).
        }
    }

    // ------------------------------------------------------------------ the two sides

    /// Counters a worker publishes after every loop iteration, on their own cache line.
    #[derive(Default)]
    #[repr(align(128))]
    struct Counters {
        rpcs: AtomicU64,
        lost: AtomicU64,
        iterations: AtomicU64,
        syscalls: AtomicU64,
        dropped_sends: AtomicU64,
        truncated: AtomicU64,
        enobufs: AtomicU64,
        rearms: AtomicU64,
    }

    impl Counters {
        fn publish(&self, rpcs: u64, lost: u64, iterations: u64, io: IoStats) {
            let r = Ordering::Relaxed;
            self.rpcs.store(rpcs, r);
            self.lost.store(lost, r);
            self.iterations.store(iterations, r);
            self.syscalls.store(io.syscalls, r);
            self.dropped_sends.store(io.dropped_sends, r);
            self.truncated.store(io.truncated, r);
            self.enobufs.store(io.enobufs, r);
            self.rearms.store(io.rearms, r);
        }
    }

    #[derive(Default)]
    struct Shared {
        stop: AtomicBool,
        client: Counters,
        server: Counters,
    }

    /// Keep `window` requests outstanding; a request unanswered for `LOSS_TIMEOUT` counts
    /// as lost and is replaced (a late response to it is ignored).
    fn client_loop<T: Transport>(
        t: &mut T,
        server: SocketAddrV4,
        window: usize,
        shared: &Shared,
    ) -> Result<(), String> {
        let mut request = [0u8; PAYLOAD];
        // Requests from sequence number `front` on: when each was sent, whether answered.
        let mut front: u64 = 0;
        let mut requests: VecDeque<(Instant, bool)> = VecDeque::with_capacity(2 * window);
        let mut outstanding = 0;
        let (mut rpcs, mut lost, mut iterations) = (0u64, 0u64, 0u64);
        while !shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            while let Some(&(sent, answered)) = requests.front() {
                if !answered {
                    if now.duration_since(sent) < LOSS_TIMEOUT {
                        break;
                    }
                    lost += 1;
                    outstanding -= 1;
                }
                requests.pop_front();
                front += 1;
            }
            while outstanding < window {
                let seq = front + requests.len() as u64;
                request[..8].copy_from_slice(&seq.to_le_bytes());
                t.queue().push(server, &request);
                requests.push_back((now, false));
                outstanding += 1;
            }
            let mut done = 0;
            t.exchange(|_, _, response| {
                let Some(seq) = response.first_chunk::<8>().map(|b| u64::from_le_bytes(*b)) else {
                    return;
                };
                let slot = seq
                    .checked_sub(front)
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| requests.get_mut(i));
                if let Some((_, answered @ false)) = slot {
                    if response.len() == PAYLOAD {
                        *answered = true;
                        done += 1;
                    }
                }
            })?;
            outstanding -= done;
            rpcs += done as u64;
            iterations += 1;
            shared.client.publish(rpcs, lost, iterations, t.stats());
        }
        Ok(())
    }

    fn server_loop<T: Transport>(t: &mut T, shared: &Shared) -> Result<(), String> {
        let mut served = 0u64;
        let mut iterations = 0u64;
        while !shared.stop.load(Ordering::Relaxed) {
            t.exchange(|tx, from, request| {
                tx.push(from, request);
                served += 1;
            })?;
            iterations += 1;
            shared.server.publish(served, 0, iterations, t.stats());
        }
        Ok(())
    }

    #[derive(Clone, Copy)]
    enum Role {
        Client(SocketAddrV4),
        Server,
    }

    #[derive(Clone, Copy)]
    struct WorkerSpec {
        variant: Variant,
        role: Role,
        window: usize,
        cpu: Option<usize>,
    }

    /// Pin the worker, build its transport on its own thread (an io_uring with
    /// SINGLE_ISSUER belongs to the thread that made it), report it ready, then run its
    /// side.
    fn worker(
        spec: WorkerSpec,
        socket: UdpSocket,
        shared: &Shared,
        ready: mpsc::Sender<Result<String, String>>,
    ) -> Result<(), String> {
        let WorkerSpec {
            variant,
            role,
            window,
            cpu,
        } = spec;
        fn run<T: Transport>(
            mut t: T,
            role: Role,
            window: usize,
            shared: &Shared,
        ) -> Result<(), String> {
            match role {
                Role::Client(server) => client_loop(&mut t, server, window, shared),
                Role::Server => server_loop(&mut t, shared),
            }
        }
        if let Some(cpu) = cpu {
            if let Err(e) = pin_thread(cpu) {
                let e = format!("pinning a thread to CPU {cpu}: {e} (try --pin none)");
                let _ = ready.send(Err(e.clone()));
                return Err(e);
            }
        }
        if variant.uring() {
            match UringIo::new(socket, variant.gso(), window) {
                Ok(t) => {
                    let _ = ready.send(Ok(t.describe()));
                    run(t, role, window, shared)
                }
                Err(e) => {
                    let _ = ready.send(Err(e.clone()));
                    Err(e)
                }
            }
        } else {
            let _ = ready.send(Ok(String::new()));
            run(
                MmsgIo::new(socket, variant.gso(), window),
                role,
                window,
                shared,
            )
        }
    }

    /// The CPUs this process may run on, lowest first (empty if unknown).
    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: cpu_set_t is a plain bit array; all zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a writable cpu_set_t of the size passed; pid 0 is this thread.
        if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
            return Vec::new();
        }
        (0..8 * size_of::<libc::cpu_set_t>())
            // SAFETY: every index is below the set's capacity in bits.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect()
    }

    /// Run the calling thread on `cpu` only.
    fn pin_thread(cpu: usize) -> io::Result<()> {
        if cpu >= 8 * size_of::<libc::cpu_set_t>() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: cpu_set_t is a plain bit array; all zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` is below the set's capacity in bits (checked above).
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: `set` is an initialised cpu_set_t of the size passed; pid 0 is the
        // calling thread.
        if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    // ------------------------------------------------------------------ measurement

    fn process_cpu_time() -> Result<Duration, String> {
        let mut ru = MaybeUninit::<libc::rusage>::uninit();
        // SAFETY: getrusage fills the whole rusage on success; it is read only then.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) } != 0 {
            return Err(format!("getrusage: {}", io::Error::last_os_error()));
        }
        // SAFETY: initialised by the successful call above.
        let ru = unsafe { ru.assume_init() };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
    }

    /// The kernel's softirq threads: under load the kernel moves network-stack work
    /// (loopback delivery included) to them, and `getrusage` does not see it.
    fn ksoftirqd_stat_paths() -> Vec<std::path::PathBuf> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.starts_with("ksoftirqd/"))
            })
            .map(|p| p.join("schedstat"))
            .collect()
    }

    /// CPU time the `ksoftirqd` threads have run (the first field of `schedstat`, in ns),
    /// or `None` where that is unreadable.
    fn ksoftirqd_time(paths: &[std::path::PathBuf]) -> Option<Duration> {
        if paths.is_empty() {
            return None;
        }
        let mut ns = 0u64;
        for p in paths {
            let s = std::fs::read_to_string(p).ok()?;
            ns += s.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(Duration::from_nanos(ns))
    }

    /// Counters summed over slices.
    #[derive(Default, Clone, Copy)]
    struct Sample {
        elapsed: Duration,
        cpu: Duration,
        /// `ksoftirqd` CPU time; `None` once any slice could not read it.
        softirqd: Option<Duration>,
        rpcs: u64,
        lost: u64,
        client_iterations: u64,
        syscalls: u64,
        dropped_sends: u64,
        truncated: u64,
        enobufs: u64,
        rearms: u64,
    }

    impl Sample {
        fn snapshot(
            shared: &Shared,
            softirqd: &[std::path::PathBuf],
        ) -> Result<(Instant, Sample), String> {
            let r = Ordering::Relaxed;
            let (c, s) = (&shared.client, &shared.server);
            let softirqd = ksoftirqd_time(softirqd);
            let cpu = process_cpu_time()?;
            let now = Instant::now();
            Ok((
                now,
                Sample {
                    elapsed: Duration::ZERO,
                    cpu,
                    softirqd,
                    rpcs: c.rpcs.load(r),
                    lost: c.lost.load(r),
                    client_iterations: c.iterations.load(r),
                    syscalls: c.syscalls.load(r) + s.syscalls.load(r),
                    dropped_sends: c.dropped_sends.load(r) + s.dropped_sends.load(r),
                    truncated: c.truncated.load(r) + s.truncated.load(r),
                    enobufs: c.enobufs.load(r) + s.enobufs.load(r),
                    rearms: c.rearms.load(r) + s.rearms.load(r),
                },
            ))
        }

        /// `self` minus the earlier snapshot `a`.
        fn since(&self, a: &Sample) -> Sample {
            Sample {
                elapsed: self.elapsed.saturating_sub(a.elapsed),
                cpu: self.cpu.saturating_sub(a.cpu),
                softirqd: self
                    .softirqd
                    .zip(a.softirqd)
                    .map(|(b, a)| b.saturating_sub(a)),
                rpcs: self.rpcs - a.rpcs,
                lost: self.lost - a.lost,
                client_iterations: self.client_iterations - a.client_iterations,
                syscalls: self.syscalls - a.syscalls,
                dropped_sends: self.dropped_sends - a.dropped_sends,
                truncated: self.truncated - a.truncated,
                enobufs: self.enobufs - a.enobufs,
                rearms: self.rearms - a.rearms,
            }
        }

        fn add(&mut self, b: &Sample) {
            self.elapsed += b.elapsed;
            self.cpu += b.cpu;
            self.softirqd = self.softirqd.zip(b.softirqd).map(|(a, b)| a + b);
            self.rpcs += b.rpcs;
            self.lost += b.lost;
            self.client_iterations += b.client_iterations;
            self.syscalls += b.syscalls;
            self.dropped_sends += b.dropped_sends;
            self.truncated += b.truncated;
            self.enobufs += b.enobufs;
            self.rearms += b.rearms;
        }

        fn rps(&self) -> f64 {
            self.rpcs as f64 / self.elapsed.as_secs_f64().max(1e-9)
        }

        fn per_rpc(&self, x: f64) -> Option<f64> {
            (self.rpcs > 0).then(|| x / self.rpcs as f64)
        }

        fn cpu_us_per_rpc(&self) -> Option<f64> {
            self.per_rpc(self.cpu.as_secs_f64() * 1e6)
        }

        fn softirqd_us_per_rpc(&self) -> Option<f64> {
            self.per_rpc(self.softirqd?.as_secs_f64() * 1e6)
        }
    }

    /// What every slice shares.
    struct Plan {
        window: usize,
        slice: Duration,
        /// CPUs for the server and the client thread.
        cpus: (Option<usize>, Option<usize>),
        softirqd: Vec<std::path::PathBuf>,
    }

    /// One measured slice of `variant` on fresh sockets and threads; returns the ring setup
    /// (io_uring variants) and the counts.
    fn run_slice(variant: Variant, plan: &Plan) -> Result<(String, Sample), String> {
        let (client_sock, server_sock) = socket_pair(variant)?;
        let server_addr = local_v4(&server_sock)?;
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut handles = Vec::new();
        for (role, cpu, socket) in [
            (Role::Server, plan.cpus.0, server_sock),
            (Role::Client(server_addr), plan.cpus.1, client_sock),
        ] {
            let spec = WorkerSpec {
                variant,
                role,
                window: plan.window,
                cpu,
            };
            let theirs = Arc::clone(&shared);
            let ready = ready_tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("{}-{}", variant.name(), handles.len()))
                .spawn(move || worker(spec, socket, &theirs, ready));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    shared.stop.store(true, Ordering::Relaxed);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(format!("spawning a thread: {e}"));
                }
            }
        }
        drop(ready_tx);
        let mut setup = Ok(String::new());
        for _ in 0..2 {
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(desc)) if !desc.is_empty() => setup = setup.map(|_| desc),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => setup = Err(e),
                Err(_) => setup = Err("a worker did not start".into()),
            }
        }
        let measured = setup.and_then(|desc| {
            thread::sleep(WARMUP);
            let (t0, a) = Sample::snapshot(&shared, &plan.softirqd)?;
            thread::sleep(plan.slice);
            let (t1, mut b) = Sample::snapshot(&shared, &plan.softirqd)?;
            b.elapsed = t1 - t0;
            Ok((desc, b.since(&a)))
        });
        shared.stop.store(true, Ordering::Relaxed);
        let mut worker_error = None;
        for h in handles {
            let r = h.join().unwrap_or_else(|_| Err("a worker panicked".into()));
            if let Err(e) = r {
                worker_error.get_or_insert(e);
            }
        }
        match worker_error {
            Some(e) => Err(e),
            None => measured,
        }
    }

    enum State {
        Running {
            setup: String,
            total: Sample,
            slice_rps: Vec<f64>,
            slice_cpu: Vec<f64>,
        },
        Unavailable(String),
    }

    fn fmt_opt(x: Option<f64>, prec: usize) -> String {
        x.filter(|v| v.is_finite())
            .map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
    }

    fn json_num(x: Option<f64>, prec: usize) -> String {
        x.filter(|v| v.is_finite())
            .map_or_else(|| "null".into(), |v| format!("{v:.prec$}"))
    }

    fn min_max(v: &[f64], prec: usize) -> String {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if v.is_empty() {
            "-".into()
        } else {
            format!("{lo:.prec$}..{hi:.prec$}")
        }
    }

    pub(super) fn main() {
        let cfg = match Config::from_args(std::env::args().skip(1)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("syscalls: {e}");
                eprintln!(
                    "usage: cargo bench -p homa --bench syscalls -- [--seconds S] [--window N] \
                     [--pin split|same|none] [--only mmsg,mmsg_gso,uring,uring_gso]"
                );
                std::process::exit(2);
            }
        };
        let (slice, rounds) = cfg.slices();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "?".into(), |s| s.trim().to_string());
        let allowed = allowed_cpus();
        let (cpus, placement) = match (cfg.pin, allowed.as_slice()) {
            (Pin::Split, [a, b, ..]) => (
                (Some(*a), Some(*b)),
                format!("server on CPU {a}, client on CPU {b}"),
            ),
            (Pin::Same, [a, ..]) => ((Some(*a), Some(*a)), format!("both threads on CPU {a}")),
            (Pin::Free, _) => ((None, None), "threads not pinned".to_string()),
            _ => (
                (None, None),
                format!("threads not pinned ({} usable CPUs)", allowed.len()),
            ),
        };
        let plan = Plan {
            window: cfg.window,
            slice,
            cpus,
            softirqd: ksoftirqd_stat_paths(),
        };
        println!(
            "syscalls: {PAYLOAD}-byte echo RPCs over loopback UDP, window {}, {rounds} slices of \
             {:.2} s per variant (each after {:.2} s warm-up), Linux {kernel}, {} usable CPUs, \
             {placement}",
            cfg.window,
            slice.as_secs_f64(),
            WARMUP.as_secs_f64(),
            allowed.len(),
        );

        let mut states: Vec<Option<State>> = Variant::ALL.iter().map(|_| None).collect();
        for round in 0..rounds {
            for k in 0..Variant::ALL.len() {
                let i = (round + k) % Variant::ALL.len();
                let v = Variant::ALL[i];
                let skipped = cfg
                    .only
                    .as_ref()
                    .is_some_and(|only| !only.iter().any(|n| n == v.name()));
                if skipped || matches!(states[i], Some(State::Unavailable(_))) {
                    continue;
                }
                match run_slice(v, &plan) {
                    Ok((setup, s)) => {
                        let state = states[i].get_or_insert_with(|| State::Running {
                            setup,
                            total: Sample {
                                softirqd: Some(Duration::ZERO),
                                ..Sample::default()
                            },
                            slice_rps: Vec::new(),
                            slice_cpu: Vec::new(),
                        });
                        if let State::Running {
                            total,
                            slice_rps,
                            slice_cpu,
                            ..
                        } = state
                        {
                            total.add(&s);
                            slice_rps.push(s.rps());
                            if let Some(c) = s.cpu_us_per_rpc() {
                                slice_cpu.push(c);
                            }
                        }
                    }
                    Err(reason) => {
                        println!("{}: unavailable: {reason}", v.name());
                        states[i] = Some(State::Unavailable(reason));
                    }
                }
            }
        }

        let base = match &states[0] {
            Some(State::Running { total, .. }) => Some(*total),
            _ => None,
        };
        println!();
        println!(
            "{:<10} {:>10} {:>11} {:>8} {:>8} {:>9} {:>9} {:>9} {:>21} {:>13} {:>6}",
            "variant",
            "RPC/s",
            "CPU us/RPC",
            "RPC/s x",
            "CPU x",
            "ksoftirqd",
            "sys/RPC",
            "RPC/iter",
            "slice RPC/s min..max",
            "slice CPU us",
            "lost"
        );
        let mut json = Vec::new();
        for (v, state) in Variant::ALL.iter().zip(&states) {
            let Some(State::Running {
                total,
                slice_rps,
                slice_cpu,
                ..
            }) = state
            else {
                println!("{:<10} {:>10}", v.name(), "-");
                json.push(format!("\"{}\":null", v.name()));
                continue;
            };
            let rps = total.rps();
            let cpu = total.cpu_us_per_rpc();
            let (rps_x, cpu_x) = match base {
                Some(b) => (
                    Some(rps / b.rps()),
                    cpu.zip(b.cpu_us_per_rpc()).map(|(c, bc)| c / bc),
                ),
                None => (None, None),
            };
            let per_iter = (total.client_iterations > 0)
                .then(|| total.rpcs as f64 / total.client_iterations as f64);
            let sys = total.per_rpc(total.syscalls as f64);
            let softirqd = total.softirqd_us_per_rpc();
            println!(
                "{:<10} {:>10.0} {:>11} {:>8} {:>8} {:>9} {:>9} {:>9} {:>21} {:>13} {:>6}",
                v.name(),
                rps,
                fmt_opt(cpu, 3),
                fmt_opt(rps_x, 3),
                fmt_opt(cpu_x, 3),
                fmt_opt(softirqd, 3),
                fmt_opt(sys, 4),
                fmt_opt(per_iter, 1),
                min_max(slice_rps, 0),
                min_max(slice_cpu, 3),
                total.lost
            );
            json.push(format!(
                "\"{}\":{{\"rps\":{},\"cpu_us_per_rpc\":{},\"ksoftirqd_us_per_rpc\":{},\
                 \"syscalls_per_rpc\":{}}}",
                v.name(),
                json_num(Some(rps), 1),
                json_num(cpu, 4),
                json_num(softirqd, 4),
                json_num(sys, 4)
            ));
        }
        for (v, state) in Variant::ALL.iter().zip(&states) {
            match state {
                Some(State::Running { setup, total, .. }) => {
                    let mut notes = Vec::new();
                    if !setup.is_empty() {
                        notes.push(format!("io_uring {setup}"));
                    }
                    if v.uring() {
                        notes.push(format!(
                            "{} multishot re-arms ({} after ENOBUFS)",
                            total.rearms, total.enobufs
                        ));
                    }
                    if total.dropped_sends > 0 {
                        notes.push(format!("{} sends refused", total.dropped_sends));
                    }
                    if total.truncated > 0 {
                        notes.push(format!("{} truncated receives", total.truncated));
                    }
                    if !notes.is_empty() {
                        println!("  {}: {}", v.name(), notes.join("; "));
                    }
                }
                Some(State::Unavailable(reason)) => {
                    println!("  {}: unavailable: {reason}", v.name());
                }
                None => {}
            }
        }
        println!("{{{}}}", json.join(","));
    }
}
