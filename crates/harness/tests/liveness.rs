//! Liveness: no RPC between live hosts hangs or times out, whatever the configuration.
//!
//! A bounded swarm (configurations drawn whole from their seeds, see `swarm.rs`), and
//! the cases swarms and chaos runs found, each as a regression test. Every failure names
//! the command that replays it. The long soak, 20,000 cases from random seeds, is in
//! docs/TESTING.md ("Soaking with seeds nobody chose").

use homa_core::Config;
use homa_harness::{
    run_chaos, swarm_passed, workloads, ChaosConfig, ChaosReport, Sizes, SwarmCase,
};

/// Assert every RPC completed, none failed, nothing lost, executed twice or corrupted.
fn assert_all_complete(what: &str, cfg: &ChaosConfig, r: &ChaosReport) {
    let res = &r.result;
    assert!(
        r.passed() && res.completed == cfg.rpcs && res.failed == 0 && r.stopped == "done",
        "{what} (seed {}): {}, stopped {}, failures {:?}, replies refused {}",
        cfg.seed,
        serde_json::to_string(res).unwrap(),
        r.stopped,
        r.failed_by_error,
        r.refused_replies,
    );
}

/// Swarm case `seed` (with `budget` bytes of requests) passes; else its parameters, the
/// result, the kill report and the command that replays it.
fn assert_swarm_case_passes(seed: u64, budget: u64) {
    let case = SwarmCase::draw(seed, budget);
    let r = case.run();
    assert!(
        swarm_passed(&r),
        "case {seed}: {}\n{}\nkill: {:?}\nreplay: homa chaos --swarm 1 --seed {seed} \
         --swarm-budget-mb {}",
        case.describe(),
        serde_json::to_string(&r.result).unwrap(),
        r.kill,
        budget / 1_000_000
    );
}

#[test]
fn a_bounded_swarm_of_whole_configurations_passes() {
    // 60 cases of about 2 MB of requests each: a minute at most on a busy machine.
    let mut failing = Vec::new();
    for seed in 10_000..10_060 {
        let case = SwarmCase::draw(seed, 2_000_000);
        let report = case.run();
        if !swarm_passed(&report) {
            failing.push(format!(
                "case {seed}: {}\n  {}\n  replay: homa chaos --swarm 1 --seed {seed} \
                 --swarm-budget-mb 2",
                case.describe(),
                serde_json::to_string(&report.result).unwrap()
            ));
        }
    }
    assert!(failing.is_empty(), "{}", failing.join("\n"));
}

#[test]
fn a_request_starved_of_grants_by_a_quiet_server_over_heavy_loss_completes() {
    // Swarm case 8296388999411548693: W5, 4 hosts, 17.8% loss, one message granted at a
    // time (max_overcommit 1), 600-byte packets. A request partly granted waited behind
    // others while its server, which had nothing else to say to its client, went quiet;
    // the client asked about it every 5 ticks from half a timeout of silence on, its
    // server got 3 of the last 10 questions and all 3 BUSY answers were lost, and the
    // server was taken for gone (1 RPC of 51 timed out). A quiet server is now asked at
    // every tick from half a timeout on (timer.rs, `ask_silent_peer`).
    assert_swarm_case_passes(8_296_388_999_411_548_693, 20_000_000);
}

#[test]
fn requests_refused_together_are_each_answered_when_they_ask() {
    // Swarm case 17266708254349893736 (a seed from /dev/urandom): 2 hosts, 500 requests
    // of 23 KB outstanding per client, 17% loss, room at each server for about 30 of
    // them. The rest were refused for want of buffer space and asked, hundreds in the
    // same tick, whether their server held them; it answers at most 16 such questions
    // from one address a tick, and the same 20 requests were always past that: they
    // never heard RPC_UNKNOWN, never restarted, and timed out after 10 timeouts with
    // their server alive. Such questions now go at most 8 per peer a tick, the longest
    // silent first, like every other RESEND (timer.rs, `limit_per_peer`).
    assert_swarm_case_passes(17_266_708_254_349_893_736, 20_000_000);
}

#[test]
fn one_mb_messages_through_a_two_packet_window_at_14_percent_loss_are_slow_not_stalled() {
    // Swarm case 1551653: W5 (a third of its messages clamped to 1 MB), 2 hosts, one RPC
    // at a time each, a 1,008-byte window of 600-byte packets and 14.3% loss. Every lost
    // DATA packet or GRANT costs its message resend_ticks, so a 1 MB RPC takes seconds;
    // the swarm called it stalled after 5 s without a completion, although all 51 RPCs
    // complete in 37.7 s of simulated time. The limit now follows the expected waits.
    assert_swarm_case_passes(1551653, 20_000_000);
}

