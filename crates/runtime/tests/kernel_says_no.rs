//! What a blocking socket does when the kernel gets in the way after bind: its wake-up
//! datagrams cannot be sent or are dropped, and an ICMP error about one peer is reported
//! on a send to another. Each test runs in a network namespace of its own (root only;
//! skipped with a message otherwise), where nothing but loopback exists, so nothing is
//! sent anywhere else.

mod common;

use homa::{Options, RecvError, RpcError, Socket, Transport};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

/// Far longer than anything here should take (a lost wake-up is found within 0.1 s).
const DEADLINE: Duration = Duration::from_secs(20);

/// `f` on a thread of its own in a fresh network namespace with loopback up, or `None`
/// (after saying so) where this process may not make one.
fn in_namespace<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    if !common::may_make_namespaces() {
        println!(
            "skipping {name}: needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for a network namespace"
        );
        return None;
    }
    let t = std::thread::spawn(move || {
        // SAFETY: unshare moves only this thread (and the threads it starts) into a new,
        // empty network namespace, which goes when they end.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!(
                "root, but refused a network namespace: {}",
                std::io::Error::last_os_error()
            );
        }
        set_loopback(true);
        f()
    });
    Some(t.join().expect("the test's thread"))
}

/// `struct ifreq` with its flags member.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _rest: [u8; 22],
}

/// Bring this namespace's loopback interface up or down.
fn set_loopback(up: bool) {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")
        .or_else(|_| std::net::UdpSocket::bind("[::]:0"))
        .expect("a socket for ioctl");
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _rest: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    let fd = sock.as_raw_fd();
    // SAFETY: `req` is an ifreq-sized buffer that outlives both calls.
    unsafe {
        assert_eq!(
            libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req),
            0,
            "SIOCGIFFLAGS"
        );
        let up_flag = libc::IFF_UP as libc::c_short;
        req.flags = if up {
            req.flags | up_flag
        } else {
            req.flags & !up_flag
        };
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &req), 0, "SIOCSIFFLAGS");
    }
}

/// A thread blocked in `recv_request` on `server`; its outcome comes on the channel.
fn waiting(server: &Socket) -> mpsc::Receiver<Result<usize, RecvError>> {
    let (tx, rx) = mpsc::channel();
    let s = server.clone();
    std::thread::spawn(move || {
        let _ = tx.send(s.recv_request().map(|m| m.len()));
    });
    // Long enough to be blocked in the receive call, not yet on its way to it.
    std::thread::sleep(Duration::from_millis(100));
    rx
}

/// The wake-up of a thread blocked in the receive call is a datagram from the socket's
/// own kick socket. With loopback gone after bind that datagram cannot be sent; the
/// waiting thread still learns of the shutdown (it used to wait for ever).
#[test]
fn a_waiting_caller_wakes_when_its_wake_up_cannot_be_sent() {
    let outcome = in_namespace(
        "a_waiting_caller_wakes_when_its_wake_up_cannot_be_sent",
        || {
            let server = Socket::bind("127.0.0.1:4000".parse().unwrap()).unwrap();
            let waiter = waiting(&server);
            set_loopback(false);
            server.shutdown();
            waiter.recv_timeout(DEADLINE)
        },
    );
    if let Some(outcome) = outcome {
        assert!(
            matches!(outcome, Ok(Err(RecvError::Shutdown))),
            "expected the waiting caller to see the shutdown, got {outcome:?}"
        );
    }
}

/// In this namespace, an input rule that lets only UDP port 5000 reach port 4000 (so it
/// drops the wake-up datagrams of a socket on 4000). False where `nft` cannot add it.
fn firewall_port_4000_but_from_5000() -> bool {
    let rules = "add table inet t\n\
                 add chain inet t in { type filter hook input priority 0; }\n\
                 add rule inet t in udp dport 4000 udp sport != 5000 drop\n";
    std::process::Command::new("nft")
        .arg("-f")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(rules.as_bytes())?;
            c.wait()
        })
        .is_ok_and(|s| s.success())
}

