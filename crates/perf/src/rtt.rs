//! The run of `homa perf rtt`: round-trip time with one RPC outstanding, over Homa, TCP and
//! a raw UDP ping-pong (the floor: what one datagram each way costs through the kernel's
//! loopback).
//!
//! A fourth lane, `udp_mp`, is a reference for the gap between the floor and Homa: a UDP
//! ping-pong using the system calls any transport that serves many peers over one socket
//! must make (unconnected sockets: `sendto` with the peer's address, `recvfrom` learning
//! the source), with no protocol work at all.
//!
//! All of them run in this process over 127.0.0.1, each with a server thread answering with a
//! response as long as the request. To keep slow drifts of a shared, noisy machine from
//! favouring one transport, the measurement alternates: ten rounds, each measuring a tenth
//! of `--count` on every transport in turn.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::counters::ServerCounters;
use crate::error::PerfError;
use crate::header::{RequestHeader, HEADER_LEN};
use crate::homa::{BlockingHomaClient, HomaServer};
use crate::stats::{self, round1, round3};
use crate::tcp;

/// Largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// A transport `perf rtt` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RttProto {
    /// Raw UDP ping-pong.
    Udp,
    /// UDP ping-pong with the system calls of a multi-peer transport (reference).
    /// (`udp_mp`, as the output names it, is accepted too.)
    #[cfg_attr(feature = "clap", value(alias = "udp_mp"))]
    UdpMp,
    /// TCP request/response.
    Tcp,
    /// Homa.
    Homa,
}

/// One transport's blocking round trip.
trait RoundTrip {
    fn round_trip(&mut self, request: &[u8]) -> io::Result<()>;
}

struct Udp {
    sock: UdpSocket,
    buf: Vec<u8>,
}

impl Udp {
    /// An echo server thread (unconnected: `recvfrom`, then `sendto` the source); its
    /// address.
    fn echo_server() -> io::Result<SocketAddr> {
        let server = UdpSocket::bind("127.0.0.1:0")?;
        let addr = server.local_addr()?;
        std::thread::Builder::new()
            .name("perf-udp-echo".into())
            .spawn(move || {
                let mut buf = vec![0u8; MAX_UDP_PAYLOAD];
                while let Ok((n, from)) = server.recv_from(&mut buf) {
                    if server.send_to(&buf[..n], from).is_err() {
                        break;
                    }
                }
            })?;
        Ok(addr)
    }

    /// An echo server thread and a connected client socket.
    fn start() -> io::Result<Self> {
        let addr = Self::echo_server()?;
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.connect(addr)?;
        // Loopback does not lose datagrams unless a buffer overflows; resend if it does.
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Self {
            sock,
            buf: vec![0u8; MAX_UDP_PAYLOAD],
        })
    }
}

impl RoundTrip for Udp {
    fn round_trip(&mut self, request: &[u8]) -> io::Result<()> {
        with_retries("UDP ping-pong", || {
            self.sock.send(request)?;
            self.sock.recv(&mut self.buf).map(drop)
        })
    }
}

/// One datagram exchange (`exchange`), tried again when the echo does not come within the
/// socket's read timeout: loopback loses datagrams only when a buffer overflows.
fn with_retries(what: &str, mut exchange: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    for _ in 0..10 {
        match exchange() {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what}: no echo after 10 tries"),
    ))
}

/// The `udp_mp` reference: the server end as in `udp`, the client end unconnected too,
/// sending with `sendto` and receiving with `recvfrom` (the source address). These are
/// the cheapest calls a transport serving many peers from one socket can make; Homa's
/// blocking receive makes the same ones until long messages turn GRO on.
struct UdpMp {
    sock: UdpSocket,
    server: SocketAddr,
    buf: Vec<u8>,
}

impl UdpMp {
    fn start() -> io::Result<Self> {
        let server = Udp::echo_server()?;
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Self {
            sock,
            server,
            buf: vec![0u8; MAX_UDP_PAYLOAD],
        })
    }
}

