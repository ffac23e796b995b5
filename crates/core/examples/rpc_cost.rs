//! The engine's cost of one small RPC, for instruction counting.
//!
//! Two endpoints wired back to back run `N` 100-byte RPCs one at a time: request out,
//! request in, reply, response in, both messages released, acks and timers as they fall.
//! No sockets, no clock: run it under callgrind twice and divide the difference by the
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
//! (instructions per RPC = (refs at 20000 - refs at 10000) / 10000). `cargo bench -p
//! homa-core --bench engine` measures wall time instead, with many RPCs outstanding.

#[path = "../benches/support/pair.rs"]
mod pair;

use homa_core::{Bytes, Config, Endpoint, Time};
use pair::{exchange, run_timers, SERVER};
use std::net::SocketAddr;
/// Virtual time between RPCs: about one loopback round trip.
const RPC_NANOS: u64 = 14_000;

fn main() {
    let n: usize = match std::env::args().nth(1).map(|s| s.parse()) {
        None => 100_000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("usage: rpc_cost [RPCS]: {e}");
            std::process::exit(2);
        }
    };
    let config = |seed| Config {
        seed,
        ..Config::default()
    };
    let mut client = Endpoint::new(config(1)).expect("default config is valid");
    let mut server = Endpoint::new(config(2)).expect("default config is valid");
    let cport = client.bind(0).expect("a client port is free");
    server.bind(99).expect("port 99 is free");
    let dest = SocketAddr::new(SERVER, 99);
    let mut buf = vec![0u8; client.max_packet_len()];
    let request = Bytes::from(vec![0xAB; 100]);
    let response = Bytes::from(vec![0xCD; 100]);
    let mut now = Time::ZERO;
    let (mut packets, mut done) = (0u64, 0usize);
    for i in 0..n {
        client
            .send_request(now, cport, dest, request.clone(), i as u64, false)
            .expect("request accepted");
        let round = exchange(&mut client, &mut server, now, &mut buf, &response);
        assert!(round.failed.is_empty(), "RPCs failed: {:?}", round.failed);
        packets += round.moved as u64;
        done += round.done;
        now = now.plus_nanos(RPC_NANOS);
        run_timers(&mut client, &mut server, now);
    }
    assert_eq!(done, n, "every RPC completed");
    println!(
        "{n} RPCs, {:.2} packets per RPC",
        packets as f64 / n.max(1) as f64
    );
}
