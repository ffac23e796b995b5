//! Opening a socket: the kernel sockets, the engine configuration (MTU, link speed, IP
//! overhead) and the engine itself.

use crate::error::BindError;
use crate::inner::{clock, Flavor, Inner, InnerParts, Io, Kick, KICK_ARRIVAL, KICK_TIMEOUT};
use crate::options::{Options, Transport};
use crate::raw;
use crate::sys::{self, SOL_UDP, UDP_GRO, UDP_SEGMENT};
use homa_core::{Endpoint, FIRST_AUTO_PORT};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// Link speed assumed for loopback, which reports none (Mbit/s): 1 Tbps. Loopback has no
/// NIC queue for the pacer to keep short (a datagram is delivered inside `sendmsg`, at
/// memory speed); at 100 Gbps the pacer held back every 64 KiB packet for a few
/// microseconds and cost a wake-up per packet (1 MB throughput 6-8 Gbps instead of
/// 13-16).
pub(crate) const LOOPBACK_MBPS: u32 = 1_000_000;
/// On loopback, `max_incoming` left at the Linux default is raised this many times: a
/// grant round trip there is tens of microseconds of software time rather than a
/// datacenter network's few, so the default window (200 KB for one message, three 64 KiB
/// packets) keeps the sender waiting for grants.
pub(crate) const LOOPBACK_INCOMING_FACTOR: u32 = 4;
/// Largest IP packet: the IPv4 total-length field (and the UDP length) stop at 65535.
pub(crate) const MAX_IP_PACKET: u32 = 65_535;

fn map_bind_error(e: io::Error, addr: SocketAddr) -> BindError {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => BindError::AddrInUse(addr),
        Some(libc::EADDRNOTAVAIL) => BindError::AddrNotAvailable(addr),
        Some(libc::EACCES) | Some(libc::EPERM) => {
            BindError::PermissionDenied(if (1..1024).contains(&addr.port()) {
                format!(
                    "binding {addr}: {e} (ports below net.ipv4.ip_unprivileged_port_start, \
                     1024 by default, need CAP_NET_BIND_SERVICE)"
                )
            } else {
                format!("binding {addr}: {e}")
            })
        }
        _ => BindError::Io(e),
    }
}

fn udp_socket(addr: SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.cloexec(),
        Some(Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        // One family per socket: an IPv6 socket never sees IPv4-mapped peers.
        sock.set_only_v6(true)?;
    }
    Ok(sock)
}

/// Bind a UDP socket to `addr`; port 0 picks a free port at or above 32768 (Homa's
/// automatic ports), whatever the kernel's ephemeral range, skipping ports `taken`.
fn bind_udp(addr: SocketAddr, taken: impl Fn(u16) -> bool) -> Result<Socket, BindError> {
    if addr.port() != 0 {
        let sock = udp_socket(addr).map_err(BindError::Io)?;
        sock.bind(&addr.into())
            .map_err(|e| map_bind_error(e, addr))?;
        return Ok(sock);
    }
    let span = (u16::MAX - FIRST_AUTO_PORT) as u64 + 1;
    // One port: the bound socket, `None` if taken, or an error that ends the search.
    let try_port = |port: u16| -> Result<Option<Socket>, BindError> {
        if taken(port) {
            return Ok(None);
        }
        // (With the address's IPv6 scope: a link-local address binds only with it.)
        let mut a = addr;
        a.set_port(port);
        let sock = udp_socket(a).map_err(BindError::Io)?;
        match sock.bind(&a.into()) {
            Ok(()) => Ok(Some(sock)),
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Ok(None),
            // Named by the address asked for (port 0), not the port tried.
            Err(e) => Err(map_bind_error(e, addr)),
        }
    };
    // From the operating system's random source: the port is one of the things an
    // off-path sender must guess (docs/PROTOCOL.md section 2).
    let mut x = crate::ids::random_u64().map_err(BindError::Io)? | 1;
    for _ in 0..256 {
        // xorshift: a random probe order so that processes do not collide on one sequence.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if let Some(sock) = try_port(FIRST_AUTO_PORT + (x % span) as u16)? {
            return Ok(sock);
        }
    }
    // Nearly every automatic port is taken: try each once, from a random place, before
    // saying that none is free.
    let start = x % span;
    for i in 0..span {
        if let Some(sock) = try_port(FIRST_AUTO_PORT + ((start + i) % span) as u16)? {
            return Ok(sock);
        }
    }
    Err(BindError::NoFreePort)
}

