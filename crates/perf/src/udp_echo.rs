//! The `udp_batched` lane of `homa perf tput`: the kernel's UDP doing the request/response
//! job as cheaply as it can, the floor Homa's small-message throughput is measured
//! against.
//!
//! A server thread takes whatever requests have arrived with one `recvmmsg` (blocking
//! until the first, up to 64) and sends all their responses with one `sendmmsg`. The
//! client, on the measuring thread, keeps `window` requests outstanding the same way:
//! one `recvmmsg` of whatever responses have arrived, then one `sendmmsg` of as many new
//! requests. Each request and each response is one datagram carrying the perf header
//! ([`crate::header`]), so it does the same job as a Homa or TCP lane, with no transport
//! of its own: no retransmission (a lost datagram just leaves the window, and is counted),
//! no flow control beyond the window.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrIn};

use crate::header::{RequestHeader, HEADER_LEN};
use crate::rtt::MAX_UDP_PAYLOAD;
use crate::tally::Tally;

/// Datagrams one `recvmmsg` or `sendmmsg` takes at most.
const BATCH: usize = 64;
/// How long a receive waits before the loop looks at its stop flag (server) or counts
/// what is outstanding as lost (client).
const RECV_TIMEOUT: Duration = Duration::from_millis(50);
/// Receive buffer of both sockets (the kernel caps it at `net.core.rmem_max`).
const RECV_BUFFER: usize = 8 << 20;

/// The lane: a running echo server and what a client needs to reach it.
pub struct UdpEcho {
    server: SocketAddrV4,
    stop: Arc<AtomicBool>,
}

impl UdpEcho {
    /// Starts the server thread on an ephemeral loopback port.
    pub fn start() -> io::Result<Self> {
        let sock = loopback_socket()?;
        let server = match sock.local_addr()? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound to an IPv4 address"),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::Builder::new()
            .name("perf-udp-echo".into())
            .spawn(move || serve(&sock, &st))?;
        Ok(Self { server, stop })
    }

