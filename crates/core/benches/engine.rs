//! Cost of the engine alone: two Endpoints wired back to back, no network, no sockets.
//!
//! Measures wall time and heap allocations per 100-byte RPC (request + response, every
//! packet both ways, acks included) and per 1 MB message, with 10, 1,000 and 10,000 RPCs
//! outstanding at once. Run with:
//!
//! ```sh
//! cargo bench -p homa-core --bench engine
//! cargo bench -p homa-core --bench engine -- rpc_100B_10000   # one case, to profile
//! ```
//!
//! The last line is JSON. The goal: per-RPC cost grows at most 1.3x from 10 to 10,000
//! outstanding RPCs.

#[path = "support/pair.rs"]
mod pair;

use homa_core::{Bytes, Config, Endpoint, Time};
use pair::{exchange, run_timers, SERVER};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Counts allocations so the benchmark can report them per RPC.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Result {
    ns_per_rpc: f64,
    allocs_per_rpc: f64,
}

fn config(seed: u64) -> Config {
    Config {
        // No pacing: measure protocol work, not a modelled link.
        link_mbps: 100_000_000,
        max_incoming_held: 32 << 30,
        max_outgoing_held: 32 << 30,
        // The bench has a single client, so the per-peer share must cover all of
        // max_incoming_held. At the default 25% the client may hold only 8 GiB of
        // buffers (8,589 of msg_1MB's 10,000 outstanding 1 MB requests) plus 256 stalled
        // requests (25% of max_stalled_messages). The other 1,155 were refused with no
        // state, and their clients retried (RESEND -> RPC_UNKNOWN -> restart) without
        // success until they failed with Timeout after timeout_ticks. That is overload
        // handling, not the per-RPC cost this bench measures.
        max_peer_share_percent: 100,
        seed,
        client_id_base: 2,
        ..Config::default()
    }
}

/// Run `total` RPCs of `req` request bytes (response `resp` bytes), keeping `outstanding`
/// in flight.
fn run(outstanding: usize, total: usize, req: usize, resp: usize) -> Result {
    let mut client = Endpoint::new(config(1)).unwrap();
    let mut server = Endpoint::new(config(2)).unwrap();
    let cport = client.bind(0).unwrap();
    server.bind(99).unwrap();
    let dest = SocketAddr::new(SERVER, 99);
    let mut buf = vec![0u8; client.max_packet_len()];
    // Bytes: every RPC sends the same buffer, as a refcount bump rather than a copy.
    let request = Bytes::from(vec![0xAB; req]);
    let response = Bytes::from(vec![0xCD; resp]);
    let mut now = Time::ZERO;
    let (mut issued, mut done) = (0, 0);
    let mut measure_from = None;
    let warmup = total / 10;
    while done < total + warmup {
        if done >= warmup && measure_from.is_none() {
            measure_from = Some((Instant::now(), ALLOCS.load(Relaxed), done));
        }
        while issued - done < outstanding && issued < total + warmup {
            client
                .send_request(now, cport, dest, request.clone(), issued as u64, false)
                .unwrap();
            issued += 1;
        }
        let round = exchange(&mut client, &mut server, now, &mut buf, &response);
        assert!(round.failed.is_empty(), "RPCs failed: {:?}", round.failed);
        done += round.done;
        // Virtual time: 1 us per round, so timers (1 ms ticks) run as they would.
        now = now.plus_nanos(1_000);
        run_timers(&mut client, &mut server, now);
        let moved = round.moved;
        assert!(moved > 0 || issued > done, "stalled");
    }
    let (start, allocs0, done0) = measure_from.unwrap();
    let n = (done - done0) as f64;
    Result {
        ns_per_rpc: start.elapsed().as_nanos() as f64 / n,
        allocs_per_rpc: (ALLOCS.load(Relaxed) - allocs0) as f64 / n,
    }
}

fn main() {
    // `cargo bench` passes --bench; any other argument keeps only the case of that name
    // (`rpc_100B_10`, ...), for profiling one case, or if no case has that name, those
    // whose name contains it (`rpc_100B`).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let cases = [
        ("rpc_100B", 100usize, 100usize, 200_000usize),
        ("msg_1MB", 1_000_000, 100, 1_500),
    ];
    const OUTSTANDING: [usize; 3] = [10, 1_000, 10_000];
    let names: Vec<String> = cases
        .iter()
        .flat_map(|c| OUTSTANDING.map(|o| format!("{}_{o}", c.0)))
        .collect();
    let wanted = |case: &str| {
        filters.is_empty()
            || filters
                .iter()
                .any(|f| case == f || (!names.iter().any(|n| n == f) && case.contains(f.as_str())))
    };
    let mut json = Vec::new();
    println!(
        "{:<22} {:>12} {:>14} {:>14}",
        "case", "outstanding", "ns/op", "allocs/op"
    );
    for (name, req, resp, total) in cases {
        let mut base = None;
        for outstanding in OUTSTANDING {
            let case = format!("{name}_{outstanding}");
            if !wanted(&case) {
                continue;
            }
            let total = total.max(outstanding * 3);
            let r = run(outstanding, total, req, resp);
            let growth = r.ns_per_rpc / *base.get_or_insert(r.ns_per_rpc);
            println!(
                "{name:<22} {outstanding:>12} {:>14.0} {:>14.1}   x{growth:.2} vs 10",
                r.ns_per_rpc, r.allocs_per_rpc
            );
            json.push(format!(
                "\"{name}_{outstanding}\":{{\"ns\":{:.0},\"allocs\":{:.1},\"growth_vs_10\":{growth:.2}}}",
                r.ns_per_rpc, r.allocs_per_rpc
            ));
        }
    }
    println!("{{{}}}", json.join(","));
}
