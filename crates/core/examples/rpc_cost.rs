//! The engine's cost of one RPC, for instruction counting.
//!
//! Two endpoints wired back to back run `N` RPCs one at a time: request out, request in,
//! reply, response in, both messages released, grants, acks and timers as they fall. No
//! sockets, no clock: run it under callgrind twice and divide the difference by the
//! difference in RPCs, which cancels the start-up cost:
//!
//! ```sh
//! cargo build --release -p homa-core --example rpc_cost
//! for n in 10000 20000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/rpc_cost.$n \
//!     target/release/examples/rpc_cost $n 2>&1 | grep refs
//! done
//! ```
//!
//! (instructions per RPC = (refs at 20000 - refs at 10000) / 10000). By default the
//! request and the response are 100 bytes; `rpc_cost N REQUEST_BYTES MTU` sends requests
//! of that length (answered with 100 bytes) in packets for that MTU, for the cost of a
//! message granted packet by packet: `rpc_cost 2000 60000 9000` is the testbed bench's
//! mean W4 request. `cargo bench -p homa-core --bench engine` measures wall time
//! instead, with many RPCs outstanding.

#[path = "../benches/support/pair.rs"]
mod pair;

use homa_core::{Bytes, Config, Endpoint, Time};
use pair::{exchange, run_timers, SERVER};
use std::net::SocketAddr;
/// Virtual time between RPCs: about one loopback round trip.
const RPC_NANOS: u64 = 14_000;

/// Virtual time a multi-packet RPC's rounds advance by: longer than the sender's pacer
/// needs to release the next packets (a few 9000-byte packets at the default 25 Gbps).
const ROUND_NANOS: u64 = 7_200;

fn main() {
    let arg = |i: usize, default: usize| match std::env::args().nth(i).map(|s| s.parse()) {
        None => default,
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            eprintln!("usage: rpc_cost [RPCS [REQUEST_BYTES [MTU]]]: {e}");
            std::process::exit(2);
        }
    };
    let (n, request_len, mtu) = (arg(1, 100_000), arg(2, 100), arg(3, 1500));
    // Granted as the userspace runtime grants (`homa::Options`): a GRANT once a message
    // has only its unscheduled bytes' worth left granted, for a whole window.
    let config = |seed| {
        let d = Config::default();
        Config {
            seed,
            client_id_base: 2,
            mtu: mtu as u32,
            grant_step_divisor: 2,
            grant_lead_bytes: d.unsched_bytes,
            ..d
        }
    };
    let mut client = Endpoint::new(config(1)).expect("default config is valid");
    let mut server = Endpoint::new(config(2)).expect("default config is valid");
    let cport = client.bind(0).expect("a client port is free");
    server.bind(99).expect("port 99 is free");
    let dest = SocketAddr::new(SERVER, 99);
    let mut buf = vec![0u8; client.max_packet_len()];
    let request = Bytes::from(vec![0xAB; request_len]);
    let response = Bytes::from(vec![0xCD; 100]);
    let mut now = Time::ZERO;
    let (mut packets, mut done) = (0u64, 0usize);
    for i in 0..n {
        client
            .send_request(now, cport, dest, request.clone(), i as u64, false)
            .expect("request accepted");
        // A message over the unscheduled bytes takes several rounds: grants one way,
        // the data they release the other.
        loop {
            let round = exchange(&mut client, &mut server, now, &mut buf, &response);
            assert!(round.failed.is_empty(), "RPCs failed: {:?}", round.failed);
            packets += round.moved as u64;
            done += round.done;
            if round.done > 0 {
                break;
            }
            assert!(round.moved > 0, "RPC {i} stalled with nothing to send");
            now = now.plus_nanos(ROUND_NANOS);
        }
        now = now.plus_nanos(RPC_NANOS);
        run_timers(&mut client, &mut server, now);
    }
    assert_eq!(done, n, "every RPC completed");
    println!(
        "{n} RPCs, {:.2} packets per RPC",
        packets as f64 / n.max(1) as f64
    );
}
