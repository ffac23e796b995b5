//! Two endpoints wired back to back, shared by the engine bench, the `rpc_cost` example
//! and the `refused` test: no network, every packet handed straight to the other side.

use homa_core::{Bytes, Endpoint, Event, RpcError, Time};
use std::net::{IpAddr, Ipv4Addr};

/// The client's address as the server sees it.
pub const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
/// The server's address.
pub const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

/// One round of [`exchange`]: packets moved (both ways), responses completed and RPCs
/// that failed (cookie, error).
pub struct Round {
    pub moved: usize,
    pub done: usize,
    pub failed: Vec<(u64, RpcError)>,
}

/// Move everything pending once each way: the client's packets to the server, which
/// answers every request with `response`, then the server's packets back; release every
/// delivered message. Failed RPCs are reported, not treated as errors here.
pub fn exchange(
    client: &mut Endpoint,
    server: &mut Endpoint,
    now: Time,
    buf: &mut [u8],
    response: &Bytes,
) -> Round {
    exchange_over(client, server, now, buf, response, usize::MAX)
}

/// [`exchange`] over a path that drops every client-to-server packet longer than
/// `path_max` bytes.
#[allow(dead_code)] // (not every user of this file needs it)
pub fn exchange_over(
    client: &mut Endpoint,
    server: &mut Endpoint,
    now: Time,
    buf: &mut [u8],
    response: &Bytes,
    path_max: usize,
) -> Round {
    let mut r = Round {
        moved: 0,
        done: 0,
        failed: Vec::new(),
    };
    while let Some(t) = client.poll_transmit(now, buf) {
        if t.len <= path_max {
            server.handle_datagram(now, CLIENT, &buf[..t.len]);
        }
        r.moved += 1;
    }
    while let Some(ev) = server.poll_event() {
        if let Event::Request {
            port,
            id,
            peer,
            data,
        } = ev
        {
            server.release(data);
            server
                .reply(now, port, peer, id, response.clone())
                .expect("the server accepts the reply");
        }
    }
    while let Some(t) = server.poll_transmit(now, buf) {
        client.handle_datagram(now, SERVER, &buf[..t.len]);
        r.moved += 1;
    }
    while let Some(ev) = client.poll_event() {
        match ev {
            Event::Response { data, .. } => {
                client.release(data);
                r.done += 1;
            }
            Event::Failed { cookie, error, .. } => r.failed.push((cookie, error)),
            other => panic!("unexpected event {other:?}"),
        }
    }
    r
}

/// Run both endpoints' timers if due.
pub fn run_timers(client: &mut Endpoint, server: &mut Endpoint, now: Time) {
    for ep in [client, server] {
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
    }
}
