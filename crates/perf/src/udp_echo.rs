//! The `udp_batched` and `udp_gso` lanes of `homa perf tput`: the kernel's UDP doing the
//! request/response job as cheaply as it can, the floors Homa's small-message throughput
//! is measured against.
//!
//! `udp_batched`: a server thread takes whatever requests have arrived with one `recvmmsg`
//! (blocking until the first, up to 64) and sends all their responses with one `sendmmsg`.
//! The client, on the measuring thread, keeps `window` requests outstanding the same way:
//! one `recvmmsg` of whatever responses have arrived, then one `sendmmsg` of as many new
//! requests.
//!
//! `udp_gso`: the same echo with segmentation offload both ways, the cheapest the kernel
//! allows: the client sends its new requests (all one size) as one `UDP_SEGMENT` send, the
//! server receives them coalesced by `UDP_GRO` (one `recvmsg` for a run of them) and sends
//! the responses back as one `UDP_SEGMENT` send, which the client receives coalesced too.
//!
//! Each request and each response is one datagram carrying the perf header
//! ([`crate::header`]), so each lane does the same job as a Homa or TCP lane, with no
//! transport of its own: no retransmission (a lost datagram just leaves the window, and is
//! counted), no flow control beyond the window.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmmsg, recvmsg, sendmmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned,
    MsgFlags, MultiHeaders, SockaddrIn,
};

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

/// Most bytes one GSO send or GRO receive carries (the most a datagram can).
const GSO_BYTES: usize = 65_000;

/// How an echo batches its datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// `recvmmsg` and `sendmmsg`: one system call per batch, one datagram each.
    Mmsg,
    /// UDP GSO sends and GRO receives: a batch of same-size datagrams crosses the kernel
    /// as one.
    Gso,
}

/// The lane: a running echo server and what a client needs to reach it.
pub struct UdpEcho {
    server: SocketAddrV4,
    stop: Arc<AtomicBool>,
    batching: Batching,
}

impl UdpEcho {
    /// Starts the server thread on an ephemeral loopback port. [`Batching::Gso`] fails if
    /// the kernel has no UDP GRO.
    pub fn start(batching: Batching) -> io::Result<Self> {
        let sock = loopback_socket(batching)?;
        let server = match sock.local_addr()? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound to an IPv4 address"),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::Builder::new()
            .name("perf-udp-echo".into())
            .spawn(move || match batching {
                Batching::Mmsg => serve(&sock, &st),
                Batching::Gso => serve_gso(&sock, &st),
            })?;
        Ok(Self {
            server,
            stop,
            batching,
        })
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
        let sock = loopback_socket(self.batching)?;
        sock.connect(self.server)?;
        let mut books = Books::new(size, response, window, dur);
        match self.batching {
            Batching::Mmsg => books.run_mmsg(sock.as_raw_fd())?,
            Batching::Gso => books.run_gso(sock.as_raw_fd())?,
        }
        Ok(books.tally)
    }
}

/// One client slice's window and counts, whichever calls move its datagrams.
struct Books {
    start: Instant,
    end: Instant,
    /// Request and response lengths, each at least a header.
    size: usize,
    response: usize,
    window: usize,
    outstanding: usize,
    next_id: u32,
    tally: Tally,
}

impl Books {
    fn new(size: usize, response: usize, window: usize, dur: Duration) -> Self {
        let start = Instant::now();
        Books {
            start,
            end: start + dur,
            size: size.max(HEADER_LEN),
            response: response.clamp(HEADER_LEN, MAX_UDP_PAYLOAD),
            window: window.max(1),
            outstanding: 0,
            next_id: 0,
            tally: Tally {
                secs: dur.as_secs_f64(),
                ..Tally::default()
            },
        }
    }

    /// Requests to send now (at most `max`): none once the slice is over or the window
    /// is full.
    fn room(&self, max: usize) -> usize {
        if Instant::now() < self.end {
            (self.window - self.outstanding.min(self.window)).min(max)
        } else {
            0
        }
    }

    /// Writes the next request's header into `r`, sent at `now`.
    fn stamp(&mut self, r: &mut [u8], now: Instant) {
        RequestHeader {
            response_len: self.response as u32,
            id: self.next_id,
            sent_ns: (now - self.start).as_nanos() as u64,
        }
        .encode(r);
        self.next_id = self.next_id.wrapping_add(1);
    }

    /// A receive timed out: the datagrams in flight were lost (nothing retransmits them
    /// here) and leave the window.
    fn lost(&mut self) {
        let outstanding = self.outstanding;
        self.tally.failed(outstanding as u64, || {
            format!("{outstanding} requests or responses lost")
        });
        self.outstanding = 0;
    }

    /// A response `r` arrived at `done`.
    fn answered(&mut self, r: &[u8], done: Instant) {
        self.outstanding = self.outstanding.saturating_sub(1);
        let h = (r.len() == self.response)
            .then(|| RequestHeader::decode(r).ok())
            .flatten();
        match h {
            None => self.tally.errors += 1,
            Some(h) if done < self.end => {
                let rtt = done - (self.start + Duration::from_nanos(h.sent_ns));
                self.tally.completed(self.size, rtt);
            }
            Some(_) => {}
        }
    }

