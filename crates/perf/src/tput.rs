//! The run of `homa perf tput`: one client streaming N-byte requests with small responses,
//! keeping a window of RPCs outstanding so the pipe never drains, over Homa and over TCP
//! (one connection), in one process over loopback. Throughput counts request bytes.
//!
//! A third lane, `udp`, is the floor under Homa's UDP mode: the same request bytes blasted
//! as datagrams of up to 65,507 bytes (the most one carries; a Homa DATA packet on loopback
//! is about that long), with no replies and no flow control, counting what the receiver
//! got. Homa cannot move bytes faster than the kernel's UDP path does, so `homa/udp` says
//! how much of that path Homa uses, and `udp/tcp` how far the kernel's UDP path itself is
//! from TCP's on this machine.
//!
//! Two more lanes, `udp_batched` and `udp_gso`, are floors for request/response shapes that
//! fit in one datagram each way: echoes over plain UDP sockets with the same window, one
//! batching its system calls (`recvmmsg`/`sendmmsg`), one also letting a batch of
//! same-size datagrams cross the kernel as one (UDP GSO and GRO, the cheapest the kernel
//! allows; see [`crate::udp_echo`]). For each lane the
//! CPU time the process used (user and system, all threads) per completed RPC is reported
//! too: on a machine whose cores are all busy, that is what limits the rate.
//!
//! On a shared, noisy machine a transport measured in one block could be lucky or unlucky
//! with the neighbours; so after a warm-up each, the measurement alternates between the
//! transports in slices of about half a second, and each transport's number is its total
//! over all its slices.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::counters::ServerCounters;
use crate::error::PerfError;
use crate::header::{RequestHeader, HEADER_LEN};
use crate::homa::{
    losses_per_rpc, packets_per_rpc, HomaApi, HomaPipeline, HomaRpcClient, HomaServer,
};
use crate::profile::{PerfControl, ProfileLane};
use crate::rtt::MAX_UDP_PAYLOAD;
use crate::stats::{self, round3};
use crate::tally::Tally;
use crate::tcp::{self, TcpRpcClient};
use crate::transport::{self, RpcClient};
use crate::udp_echo::{Batching, UdpEcho};
use crate::workload::MAX_MESSAGE_LENGTH;

/// A transport `perf tput` can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum TputProto {
    /// Homa requests, small responses.
    Homa,
    /// The same over one TCP connection.
    Tcp,
    /// Datagrams one way: the floor under Homa over UDP.
    Udp,
    /// A request/response echo over UDP with recvmmsg/sendmmsg: the floor for small RPCs.
    /// (`udp_batched`, as the output names it, is accepted too.)
    #[cfg_attr(feature = "clap", value(alias = "udp_batched"))]
    UdpBatched,
    /// The same echo with UDP GSO sends and GRO receives: the cheapest the kernel allows.
    /// (`udp_gso` is accepted too.)
    #[cfg_attr(feature = "clap", value(alias = "udp_gso"))]
    UdpGso,
}

/// Request buffers kept from one call of [`stream`] to the next (one lane's slices).
///
/// Each of a slice's `window` tasks needs a request buffer of `size` bytes. Made new for
/// every slice, they cost `window * size` bytes of fresh memory per slice, each page
/// faulted in (zeroed, or on the kernel's first read of it in the send): with 1 MB
/// requests, 12 page faults per RPC at window 64 and 40 at window 256 in the tokio lane,
/// a cost of the benchmark's client that grew with the window it measures.
///
/// A new buffer is filled with bytes, not left zeroed: a zeroed buffer from `calloc`
/// may be pages never written (which the kernel backs with its one shared zero page
/// until they are) or memory used before, depending on what the allocator was given
/// back before, so two lanes' buffers of the same size could differ in what a send
/// copies from. Measured with 1 MB requests, same-run window 256 against 64
/// (`--and-window`), blocking API: zeroed, 5-14% more CPU per RPC at 256; filled, 2-6%.
#[derive(Debug, Default)]
pub struct RequestBuffers(Mutex<Vec<Vec<u8>>>);