/// The same when a firewall drops the wake-up datagrams (here: an input rule that lets
/// only one client port reach the server's port). Needs `nft`; skipped without it.
#[test]
fn a_waiting_caller_wakes_when_a_firewall_drops_its_wake_ups() {
    let name = "a_waiting_caller_wakes_when_a_firewall_drops_its_wake_ups";
    let outcome = in_namespace(name, move || {
        if !firewall_port_4000_but_from_5000() {
            return None;
        }
        let server = Socket::bind("127.0.0.1:4000".parse().unwrap()).unwrap();
        assert!(
            !server.info().wake_datagrams,
            "bind did not find its wake-up datagram dropped"
        );
        let waiter = waiting(&server);
        server.shutdown();
        let first = waiter.recv_timeout(DEADLINE);
        // Once a lost wake-up has been seen, later waits do not depend on them.
        let again = Socket::bind("127.0.0.1:4000".parse().unwrap());
        Some((first, again.is_ok()))
    });
    match outcome {
        None => {}
        Some(None) => println!("skipping {name}: no usable nft"),
        Some(Some((first, _))) => assert!(
            matches!(first, Ok(Err(RecvError::Shutdown))),
            "expected the waiting caller to see the shutdown, got {first:?}"
        ),
    }
}

/// The same firewall, with a peer sending to the port as the server binds (a server
/// restarted while its clients retry): the peer's datagrams make the new socket readable,
/// and bind must not take that for its kick having arrived, or a thread blocked in the
/// receive call waits for a wake-up that never comes (until its receive times out). Bind
/// finds the kicks lost, and waiting threads wait in `ppoll`. Needs `nft`.
#[test]
fn peer_traffic_at_bind_does_not_hide_lost_wake_ups() {
    let name = "peer_traffic_at_bind_does_not_hide_lost_wake_ups";
    let outcome = in_namespace(name, move || {
        if !firewall_port_4000_but_from_5000() {
            return None;
        }
        // The peer: a datagram every 100 us from the one port the firewall lets through,
        // for as long as the bind takes.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let sock = std::net::UdpSocket::bind("127.0.0.1:5000").expect("peer socket");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = sock.send_to(b"not a Homa packet", "127.0.0.1:4000");
                    std::thread::sleep(Duration::from_micros(100));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let server = Socket::bind("127.0.0.1:4000".parse().unwrap()).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        peer.join().unwrap();
        let datagrams = server.info().wake_datagrams;
        let waiter = waiting(&server);
        server.shutdown();
        Some((datagrams, waiter.recv_timeout(DEADLINE)))
    });
    match outcome {
        None => {}
        Some(None) => println!("skipping {name}: no usable nft"),
        Some(Some((datagrams, woke))) => {
            assert!(
                !datagrams,
                "the peer's datagrams were taken for the kick: waiting threads block in the \
                 receive call, which no kick reaches"
            );
            assert!(
                matches!(woke, Ok(Err(RecvError::Shutdown))),
                "expected the waiting caller to see the shutdown, got {woke:?}"
            );
        }
    }
}

/// One's complement sum of 16-bit words (the ICMP checksum).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP "host unreachable" about a datagram from `from` to `to`, as a router on the
/// way to `to` would send it, delivered to this host over loopback.
fn icmp_host_unreachable(from: SocketAddr, to: SocketAddr) {
    icmp_error((3, 1), libc::IPPROTO_UDP as u8, from, to);
}

/// An ICMP (or ICMPv6) error of `(type, code)` about a packet of IP protocol `proto`
/// from `from` to `to` whose transport header starts with their ports (as UDP's and
/// Homa's do), delivered to this host (`from`) over loopback.
fn icmp_error((ty, code): (u8, u8), proto: u8, from: SocketAddr, to: SocketAddr) {
    // The packet quoted: its IP header, then 8 bytes of its transport header.
    let mut quoted = match (from, to) {
        (SocketAddr::V4(f), SocketAddr::V4(t)) => {
            let mut h = vec![0x45, 0, 0, 28 + 100, 0, 0, 0x40, 0, 64, proto, 0, 0];
            h.extend_from_slice(&f.ip().octets());
            h.extend_from_slice(&t.ip().octets());
            h
        }
        (SocketAddr::V6(f), SocketAddr::V6(t)) => {
            let mut h = vec![0x60, 0, 0, 0, 0, 8 + 100, proto, 64];
            h.extend_from_slice(&f.ip().octets());
            h.extend_from_slice(&t.ip().octets());
            h
        }
        _ => panic!("one family"),
    };
    quoted.extend_from_slice(&from.port().to_be_bytes());
    quoted.extend_from_slice(&to.port().to_be_bytes());
    quoted.extend_from_slice(&(8u16 + 100).to_be_bytes());
    quoted.extend_from_slice(&[0, 0]);
    // (ICMPv6 parameter problem: the offending byte, the next header field, at 6.)
    let pointer: u32 = if from.is_ipv6() && ty == 4 { 6 } else { 0 };
    let mut icmp = vec![ty, code, 0, 0];
    icmp.extend_from_slice(&pointer.to_be_bytes());
    icmp.extend_from_slice(&quoted);
    if from.is_ipv4() {
        // (The kernel fills ICMPv6 checksums itself.)
        let sum = checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let sock = match from {
        SocketAddr::V4(_) => socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::ICMPV4),
        ),
        SocketAddr::V6(_) => socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::RAW,
            Some(socket2::Protocol::ICMPV6),
        ),
    }
    .expect("raw ICMP socket");
    let dest = SocketAddr::new(from.ip(), 0);
    assert_eq!(
        sock.send_to(&icmp, &dest.into()).unwrap(),
        icmp.len(),
        "ICMP sent"
    );
}

