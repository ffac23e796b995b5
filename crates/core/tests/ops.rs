//! Random operation sequences against three wired Endpoints (see `support/ops.rs`); the
//! same driver backs the `endpoint` cargo-fuzz target for long runs.

#[path = "support/ops.rs"]
mod ops;

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn random_operations_keep_the_engine_consistent(data in proptest::collection::vec(any::<u8>(), 0..4_000)) {
        let stats = ops::run(&data);
        prop_assert!(stats.steps <= 2_000);
    }
}

/// The driver itself works: a hand-written sequence performs a whole RPC.
#[test]
fn scripted_sequence_completes_an_rpc() {
    let script = [
        0u8, // large caps
        0, 0, 0, 0, 50, 1, // host 0 sends a 51-byte request to host 1, port 99
        4, 0, // deliver host 0's packets
        2, 1, 0, 10, 0, // host 1 replies (11 bytes) to its first request
        4, 1, // deliver host 1's packets
    ];
    let stats = ops::run(&script);
    assert_eq!((stats.requests, stats.responses), (1, 1), "{stats:?}");
}
