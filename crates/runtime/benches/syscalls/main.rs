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
//! Run it with `cargo bench -p homa-transport --bench syscalls`, or for longer runs and
//! other windows `cargo bench -p homa-transport --bench syscalls -- --seconds 5 --window
//! 64`; `--only uring,mmsg` runs a subset (for profiling one). Use an otherwise idle
//! machine with two CPUs or more.

mod config;
mod measure;
mod mmsg;
mod sides;
mod sys;
mod transport;
mod tx;
mod uring;

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
// GSO (`UDP_SEGMENT`) needs Linux 4.18, GRO (`UDP_GRO`) 5.0.
use libc::{c_int, c_void, SOL_UDP, UDP_GRO, UDP_SEGMENT};

use config::*;
use measure::*;
use mmsg::*;
use sides::*;
use sys::*;
use transport::*;
use tx::*;
use uring::*;

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

/// io_uring `user_data` of the multishot receive, of every send and of the tick.
const RECV_UD: u64 = 1;
const SEND_UD: u64 = 2;
const TICK_UD: u64 = 3;
/// Provided-buffer group of the receive ring.
const BGID: u16 = 0;

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

fn main() {
    let cfg = match Config::from_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("syscalls: {e}");
            eprintln!(
                "usage: cargo bench -p homa-transport --bench syscalls -- [--seconds S] \
                 [--window N] [--pin split|same|none] [--only mmsg,mmsg_gso,uring,uring_gso]"
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