/// What a new request buffer holds before its header is written.
const REQUEST_FILL: u8 = 0x5a;

impl RequestBuffers {
    /// A buffer of `len` bytes: one given back earlier, else a new one, filled.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut kept = self.0.lock().expect("request buffers lock");
        match kept.iter().position(|b| b.len() == len) {
            Some(i) => kept.swap_remove(i),
            None => vec![REQUEST_FILL; len],
        }
    }

    /// Keep `buf` for a later [`take`](Self::take).
    pub fn give(&self, buf: Vec<u8>) {
        self.0.lock().expect("request buffers lock").push(buf);
    }
}

/// Streams requests through `client` for `warmup + measure`, `window` at a time, and
/// counts the RPCs that complete inside the measured part. Request buffers come from,
/// and go back to, `buffers`.
#[allow(clippy::too_many_arguments)]
pub async fn stream<C: RpcClient>(
    client: Arc<C>,
    size: usize,
    response: usize,
    window: usize,
    warmup: Duration,
    measure: Duration,
    buffers: Arc<RequestBuffers>,
) -> Tally {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let bytes = Arc::new(AtomicU64::new(0));
    let rpcs = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(stats::new_hist()));
    let errors = Arc::new(Mutex::new((0u64, None::<String>)));
    let mut tasks = Vec::new();
    for w in 0..window.max(1) {
        let (client, bytes, rpcs, hist, errors, buffers) = (
            client.clone(),
            bytes.clone(),
            rpcs.clone(),
            hist.clone(),
            errors.clone(),
            buffers.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut req = buffers.take(size.max(HEADER_LEN));
            let mut id = w as u32;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    buffers.give(req);
                    return;
                }
                RequestHeader {
                    response_len: response as u32,
                    id,
                    sent_ns: (t0 - start).as_nanos() as u64,
                }
                .encode(&mut req);
                id = id.wrapping_add(window as u32);
                if let Err(e) = transport::call_lending(&*client, &mut req, response).await {
                    // Count it and go on: one lost RPC should not end the measurement.
                    let mut errs = errors.lock().expect("errors lock");
                    errs.0 += 1;
                    if errs.1.is_none() {
                        let diag = client.diagnostics().map(|d| format!("; {d}"));
                        errs.1 = Some(format!("{e}{}", diag.unwrap_or_default()));
                    }
                    continue;
                }
                let done = Instant::now();
                // Count RPCs that completed inside the measured window.
                if done >= measure_from && done < end {
                    bytes.fetch_add(size as u64, Ordering::Relaxed);
                    rpcs.fetch_add(1, Ordering::Relaxed);
                    stats::record(
                        &mut hist.lock().expect("hist lock"),
                        (done - t0).as_nanos() as u64,
                    );
                }
            }
        }));
    }
    for t in tasks {
        // A task only ends by returning; a panic in one is a bug worth seeing.
        if let Err(e) = t.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let (errors, first_error) = std::mem::take(&mut *errors.lock().expect("errors lock"));
    let hist = std::mem::replace(&mut *hist.lock().expect("hist lock"), stats::new_hist());
    Tally {
        bytes: bytes.load(Ordering::Relaxed),
        rpcs: rpcs.load(Ordering::Relaxed),
        hist,
        secs: measure.as_secs_f64(),
        errors,
        first_error,
        cpu: Duration::ZERO,
    }
}

/// The `udp` lane: a connected sender and a receiver thread that counts the bytes it gets
/// while a slice is being measured.
struct UdpFloor {
    sock: UdpSocket,
    counting: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    payload: Vec<u8>,
}

/// What the `udp` lane moved, over its slices.
#[derive(Debug, Default, Clone, Copy)]
pub struct UdpTally {
    /// Bytes sent.
    pub sent: u64,
    /// Bytes the receiver got.
    pub received: u64,
    /// Measured seconds.
    pub secs: f64,
}

