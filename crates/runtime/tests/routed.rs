//! Across a routed path: a client and a server in network namespaces of their own,
//! joined through a third that forwards between them, the client's link with a
//! 9,000-byte MTU and the server's with 1,500 bytes. What loopback cannot show:
//! - packets sized to the client's interface meet a smaller hop on the way, and a long
//!   message still arrives (the kernel learns the path's MTU from the router's ICMP
//!   errors; an IPv6 raw socket only when it asks for them);
//! - a client whose source address goes away (a secondary address promoted in its
//!   place) keeps working: a client socket connected to its one server used to fail
//!   every later call with "network unreachable";
//! - a path that drops long packets and passes short ones (the router filters them
//!   with nftables): a call whose request never gets there fails, not restarts for ever.
//!
//! Needs root (namespaces) and `ip` (and `nft` for the filter); skips with a message
//! otherwise. The namespaces
//! belong to threads of this process and vanish with them: nothing is left behind. The
//! raw-IP test runs its server as a child process (this test binary again, in the
//! server's namespace), since a process's raw-IP sockets share one reader, which lives
//! in one namespace.

mod common;

use homa::{BindError, Options, Socket, Transport};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Far longer than a call across the three namespaces should take on a busy machine.
const DEADLINE: Duration = Duration::from_secs(20);

/// The environment variable that makes [`routed_raw_server`] serve, at its address.
const SERVE_ENV: &str = "HOMA_ROUTED_TEST_SERVE";

type Job = Box<dyn FnOnce() + Send>;

