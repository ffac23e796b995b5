//! Whole-system scenarios on the in-memory network. Every assertion names the seed: rerun
//! one with `homa chaos --seed N ...` (same knobs) to reproduce it.

use homa_core::{Config, Endpoint, Event, RpcError, Time};
use homa_harness::{
    host_ip, run_chaos, workloads, App, ChaosConfig, ChaosReport, Harness, HarnessConfig,
    NetConfig, Sizes,
};
use std::net::SocketAddr;

/// Short and long messages, up to the 1 MB maximum.
fn mixed() -> Sizes {
    Sizes::Cdf(vec![
        (100, 0.4),
        (1_500, 0.6),
        (12_000, 0.8),
        (90_000, 0.95),
        (400_000, 0.99),
        (1_000_000, 1.0),
    ])
}

/// Mixed but lighter, for runs repeated over several seeds.
fn mixed_small() -> Sizes {
    Sizes::Cdf(vec![
        (60, 0.5),
        (3_000, 0.8),
        (50_000, 0.97),
        (200_000, 1.0),
    ])
}

fn run(cfg: &ChaosConfig) -> ChaosReport {
    run_chaos(cfg, &mut |_| {})
}

fn assert_all_complete(cfg: &ChaosConfig, r: &ChaosReport) {
    let res = &r.result;
    assert!(
        r.passed() && res.completed == cfg.rpcs && res.failed == 0,
        "seed {}: {}\nfull report: {}",
        cfg.seed,
        serde_json::to_string(res).unwrap(),
        serde_json::to_string_pretty(r).unwrap()
    );
}

#[test]
fn fixed_100_bytes_without_faults_all_complete() {
    let cfg = ChaosConfig {
        rpcs: 1_000,
        size: Sizes::Fixed(100),
        seed: 1,
        check_invariants: true,
        ..ChaosConfig::default()
    };
    let r = run(&cfg);
    assert_all_complete(&cfg, &r);
    assert_eq!(r.engine.retransmitted_packets, 0, "seed {}", cfg.seed);
    assert_eq!(r.engine.requests_delivered, 1_000, "seed {}", cfg.seed);
}

#[test]
fn mixed_sizes_up_to_1mb_without_faults_all_complete() {
    let cfg = ChaosConfig {
        rpcs: 1_000,
        endpoints: 6,
        size: mixed(),
        seed: 2,
        concurrency: 8,
        check_invariants: true,
        ..ChaosConfig::default()
    };
    let r = run(&cfg);
    assert_all_complete(&cfg, &r);
    assert!(
        r.engine.packets_sent["GRANT"] > 0,
        "seed {}: long messages need grants",
        cfg.seed
    );
    let check = r.check.as_ref().unwrap();
    assert!(
        check.grants_checked > 0 && check.violations == 0,
        "seed {}: {check:?}",
        cfg.seed
    );
}

#[test]
fn loss_dup_reorder_over_several_seeds_all_complete_exactly_once() {
    for seed in 1..=5 {
        let cfg = ChaosConfig {
            rpcs: 1_000,
            endpoints: 5,
            size: if seed % 2 == 0 {
                mixed_small()
            } else {
                Sizes::Fixed(100)
            },
            loss: 0.1,
            dup: 0.05,
            reorder: 0.1,
            seed,
            concurrency: 16,
            ..ChaosConfig::default()
        };
        let r = run(&cfg);
        assert_all_complete(&cfg, &r);
        assert!(
            r.net.lost > 0 && r.engine.retransmitted_packets > 0,
            "seed {seed}"
        );
    }
}

#[test]
fn garbage_and_corruption_do_not_disturb_the_rpcs() {
    for seed in [11, 12] {
        let cfg = ChaosConfig {
            rpcs: 1_000,
            endpoints: 4,
            size: mixed_small(),
            loss: 0.02,
            corrupt: 0.05,
            garbage: 0.1,
            seed,
            concurrency: 16,
            ..ChaosConfig::default()
        };
        let r = run(&cfg);
        assert_all_complete(&cfg, &r);
        assert!(r.net.garbage_delivered > 100, "seed {seed}: {:?}", r.net);
        assert!(r.net.corrupt_dropped > 0, "seed {seed}: {:?}", r.net);
        assert!(
            r.engine.drops["malformed"] > 0,
            "seed {seed}: {:?}",
            r.engine
        );
    }
}

