//! Sockets (ports): binding, the server role, closing.

use super::Endpoint;
use crate::error::{BindError, RpcError};
use crate::metrics::DropReason;
use rand::Rng;
use std::net::SocketAddr;

/// First automatic (client) port.
pub const FIRST_AUTO_PORT: u16 = 32768;

/// One bound port.
pub(super) struct Socket {
    /// Takes incoming requests.
    pub(super) server: bool,
    /// Takes one-way messages (see [`Endpoint::set_one_way`]).
    pub(super) one_way: bool,
}

impl Endpoint {
    /// Open a socket. Port 0 picks a free automatic port (32768 and up, from a random
    /// starting point) for a client-only socket. Ports 1..=32767 are server sockets.
    /// Returns the port.
    pub fn bind(&mut self, port: u16) -> Result<u16, BindError> {
        let port = if port == 0 {
            let span = (u16::MAX - FIRST_AUTO_PORT) as u32 + 1;
            let start = self.rng.gen_range(0..span);
            (0..span)
                .map(|i| FIRST_AUTO_PORT + ((start + i) % span) as u16)
                .find(|p| !self.sockets.contains_key(p))
                .ok_or(BindError::NoFreePort)?
        } else if self.sockets.contains_key(&port) {
            return Err(BindError::PortInUse(port));
        } else {
            port
        };
        self.sockets.insert(
            port,
            Socket {
                server: port < FIRST_AUTO_PORT,
                one_way: false,
            },
        );
        Ok(port)
    }

    /// Whether `port` is bound and takes requests.
    pub fn is_server(&self, port: u16) -> bool {
        self.sockets.get(&port).is_some_and(|s| s.server)
    }

    /// Allow or refuse incoming requests on a socket. Returns false if not bound.
    pub fn set_server(&mut self, port: u16, enabled: bool) -> bool {
        match self.sockets.get_mut(&port) {
            Some(s) => {
                s.server = enabled;
                true
            }
            None => false,
        }
    }

    /// Let a socket take one-way messages ([`Event::Message`](crate::Event::Message)), or
    /// stop it. Off by default: one-way messages are this implementation's extension, and
    /// a peer sends them only to a port that said it takes them (docs/PROTOCOL.md, "One-way
    /// messages"). Independent of the server role, which is about requests. A peer whose
    /// one-way messages arrive after this is turned off is told so, and its messages fail
    /// with [`RpcError::NotAccepted`]. Returns false if not bound.
    pub fn set_one_way(&mut self, port: u16, enabled: bool) -> bool {
        match self.sockets.get_mut(&port) {
            Some(s) => {
                s.one_way = enabled;
                true
            }
            None => false,
        }
    }

    /// Whether `port` is bound and takes one-way messages.
    pub fn takes_one_way(&self, port: u16) -> bool {
        self.sockets.get(&port).is_some_and(|s| s.one_way)
    }

    /// A request (or a client's RESEND) for `port`, which takes none: dropped, counted as
    /// [`DropReason::NotServer`] if the port is bound (a likely mistake here), else
    /// [`DropReason::NoSocket`].
    pub(super) fn refuse_request(&mut self, port: u16) {
        let reason = if self.sockets.contains_key(&port) {
            DropReason::NotServer
        } else {
            DropReason::NoSocket
        };
        self.metrics.count_drop(reason);
    }

    /// Requests dropped so far because they came to a bound socket that takes none (see
    /// [`DropReason::NotServer`]); cheap, for a runtime that warns about it.
    pub fn requests_refused(&self) -> u64 {
        self.metrics.dropped(DropReason::NotServer)
    }

    /// True if `port` is bound.
    pub fn is_bound(&self, port: u16) -> bool {
        self.sockets.contains_key(&port)
    }

    /// Shut a socket down: its client RPCs fail with [`RpcError::Shutdown`], its server
    /// RPCs are discarded, and later packets for it are dropped. The acks it still owes
    /// its servers for the responses it received go out now, in ACK packets: nothing
    /// from this port would carry them later, and a server keeps each unacknowledged
    /// response in its outgoing budget until it gives up on it (a timeout at least, up to
    /// ten while other sockets at our address keep talking to it). Short-lived client
    /// sockets (one call each) once filled a server's budget that way. So do the acks
    /// owed for one-way messages taken on this port, which would otherwise wait for a
    /// tick that a runtime no longer runs for a closed socket.
    pub fn close(&mut self, port: u16) {
        if self.sockets.remove(&port).is_none() {
            return;
        }
        let handles: Vec<usize> = self
            .rpcs
            .iter()
            .filter(|(_, r)| r.port == port)
            .map(|(h, _)| h)
            .collect();
        for h in handles {
            self.fail_or_discard(h, RpcError::Shutdown);
        }
        for (p, to) in self.peers.owed_acks_from(port) {
            // Each ACK names one RPC in its header and up to `MAX_ACKS` more in its body.
            while let Some(first) = self.peers[p]
                .acks_owed(port, to)
                .and_then(|q| q.pop_front())
            {
                let dest = SocketAddr::new(self.peers[p].addr(), to);
                self.send_ack(Some(p), dest, port, first.client_id);
            }
        }
        self.send_one_way_acks_from(port);
    }
}