    /// `recvmmsg` and `sendmmsg`, a datagram per message.
    fn run_mmsg(&mut self, fd: i32) -> io::Result<()> {
        let mut requests: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; self.size]).collect();
        let mut responses: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; MAX_UDP_PAYLOAD]).collect();
        loop {
            let count = self.room(BATCH);
            if count > 0 {
                let now = Instant::now();
                for r in requests.iter_mut().take(count) {
                    self.stamp(r, now);
                }
                let datagrams: Vec<&[u8]> = requests[..count].iter().map(|r| &r[..]).collect();
                self.outstanding += send_all(fd, &datagrams, None)?;
                continue;
            }
            if self.outstanding == 0 {
                return Ok(());
            }
            match recv_some(fd, &mut responses) {
                Ok(got) => {
                    let done = Instant::now();
                    for (buf, len, _) in got {
                        self.answered(&responses[buf][..len], done);
                    }
                }
                Err(e) if is_timeout(&e) => self.lost(),
                Err(e) => return Err(e),
            }
        }
    }

    /// GSO sends and GRO receives: a run of requests as one send, whatever arrived
    /// together as one receive.
    fn run_gso(&mut self, fd: i32) -> io::Result<()> {
        let size = self.size;
        // Requests per send: one GSO send carries at most 64 segments and GSO_BYTES.
        let per_send = (GSO_BYTES / size).clamp(1, BATCH);
        let mut requests = vec![0u8; per_send * size];
        let mut incoming = vec![0u8; GSO_BYTES + MAX_UDP_PAYLOAD];
        loop {
            let count = self.room(per_send);
            if count > 0 {
                let now = Instant::now();
                for r in requests.chunks_mut(size).take(count) {
                    self.stamp(r, now);
                }
                send_gso(fd, &requests[..count * size], size, None)?;
                self.outstanding += count;
                continue;
            }
            if self.outstanding == 0 {
                return Ok(());
            }
            match recv_gro(fd, &mut incoming) {
                Ok((len, segment, _)) => {
                    let done = Instant::now();
                    for r in incoming[..len].chunks(segment.max(1)) {
                        self.answered(r, done);
                    }
                }
                Err(e) if is_timeout(&e) => self.lost(),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A UDP socket on an ephemeral loopback port with a large receive buffer and a read
/// timeout; with [`Batching::Gso`], UDP GRO on.
fn loopback_socket(batching: Batching) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    socket2::SockRef::from(&sock).set_recv_buffer_size(RECV_BUFFER)?;
    sock.set_read_timeout(Some(RECV_TIMEOUT))?;
    if batching == Batching::Gso {
        setsockopt(&sock, sockopt::UdpGroSegment, &true).map_err(io::Error::from)?;
    }
    Ok(sock)
}

/// One `recvmsg` with UDP GRO: a run of datagrams coalesced into `buf` (blocking up to the
/// socket's timeout for the first). Returns the bytes, the segment length (the datagrams'
/// common length; the last may be shorter) and the source.
fn recv_gro(fd: i32, buf: &mut [u8]) -> io::Result<(usize, usize, Option<SockaddrIn>)> {
    let mut cmsg = nix::cmsg_space!(i32);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let len = msg.bytes;
    let mut segment = len;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::UdpGroSegments(s) = c {
            segment = s as usize;
        }
    }
    Ok((len, segment, msg.address))
}

/// One send of `data` cut by the kernel into datagrams of `segment` bytes (UDP GSO; the
/// last may be shorter), to `dest` or the connected peer.
fn send_gso(fd: i32, data: &[u8], segment: usize, dest: Option<&SockaddrIn>) -> io::Result<()> {
    let iov = [IoSlice::new(data)];
    let seg = segment as u16;
    let gso = [ControlMessage::UdpGsoSegments(&seg)];
    // A single datagram needs no segmentation (and a GSO send of one is refused by some
    // kernels when it is shorter than the segment).
    let cmsgs: &[ControlMessage<'_>] = if data.len() > segment { &gso } else { &[] };
    sendmsg(fd, &iov, cmsgs, MsgFlags::empty(), dest).map_err(io::Error::from)?;
    Ok(())
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

/// The GSO server loop: each coalesced run of requests answered with one GSO send of
/// their responses (all one length, as the client asks; a run asking for lengths that
/// differ is answered one datagram at a time).
fn serve_gso(sock: &UdpSocket, stop: &AtomicBool) {
    let fd = sock.as_raw_fd();
    let mut incoming = vec![0u8; GSO_BYTES + MAX_UDP_PAYLOAD];
    let mut out: Vec<u8> = Vec::with_capacity(GSO_BYTES + MAX_UDP_PAYLOAD);
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, segment, from)) = recv_gro(fd, &mut incoming) else {
            continue; // a timeout: look at `stop`
        };
        let Some(from) = from else { continue };
        out.clear();
        let mut resp_len = None;
        let mut uniform = true;
        let mut lens = Vec::new();
        for r in incoming[..len].chunks(segment.max(1)) {
            let Ok(h) = RequestHeader::decode(r) else {
                continue;
            };
            let l = (h.response_len as usize).clamp(HEADER_LEN, MAX_UDP_PAYLOAD);
            uniform &= resp_len.is_none_or(|x| x == l);
            resp_len.get_or_insert(l);
            let at = out.len();
            out.resize(at + l, 0);
            out[at..at + HEADER_LEN].copy_from_slice(&r[..HEADER_LEN]);
            lens.push(l);
        }
        match resp_len {
            Some(l) if uniform && out.len() <= GSO_BYTES => {
                let _ = send_gso(fd, &out, l, Some(&from));
            }
            _ => {
                let mut at = 0;
                for l in lens {
                    let _ = send_gso(fd, &out[at..at + l], l, Some(&from));
                    at += l;
                }
            }
        }
    }
}