impl RoundTrip for UdpMp {
    fn round_trip(&mut self, request: &[u8]) -> io::Result<()> {
        with_retries("UDP multi-peer ping-pong", || {
            self.sock.send_to(request, self.server)?;
            self.sock.recv_from(&mut self.buf).map(drop)
        })
    }
}

impl RoundTrip for tcp::BlockingClient {
    fn round_trip(&mut self, request: &[u8]) -> io::Result<()> {
        self.call(request).map(drop)
    }
}

impl RoundTrip for BlockingHomaClient {
    fn round_trip(&mut self, request: &[u8]) -> io::Result<()> {
        self.call(request).map(drop)
    }
}

struct Lane {
    name: &'static str,
    rt: Box<dyn RoundTrip>,
    hist: Histogram<u64>,
}

/// RTT percentiles of one transport, µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RttStats {
    /// Median.
    pub p50_us: f64,
    /// P99.
    pub p99_us: f64,
    /// P99.9.
    pub p999_us: f64,
    /// Minimum.
    pub min_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl RttStats {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50_us: stats::us(h.value_at_quantile(0.5)),
            p99_us: stats::us(h.value_at_quantile(0.99)),
            p999_us: stats::us(h.value_at_quantile(0.999)),
            min_us: stats::us(h.min()),
            mean_us: h.mean() / 1000.0,
        }
    }
    fn json(&self) -> serde_json::Value {
        json!({"p50_us": round1(self.p50_us), "p99_us": round1(self.p99_us), "p999_us": round1(self.p999_us)})
    }
}

/// What [`measure`] runs.
#[derive(Debug, Clone)]
pub struct RttConfig {
    /// Request and response length, bytes (raised to the 16-byte perf header, see
    /// [`request_size`]).
    pub size: usize,
    /// Measured round trips per transport.
    pub count: usize,
    /// Unmeasured round trips per transport first.
    pub warmup: usize,
    /// The transports to measure.
    pub protos: Vec<RttProto>,
    /// How the Homa sockets are opened.
    pub options: homa::Options,
}

impl RttConfig {
    /// Refuses a length no transport can carry, or nothing to measure, before anything
    /// runs.
    pub fn validate(&self) -> Result<(), PerfError> {
        let max = crate::workload::MAX_MESSAGE_LENGTH;
        if self.size > max {
            return Err(PerfError::BadLength {
                what: "--size",
                len: self.size,
                min: 0,
                max,
            });
        }
        if self.count == 0 {
            return Err(PerfError::Zero { what: "--count" });
        }
        Ok(())
    }
}

/// The length of the requests and responses measured for a `size` asked for: at least
/// the perf header.
pub fn request_size(size: usize) -> usize {
    size.max(HEADER_LEN)
}

/// What [`measure`] measured.
#[derive(Debug, Clone)]
pub struct RttReport {
    /// Each transport measured, in the order measured: `udp`, `udp_mp`, `tcp`, `homa`.
    pub results: Vec<(&'static str, RttStats)>,
    /// Transports skipped, and why (one line each).
    pub notes: Vec<String>,
}

impl RttReport {
    /// The numbers of one transport (`udp`, `udp_mp`, `tcp`, `homa`), if it was measured.
    pub fn get(&self, name: &str) -> Option<RttStats> {
        self.results.iter().find(|r| r.0 == name).map(|r| r.1)
    }