#[test]
fn killed_server_rpcs_fail_with_timeout_in_time_and_none_hang() {
    for seed in [21, 22] {
        let cfg = ChaosConfig {
            rpcs: 3_000,
            endpoints: 6,
            size: mixed_small(),
            loss: 0.05,
            seed,
            concurrency: 16,
            kill_server_at_ms: Some(3),
            ..ChaosConfig::default()
        };
        let r = run(&cfg);
        let k = r.kill.as_ref().expect("kill report");
        let show = || serde_json::to_string_pretty(&r).unwrap();
        assert!(r.passed(), "seed {seed}: {}", show());
        assert!(
            k.rpcs_to_killed > 0 && k.timed_out > 0,
            "seed {seed}: {}",
            show()
        );
        assert_eq!(k.violations, 0, "seed {seed}: {}", show());
        assert!(
            k.max_failure_latency_ms <= k.bound_ms,
            "seed {seed}: {}",
            show()
        );
        assert_eq!(r.result.lost, 0, "seed {seed}: {}", show());
        assert_eq!(
            r.result.completed + r.result.failed + r.result.abandoned,
            r.result.rpcs,
            "seed {seed}: {}",
            show()
        );
        assert_eq!(
            r.failed_by_error.get("timeout"),
            Some(&r.result.failed),
            "seed {seed}"
        );
    }
}

#[test]
fn same_seed_same_run() {
    let cfg = ChaosConfig {
        rpcs: 500,
        endpoints: 4,
        size: mixed_small(),
        loss: 0.1,
        dup: 0.05,
        reorder: 0.1,
        garbage: 0.02,
        corrupt: 0.01,
        seed: 99,
        concurrency: 8,
        ..ChaosConfig::default()
    };
    let strip = |mut r: ChaosReport| {
        r.result.wall_ms = 0;
        r
    };
    let a = strip(run(&cfg));
    let b = strip(run(&cfg));
    assert_eq!(a, b, "seed {}: two runs differ", cfg.seed);
    assert_eq!(a.trace_hash, b.trace_hash, "seed {}", cfg.seed);
    let c = run(&ChaosConfig {
        seed: 100,
        ..cfg.clone()
    });
    assert_ne!(
        a.trace_hash, c.trace_hash,
        "seeds 99 and 100 gave the same trace"
    );
}

/// Host 0 sends a request to host 1 every millisecond; host 1 dies and comes back.
struct Pinger {
    port: u16,
    sent: u64,
    ok_before_kill: u64,
    ok_after_restart: u64,
    timeouts: u64,
    restart_at: Time,
    starts_of_host1: u32,
}

impl App for Pinger {
    fn on_start(&mut self, _now: Time, host: usize, ep: &mut Endpoint) {
        ep.bind(99).unwrap();
        if host == 0 {
            self.port = ep.bind(0).unwrap();
        } else {
            self.starts_of_host1 += 1;
        }
    }
    fn on_event(&mut self, now: Time, _host: usize, ep: &mut Endpoint, ev: Event) {
        match ev {
            Event::Request {
                port,
                id,
                peer,
                data,
            } => {
                let resp = data.to_vec();
                ep.release(data);
                ep.reply(now, port, peer, id, resp).unwrap();
            }
            Event::Response { data, .. } => {
                if now >= self.restart_at {
                    self.ok_after_restart += 1;
                } else {
                    self.ok_before_kill += 1;
                }
                ep.release(data);
            }
            Event::Failed { error, .. } => {
                assert_eq!(error, RpcError::Timeout);
                self.timeouts += 1;
            }
            other => panic!("no one-way messages here: {other:?}"),
        }
    }
}

