//! The Homa side of the perf tools: the only module that touches the `homa` runtime.
//!
//! Placeholder until the runtime crate lands: every constructor reports
//! [`PerfError::HomaUnavailable`], so the TCP and UDP measurements run on their own.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::server::ServerCounters;
use super::transport::RpcClient;
use super::PerfError;

/// Whether this build can run Homa.
pub const AVAILABLE: bool = false;

/// A running perf server on a Homa socket.
#[derive(Debug)]
pub struct HomaServer {
    /// The bound address.
    pub addr: SocketAddr,
}

impl HomaServer {
    /// Binds `addr` and answers perf requests on `threads` threads (until the process ends).
    pub fn spawn(
        _addr: SocketAddr,
        _threads: usize,
        _counters: Arc<ServerCounters>,
    ) -> Result<Self, PerfError> {
        Err(PerfError::HomaUnavailable)
    }

    /// The endpoint's metrics as Prometheus text.
    pub fn prometheus(&self) -> String {
        String::new()
    }

    /// The endpoint's metrics as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// An async Homa perf client (one socket, any number of concurrent RPCs).
#[derive(Debug)]
pub struct HomaRpcClient {
    _dest: SocketAddr,
}

impl HomaRpcClient {
    /// A client-only socket sending to `dest`.
    pub async fn bind(_dest: SocketAddr) -> Result<Self, PerfError> {
        Err(PerfError::HomaUnavailable)
    }
}

impl RpcClient for HomaRpcClient {
    async fn call(&self, _request: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A blocking Homa perf client, one RPC at a time (for `perf rtt`).
#[derive(Debug)]
pub struct BlockingHomaClient {
    _dest: SocketAddr,
}

impl BlockingHomaClient {
    /// A client-only socket sending to `dest`.
    pub fn bind(_dest: SocketAddr) -> Result<Self, PerfError> {
        Err(PerfError::HomaUnavailable)
    }

    /// Sends `request`, waits for the response; returns its length.
    pub fn call(&mut self, _request: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
}
