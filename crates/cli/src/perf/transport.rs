//! What the load generators need from a transport, so Homa and TCP run the same code.

use std::future::Future;
use std::io;

/// Which transport a measurement runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// Homa over UDP (the `homa` runtime).
    Homa,
    /// Length-prefixed messages over TCP_NODELAY connections.
    Tcp,
}

impl Proto {
    /// Lower-case name, as in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Homa => "homa",
            Self::Tcp => "tcp",
        }
    }
}

/// `--proto`: one transport or both, back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtoChoice {
    /// Homa only.
    Homa,
    /// TCP only.
    Tcp,
    /// Homa, then TCP.
    Both,
}

impl ProtoChoice {
    /// The transports to run, in order.
    pub fn protos(self) -> &'static [Proto] {
        match self {
            Self::Homa => &[Proto::Homa],
            Self::Tcp => &[Proto::Tcp],
            Self::Both => &[Proto::Homa, Proto::Tcp],
        }
    }
}

/// A client that can issue many concurrent RPCs to one perf server.
pub trait RpcClient: Send + Sync + 'static {
    /// Sends `request` (a perf request, see [`super::header`]) and waits for the response;
    /// returns the response's length in bytes.
    fn call(&self, request: &[u8]) -> impl Future<Output = io::Result<usize>> + Send;

    /// Transport counters worth printing when RPCs failed (Homa: the endpoint's metrics).
    fn diagnostics(&self) -> Option<String> {
        None
    }
}
