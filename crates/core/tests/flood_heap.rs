//! The heap before, during and after a flood of DATA from forged source addresses,
//! measured with a counting global allocator (this test binary's own, and its only
//! test, so that nothing else allocates meanwhile).
//!
//! Each forged packet is the first of a 200-byte request (100 bytes of it), from its own
//! address, with its own id: a server RPC that waits for the rest and is dropped after
//! `timeout_ticks` of silence. The same packets from 10 addresses are the baseline.
//! What must hold:
//! - after the flood and an idle period (long enough for the peer table's rules,
//!   `peer_idle_secs_max`), the heap is within 2x of the baseline's after the same;
//! - the peak while 100,000 sources flood is bounded by the configuration
//!   (`peer_net_max` peers, each with one RPC), not by how fast they come: ten times the
//!   rate does not raise it.
//!
//! `cargo test -p homa-core --test flood_heap -- --nocapture` prints the numbers.

use homa_core::{Config, Endpoint, Time};
use homa_wire::{Body, Common, Data, Repr};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Counts the bytes allocated and not yet freed, and their peak.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let p = unsafe { System.realloc(ptr, layout, new) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes on the heap now.
fn live() -> usize {
    LIVE.load(Relaxed)
}

/// Packets in a flood.
const PACKETS: u64 = 100_000;
/// Idle time after the flood: past `peer_idle_secs_max` (120 s).
const IDLE_NANOS: u64 = 130_000_000_000;

/// What a flood did to the heap, in bytes above the endpoint's own before it.
#[derive(Debug, Clone, Copy)]
struct Flood {
    peak: usize,
    after: usize,
    peers_at_peak: u64,
    rpcs_at_peak: u64,
}

/// Run the timer and drain what the endpoint sends (it goes nowhere) up to `now`.
fn run_until(ep: &mut Endpoint, now: Time, buf: &mut [u8]) {
    while let Some(t) = ep.poll_timeout().filter(|&t| t <= now) {
        ep.handle_timeout(t);
        while ep.poll_transmit(t, buf).is_some() {}
    }
    while ep.poll_transmit(now, buf).is_some() {}
    while ep.poll_event().is_some() {}
}

/// `PACKETS` forged first packets from `sources` addresses, one every `gap_nanos`, into a
/// fresh server endpoint; then `IDLE_NANOS` of idleness.
fn flood(config: &Config, sources: u64, gap_nanos: u64) -> Flood {
    let mut ep = Endpoint::new(config.clone()).unwrap();
    ep.bind(99).unwrap();
    let mut buf = vec![0u8; ep.max_packet_len()];
    let mut packet = vec![0u8; ep.max_packet_len()];
    let payload = [7u8; 100];
    let before = live();
    PEAK.store(before, Relaxed);
    let (mut peak, mut peers_at_peak, mut rpcs_at_peak) = (0, 0, 0);
    let mut now = Time::ZERO;
    for i in 0..PACKETS {
        now = Time::from_nanos(i * gap_nanos);
        let repr = Repr {
            common: Common {
                sport: 40_000,
                dport: 99,
                sender_id: 2 * i + 2,
            },
            body: Body::Data(Data {
                message_length: 200,
                incoming: 200,
                ack: None,
                cutoff_version: 1,
                retransmit: false,
                offset: 0,
            }),
        };
        let len = repr.emit(&payload, &mut packet).unwrap();
        let from = IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | (i % sources) as u128));
        run_until(&mut ep, now, &mut buf);
        ep.handle_datagram(now, from, &packet[..len]);
        while ep.poll_transmit(now, &mut buf).is_some() {}
        if live() > peak {
            let m = ep.metrics();
            (peak, peers_at_peak, rpcs_at_peak) = (live(), m.peers, m.server_rpcs);
        }
    }
    run_until(&mut ep, now.plus_nanos(IDLE_NANOS), &mut buf);
    let m = ep.metrics();
    assert_eq!(
        (m.server_rpcs, m.client_histories),
        (0, 0),
        "every forged RPC timed out and left no history"
    );
    let after = live() - before;
    drop(ep);
    Flood {
        peak: PEAK.load(Relaxed).max(peak) - before,
        after,
        peers_at_peak,
        rpcs_at_peak,
    }
}

#[test]
fn a_flood_of_forged_sources_is_bounded_while_it_lasts_and_handed_back_after() {
    let config = Config::default();
    // 100,000 packets over a second: RPCs live 100 ms (timeout_ticks), so about 10,000
    // at a time either way.
    let base = flood(&config, 10, 10_000);
    let forged = flood(&config, PACKETS, 10_000);
    // Ten times the rate: 100,000 sources in 100 ms.
    let fast = flood(&config, PACKETS, 1_000);
    // And a tenth of the peer table.
    let small = flood(
        &Config {
            peer_net_max: 1_000,
            ..config.clone()
        },
        PACKETS,
        1_000,
    );
    println!("heap above the endpoint's own, bytes (100,000 forged first packets):");
    for (name, f) in [
        ("10 sources, 1 s", base),
        ("100,000 sources, 1 s", forged),
        ("100,000 sources, 100 ms", fast),
        ("100,000 sources, 100 ms, peer_net_max 1,000", small),
    ] {
        println!(
            "  {name:45} peak {:>11} ({} peers, {} RPCs)   after 130 s idle {:>7}",
            f.peak, f.peers_at_peak, f.rpcs_at_peak, f.after
        );
    }
    // Handed back: within 2x of the same packets from 10 addresses.
    assert!(
        forged.after <= 2 * base.after.max(1),
        "after the flood {} bytes, baseline {}",
        forged.after,
        base.after
    );
    assert!(fast.after <= 2 * base.after.max(1), "{fast:?} vs {base:?}");
    // Bounded by the configuration: never more peers than peer_net_max, and ten times
    // the rate does not raise the peak (it would, tenfold, if nothing bounded it).
    assert!(fast.peers_at_peak <= config.peer_net_max as u64, "{fast:?}");
    assert!(small.peers_at_peak <= 1_000, "{small:?}");
    assert!(
        fast.peak <= forged.peak + forged.peak / 4,
        "10x the rate: peak {} against {}",
        fast.peak,
        forged.peak
    );
    // ...and it follows the configuration: a tenth of the table, a fraction of the peak.
    assert!(
        small.peak * 3 <= fast.peak,
        "peer_net_max 1,000: peak {} against {}",
        small.peak,
        fast.peak
    );
}