/// MTU and link speed of the interfaces that carry the traffic of a socket bound to `ip`,
/// where known: the interface holding `ip`; for a loopback address, loopback; for a
/// wildcard address, or an address that sits on the loopback interface without being a
/// loopback one (a service address on `lo`, whose traffic leaves through the host's
/// other interfaces), the host's up interfaces other than loopback (the smallest MTU
/// of them), and none when there is none (the configuration's values then stay: a
/// socket bound before its host's network is up must not keep loopback's 64 KB packets
/// and unpaced 1 Tbps for life). Read once, at bind; a path with a smaller MTU further on
/// is not seen.
pub(crate) fn detect_link(ip: IpAddr) -> (Option<u32>, Option<u32>) {
    let ifs = sys::interfaces();
    let outside =
        || -> Vec<&sys::Interface> { ifs.iter().filter(|i| i.up && !i.loopback).collect() };
    let mut chosen: Vec<&sys::Interface> = if ip.is_unspecified() {
        outside()
    } else if ip.is_loopback() {
        ifs.iter().filter(|i| i.loopback).collect()
    } else {
        ifs.iter().filter(|i| i.addr == Some(ip)).collect()
    };
    if !ip.is_loopback() && !chosen.is_empty() && chosen.iter().all(|i| i.loopback) {
        chosen = outside();
    }
    // Asked of the kernel through a socket of the calling thread, not read from
    // /sys/class/net: a thread that entered another network namespace with setns still
    // sees the old namespace's interfaces there.
    let mtu = chosen
        .iter()
        .filter_map(|i| sys::interface_mtu(&i.name))
        .min()
        .map(|m| m.min(MAX_IP_PACKET));
    let speed = chosen
        .iter()
        .filter_map(|i| sys::interface_speed_mbps(&i.name))
        .max();
    let all_loopback = !chosen.is_empty() && chosen.iter().all(|i| i.loopback);
    (mtu, speed.or(all_loopback.then_some(LOOPBACK_MBPS)))
}

/// The socket that wakes a thread blocked on the UDP socket `udp` bound at `local`: it
/// sends from and to the same address (a loopback one if `local` is unspecified).
fn kick_socket(local: SocketAddr, udp: &Socket) -> io::Result<Kick> {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    // (A link-local address keeps its scope.)
    let at = |port| match (local, ip) {
        (SocketAddr::V6(l), IpAddr::V6(v6)) => {
            SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, 0, l.scope_id()))
        }
        _ => SocketAddr::new(ip, port),
    };
    let sock = std::net::UdpSocket::bind(at(0))?;
    let from = sock.local_addr()?;
    let to = at(local.port());
    // One kick now tells whether kicks can be sent at all, and whether they arrive (a
    // firewall may drop them).
    let works = match sock.send_to(&[], to) {
        Err(_) => {
            tracing::debug!(%to, "kick datagrams cannot be sent; waiting threads poll instead");
            false
        }
        Ok(_) => {
            let arrived = kick_arrives(udp, from);
            if !arrived {
                tracing::debug!(%to, "kick datagrams do not arrive (a firewall?); waiting threads poll instead");
            }
            arrived
        }
    };
    Ok(Kick {
        sock,
        to,
        from,
        works: works.into(),
        sent_at: 0.into(),
    })
}

/// Whether the kick just sent from `from` reaches the new socket `udp` within
/// [`KICK_ARRIVAL`]. Datagrams that peers sent before it (a server restarted on its port
/// while clients retry) are read and dropped on the way, as if they had come before the
/// bind: their senders send again. Readable alone would prove nothing, since a peer's
/// datagram makes the socket readable too.
fn kick_arrives(udp: &Socket, from: SocketAddr) -> bool {
    let until = std::time::Instant::now() + KICK_ARRIVAL;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if !sys::poll(udp.as_raw_fd(), None, Some(left)).is_ok_and(|p| p.readable) {
            return false;
        }
        // (Truncated to a byte: only the source matters.)
        match udp.recv_from_with_flags(&mut buf, libc::MSG_DONTWAIT) {
            Ok((_, src)) if src.as_socket() == Some(from) => return true,
            _ if left.is_zero() => return false,
            _ => {}
        }
    }
}