impl UdpTally {
    /// Gbit/s received.
    pub fn gbps(&self) -> f64 {
        self.received as f64 * 8.0 / self.secs.max(1e-9) / 1e9
    }
    /// Share of the bytes sent that the receiver never got (its buffer was full).
    pub fn lost(&self) -> f64 {
        1.0 - self.received as f64 / self.sent.max(1) as f64
    }
    fn add(&mut self, other: UdpTally) {
        self.sent += other.sent;
        self.received += other.received;
        self.secs += other.secs;
    }
}

impl UdpFloor {
    /// The receive buffer asked for: Homa's socket default (the kernel caps it at
    /// `net.core.rmem_max`).
    const RECV_BUFFER: usize = 8 << 20;

    fn start() -> io::Result<Self> {
        let receiver = UdpSocket::bind("127.0.0.1:0")?;
        socket2::SockRef::from(&receiver).set_recv_buffer_size(Self::RECV_BUFFER)?;
        receiver.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = receiver.local_addr()?;
        let counting = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, r, st) = (counting.clone(), received.clone(), stop.clone());
        std::thread::Builder::new()
            .name("perf-udp-sink".into())
            .spawn(move || {
                let mut buf = vec![0u8; MAX_UDP_PAYLOAD];
                while !st.load(Ordering::Relaxed) {
                    // A timeout only lets the loop look at `stop`.
                    if let Ok(n) = receiver.recv(&mut buf) {
                        if c.load(Ordering::Relaxed) {
                            r.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                }
            })?;
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.connect(addr)?;
        Ok(Self {
            sock,
            counting,
            received,
            stop,
            payload: vec![0u8; MAX_UDP_PAYLOAD],
        })
    }

    /// Sends `size`-byte messages, each as datagrams of at most 65,507 bytes, for `dur`;
    /// counts the bytes received meanwhile.
    fn slice(&self, size: usize, dur: Duration) -> io::Result<UdpTally> {
        let before = self.received.load(Ordering::Relaxed);
        self.counting.store(true, Ordering::Relaxed);
        let start = Instant::now();
        let end = start + dur;
        let mut sent = 0u64;
        while Instant::now() < end {
            let mut left = size;
            while left > 0 {
                let n = left.min(MAX_UDP_PAYLOAD);
                sent += self.sock.send(&self.payload[..n])? as u64;
                left -= n;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        self.counting.store(false, Ordering::Relaxed);
        Ok(UdpTally {
            sent,
            received: self.received.load(Ordering::Relaxed) - before,
            secs,
        })
    }
}

impl Drop for UdpFloor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The Homa lane's client: a one-thread pipeline (blocking API) or tasks (tokio API).
enum HomaLane {
    Blocking(Arc<HomaPipeline>),
    Tokio(Arc<HomaRpcClient>),
}

impl HomaLane {
    fn metrics(&self) -> homa::Metrics {
        match self {
            HomaLane::Blocking(p) => p.metrics(),
            HomaLane::Tokio(c) => c.metrics(),
        }
    }

    fn kernel_drops(&self) -> u64 {
        match self {
            HomaLane::Blocking(p) => p.kernel_drops(),
            HomaLane::Tokio(c) => c.kernel_drops(),
        }
    }
}

/// CPU time this process has used so far (user and system, every thread).
fn process_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let us = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64)
                    + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            us(u.user_time()) + us(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// Runs `f` (one measured slice) and charges the process's CPU time meanwhile to the
/// tally it returns.
async fn charged<F: std::future::Future<Output = Result<Tally, PerfError>>>(
    f: F,
) -> Result<Tally, PerfError> {
    let before = process_cpu();
    let mut t = f.await?;
    t.cpu = process_cpu().saturating_sub(before);
    Ok(t)
}

/// What [`measure`] runs.
#[derive(Debug, Clone)]
pub struct TputConfig {
    /// Request length, bytes (at most 1,000,000).
    pub size: usize,
    /// Measured seconds per transport (after a short warm-up).
    pub seconds: f64,
    /// RPCs kept outstanding.
    pub window: usize,
    /// A second window to measure Homa and TCP at, in slices alternating with `window`'s
    /// in the same run, so that the machine's drifts in speed fall on both alike
    /// ([`TputReport::and_window`]).
    pub and_window: Option<usize>,
    /// Response length, bytes.
    pub response: usize,
    /// Which `homa` API the Homa client uses.
    pub homa_api: HomaApi,
    /// The transports to measure.
    pub protos: Vec<TputProto>,
    /// How the Homa sockets are opened.
    pub options: homa::Options,
    /// A profiler to turn on during one lane's measured slices only (see
    /// [`crate::profile`]).
    pub profile: Option<ProfileLane>,
}

/// How a run's time is cut: a warm-up per transport, then `slices` measured slices of
/// each transport in turn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Measured seconds per transport.
    pub total: f64,
    /// Measured slices per transport.
    pub slices: u32,
    /// One slice.
    pub slice: Duration,
    /// The warm-up of each transport.
    pub warmup: Duration,
}

impl TputConfig {
    /// Refuses lengths no transport can carry, before anything runs.
    pub fn validate(&self) -> Result<(), PerfError> {
        for (what, len, min) in [("--size", self.size, 1), ("--response", self.response, 0)] {
            if !(min..=MAX_MESSAGE_LENGTH).contains(&len) {
                return Err(PerfError::BadLength {
                    what,
                    len,
                    min,
                    max: MAX_MESSAGE_LENGTH,
                });
            }
        }
        let longest = self.size.max(self.response);
        crate::outstanding_arg("--window", self.window, longest)?;
        if let Some(w) = self.and_window {
            crate::outstanding_arg("--and-window", w, longest)?;
        }
        crate::seconds_arg("--seconds", self.seconds, false)?;
        if let Some(p) = &self.profile {
            p.validate(&self.protos, &self.windows())?;
        }
        let fits = self.size <= MAX_UDP_PAYLOAD && self.response <= MAX_UDP_PAYLOAD;
        let echo = |p: &TputProto| matches!(p, TputProto::UdpBatched | TputProto::UdpGso);
        if !fits && self.protos.iter().all(echo) {
            return Err(PerfError::NothingToMeasure(format!(
                "the UDP echoes run only where requests and responses fit in one datagram \
                 ({MAX_UDP_PAYLOAD} bytes); --size is {} and --response {}",
                self.size, self.response
            )));
        }
        Ok(())
    }

    /// The windows the Homa and TCP lanes run at: `window`, then `and_window`.
    pub fn windows(&self) -> Vec<usize> {
        std::iter::once(self.window)
            .chain(self.and_window)
            .collect()
    }

    /// How the run's time is cut: slices of about half a second, 1 to 20 of them.
    pub fn schedule(&self) -> Schedule {
        let total = self.seconds.max(0.1);
        let slices = ((total / 0.5).round() as u32).clamp(1, 20);
        Schedule {
            total,
            slices,
            slice: Duration::from_secs_f64(total / f64::from(slices)),
            warmup: Duration::from_secs_f64((total * 0.2).clamp(0.1, 1.0)),
        }
    }
}

/// Homa and TCP at [`TputConfig::and_window`].
#[derive(Debug, Clone)]
pub struct WindowLanes {
    /// The window.
    pub window: usize,
    /// Homa (`None`: not measured).
    pub homa: Option<Tally>,
    /// TCP (`None`: not measured).
    pub tcp: Option<Tally>,
    /// Packets Homa's endpoints sent per RPC at this window, by type (both ends).
    pub packets: Option<Vec<(&'static str, f64)>>,
}

/// What [`measure`] measured: one entry per transport measured (`None`: not measured).
#[derive(Debug, Clone)]
pub struct TputReport {
    /// The request length.
    pub size: usize,
    /// Homa.
    pub homa: Option<Tally>,
    /// TCP.
    pub tcp: Option<Tally>,
    /// The UDP echo with batched system calls.
    pub udp_batched: Option<Tally>,
    /// The UDP echo with GSO sends and GRO receives.
    pub udp_gso: Option<Tally>,
    /// Datagrams one way: the floor under Homa over UDP.
    pub udp: Option<UdpTally>,
    /// Packets Homa's endpoints sent per RPC, by type (both ends).
    pub packets: Option<Vec<(&'static str, f64)>>,
    /// DATA packets Homa's endpoints sent again, and packets they dropped by reason, per
    /// RPC (both ends; see [`losses_per_rpc`]).
    pub losses: Option<Vec<(&'static str, f64)>>,
    /// Homa and TCP at the second window, if one was asked for.
    pub and_window: Option<WindowLanes>,
    /// Transports skipped, and why (one line each).
    pub notes: Vec<String>,
}

impl TputReport {
    /// The four RPC lanes by name: `homa`, `tcp`, `udp_batched`, `udp_gso`.
    pub fn lanes(&self) -> [(&'static str, Option<&Tally>); 4] {
        [
            ("homa", self.homa.as_ref()),
            ("tcp", self.tcp.as_ref()),
            ("udp_batched", self.udp_batched.as_ref()),
            ("udp_gso", self.udp_gso.as_ref()),
        ]
    }

    /// The ratios worth a line, where both sides were measured: `homa/tcp`, `homa/udp`,
    /// `udp/tcp` (Gbit/s), `homa/udp_batched`, `homa/udp_gso` (RPCs per second).
    pub fn ratios(&self) -> [(&'static str, Option<f64>); 5] {
        let (homa_gbps, tcp_gbps) = (
            self.homa.as_ref().map(Tally::gbps),
            self.tcp.as_ref().map(Tally::gbps),
        );
        let udp_gbps = self.udp.as_ref().map(UdpTally::gbps);
        let rps = |t: &Option<Tally>| t.as_ref().map(Tally::rps);
        let over = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
        [
            ("homa/tcp", over(homa_gbps, tcp_gbps)),
            ("homa/udp", over(homa_gbps, udp_gbps)),
            ("udp/tcp", over(udp_gbps, tcp_gbps)),
            (
                "homa/udp_batched",
                over(rps(&self.homa), rps(&self.udp_batched)),
            ),
            ("homa/udp_gso", over(rps(&self.homa), rps(&self.udp_gso))),
        ]
    }

    /// The summary as JSON: Gbit/s, RPCs per second and CPU per RPC of each transport,
    /// the ratios, and Homa's packets, retransmissions and drops per RPC (null for what
    /// was not measured).
    pub fn json(&self) -> serde_json::Value {
        let r3 = |x: Option<f64>| x.map(round3);
        let cpu = |t: &Option<Tally>| r3(t.as_ref().and_then(Tally::cpu_us_per_rpc));
        let rps = |t: &Option<Tally>| t.as_ref().map(Tally::rps);
        let ratios = self.ratios();
        let by_name = |counts: &[(&str, f64)]| {
            counts
                .iter()
                .map(|(t, n)| (t.to_string(), json!(round3(*n))))
                .collect::<serde_json::Map<_, _>>()
        };
        let gbps = |t: &Option<Tally>| t.as_ref().map(Tally::gbps);
        let window_ratios = self.window_ratios();
        let and_window = self.and_window.as_ref().map(|w| {
            json!({
                "window": w.window,
                "homa_gbps": r3(gbps(&w.homa)),
                "tcp_gbps": r3(gbps(&w.tcp)),
                "homa_rps": r3(rps(&w.homa)),
                "tcp_rps": r3(rps(&w.tcp)),
                "homa_over_window": r3(window_ratios[0].1),
                "tcp_over_window": r3(window_ratios[1].1),
                "homa_packets_per_rpc": w.packets.as_deref().map(by_name),
                "cpu_us_per_rpc": { "homa": cpu(&w.homa), "tcp": cpu(&w.tcp) },
            })
        });
        json!({
            "homa_gbps": r3(self.homa.as_ref().map(Tally::gbps)),
            "tcp_gbps": r3(self.tcp.as_ref().map(Tally::gbps)),
            "udp_gbps": r3(self.udp.as_ref().map(UdpTally::gbps)),
            "homa_over_tcp": r3(ratios[0].1),
            "homa_over_udp": r3(ratios[1].1),
            "homa_rps": r3(rps(&self.homa)),
            "tcp_rps": r3(rps(&self.tcp)),
            "udp_batched_rps": r3(rps(&self.udp_batched)),
            "homa_over_udp_batched": r3(ratios[3].1),
            "udp_gso_rps": r3(rps(&self.udp_gso)),
            "homa_over_udp_gso": r3(ratios[4].1),
            "homa_packets_per_rpc": self.packets.as_deref().map(by_name),
            "homa_losses_per_rpc": self.losses.as_deref().map(by_name),
            "cpu_us_per_rpc": {
                "homa": cpu(&self.homa),
                "tcp": cpu(&self.tcp),
                "udp_batched": cpu(&self.udp_batched),
                "udp_gso": cpu(&self.udp_gso),
            },
            "and_window": and_window,
        })
    }

    /// Homa's and TCP's throughput at the second window over their throughput at the
    /// first, in the same run (`None` where a lane, or the second window, was not measured).
    pub fn window_ratios(&self) -> [(&'static str, Option<f64>); 2] {
        let w = self.and_window.as_ref();
        let over = |a: Option<&Tally>, b: Option<&Tally>| Some(a?.gbps() / b?.gbps());
        [
            (
                "homa",
                over(w.and_then(|w| w.homa.as_ref()), self.homa.as_ref()),
            ),
            (
                "tcp",
                over(w.and_then(|w| w.tcp.as_ref()), self.tcp.as_ref()),
            ),
        ]
    }
}

/// Measures the throughput of each of `config.protos` on loopback, alternating between
/// them in slices (see [`TputConfig::schedule`]).
pub fn measure(config: &TputConfig) -> Result<TputReport, PerfError> {
    config.validate()?;
    let Schedule {
        slices,
        slice,
        warmup,
        ..
    } = config.schedule();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| PerfError::Io {
            what: "tokio runtime".into(),
            source,
        })?;
    let counters = Arc::new(ServerCounters::default());
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let io_err = |what: &'static str| {
        move |source| PerfError::Io {
            what: what.into(),
            source,
        }
    };
    let want = |p: TputProto| config.protos.contains(&p);
    let tcp_addr = if want(TputProto::Tcp) {
        Some(tcp::spawn_server(loopback, counters.clone()).map_err(io_err("TCP server"))?)
    } else {
        None
    };
    let udp_floor = if want(TputProto::Udp) {
        Some(UdpFloor::start().map_err(io_err("UDP floor"))?)
    } else {
        None
    };
    let fits = config.size <= MAX_UDP_PAYLOAD && config.response <= MAX_UDP_PAYLOAD;
    let mut notes = Vec::new();
    for (p, name) in [
        (TputProto::UdpBatched, "udp_batched"),
        (TputProto::UdpGso, "udp_gso"),
    ] {
        if want(p) && !fits {
            notes.push(format!(
                "{name}: skipped, requests or responses longer than one datagram"
            ));
        }
    }
    let udp_echo = if want(TputProto::UdpBatched) && fits {
        Some(UdpEcho::start(Batching::Mmsg).map_err(io_err("UDP echo"))?)
    } else {
        None
    };
    let udp_gso = if want(TputProto::UdpGso) && fits {
        match UdpEcho::start(Batching::Gso) {
            Ok(e) => Some(e),
            Err(e) => {
                notes.push(format!(
                    "udp_gso: skipped, this kernel has no UDP GRO ({e})"
                ));
                None
            }
        }
    } else {
        None
    };
    let options = config.options.clone();
    let homa_server = if want(TputProto::Homa) {
        match HomaServer::spawn(loopback, 2, counters, options.clone()) {
            Ok(s) => Some(s),
            Err(PerfError::HomaUnavailable) => {
                notes.push("homa: skipped, this build has no Homa runtime".into());
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let udp_slice = |f: &UdpFloor, dur| f.slice(config.size, dur).map_err(io_err("UDP floor"));
    let echo_slice = |e: &UdpEcho, dur| {
        e.slice(config.size, config.response, config.window, dur)
            .map_err(io_err("UDP echo"))
    };
    let mut udp = udp_floor.as_ref().map(|_| UdpTally::default());
    // Opened before anything runs: each open waits for the profiler's end of its FIFO.
    let mut profiler = match &config.profile {
        Some(lane) => Some((lane, PerfControl::open(lane)?)),
        None => None,
    };
    let (at, batched, gso) = rt.block_on(async {
        let tcp_client = match tcp_addr {
            Some(a) => Some(Arc::new(
                TcpRpcClient::connect(&[a], 1)
                    .await
                    .map_err(io_err("TCP connect"))?,
            )),
            None => None,
        };
        let homa_client = match &homa_server {
            Some(s) => Some(match config.homa_api {
                HomaApi::Blocking => {
                    HomaLane::Blocking(Arc::new(HomaPipeline::bind(s.addr, options)?))
                }
                HomaApi::Tokio => HomaLane::Tokio(Arc::new(
                    HomaRpcClient::bind_with(&[s.addr], config.homa_api, options).await?,
                )),
            }),
            None => None,
        };
        // Each lane's request buffers, kept from slice to slice.
        let (homa_buffers, tcp_buffers) = (
            Arc::new(RequestBuffers::default()),
            Arc::new(RequestBuffers::default()),
        );
        let homa_run = |c: &HomaLane, window: usize, warm: Duration, measure: Duration| {
            let homa_buffers = homa_buffers.clone();
            let c = match c {
                HomaLane::Blocking(p) => Err(p.clone()),
                HomaLane::Tokio(c) => Ok(c.clone()),
            };
            async move {
                Ok::<_, PerfError>(match c {
                    Err(p) => {
                        // Blocks the runtime for the slice, as the UDP lanes do.
                        p.slice(config.size, config.response, window, warm);
                        p.slice(config.size, config.response, window, measure)
                    }
                    Ok(c) => {
                        stream(
                            c,
                            config.size,
                            config.response,
                            window,
                            warm,
                            measure,
                            homa_buffers,
                        )
                        .await
                    }
                })
            }
        };
        let tcp_run = |c: &Arc<TcpRpcClient>, window: usize, warm, measure| {
            let (c, tcp_buffers) = (c.clone(), tcp_buffers.clone());
            async move {
                Ok::<_, PerfError>(
                    stream(
                        c,
                        config.size,
                        config.response,
                        window,
                        warm,
                        measure,
                        tcp_buffers,
                    )
                    .await,
                )
            }
        };
        // Per window (`config.window`, then `config.and_window`): Homa's and TCP's
        // tallies, and Homa's counters before and after each of its slices (summed, they
        // give the window's packets: the pipe is empty between slices).
        let windows = config.windows();
        let mut at: Vec<Lanes> = windows
            .iter()
            .map(|_| Lanes {
                homa: homa_client.as_ref().map(|_| Tally::default()),
                tcp: tcp_client.as_ref().map(|_| Tally::default()),
                before: Vec::new(),
                after: Vec::new(),
                kernel_drops: 0,
            })
            .collect();
        let mut batched = udp_echo.as_ref().map(|_| Tally::default());
        let mut gso = udp_gso.as_ref().map(|_| Tally::default());
        // Warm-ups (not counted), then alternating measured slices.
        for &w in &windows {
            if let Some(c) = &homa_client {
                homa_run(c, w, warmup, Duration::ZERO).await?;
            }
            if let Some(c) = &tcp_client {
                tcp_run(c, w, warmup, Duration::ZERO).await?;
            }
        }
        if let Some(f) = &udp_floor {
            udp_slice(f, warmup)?;
        }
        if let Some(e) = &udp_echo {
            echo_slice(e, warmup)?;
        }
        if let Some(e) = &udp_gso {
            echo_slice(e, warmup)?;
        }
        let homa_metrics = || {
            homa_client
                .as_ref()
                .zip(homa_server.as_ref())
                .map(|(c, s)| [c.metrics(), s.metrics()])
        };
        let homa_drops = || {
            homa_client
                .as_ref()
                .zip(homa_server.as_ref())
                .map_or(0, |(c, s)| c.kernel_drops() + s.kernel_drops())
        };
        // The profiler's events are on only during the chosen lane's measured slices.
        let mut profiled = |proto: TputProto, window: usize, on: bool| match &mut profiler {
            Some((lane, ctl)) if lane.proto == proto && lane.window == window => {
                ctl.command(if on { "enable" } else { "disable" })
            }
            _ => Ok(()),
        };
        for _ in 0..slices {
            for (&w, lanes) in windows.iter().zip(&mut at) {
                if let (Some(c), Some(h)) = (&homa_client, lanes.homa.as_mut()) {
                    lanes.before.extend(homa_metrics().into_iter().flatten());
                    let drops = homa_drops();
                    profiled(TputProto::Homa, w, true)?;
                    h.add(charged(homa_run(c, w, Duration::ZERO, slice)).await?);
                    profiled(TputProto::Homa, w, false)?;
                    lanes.after.extend(homa_metrics().into_iter().flatten());
                    lanes.kernel_drops += homa_drops().saturating_sub(drops);
                }
                if let (Some(c), Some(t)) = (&tcp_client, lanes.tcp.as_mut()) {
                    profiled(TputProto::Tcp, w, true)?;
                    t.add(charged(tcp_run(c, w, Duration::ZERO, slice)).await?);
                    profiled(TputProto::Tcp, w, false)?;
                }
            }
            if let (Some(f), Some(u)) = (&udp_floor, udp.as_mut()) {
                // Blocks the runtime for the slice: nothing else runs on it meanwhile.
                u.add(udp_slice(f, slice)?);
            }
            if let (Some(e), Some(b)) = (&udp_echo, batched.as_mut()) {
                // Blocks the runtime too.
                b.add(charged(async { echo_slice(e, slice) }).await?);
            }
            if let (Some(e), Some(g)) = (&udp_gso, gso.as_mut()) {
                g.add(charged(async { echo_slice(e, slice) }).await?);
            }
        }
        Ok::<_, PerfError>((at, batched, gso))
    })?;
    let mut at = at.into_iter();
    let first = at.next().expect("the first window is always measured");
    let measured = |l: &Lanes| l.homa.is_some() && !l.after.is_empty();
    let (packets, losses) = if measured(&first) {
        (
            Some(packets_per_rpc(&first.before, &first.after)),
            Some(losses_per_rpc(
                &first.before,
                &first.after,
                first.kernel_drops,
            )),
        )
    } else {
        (None, None)
    };
    let and_window = at
        .next()
        .zip(config.and_window)
        .map(|(l, window)| WindowLanes {
            window,
            packets: measured(&l).then(|| packets_per_rpc(&l.before, &l.after)),
            homa: l.homa,
            tcp: l.tcp,
        });
    let (homa, tcp) = (first.homa, first.tcp);

    Ok(TputReport {
        size: config.size,
        homa,
        tcp,
        udp_batched: batched,
        udp_gso: gso,
        udp,
        packets,
        losses,
        and_window,
        notes,
    })
}

/// One window's Homa and TCP lanes while [`measure`] runs.
struct Lanes {
    homa: Option<Tally>,
    tcp: Option<Tally>,
    /// Homa's client and server counters before each of its slices, and after.
    before: Vec<homa::Metrics>,
    after: Vec<homa::Metrics>,
    /// Datagrams the kernel dropped for Homa's client and server sockets during its
    /// slices.
    kernel_drops: u64,
}