#[test]
fn two_hosts_uploading_1mb_requests_to_each_other_never_wedge() {
    // Found by `homa chaos --size 1000000 --endpoints 2 --concurrency 256 --seed 5`: each
    // host's outgoing space filled with its own requests, which wait for responses, so
    // neither could reply. Here with a 16 MB cap and 32 outstanding per host.
    let cfg = ChaosConfig {
        rpcs: 200,
        endpoints: 2,
        size: Sizes::Fixed(1_000_000),
        concurrency: 32,
        seed: 5,
        endpoint: Config {
            max_outgoing_held: 16 << 20,
            ..Config::default()
        },
        ..ChaosConfig::default()
    };
    let r = run_chaos(&cfg, &mut |_| {});
    assert_all_complete("bulk upload both ways", &cfg, &r);
}

#[test]
fn replies_that_would_block_go_when_space_frees() {
    // Swarm case 60 (before the harness retried replies): responses of W5 against a
    // 3 MB outgoing cap, 6 hosts, 27 outstanding each, 600-byte MTU.
    assert_swarm_case_passes(60, 20_000_000);
}

#[test]
fn a_request_refused_for_long_is_not_refused_for_good() {
    // Swarm case 1644: 4 hosts, w4, 3.2 MB of receive buffers, 7 waiting slots, a 12%
    // per-peer share: requests were refused (no buffer) and restarted for over a second,
    // the history's floor passed their ids, and they were then refused as "executed".
    assert_swarm_case_passes(1644, 20_000_000);
}

#[test]
fn a_client_waiting_for_buffer_space_for_its_response_keeps_its_server_waiting() {
    // Swarm case 96: a client's response stalled for want of receive buffer space (4.9 MB
    // for 425 outstanding RPCs); it asked for nothing meanwhile, so the server heard
    // nothing for timeout_ticks, gave up on the executed RPC, and then refused the
    // client's RESENDs as already executed: the RPC timed out. A client now answers
    // NEED_ACK for a stalled response with BUSY.
    assert_swarm_case_passes(96, 20_000_000);
}

#[test]
fn a_response_waiting_long_for_buffer_space_is_still_delivered() {
    // Two cases of random swarms (seeds from /dev/urandom): W4 with hundreds outstanding
    // per client under 18% loss and a few MB of receive buffers. A client's response
    // waited for space for over a second, overtaken by a stream of short requests, while
    // it answered its server's NEED_ACKs with BUSY; the server gave up on the executed RPC
    // after 10 timeouts, and the client, once it had room, timed out. Now nothing
    // overtakes the first in line for space, and BUSY restarts the server's wait.
    for seed in [2_335_962_635_125_241_138, 3_286_172_372_260_345_759] {
        assert_swarm_case_passes(seed, 20_000_000);
    }
}

#[test]
fn responses_do_not_wait_behind_every_request_their_server_sent_meanwhile() {
    // A random swarm case: 2 hosts, 350 outstanding 48 KB RPCs each way, a one-packet
    // grant window, 14.5% loss, no FIFO grants. Each response, ranked by when its first
    // packet came, waited behind every (older, equally long) request from its server;
    // under loss no RPC completed in 5 s. A response now ranks as old as its RPC.
    assert_swarm_case_passes(4_297_551_829_358_615_363, 20_000_000);
}

#[test]
fn a_case_slow_by_construction_completes_every_rpc_given_time() {
    // Swarm case 3500281695735921103: 4 hosts, 909 KB RPCs through a grant window smaller
    // than one packet (1,184 bytes), 20% loss, buffer space for two such messages per
    // host, host 0 killed at 25 ms. Every packet waits for its own grant and every lost
    // packet or grant costs resend_ticks of silence, so an RPC (a request, then its
    // response) takes seconds: the first completes 5.1 s into the run, the other nine
    // over the next 15 s. The swarm's rule (5 s without progress is a stall) cannot tell
    // that from a stall, and the case has fallen on either side of it (first completion
    // at 5.10 s before clients waiting on grants stopped asking every resend_interval,
    // 5.16 s after). It was filed with the case above, but it is not that starvation:
    // ranking responses by their first packet it finishes as fast. Given a minute
    // without progress before a stall is called, every RPC completes.
    let mut case = SwarmCase::draw(3_500_281_695_735_921_103, 20_000_000);
    case.config.stall_limit_ms = 60_000;
    let r = case.run();
    assert!(
        swarm_passed(&r),
        "{}\n{}\nstopped: {}",
        case.describe(),
        serde_json::to_string(&r.result).unwrap(),
        r.stopped
    );
}

#[test]
fn an_rpc_whose_response_waits_for_buffer_space_still_finds_its_server_dead_in_time() {
    // Three random swarm cases with host 0 killed: RPCs to it whose responses waited
    // for buffer space (a few MB of it) reset their silence every tick, and failed up to
    // 197 ms after the kill (the bound is timeout_ticks + 10%).
    for seed in [
        2_128_857_263_923_632_377,
        3_472_445_346_894_667_286,
        3_500_281_695_735_919_800,
    ] {
        assert_swarm_case_passes(seed, 20_000_000);
    }
}

#[test]
fn every_rpc_to_a_dead_host_fails_in_time() {
    // Swarm cases 538 and 1824: RPCs to a killed host that were still sending, or waiting
    // for our own grants, heard nothing but never counted it; they failed up to 4.7 s
    // after the kill. Now the first RPC to find the peer gone fails them all.
    for seed in [538, 1824] {
        assert!(SwarmCase::draw(seed, 20_000_000)
            .config
            .kill_server_at_ms
            .is_some());
        assert_swarm_case_passes(seed, 20_000_000);
    }
}