/// A thread in a network namespace of its own (loopback up), running what it is given.
struct Netns {
    jobs: Option<mpsc::Sender<Job>>,
    /// The thread's id: `ip link ... netns <tid>` moves a link into its namespace.
    tid: i32,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Netns {
    fn new() -> Netns {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tid_tx, tid_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare moves only this thread (and what it starts) into a new,
            // empty network namespace, which goes when they end.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!(
                    "root, but refused a network namespace: {}",
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            for job in rx {
                job();
            }
        });
        let tid = tid_rx.recv().expect("the namespace's thread");
        let ns = Netns {
            jobs: Some(jobs),
            tid,
            thread: Some(thread),
        };
        assert!(ns.ip("link set lo up"), "loopback up");
        // No duplicate address detection: addresses (the links' own link-local ones
        // among them, which neighbour discovery needs) are usable at once, not a second
        // or two later.
        ns.sysctl("net/ipv6/conf/all/accept_dad", "0");
        ns.sysctl("net/ipv6/conf/default/accept_dad", "0");
        ns
    }

    /// `f`, run in this namespace (sockets it binds stay there).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .as_ref()
            .expect("open")
            .send(job)
            .expect("the namespace's thread");
        rx.recv().expect("the job's result")
    }

    /// `ip <args>` in this namespace; whether it succeeded.
    fn ip(&self, args: &str) -> bool {
        let args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
        self.run(move || {
            Command::new("ip")
                .args(&args)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// Write `value` to `/proc/sys/<key>` of this namespace.
    fn sysctl(&self, key: &str, value: &str) {
        let (path, value) = (format!("/proc/sys/{key}"), value.to_owned());
        self.run(move || std::fs::write(&path, value))
            .unwrap_or_else(|e| panic!("sysctl {key}: {e}"));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Client C (10.71.1.2 and secondary .3, fd71:1::2; MTU 9000) -- router R -- server S
/// (10.71.2.2, fd71:2::2; MTU 1500).
struct Topology {
    client: Netns,
    /// The router (its links and routes live as long as it does).
    router: Netns,
    server: Netns,
}

const CLIENT_V4: &str = "10.71.1.2";
const SERVER_V4: &str = "10.71.2.2";
const CLIENT_V6: &str = "fd71:1::2";
const SERVER_V6: &str = "fd71:2::2";

/// The topology, or `None` (after saying why) where it cannot be built here.
fn topology(test: &str) -> Option<Topology> {
    if !common::may_make_namespaces() {
        println!(
            "skipping {test}: needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for network namespaces"
        );
        return None;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        println!("skipping {test}: needs `ip` (iproute2)");
        return None;
    }
    let (c, r, s) = (Netns::new(), Netns::new(), Netns::new());
    let steps = [
        (
            &c,
            format!(
                "link add c0 mtu 9000 type veth peer name r0 mtu 9000 netns {}",
                r.tid
            ),
        ),
        (
            &r,
            format!(
                "link add r1 mtu 1500 type veth peer name s0 mtu 1500 netns {}",
                s.tid
            ),
        ),
        // A second uplink, for a route that moves.
        (
            &c,
            format!("link add c1 type veth peer name r2 netns {}", r.tid),
        ),
        (&c, "addr add 10.71.3.2/24 dev c1".into()),
        (&c, "link set c1 up".into()),
        (&r, "addr add 10.71.3.1/24 dev r2".into()),
        (&r, "link set r2 up".into()),
        (&c, "addr add 10.71.1.2/24 dev c0".into()),
        (&c, "addr add 10.71.1.3/24 dev c0".into()),
        (&c, "addr add fd71:1::2/64 dev c0 nodad".into()),
        (&c, "link set c0 up".into()),
        (&c, "route add default via 10.71.1.1".into()),
        (&c, "-6 route add default via fd71:1::1".into()),
        (&r, "addr add 10.71.1.1/24 dev r0".into()),
        (&r, "addr add 10.71.2.1/24 dev r1".into()),
        (&r, "addr add fd71:1::1/64 dev r0 nodad".into()),
        (&r, "addr add fd71:2::1/64 dev r1 nodad".into()),
        (&r, "link set r0 up".into()),
        (&r, "link set r1 up".into()),
        (&s, "addr add 10.71.2.2/24 dev s0".into()),
        (&s, "addr add fd71:2::2/64 dev s0 nodad".into()),
        (&s, "link set s0 up".into()),
        (&s, "route add default via 10.71.2.1".into()),
        (&s, "-6 route add default via fd71:2::1".into()),
    ];
    for (ns, step) in &steps {
        assert!(ns.ip(step), "ip {step}");
    }
    // IPv6 routes through a link only once its carrier is seen and it has its
    // link-local address, which the kernel gets to up to a second after `link set up`.
    for (ns, dev) in [
        (&c, "c0"),
        (&c, "c1"),
        (&r, "r0"),
        (&r, "r1"),
        (&r, "r2"),
        (&s, "s0"),
    ] {
        let name = dev.to_owned();
        let ready = ns.run(move || {
            (0..200).any(|_| {
                let out = Command::new("ip")
                    .args(["-6", "addr", "show", "dev", &name, "scope", "link"])
                    .output();
                let up = out.is_ok_and(|o| {
                    let text = String::from_utf8_lossy(&o.stdout);
                    text.contains("fe80")
                        && !text.contains("tentative")
                        && !text.contains("NO-CARRIER")
                });
                if !up {
                    std::thread::sleep(Duration::from_millis(50));
                }
                up
            })
        });
        assert!(ready, "{dev} never came up");
    }
    r.sysctl("net/ipv4/ip_forward", "1");
    r.sysctl("net/ipv6/conf/all/forwarding", "1");
    // Deleting the client's primary address promotes its secondary, as a host
    // renumbering in place would.
    c.sysctl("net/ipv4/conf/all/promote_secondaries", "1");
    c.sysctl("net/ipv4/conf/c0/promote_secondaries", "1");
    Some(Topology {
        client: c,
        router: r,
        server: s,
    })
}

impl Topology {
    /// A UDP echo server on the server's IPv4 address, port 4000, and that address.
    fn serve_v4(&self) -> (Socket, SocketAddr) {
        let s_at = at(SERVER_V4, 4000);
        let opts = Options {
            server: Some(true),
            ..Default::default()
        };
        (self.server.run(move || echo_server(s_at, opts)), s_at)
    }
}

fn at(ip: &str, port: u16) -> SocketAddr {
    if ip.contains(':') {
        format!("[{ip}]:{port}").parse().unwrap()
    } else {
        format!("{ip}:{port}").parse().unwrap()
    }
}

/// An echo server bound to `addr` with `options`, in the namespace the caller is in.
fn echo_server(addr: SocketAddr, options: Options) -> Socket {
    let server = Socket::bind_with(addr, options).expect("bind the server");
    common::echo_on(&server);
    common::echo_on(&server);
    server
}

/// Calls of `lens` bytes from `client` to `server`, echoed: the failures, described.
fn exchange(client: &Socket, server: SocketAddr, lens: &[usize], what: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for &len in lens {
        let body = common::pattern(len, len as u64);
        match client.call_timeout(server, body.clone(), DEADLINE) {
            Ok(m) if m.to_vec() == body => {}
            other => failures.push(format!("{what}, {len} B: {:?}", other.map(|m| m.len()))),
        }
    }
    failures
}

/// Long messages over UDP, IPv4 and IPv6, from a client whose interface's MTU is six
/// times the path's.
#[test]
fn udp_long_messages_cross_a_smaller_hop() {
    let Some(t) = topology("udp_long_messages_cross_a_smaller_hop") else {
        return;
    };
    let opts = |server| Options {
        server: Some(server),
        ..Default::default()
    };
    let mut failures = Vec::new();
    for (client_ip, server_ip) in [(CLIENT_V4, SERVER_V4), (CLIENT_V6, SERVER_V6)] {
        let s_at = at(server_ip, 4000);
        let server = t.server.run(move || echo_server(s_at, opts(true)));
        let c_at = at(client_ip, 0);
        let client = t
            .client
            .run(move || Socket::bind_with(c_at, opts(false)).unwrap());
        failures.extend(exchange(
            &client,
            s_at,
            &[100, 20_000, 300_000, 1_000_000],
            server_ip,
        ));
        server.shutdown();
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The same over raw IPv6 (IP protocol 146), where the kernel learns the path's MTU
/// only for a socket that asks for the router's errors (`IPV6_RECVERR`): without, every
/// call longer than a packet restarted for ever.
#[test]
fn raw_ipv6_long_messages_cross_a_smaller_hop() {
    let name = "raw_ipv6_long_messages_cross_a_smaller_hop";
    let Some(t) = topology(name) else { return };
    let client = t.client.run(|| {
        let opts = Options {
            transport: Transport::RawIp,
            ..Default::default()
        };
        Socket::bind_with(at(CLIENT_V6, 0), opts)
    });
    let client = match client {
        Ok(c) => c,
        Err(BindError::PermissionDenied(_)) => {
            println!("skipping {name}: needs CAP_NET_RAW");
            return;
        }
        Err(e) => panic!("raw bind failed unexpectedly: {e}"),
    };
    let s_at = at(SERVER_V6, 4000);
    let mut server = ChildServer::start(&t.server, s_at);
    let failures = exchange(
        &client,
        s_at,
        &[100, 20_000, 300_000, 1_000_000],
        "raw IPv6",
    );
    server.stop();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A client-only socket on the wildcard address talking to one server (its UDP socket
/// connected to it, source address pinned) keeps working when its address is deleted
/// and a secondary takes its place.
#[test]
fn a_client_survives_its_source_address_going_away() {
    let Some(t) = topology("a_client_survives_its_source_address_going_away") else {
        return;
    };
    let (server, s_at) = t.serve_v4();
    let client = t.client.run(|| Socket::bind(at("0.0.0.0", 0)).unwrap());
    let mut failures = exchange(&client, s_at, &[100, 100, 50_000], "before");
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        t.client.ip(&format!("addr del {CLIENT_V4}/24 dev c0")),
        "delete the primary"
    );
    // The secondary was promoted, and the default route through it is back.
    if !t.client.ip("route replace default via 10.71.1.1") {
        panic!("no route after the promotion");
    }
    for round in 0..5 {
        failures.extend(exchange(
            &client,
            s_at,
            &[100, 50_000],
            &format!("after, round {round}"),
        ));
    }
    server.shutdown();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A path that drops long packets and lets short ones through (the router filters
/// everything it forwards over 1,000 bytes, as a hop whose MTU nothing fragments for, or
/// a firewall dropping IP fragments, would): a call whose request never gets there fails
/// with `RpcError::RequestLost` once its restarts have found nothing, where it used to
/// restart for ever; short calls on the same path still complete. Needs `nft`.
#[test]
fn a_request_the_path_drops_fails_instead_of_restarting_for_ever() {
    let name = "a_request_the_path_drops_fails_instead_of_restarting_for_ever";
    let Some(t) = topology(name) else {
        return;
    };
    let rules = "add table ip drop_long
add chain ip drop_long fwd { type filter hook forward priority 0; }
add rule ip drop_long fwd meta length > 1000 drop
";
    let filtered = t.router.run(move || {
        let child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn();
        child.is_ok_and(|mut child| {
            use std::io::Write;
            let fed = child
                .stdin
                .take()
                .expect("piped")
                .write_all(rules.as_bytes());
            child.wait().is_ok_and(|s| s.success()) && fed.is_ok()
        })
    });
    if !filtered {
        println!("skipping {name}: needs `nft` (nftables) in the router's namespace");
        return;
    }
    let (server, s_at) = t.serve_v4();
    let client = t.client.run(|| Socket::bind(at(CLIENT_V4, 0)).unwrap());
    let failures = exchange(&client, s_at, &[100, 800], "short");
    assert!(failures.is_empty(), "{failures:#?}");
    let started = std::time::Instant::now();
    let outcome = client.call_timeout(s_at, common::pattern(20_000, 7), DEADLINE);
    let error = outcome.expect_err("nothing long gets through");
    assert_eq!(
        error.rpc_error(),
        Some(homa::RpcError::RequestLost),
        "{error} after {:?}",
        started.elapsed()
    );
    let failures = exchange(&client, s_at, &[100], "short, after");
    server.shutdown();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The same when the route moves: a tokio client-only socket (connected to its one
/// server, its source address pinned) whose default route moves to a second uplink, the
/// first one down. Its sends still succeed, from an address the answers cannot reach;
/// once an RPC times out it disconnects, and later calls go out from the new uplink's
/// address. (It used to time out every call for as long as it lived.)
#[test]
fn a_tokio_client_follows_its_route_to_another_uplink() {
    let Some(t) = topology("a_tokio_client_follows_its_route_to_another_uplink") else {
        return;
    };
    let (server, s_at) = t.serve_v4();
    let (before, after) = t.client.run(move || {
        let ip = |args: &str| {
            Command::new("ip")
                .args(args.split_whitespace())
                .status()
                .is_ok_and(|s| s.success())
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        rt.block_on(async move {
            let client = homa::aio::Socket::bind(at("0.0.0.0", 0)).await.unwrap();
            let body = common::pattern(20_000, 1);
            let before = echoed(&client, s_at, &body).await;
            assert!(
                ip("route replace default via 10.71.3.1 dev c1"),
                "move the route"
            );
            assert!(ip("link set c0 down"), "the first uplink down");
            // Calls in flight or started before the first timeout may fail; within a
            // few, calls succeed again, and from then on every one does.
            let mut outcomes = Vec::new();
            for _ in 0..30 {
                outcomes.push(echoed(&client, s_at, &body).await);
                if outcomes.iter().rev().take(5).filter(|&&ok| ok).count() == 5 {
                    break;
                }
            }
            (before, outcomes)
        })
    });
    server.shutdown();
    assert!(before, "the first call failed");
    let first_ok = after.iter().position(|&ok| ok);
    assert!(
        first_ok.is_some_and(|i| after[i..].iter().all(|&ok| ok) && after.len() - i >= 5),
        "after the route moved: {after:?}"
    );
}

/// Whether a call of `body` to `to` came back as it went.
async fn echoed(client: &homa::aio::Socket, to: SocketAddr, body: &[u8]) -> bool {
    let reply = client.call_timeout(to, body.to_vec(), DEADLINE).await;
    reply.is_ok_and(|m| m.to_vec() == body)
}

/// A server run as a child process (this test binary, [`routed_raw_server`]) in a
/// namespace; killed when dropped.
struct ChildServer(Option<Child>);

impl ChildServer {
    fn start(ns: &Netns, addr: SocketAddr) -> ChildServer {
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = ns
            .run(move || {
                Command::new(exe)
                    .args(["--exact", "routed_raw_server", "--ignored", "--nocapture"])
                    .env(SERVE_ENV, addr.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
            })
            .expect("start the server process");
        // It says "serving" once bound.
        let out = child.stdout.take().expect("its output");
        let mut ready = false;
        let mut lines = BufReader::new(out).lines();
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            if line.starts_with("serving") {
                ready = true;
                break;
            }
            if line.starts_with("cannot serve") {
                let _ = child.kill();
                panic!("the server process: {line}");
            }
        }
        assert!(ready, "the server process ended before serving");
        // Keep reading what it prints, so that it never writes to a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        ChildServer(Some(child))
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // Closing its input ends it; kill it if it lingers.
            drop(c.stdin.take());
            for _ in 0..50 {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Not a test: the raw-IP echo server [`ChildServer`] starts, serving at the address
/// in `HOMA_ROUTED_TEST_SERVE` until its input closes. Does nothing without it.
#[test]
#[ignore = "a helper process for raw_ipv6_long_messages_cross_a_smaller_hop"]
fn routed_raw_server() {
    let Ok(addr) = std::env::var(SERVE_ENV) else {
        println!("{SERVE_ENV} is not set: nothing to serve");
        return;
    };
    let opts = Options {
        transport: Transport::RawIp,
        server: Some(true),
        ..Default::default()
    };
    let server = match Socket::bind_with(addr.parse().expect("an address"), opts) {
        Ok(s) => s,
        Err(e) => {
            println!("cannot serve: {e}");
            return;
        }
    };
    common::echo_on(&server);
    println!("serving");
    // Until the parent closes our input (or goes away).
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
        line.clear();
    }
    server.shutdown();
}