#[test]
fn a_killed_host_is_silent_and_a_restarted_one_serves_again() {
    let mut h = Harness::new(HarnessConfig {
        hosts: 2,
        net: NetConfig::default(),
        endpoint: Config::default(),
        seed: 5,
    });
    let mut app = Pinger {
        port: 0,
        sent: 0,
        ok_before_kill: 0,
        ok_after_restart: 0,
        timeouts: 0,
        restart_at: Time::from_millis(300),
        starts_of_host1: 0,
    };
    h.schedule_kill(1, Time::from_millis(20));
    h.schedule_restart(1, Time::from_millis(300));
    for ms in 0..600 {
        h.run(&mut app, Time::from_millis(ms));
        h.act(&mut app, 0, |app, now, ep| {
            let dest = SocketAddr::new(host_ip(1), 99);
            ep.send_request(now, app.port, dest, vec![7; 3_000], 0, false)
                .unwrap();
            app.sent += 1;
        });
    }
    h.run(&mut app, Time::from_millis(1_000));
    let counts = (
        app.sent,
        app.ok_before_kill,
        app.timeouts,
        app.ok_after_restart,
    );
    eprintln!("sent, ok before kill, timeouts, ok after restart: {counts:?}");
    assert_eq!(app.starts_of_host1, 2);
    // Requests sent to the dead host time out after 100 ms of silence, unless the host
    // is back before that: then RPC_UNKNOWN makes the client restart them, and they
    // complete. When one times out with its peer silent that long, every RPC to the
    // peer fails with it (the peer is gone): the one sent at ~120 ms fails at ~220 ms
    // and takes those sent since along. So the ones sent in [20, ~220) ms fail and the
    // rest succeed.
    assert!(app.ok_before_kill >= 15, "{counts:?}");
    assert!((190..=210).contains(&app.timeouts), "{counts:?}");
    assert!(app.ok_after_restart >= 370, "{counts:?}");
    assert_eq!(
        app.ok_before_kill + app.ok_after_restart + app.timeouts,
        app.sent
    );
    assert!(h.stats().to_dead_host > 0);
}