/// A server bound to `at` that answers every request with its own bytes, from a thread
/// of its own (ends with the socket).
fn serving_echoes(at: &str) -> Socket {
    serving_echoes_with(at.parse().unwrap(), Options::default())
}

/// The same, with `options`.
fn serving_echoes_with(at: SocketAddr, options: Options) -> Socket {
    let server = Socket::bind_with(at, options).unwrap();
    common::echo_on(&server);
    server
}

/// The kernel reports an ICMP error on the socket's next send, whatever that send's
/// destination. An error about a host this client cannot reach must not fail its RPCs to
/// another, healthy server (every call here used to fail with "no route to host").
#[test]
fn an_icmp_error_about_one_peer_does_not_fail_rpcs_to_another() {
    let name = "an_icmp_error_about_one_peer_does_not_fail_rpcs_to_another";
    let failures = in_namespace(name, || {
        let server = serving_echoes("127.0.0.1:4000");
        let client = Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        // A client that has spoken to two addresses no longer keeps its UDP socket
        // connected to one, so ICMP errors about any destination reach it.
        let nobody: SocketAddr = "127.0.0.1:4003".parse().unwrap();
        let _ = client.call(nobody, b"anyone?".to_vec());
        let far: SocketAddr = "10.0.0.9:4001".parse().unwrap();
        let mut failures = Vec::new();
        for i in 0..20u8 {
            // Right before the call: a waiting receive would take the report first.
            icmp_host_unreachable(client.local_addr(), far);
            match client.call(server.local_addr(), vec![i; 100]) {
                Ok(m) if m.to_vec() == vec![i; 100] => {}
                other => failures.push(format!("call {i}: {other:?}")),
            }
        }
        server.shutdown();
        failures
    });
    if let Some(failures) = failures {
        assert!(failures.is_empty(), "{failures:#?}");
    }
}

/// Raw IP over IPv6: a Linux-module host answers a packet for a port it has no socket on
/// with ICMPv6 port unreachable, and a host with nothing for protocol 146 with parameter
/// problem, unknown next header. A raw-mode client fails those RPCs at once
/// (`NoSuchSocket`; `Unreachable(EPROTONOSUPPORT)`), as the module's own clients do,
/// rather than letting them time out. The answers are forged here, over loopback, about
/// requests to an address nothing answers on. (The IPv4 raw socket takes no ICMP errors:
/// see `raw.rs`. Its RPCs wait for their timeout, as before.)
#[test]
fn raw_rpcs_fail_when_icmp_says_no_socket_or_no_homa() {
    let name = "raw_rpcs_fail_when_icmp_says_no_socket_or_no_homa";
    if !common::raw_available(name) {
        return;
    }
    // ICMPv6 (type, code): port unreachable, and parameter problem, unknown next header.
    let answers = [
        ((1, 4), RpcError::NoSuchSocket),
        ((4, 1), RpcError::Unreachable(libc::EPROTONOSUPPORT)),
    ];
    let outcomes = in_namespace(name, move || {
        let opts = Options {
            transport: Transport::RawIp,
            ..Default::default()
        };
        let client = Socket::bind_with("[::1]:0".parse().unwrap(), opts).unwrap();
        let silent: SocketAddr = "[::1]:4001".parse().unwrap();
        answers.map(|(icmp, _)| {
            let id = client.send_request(silent, vec![7; 100], 0).unwrap();
            icmp_error(icmp, 146, client.local_addr(), silent);
            client.recv_id_timeout(id, DEADLINE).map(|m| m.len())
        })
    });
    let Some(outcomes) = outcomes else { return };
    for ((icmp, want), got) in answers.into_iter().zip(outcomes) {
        match got {
            Err(RecvError::Rpc { error, .. }) if error == want => {
                // Said plainly, not as a bare "Protocol not supported".
                let said = error.to_string();
                let plain = want == RpcError::NoSuchSocket || said.contains("runs no Homa");
                assert!(plain, "{said}");
            }
            other => panic!("ICMPv6 {icmp:?}: {other:?}, not {want:?}"),
        }
    }
}

