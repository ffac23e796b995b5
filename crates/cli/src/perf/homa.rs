//! The Homa side of the perf tools: the only module that touches the `homa` runtime.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::header::{ResponseBuilder, HEADER_LEN};
use super::server::ServerCounters;
use super::transport::RpcClient;
use super::workload::MAX_MESSAGE_LENGTH;
use super::PerfError;

/// Whether this build can run Homa.
pub const AVAILABLE: bool = true;

/// How long to back off when the socket's outgoing buffer space is used up.
const WOULD_BLOCK_BACKOFF: Duration = Duration::from_micros(200);

fn homa_err(what: String) -> impl FnOnce(homa::BindError) -> PerfError {
    move |e| PerfError::Homa {
        what,
        reason: e.to_string(),
    }
}

/// The local address a client uses to reach `dest`: loopback for a loopback server (so the
/// socket gets loopback's MTU), else the unspecified address of `dest`'s family.
fn client_addr(dest: SocketAddr) -> SocketAddr {
    let ip = match (dest.ip(), dest.ip().is_loopback()) {
        (IpAddr::V4(_), true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V6(_), true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V4(_), false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// A running perf server on a Homa socket.
#[derive(Debug)]
pub struct HomaServer {
    /// The bound address.
    pub addr: SocketAddr,
    sock: homa::Socket,
}

impl HomaServer {
    /// Binds `addr` (as a server, whatever the port) and answers perf requests on
    /// `threads` threads until the process ends.
    pub fn spawn(
        addr: SocketAddr,
        threads: usize,
        counters: Arc<ServerCounters>,
    ) -> Result<Self, PerfError> {
        let opts = homa::Options {
            server: Some(true),
            ..Default::default()
        };
        let sock = homa::Socket::bind_with(addr, opts).map_err(homa_err(format!(
            "cannot bind a Homa server socket on {addr}"
        )))?;
        for i in 0..threads.max(1) {
            let (sock, counters) = (sock.clone(), counters.clone());
            std::thread::Builder::new()
                .name(format!("perf-homa-{i}"))
                .spawn(move || serve(&sock, &counters))
                .map_err(|source| PerfError::Io {
                    what: "cannot start a Homa server thread".into(),
                    source,
                })?;
        }
        Ok(Self {
            addr: sock.local_addr(),
            sock,
        })
    }

    /// The endpoint's metrics as Prometheus text.
    pub fn prometheus(&self) -> String {
        let port = self.addr.port().to_string();
        homa::metrics::to_prometheus(&self.sock.metrics(), &[("socket", &port)])
    }

    /// The endpoint's metrics as JSON.
    pub fn json(&self) -> serde_json::Value {
        homa::metrics::to_json(&self.sock.metrics())
    }
}

fn serve(sock: &homa::Socket, counters: &ServerCounters) {
    let mut responses = ResponseBuilder::default();
    let mut header = [0u8; HEADER_LEN];
    loop {
        let msg = match sock.recv() {
            Ok(m) => m,
            Err(homa::RecvError::Shutdown) => return,
            // Failed RPCs of this socket (none: it sends no requests) or transient errors.
            Err(_) => continue,
        };
        // Only the header matters; copy it out rather than gather a long message.
        let n = msg.copy_to(&mut header);
        match responses.respond(&header[..n], MAX_MESSAGE_LENGTH) {
            Ok(resp) => {
                let resp_len = resp.len().max(1);
                // Homa messages have at least one byte.
                let body = if resp.is_empty() { &[0u8][..] } else { resp };
                loop {
                    match sock.reply(&msg, body) {
                        Ok(()) => break,
                        Err(homa::ReplyError::WouldBlock) => {
                            std::thread::sleep(WOULD_BLOCK_BACKOFF)
                        }
                        Err(_) => break,
                    }
                }
                counters.count_homa(msg.len(), resp_len);
            }
            Err(_) => counters.count_malformed(),
        }
    }
}

/// An async Homa perf client (one socket, any number of concurrent RPCs).
#[derive(Debug)]
pub struct HomaRpcClient {
    sock: homa::tokio::Socket,
    dest: SocketAddr,
}

impl HomaRpcClient {
    /// A client-only socket sending to `dest` (call inside a tokio runtime).
    pub async fn bind(dest: SocketAddr) -> Result<Self, PerfError> {
        let local = client_addr(dest);
        let sock = homa::tokio::Socket::bind(local)
            .await
            .map_err(homa_err(format!(
                "cannot bind a Homa client socket on {local}"
            )))?;
        Ok(Self { sock, dest })
    }
}

impl RpcClient for HomaRpcClient {
    async fn call(&self, request: &[u8]) -> io::Result<usize> {
        loop {
            match self.sock.call(self.dest, request).await {
                Ok(m) => return Ok(m.len()),
                // Outgoing buffer space used up by RPCs in flight: wait for some to finish.
                Err(homa::CallError::Send(homa::SendError::WouldBlock)) => {
                    tokio::time::sleep(WOULD_BLOCK_BACKOFF).await
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn diagnostics(&self) -> Option<String> {
        Some(format!(
            "client endpoint metrics: {}",
            homa::metrics::to_json(&self.sock.metrics())
        ))
    }
}

/// A blocking Homa perf client, one RPC at a time (for `perf rtt`).
#[derive(Debug)]
pub struct BlockingHomaClient {
    sock: homa::Socket,
    dest: SocketAddr,
}

impl BlockingHomaClient {
    /// A client-only socket sending to `dest`.
    pub fn bind(dest: SocketAddr) -> Result<Self, PerfError> {
        let local = client_addr(dest);
        let sock = homa::Socket::bind(local).map_err(homa_err(format!(
            "cannot bind a Homa client socket on {local}"
        )))?;
        Ok(Self { sock, dest })
    }

    /// Sends `request`, waits for the response; returns its length.
    pub fn call(&mut self, request: &[u8]) -> io::Result<usize> {
        Ok(self.sock.call(self.dest, request)?.len())
    }
}