#[test]
fn workload_files_load() {
    let dir = std::env::temp_dir().join(format!("homa-harness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.csv");
    std::fs::write(
        &path,
        "length_bytes,cumulative_fraction\n8,0.5\n2000000,1\n",
    )
    .unwrap();
    let sizes = Sizes::load(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let cfg = ChaosConfig {
        rpcs: 100,
        endpoints: 3,
        size: sizes,
        seed: 3,
        concurrency: 4,
        ..ChaosConfig::default()
    };
    assert_all_complete(&cfg, &run(&cfg));
}

#[test]
fn one_way_messages_survive_a_lossy_network_and_refusing_hosts() {
    // Half the messages one-way, over loss, duplication and reordering, with the grant
    // invariants checked from the wire; the last two of six hosts do not take one-way
    // messages, so those sent to them must fail with NotAccepted and never arrive.
    let cfg = ChaosConfig {
        rpcs: 3_000,
        endpoints: 6,
        size: workloads::builtin("w3").unwrap(),
        loss: 0.05,
        dup: 0.02,
        reorder: 0.1,
        one_way: 0.5,
        one_way_refusers: 2,
        check_invariants: true,
        seed: 41,
        ..ChaosConfig::default()
    };
    let r = run_chaos(&cfg, &mut |_| {});
    let (res, ow) = (&r.result, &r.one_way);
    let what = format!(
        "seed {}: {} one-way {:?} failures {:?} check {:?}",
        cfg.seed,
        serde_json::to_string(res).unwrap(),
        ow,
        r.failed_by_error,
        r.check.as_ref().map(|c| &c.first_violations)
    );
    eprintln!("{what}");
    assert!(r.passed() && homa_harness::swarm_passed(&r), "{what}");
    assert!(
        ow.sent > 1_000 && ow.delivered > 500 && ow.refused > 200,
        "{what}"
    );
    assert_eq!(res.completed + res.failed, cfg.rpcs, "{what}");
    assert_eq!(res.failed, ow.refused, "{what}");
    assert_eq!(ow.delivered + ow.refused, ow.sent, "{what}");
}

#[test]
fn messages_longer_than_the_modules_maximum_when_both_sides_allow_them() {
    // W5 up to its longest row, 29.4 MB, with max_message_length raised to 30 MB on every
    // host; RPCs and one-way messages over a little loss and reordering, grant
    // invariants checked from the wire.
    let cfg = ChaosConfig {
        rpcs: 40,
        endpoints: 4,
        size: workloads::builtin("w5").unwrap(),
        loss: 0.01,
        reorder: 0.05,
        one_way: 0.5,
        check_invariants: true,
        seed: 29,
        endpoint: Config {
            max_message_length: 30_000_000,
            ..Config::default()
        },
        ..ChaosConfig::default()
    };
    let r = run_chaos(&cfg, &mut |_| {});
    let what = format!(
        "seed {}: {} failures {:?} check {:?}",
        cfg.seed,
        serde_json::to_string(&r.result).unwrap(),
        r.failed_by_error,
        r.check.as_ref().map(|c| &c.first_violations)
    );
    assert!(r.passed() && homa_harness::swarm_passed(&r), "{what}");
    assert_eq!(r.result.completed, cfg.rpcs, "{what}");
    // Long messages did travel (W5's rows above 1 MB are 30% of its messages): 80
    // messages of at most 1 MB (40 requests, at most 40 responses) would take fewer than
    // 80 * 707 DATA packets, retransmissions (1% loss) included twice over.
    let data = r.engine.packets_sent["DATA"];
    let retransmitted = r.engine.retransmitted_packets;
    eprintln!("{data} DATA packets, {retransmitted} retransmitted");
    assert!(
        data - 2 * retransmitted > 80 * 707,
        "{what}: {data} DATA packets"
    );
}

/// A client that drops its responses instead of releasing them (or releases a clone and
/// drops the original): each dropped response gives its receive space back all the same.
/// With room for three 300 KB responses, the fourth used to wait for space forever.
struct Dropper {
    /// Release a clone of each response, then drop it.
    release_clone: bool,
    done: usize,
    failed: usize,
    port: u16,
}

const DROPPED_RPCS: usize = 20;
const DROPPED_LEN: usize = 300_000;

impl Dropper {
    fn ask(&mut self, now: Time, ep: &mut Endpoint) {
        let dest = SocketAddr::new(host_ip(1), 99);
        ep.send_request(now, self.port, dest, vec![1; 16], 0, false)
            .unwrap();
    }
}

impl App for Dropper {
    fn on_start(&mut self, now: Time, host: usize, ep: &mut Endpoint) {
        if host == 1 {
            ep.bind(99).unwrap();
        } else {
            self.port = ep.bind(0).unwrap();
            self.ask(now, ep);
        }
    }
    fn on_event(&mut self, now: Time, _host: usize, ep: &mut Endpoint, ev: Event) {
        match ev {
            Event::Request {
                port,
                id,
                peer,
                data,
            } => {
                ep.release(data);
                ep.reply(now, port, peer, id, vec![2; DROPPED_LEN]).unwrap();
            }
            Event::Response { data, .. } => {
                assert_eq!(data.len(), DROPPED_LEN);
                if self.release_clone {
                    // A clone counts for nothing: releasing it gives nothing back twice.
                    ep.release(data.clone());
                }
                drop(data);
                self.done += 1;
                if self.done < DROPPED_RPCS {
                    self.ask(now, ep);
                }
            }
            Event::Failed { .. } => self.failed += 1,
            _ => {}
        }
    }
    fn finished(&self) -> bool {
        self.done + self.failed == DROPPED_RPCS
    }
}

#[test]
fn responses_dropped_unreleased_give_their_space_back() {
    for release_clone in [false, true] {
        let endpoint = Config {
            max_incoming_held: 1_000_000,
            ..Config::default()
        };
        let mut h = Harness::new(HarnessConfig {
            hosts: 2,
            net: NetConfig::default(),
            endpoint,
            seed: 3,
        });
        let mut app = Dropper {
            release_clone,
            done: 0,
            failed: 0,
            port: 0,
        };
        h.run(&mut app, Time::from_millis(10_000));
        assert_eq!(
            (app.done, app.failed),
            (DROPPED_RPCS, 0),
            "release_clone {release_clone}: seed 3"
        );
        let held = h.endpoint(0).unwrap().metrics().incoming_held;
        assert!(
            held <= DROPPED_LEN as u64,
            "release_clone {release_clone}: {held} bytes still counted (seed 3)"
        );
    }
}