/// A destination whose route has a smaller MTU than the socket's packets refuses UDP GSO
/// sends (`EMSGSIZE` on this kernel; `EINVAL` or `EIO` on others, or on an IPsec route),
/// where the same packets sent one by one go (fragmented). Its RPCs must not fail, and
/// the other destinations keep GSO.
#[test]
fn a_route_that_refuses_gso_costs_only_its_own_destination_gso() {
    let name = "a_route_that_refuses_gso_costs_only_its_own_destination_gso";
    let outcome = in_namespace(name, move || {
        // 127.0.0.2 is this host, through a route with a 1,200-byte MTU.
        let route = std::process::Command::new("ip")
            .args([
                "route",
                "add",
                "local",
                "127.0.0.2/32",
                "dev",
                "lo",
                "table",
                "local",
                "mtu",
                "1200",
            ])
            .status();
        if !matches!(route, Ok(s) if s.success()) {
            println!("skipping {name}: `ip route add` did not work ({route:?})");
            return None;
        }
        let server = serving_echoes("0.0.0.0:4000");
        // Packets of 9,000 bytes: several to a GSO send (loopback's own would be 64 KB).
        let mut opts = homa::Options::default();
        opts.config.mtu = 9000;
        opts.auto_mtu = false;
        let client = Socket::bind_with("127.0.0.1:0".parse().unwrap(), opts).unwrap();
        assert!(client.info().gso, "GSO unavailable: nothing to test");
        let narrow: SocketAddr = "127.0.0.2:4000".parse().unwrap();
        let wide: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut failures = Vec::new();
        for (i, to) in [narrow, wide, narrow, wide].into_iter().enumerate() {
            let body = common::pattern(300_000, i as u64);
            match client.call_timeout(to, body.clone(), DEADLINE) {
                Ok(m) if m.to_vec() == body => {}
                other => failures.push(format!("call {i} to {to}: {:?}", other.map(|m| m.len()))),
            }
        }
        let gso_after = client.info().gso;
        server.shutdown();
        Some((failures, gso_after))
    });
    if let Some(Some((failures, gso_after))) = outcome {
        assert!(failures.is_empty(), "{failures:#?}");
        assert!(
            gso_after,
            "one destination's refusal turned GSO off for all"
        );
    }
}

/// The MTU and link speed a socket takes at bind follow the interfaces its traffic uses:
/// a wildcard socket on a host with no network up yet, and a socket bound to a service
/// address configured on `lo`, do not take loopback's 64 KB packets and 1 Tbps, which
/// would be theirs for life (every packet fragmented, the pacer off, once the real
/// network carries them).
#[test]
fn sockets_off_loopback_do_not_take_loopbacks_mtu() {
    let name = "sockets_off_loopback_do_not_take_loopbacks_mtu";
    let got = in_namespace(name, move || {
        let defaults = homa::Options::default().config;
        let wildcard = Socket::bind("0.0.0.0:0".parse().unwrap()).unwrap().config();
        let on_lo = std::process::Command::new("ip")
            .args(["addr", "add", "10.77.0.1/32", "dev", "lo"])
            .status();
        if !matches!(on_lo, Ok(s) if s.success()) {
            println!("skipping part of {name}: `ip addr add` did not work ({on_lo:?})");
            return Some((defaults, wildcard, None, None));
        }
        let service = Socket::bind("10.77.0.1:0".parse().unwrap())
            .unwrap()
            .config();
        let looped = Socket::bind("127.0.0.1:0".parse().unwrap())
            .unwrap()
            .config();
        Some((defaults, wildcard, Some(service), Some(looped)))
    });
    let Some(Some((defaults, wildcard, service, looped))) = got else {
        return;
    };
    // No interface but loopback is up: the configuration's values.
    assert_eq!(wildcard.mtu, defaults.mtu);
    assert_eq!(wildcard.link_mbps, defaults.link_mbps);
    if let (Some(service), Some(looped)) = (service, looped) {
        assert_eq!(service.mtu, defaults.mtu, "a service address on lo");
        assert_eq!(service.link_mbps, defaults.link_mbps);
        // A loopback address keeps loopback's.
        assert!(looped.mtu > 60_000, "{}", looped.mtu);
    }
}