    /// Keeps `window` requests of `size` bytes outstanding for `dur`, each asking for a
    /// `response`-byte response; counts the RPCs completed meanwhile. Both lengths must
    /// fit in one datagram.
    pub fn slice(
        &self,
        size: usize,
        response: usize,
        window: usize,
        dur: Duration,
    ) -> io::Result<Tally> {
        assert!(size <= MAX_UDP_PAYLOAD && response <= MAX_UDP_PAYLOAD);
        let sock = loopback_socket()?;
        sock.connect(self.server)?;
        let fd = sock.as_raw_fd();
        let start = Instant::now();
        let end = start + dur;
        let window = window.max(1);
        let mut tally = Tally {
            secs: dur.as_secs_f64(),
            ..Tally::default()
        };
        let mut requests: Vec<Vec<u8>> = (0..BATCH)
            .map(|_| vec![0u8; size.max(HEADER_LEN)])
            .collect();
        let mut responses: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; MAX_UDP_PAYLOAD]).collect();
        let mut next_id = 0u32;
        let mut outstanding = 0usize;
        let mut send_new = |count: usize, requests: &mut Vec<Vec<u8>>| -> io::Result<usize> {
            let now = Instant::now();
            for r in requests.iter_mut().take(count) {
                RequestHeader {
                    response_len: response as u32,
                    id: next_id,
                    sent_ns: (now - start).as_nanos() as u64,
                }
                .encode(r);
                next_id = next_id.wrapping_add(1);
            }
            let datagrams: Vec<&[u8]> = requests[..count].iter().map(|r| &r[..]).collect();
            send_all(fd, &datagrams, None)
        };
        loop {
            let now = Instant::now();
            if now < end && outstanding < window {
                let want = (window - outstanding).min(BATCH);
                outstanding += send_new(want, &mut requests)?;
                continue;
            }
            if outstanding == 0 {
                break;
            }
            let got = match recv_some(fd, &mut responses) {
                Ok(got) => got,
                Err(e) if is_timeout(&e) => {
                    // Datagrams lost (nothing retransmits them here): they leave the window.
                    tally.failed(outstanding as u64, || {
                        format!("{outstanding} requests or responses lost")
                    });
                    outstanding = 0;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let done = Instant::now();
            for (buf, len, _) in &got {
                outstanding = outstanding.saturating_sub(1);
                if *len != response.clamp(HEADER_LEN, MAX_UDP_PAYLOAD) {
                    tally.errors += 1;
                    continue;
                }
                let Ok(h) = RequestHeader::decode(&responses[*buf][..*len]) else {
                    tally.errors += 1;
                    continue;
                };
                if done < end {
                    tally.completed(size, done - (start + Duration::from_nanos(h.sent_ns)));
                }
            }
        }
        Ok(tally)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A UDP socket on an ephemeral loopback port with a large receive buffer and a read
/// timeout.
fn loopback_socket() -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    socket2::SockRef::from(&sock).set_recv_buffer_size(RECV_BUFFER)?;
    sock.set_read_timeout(Some(RECV_TIMEOUT))?;
    Ok(sock)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One `recvmmsg`: blocks (up to the socket's timeout) for the first datagram, then takes
/// whatever else is queued, up to `bufs.len()` (at most [`BATCH`]). Returns, per
/// datagram: which buffer, its length, and its source.
fn recv_some(fd: i32, bufs: &mut [Vec<u8>]) -> io::Result<Vec<(usize, usize, Option<SockaddrIn>)>> {
    let n = bufs.len().min(BATCH);
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(n, None);
    let mut slices: Vec<[IoSliceMut<'_>; 1]> = bufs[..n]
        .iter_mut()
        .map(|b| [IoSliceMut::new(&mut b[..])])
        .collect();
    let results = recvmmsg(
        fd,
        &mut headers,
        slices.iter_mut(),
        MsgFlags::MSG_WAITFORONE,
        None,
    )
    .map_err(io::Error::from)?;
    Ok(results
        .enumerate()
        .map(|(i, m)| (i, m.bytes, m.address))
        .collect())
}

/// Sends each of `datagrams` (to `dests[i]`, or to the connected peer) with as few
/// `sendmmsg` calls as it takes. Returns how many went out.
fn send_all(
    fd: i32,
    datagrams: &[&[u8]],
    dests: Option<&[Option<SockaddrIn>]>,
) -> io::Result<usize> {
    let mut sent = 0;
    while sent < datagrams.len() {
        let chunk = &datagrams[sent..(sent + BATCH).min(datagrams.len())];
        let slices: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|d| [IoSlice::new(d)]).collect();
        let addrs: Vec<Option<SockaddrIn>> = match dests {
            Some(d) => d[sent..sent + chunk.len()].to_vec(),
            None => vec![None; chunk.len()],
        };
        let mut headers = MultiHeaders::<SockaddrIn>::preallocate(chunk.len(), None);
        let n = sendmmsg(
            fd,
            &mut headers,
            slices.iter(),
            &addrs,
            [],
            MsgFlags::empty(),
        )
        .map_err(io::Error::from)?
        .count();
        sent += n.max(1);
    }
    Ok(sent)
}

/// The server loop: every request answered with a response of the length it asks for
/// (its header echoed, then zeros), a batch at a time.
fn serve(sock: &UdpSocket, stop: &AtomicBool) {
    let fd = sock.as_raw_fd();
    let mut requests: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; MAX_UDP_PAYLOAD]).collect();
    // Zeros behind each echoed header: only the first HEADER_LEN bytes are ever written.
    let mut responses: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; MAX_UDP_PAYLOAD]).collect();
    let mut lens: Vec<usize> = Vec::with_capacity(BATCH);
    let mut dests: Vec<Option<SockaddrIn>> = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) {
        let got = match recv_some(fd, &mut requests) {
            Ok(got) => got,
            Err(_) => continue, // a timeout: look at `stop`
        };
        lens.clear();
        dests.clear();
        for (buf, len, from) in got {
            let Ok(h) = RequestHeader::decode(&requests[buf][..len]) else {
                continue;
            };
            let r = &mut responses[lens.len()];
            r[..HEADER_LEN].copy_from_slice(&requests[buf][..HEADER_LEN]);
            lens.push((h.response_len as usize).clamp(HEADER_LEN, MAX_UDP_PAYLOAD));
            dests.push(from);
        }
        let datagrams: Vec<&[u8]> = responses.iter().zip(&lens).map(|(r, &l)| &r[..l]).collect();
        let _ = send_all(fd, &datagrams, Some(&dests));
    }
}
