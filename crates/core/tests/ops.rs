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

/// The checks stay on where they matter: over many random runs (a fixed set, so the
/// result does not change from run to run), most runs check at least one response byte
/// for byte and most executions are checked for being the only one. Before tampering
/// was tracked per RPC, one forged packet turned the checks off for the rest of a run.
#[test]
fn most_random_runs_check_responses_and_executions() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut runs_checking, mut requests, mut checked_requests) = (0, 0, 0);
    let (mut runs_keeping, mut runs_one_way) = (0, 0);
    const RUNS: usize = 100;
    for _ in 0..RUNS {
        let data: Vec<u8> = (0..3_000).map(|_| next() as u8).collect();
        let stats = ops::run(&data);
        runs_checking += usize::from(stats.checked_responses > 0);
        requests += stats.requests + stats.messages;
        checked_requests += stats.checked_requests;
        runs_keeping += usize::from(stats.kept_packets > 0);
        runs_one_way += usize::from(stats.delivered > 0);
    }
    eprintln!("{runs_checking}/{RUNS} runs checked a response; {checked_requests}/{requests} executions checked; {runs_keeping} runs kept packets by reference; {runs_one_way} runs completed a one-way message");
    assert!(
        runs_checking * 2 > RUNS,
        "{runs_checking}/{RUNS} runs checked a response"
    );
    // A quarter of the runs choose shared delivery with a large MTU; most of those
    // send a message long enough to be kept.
    assert!(
        runs_keeping * 10 > RUNS,
        "{runs_keeping}/{RUNS} runs reached the zero-copy path"
    );
    assert!(
        checked_requests * 2 > requests,
        "{checked_requests}/{requests} executions checked"
    );
    // Half the sends are one-way messages, two hosts in three take them.
    assert!(
        runs_one_way * 2 > RUNS,
        "{runs_one_way}/{RUNS} runs completed a one-way message"
    );
}