/// A socket binds to an IPv6 link-local address (which needs its scope, the interface),
/// and RPCs complete between such sockets and wildcard ones, both ways: a wildcard
/// socket answers a link-local peer on the interface it heard it on.
#[test]
fn link_local_ipv6_sockets_bind_and_talk() {
    let name = "link_local_ipv6_sockets_bind_and_talk";
    let outcome = in_namespace(name, move || {
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !(ip(&["link", "add", "hl0", "type", "veth", "peer", "name", "hl1"])
            && ip(&["link", "set", "hl0", "up"])
            && ip(&["link", "set", "hl1", "up"])
            && ip(&["addr", "add", "fe80::71/64", "dev", "hl0", "nodad"]))
        {
            println!("skipping {name}: `ip` could not make a veth pair");
            return None;
        }
        let scope = std::fs::read_to_string("/sys/class/net/hl0/ifindex")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .or_else(|| {
                // (A thread in its own namespace may see another's /sys: ask the kernel.)
                let name = std::ffi::CString::new("hl0").unwrap();
                // SAFETY: a valid NUL-terminated name.
                let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
                (i > 0).then_some(i)
            })
            .expect("the veth's index");
        let at = |port| {
            SocketAddr::V6(std::net::SocketAddrV6::new(
                "fe80::71".parse().unwrap(),
                port,
                0,
                scope,
            ))
        };
        let mut failures = Vec::new();
        let raw = common::raw_available(name);
        for (transport, base) in [(Transport::Udp, 4000), (Transport::RawIp, 4100)] {
            if transport == Transport::RawIp && !raw {
                continue;
            }
            let opts = |server| Options {
                transport,
                server: Some(server),
                ..Default::default()
            };
            let bound = serving_echoes_with(at(base), opts(true));
            // A server on the wildcard address answers from the link-local address
            // asked at, on the interface it heard the client on.
            let wildcard = serving_echoes_with("[::]:0".parse().unwrap(), opts(true));
            let wildcard_at = at(wildcard.local_addr().port());
            for (client_at, client) in [(at(0), "bound"), ("[::]:0".parse().unwrap(), "wildcard")] {
                let c = Socket::bind_with(client_at, opts(false)).unwrap();
                for (to, server) in [(bound.local_addr(), "bound"), (wildcard_at, "wildcard")] {
                    for len in [100, 200_000] {
                        let body = common::pattern(len, len as u64);
                        match c.call_timeout(to, body.clone(), DEADLINE) {
                            Ok(m) if m.to_vec() == body => {}
                            other => failures.push(format!(
                                "{transport:?}: {client} client, {server} server, {len} B: {:?}",
                                other.map(|m| m.len())
                            )),
                        }
                    }
                }
            }
            bound.shutdown();
            wildcard.shutdown();
        }
        Some(failures)
    });
    if let Some(Some(failures)) = outcome {
        assert!(failures.is_empty(), "{failures:#?}");
    }
}

/// The raw socket a process keeps per network namespace, and its reader thread, go when
/// the last Homa socket using them closes: sockets opened on threads in namespaces that
/// then end leave no thread, descriptor or namespace behind (each reader kept its
/// namespace alive for the life of the process).
#[test]
fn raw_sockets_in_passing_namespaces_leave_no_reader_behind() {
    let name = "raw_sockets_in_passing_namespaces_leave_no_reader_behind";
    if !common::raw_available(name) {
        return;
    }
    let netns = || {
        std::fs::read_link("/proc/thread-self/ns/net")
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let mut used = Vec::new();
    for i in 0..8 {
        let got = in_namespace(name, move || {
            let opts = Options {
                transport: Transport::RawIp,
                ..Default::default()
            };
            let v6 = i % 2 == 1;
            let at = if v6 { "[::1]:4000" } else { "127.0.0.1:4000" };
            let server = serving_echoes_with(at.parse().unwrap(), opts.clone());
            let client = Socket::bind_with(
                if v6 { "[::1]:0" } else { "127.0.0.1:0" }.parse().unwrap(),
                opts,
            )
            .unwrap();
            let reply = client
                .call_timeout(server.local_addr(), vec![i as u8; 3000], DEADLINE)
                .expect("an echo");
            assert_eq!(reply.to_vec(), vec![i as u8; 3000]);
            (netns(), server, client)
        });
        let Some((ns, server, client)) = got else {
            return;
        };
        // Closed here, on another thread and in another namespace than they were made in
        // (the server's echo thread lets its clone go once it is shut down).
        server.shutdown();
        drop((server, client));
        used.push(ns);
    }
    // The readers end shortly after their last socket closes.
    let readers_left = || {
        let mut left = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let ns = std::fs::read_link(task.path().join("ns/net"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            if comm.starts_with("homa-raw") && used.contains(&ns) {
                left.push((comm.trim().to_string(), ns));
            }
        }
        left
    };
    let start = std::time::Instant::now();
    while !readers_left().is_empty() && start.elapsed() < DEADLINE {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        readers_left(),
        Vec::new(),
        "readers left in the test's namespaces"
    );
}