    /// The summary as JSON: `{"homa":{"p50_us":..,"p99_us":..,"p999_us":..},"tcp":..,
    /// "udp":..,"udp_mp":..,"homa_over_udp_p50":..,"homa_over_tcp_p50":..}` (null for a
    /// transport not measured; a ratio only where both were).
    pub fn json(&self) -> serde_json::Value {
        let mut j = json!({"homa": null, "tcp": null, "udp": null, "udp_mp": null});
        for (name, s) in &self.results {
            j[*name] = s.json();
        }
        let get = |n: &str| self.get(n);
        if let (Some(h), Some(u)) = (get("homa"), get("udp")) {
            j["homa_over_udp_p50"] = json!(round3(h.p50_us / u.p50_us));
        }
        if let (Some(h), Some(t)) = (get("homa"), get("tcp")) {
            j["homa_over_tcp_p50"] = json!(round3(h.p50_us / t.p50_us));
        }
        j
    }
}

/// Measures the round-trip time over each of `config.protos` on loopback, one RPC at a
/// time, alternating between them in ten rounds.
pub fn measure(config: &RttConfig) -> Result<RttReport, PerfError> {
    config.validate()?;
    let size = request_size(config.size);
    let io_err = |what: &str| {
        let what = what.to_string();
        move |source| PerfError::Io { what, source }
    };
    let mut lanes: Vec<Lane> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let want = |p: RttProto| config.protos.contains(&p);
    if want(RttProto::Udp) && size <= MAX_UDP_PAYLOAD {
        lanes.push(Lane {
            name: "udp",
            rt: Box::new(Udp::start().map_err(io_err("UDP ping-pong setup"))?),
            hist: stats::new_hist(),
        });
    } else if want(RttProto::Udp) {
        notes.push(format!(
            "udp: skipped, {size} bytes do not fit one datagram (at most {MAX_UDP_PAYLOAD})"
        ));
    }
    if want(RttProto::UdpMp) && size <= MAX_UDP_PAYLOAD {
        lanes.push(Lane {
            name: "udp_mp",
            rt: Box::new(UdpMp::start().map_err(io_err("UDP multi-peer ping-pong setup"))?),
            hist: stats::new_hist(),
        });
    } else if want(RttProto::UdpMp) {
        notes.push(format!(
            "udp_mp: skipped, {size} bytes do not fit one datagram (at most {MAX_UDP_PAYLOAD})"
        ));
    }
    let counters = Arc::new(ServerCounters::default());
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    if want(RttProto::Tcp) {
        let tcp_addr =
            tcp::spawn_server(loopback, counters.clone()).map_err(io_err("TCP server"))?;
        lanes.push(Lane {
            name: "tcp",
            rt: Box::new(tcp::BlockingClient::connect(tcp_addr).map_err(io_err("TCP connect"))?),
            hist: stats::new_hist(),
        });
    }
    // The Homa server's handle lives until the measurements are done.
    let mut _homa_server = None;
    let homa = if want(RttProto::Homa) {
        let options = config.options.clone();
        HomaServer::spawn(loopback, 1, counters, options.clone())
            .and_then(|s| BlockingHomaClient::bind(s.addr, options).map(|c| (s, c)))
            .map(Some)
    } else {
        Ok(None)
    };
    match homa {
        Ok(None) => {}
        Ok(Some((server, client))) => {
            _homa_server = Some(server);
            lanes.push(Lane {
                name: "homa",
                rt: Box::new(client),
                hist: stats::new_hist(),
            });
        }
        Err(PerfError::HomaUnavailable) => {
            notes.push("homa: skipped, this build has no Homa runtime".into())
        }
        Err(e) => return Err(e),
    }
    if lanes.is_empty() {
        return Err(PerfError::NothingToMeasure(notes.join("; ")));
    }

    let request = RequestHeader {
        response_len: size as u32,
        id: 0,
        sent_ns: 0,
    }
    .request(size);
    for lane in &mut lanes {
        for _ in 0..config.warmup {
            lane.rt
                .round_trip(&request)
                .map_err(io_err(&format!("{} warm-up", lane.name)))?;
        }
    }
    let rounds = 10.min(config.count.max(1));
    for round in 0..rounds {
        let n = config.count / rounds + usize::from(round < config.count % rounds);
        for lane in &mut lanes {
            for _ in 0..n {
                let t0 = Instant::now();
                let r = lane.rt.round_trip(&request);
                let took = t0.elapsed();
                // The error's text is built only on failure: formatting it on every round
                // trip cost ~600 instructions inside the timed region.
                r.map_err(|e| io_err(&format!("{} round trip", lane.name))(e))?;
                stats::record(&mut lane.hist, took.as_nanos() as u64);
            }
        }
    }

    let results = lanes
        .iter()
        .map(|l| (l.name, RttStats::of(&l.hist)))
        .collect();
    Ok(RttReport { results, notes })
}