#[test]
fn no_timeouts_between_live_hosts_at_20_percent_loss() {
    // Found by `homa chaos --workload w5.csv --loss 0.2 --endpoints 2 --concurrency 256`:
    // hundreds of RPCs waiting on one peer share its RESEND budget, so a few lost
    // exchanges in a row outlasted timeout_ticks although the peer was alive throughout.
    let cfg = ChaosConfig {
        rpcs: 1_500,
        endpoints: 2,
        size: workloads::builtin("w5").unwrap(),
        loss: 0.2,
        concurrency: 256,
        seed: 103,
        ..ChaosConfig::default()
    };
    let r = run_chaos(&cfg, &mut |_| {});
    assert_all_complete("20% loss, 256 outstanding", &cfg, &r);
}

#[test]
fn no_timeouts_with_loss_reordering_corruption_and_junk() {
    // The case, shortened: `--workload w5.csv --loss 0.2 --reorder 0.5 --corrupt
    // 0.01 --garbage 0.01 --endpoints 3 --concurrency 64 --seed 101`.
    let cfg = ChaosConfig {
        rpcs: 3_000,
        endpoints: 3,
        size: workloads::builtin("w5").unwrap(),
        loss: 0.2,
        reorder: 0.5,
        corrupt: 0.01,
        garbage: 0.01,
        concurrency: 64,
        seed: 101,
        ..ChaosConfig::default()
    };
    let r = run_chaos(&cfg, &mut |_| {});
    assert_all_complete("20% loss with reordering and junk", &cfg, &r);
}

#[test]
fn a_one_way_message_whose_ack_is_lost_late_is_still_acknowledged() {
    // Swarm case 1752: one-way messages of 132 KB over 19% loss, a one-packet grant
    // window and no FIFO grants. A message starved for a second was taken, its ack was
    // lost, and by the time its sender asked, the receiver's history floor had passed
    // its id (the id arrived over a horizon ago): silence, and a timeout. The floor now
    // waits a horizon after a one-way message is taken.
    assert_swarm_case_passes(1752, 20_000_000);
}

#[test]
fn one_way_messages_to_a_host_that_dies_just_after_the_question_time_out() {
    // Random swarm cases with host 0 killed 2-4 ms in and one-way messages to it, asked
    // about at time 0: the answers lost, the host was heard from after the question,
    // then died. Its messages failed with NotAccepted ("alive but ignoring the
    // question") at timeout_ticks after the question, two ticks before its silence
    // would have timed them out. NotAccepted now needs the host heard from once the
    // question has waited timeout_ticks.
    for seed in [7_303_537_875_506_236_710, 16_508_091_999_064_752_724] {
        assert_swarm_case_passes(seed, 20_000_000);
    }
}

#[test]
fn cases_with_messages_past_1_mb_slow_by_construction_are_not_called_stalled() {
    // Random swarm cases: 30 RPCs of 1.35 MB through a grant window below a packet at
    // 18% loss (none completed in the first 5 s, all by 16.7 s), and W5 up to 7.2 MB
    // with 516-byte packets at 15% loss (the last RPC completed 17.5 s in, after 5 s
    // without a completion). Not starved: progress was steady, as slow as the case
    // makes it. The swarm now allows 5 s without a completion per MB of the longest
    // message.
    for seed in [16_508_091_999_064_753_653, 13_081_274_013_300_767_473] {
        assert_swarm_case_passes(seed, 20_000_000);
    }
}

#[test]
fn a_packet_lost_through_a_window_below_one_packet_is_resent_whole() {
    // Swarm case 777589: 2 hosts, 30 RPCs of 987 KB, a 1,177-byte grant window of
    // 1,416-byte packets (each grant lets one packet go, rounded up past the grant), 18%
    // loss. Not a deadlock: every RPC completes given time. But a lost DATA packet cost
    // two rounds of RESENDs: the receiver asked up to its grant, the sender resent
    // exactly that (1,177 bytes), and the packet's other 239 bytes, which the receiver
    // waits for before it grants again, were asked for only after another
    // resend_ticks. Half the retransmissions were such tails; 83 s for the whole run,
    // 7.6 s between two completions, past the 7 s the swarm allows. A RESEND is now
    // answered with whole packets, as they first went: 52 s, at most 3.7 s between
    // completions.
    assert_swarm_case_passes(777_589, 20_000_000);
}

#[test]
fn a_response_given_buffer_space_keeps_the_silence_that_finds_a_dead_server() {
    // Random swarm case 25739205: host 0 killed 13 ms in, its clients' responses waiting
    // for buffer space at 12% loss. When buffer space came back, the wait for a
    // response's bytes started its silence over (as it should for a request, whose
    // client owes the bytes from then), so RPCs to the dead server failed 152 ms after
    // the kill, past the 110 ms bound. A response keeps its count.
    assert_swarm_case_passes(25_739_205, 20_000_000);
}