/// Open a Homa socket on `addr`.
pub(crate) fn open(
    addr: SocketAddr,
    opts: Options,
    flavor: Flavor,
) -> Result<Arc<Inner>, BindError> {
    if let SocketAddr::V6(a) = addr {
        if let Some(v4) = a.ip().to_ipv4_mapped() {
            // The kernel says only EINVAL: say what to do instead.
            return Err(BindError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{addr} is an IPv4-mapped address: IPv6 sockets here take IPv6 peers \
                     only; bind {}:{} for IPv4",
                    v4,
                    a.port()
                ),
            )));
        }
    }
    let v6 = addr.is_ipv6();
    let mut config = opts.config.clone();
    let mut gro = false;
    let mut arrival_addrs = false;
    // The receive buffer the kernel granted, in bytes of the request.
    let rcvbuf;
    let (io, local, gso) = match opts.transport {
        Transport::Udp => {
            let sock = bind_udp(addr, |_| false)?;
            let local = sock
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| BindError::Io(io::Error::other("bound socket has no address")))?;
            rcvbuf = sys::size_buffers(
                &sock,
                (opts.recv_buffer_bytes, opts.send_buffer_bytes),
                "a Homa socket",
                "Options::recv_buffer_bytes and send_buffer_bytes",
            )
            .0;
            let fd = sock.as_raw_fd();
            // ICMP errors (port unreachable) come back through the error queue.
            let _ = if v6 {
                sys::setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)
            } else {
                sys::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
            };
            // Bound to a wildcard address, the socket learns where each datagram arrived,
            // so that a server answers from the address it was asked at (a client matches
            // its response by the server's address; the kernel would pick the source by
            // route, another of the host's addresses where it has several).
            if local.ip().is_unspecified() {
                let on = if v6 {
                    sys::setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
                } else {
                    sys::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
                };
                arrival_addrs = on.is_ok();
            }
            // GRO is turned on later, when long messages arrive (`Inner::note_bulk`).
            gro = opts.gro && sys::getsockopt_int(fd, SOL_UDP, UDP_GRO).is_ok();
            let gso = opts.gso && sys::getsockopt_int(fd, SOL_UDP, UDP_SEGMENT).is_ok();
            if flavor != Flavor::Blocking {
                sock.set_nonblocking(true).map_err(BindError::Io)?;
            } else {
                // A thread blocked in the receive call looks again this often, should the
                // kick meant to wake it be lost (see `Kick::works`).
                sock.set_read_timeout(Some(KICK_TIMEOUT))
                    .map_err(BindError::Io)?;
            }
            config.ip_overhead = if v6 { 48 } else { 28 };
            (Io::Udp { sock }, local, gso)
        }
        Transport::RawIp => {
            let fam = raw::family(v6).map_err(|e| match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => BindError::PermissionDenied(
                    "raw IP (protocol 146) needs CAP_NET_RAW in the network namespace's own \
                     user namespace: run as root or give the program the capability \
                     (`setcap cap_net_raw+ep PROGRAM`), or use Homa over UDP, which needs \
                     no privilege (`Transport::Udp`, the default; `homa` without `--raw`)"
                        .to_string(),
                ),
                _ => BindError::Io(e),
            })?;
            let reservation = bind_udp(addr, |p| fam.is_registered(p))?;
            let local = reservation
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| BindError::Io(io::Error::other("bound socket has no address")))?;
            // (Shared by the process's raw-IP sockets of this family, each of which
            // takes it whole: they are rarely more than one.)
            rcvbuf = sys::buffer_sizes(fam.fd()).0;
            // It only holds the port: keep its receive buffer minimal.
            let _ = reservation.set_recv_buffer_size(1);
            config.ip_overhead = if v6 { 40 } else { 20 };
            let bound_ip = (!local.ip().is_unspecified()).then_some(local.ip());
            (
                Io::Raw {
                    fam,
                    _reservation: reservation,
                    bound_ip,
                },
                local,
                false,
            )
        }
    };
    if opts.auto_mtu || opts.auto_link_mbps {
        let (mtu, mbps) = detect_link(local.ip());
        if opts.auto_mtu {
            config.mtu = mtu.unwrap_or(config.mtu);
        }
        if opts.auto_link_mbps {
            config.link_mbps = mbps.unwrap_or(config.link_mbps);
        }
    }
    if opts.loopback_profile
        && local.ip().is_loopback()
        && config.max_incoming == homa_core::Config::default().max_incoming
    {
        config.max_incoming *= LOOPBACK_INCOMING_FACTOR;
    }
    // Bytes granted and not yet received must fit the receive buffer, or the kernel drops
    // the packets the grants called for and each costs a RESEND: without CAP_NET_ADMIN
    // the buffer is `net.core.rmem_max`, 208 KiB on many distributions, under loopback's
    // window of 1.6 MB. The kernel counts each datagram's memory, not its payload, and
    // allows twice the bytes granted for that; unscheduled bytes come on top of the
    // window, and the kernel gives back what is read in batches of up to a quarter of the
    // allowance. So the window takes the bytes granted, half the allowance: 1 MB messages
    // from one sender over loopback into a 200 KB buffer then lose nothing, even with the
    // receiver starved of CPU; with 1.5 times that and two CPU hogs running, the kernel
    // dropped some in every run (`tests/receive_window.rs`). Several senders' unscheduled
    // bytes, or a NIC's buffers, which can cost more than twice the payload of a small
    // frame, may still overflow it: the warning says how to give the socket more.
    if rcvbuf > 0 && (config.max_incoming as usize) > rcvbuf {
        tracing::debug!(
            max_incoming = config.max_incoming,
            rcvbuf,
            "the receive window is cut to the receive buffer"
        );
        config.max_incoming = rcvbuf as u32;
    }
    if opts.auto_grant_lead && config.grant_lead_bytes == 0 {
        config.grant_lead_bytes = config.unsched_bytes;
    }
    // Nothing an off-path sender could guess (see ids.rs).
    if config.client_id_base == 0 {
        config.client_id_base = crate::ids::client_id_base().map_err(BindError::Io)?;
    }
    if config.seed == 0 {
        config.seed = crate::ids::random_u64().map_err(BindError::Io)?;
    }
    let mut ep = Endpoint::new(config)?;
    // Every message leaves the engine inside a `Message`, whose drop releases it.
    ep.promise_release();
    // `flush` reports when what it polled has left: from the first packet on, so that a
    // response whose granted data the socket's very first flush carries (its request's
    // client grants on the first DATA, while that flush still runs) is timed from its
    // departure too, not from when it was gathered. (Before, a NEED_ACK could follow such
    // a response's last DATA by 4 ms instead of 5 or more, on a loaded machine.)
    ep.transmitted(clock());
    let port = ep
        .bind(local.port())
        .map_err(|_| BindError::AddrInUse(local))?;
    // A port the caller names is one it means to serve on, whatever its number (the
    // engine, like Linux Homa, makes only ports below 32768 servers by default: a user
    // binding 127.0.0.1:50051 found it refusing every request). Port 0 stays a client.
    let server = opts.server.unwrap_or(addr.port() != 0);
    ep.set_server(port, server);
    ep.set_one_way(port, opts.one_way);
    let kick = match (&io, flavor) {
        (Io::Udp { sock }, Flavor::Blocking) => {
            Some(kick_socket(local, sock).map_err(|e| {
                // Its own ephemeral port, not the Homa port: say so (an exhausted
                // ephemeral range would otherwise read as the Homa port being in use).
                BindError::Io(io::Error::new(
                    e.kind(),
                    format!("cannot open the socket's wake-up socket: {e}"),
                ))
            })?)
        }
        _ => None,
    };
    tracing::debug!(
        %local,
        transport = ?opts.transport,
        mtu = ep.config().mtu,
        link_mbps = ep.config().link_mbps,
        gso,
        "homa socket bound"
    );
    let inner = Arc::new(
        Inner::new(InnerParts {
            ep,
            io,
            local,
            transport: opts.transport,
            flavor,
            gso,
            gro,
            arrival_addrs,
            kick,
        })
        .map_err(BindError::Io)?,
    );
    if let Io::Raw { fam, bound_ip, .. } = &inner.io {
        fam.register(local.port(), *bound_ip, Arc::<Inner>::downgrade(&inner));
    }
    #[cfg(feature = "metrics")]
    crate::metrics::register(&inner);
    Ok(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused privileged port says why; another refusal says only what the kernel said.
    #[test]
    fn a_refused_low_port_names_the_capability_it_needs() {
        let refused = |addr: &str| {
            let e = io::Error::from_raw_os_error(libc::EACCES);
            match map_bind_error(e, addr.parse().unwrap()) {
                BindError::PermissionDenied(why) => why,
                other => panic!("{other:?}"),
            }
        };
        assert!(refused("127.0.0.1:80").contains("CAP_NET_BIND_SERVICE"));
        assert!(!refused("127.0.0.1:5000").contains("CAP_NET_BIND_SERVICE"));
    }

    /// With all automatic ports but one taken, random probes almost surely miss it; the
    /// sweep after them finds it, so `NoFreePort` means what it says.
    #[test]
    fn the_last_free_automatic_port_is_found() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // Ports of the range that are free here (bound and let go at once); another
        // test may take one meanwhile, so a few are tried.
        let free = (FIRST_AUTO_PORT..=u16::MAX)
            .filter(|&p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok())
            .take(5);
        let found = free.filter_map(|probe| {
            let sock = bind_udp(addr, |p| p != probe).ok()?;
            Some((probe, sock.local_addr().ok()?.as_socket()?.port()))
        });
        let (probe, got) = found.into_iter().next().expect("one of the free ports");
        assert_eq!(got, probe);
        // And with none free, the error says so.
        assert!(matches!(
            bind_udp(addr, |_| true),
            Err(BindError::NoFreePort)
        ));
    }
}
