//! One error type per operation. Each converts into [`std::io::Error`] with the kind a
//! user of `std::net` would expect, so `?` works in functions returning `io::Result`.

use homa_core::{RpcError, RpcId};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Why [`Socket::bind`](crate::Socket::bind) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// Another socket (of any process) holds the port.
    #[error("address {0} already in use")]
    AddrInUse(SocketAddr),
    /// The address is not one of this host's.
    #[error("address {0} is not available on this host")]
    AddrNotAvailable(SocketAddr),
    /// Raw IP needs `CAP_NET_RAW` (and ports below 1024 may need privileges).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Every automatic port (32768..=65535) is taken (each was tried).
    #[error("no free automatic port")]
    NoFreePort,
    /// The engine configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] homa_core::ConfigError),
    /// Any other failure of the operating system.
    #[error("bind failed: {0}")]
    Io(#[source] io::Error),
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// An IPv6 destination for an IPv4 socket, or the reverse.
    #[error("destination {dest} is not in the address family of the socket ({local})")]
    AddressFamily {
        /// The socket's address.
        local: SocketAddr,
        /// The destination given.
        dest: SocketAddr,
    },
    /// The unspecified address (`0.0.0.0`, `::`), a multicast address or the IPv4
    /// broadcast address. An RPC has one peer, and its response must come from the address
    /// the request went to: a send to `0.0.0.0` reaches this host, but its answer comes
    /// from `127.0.0.1`, belongs to no RPC, and the call would only time out.
    #[error("destination {dest} is not a unicast address: {}", not_unicast_why(dest.ip()))]
    NotUnicast {
        /// The destination given.
        dest: SocketAddr,
    },
    /// An IPv4-mapped IPv6 destination (`::ffff:a.b.c.d`): IPv6 sockets send to IPv6
    /// peers only; an IPv4 socket reaches the IPv4 address.
    #[error(
        "destination {dest} is an IPv4-mapped address: this IPv6 socket sends to IPv6 peers \
         only; use an IPv4 socket (for example bound to 0.0.0.0:0) to reach {ipv4}"
    )]
    Ipv4Mapped {
        /// The destination given.
        dest: SocketAddr,
        /// The IPv4 address it maps.
        ipv4: std::net::Ipv4Addr,
    },
    /// Longer than the longest message this socket sends: the smaller of
    /// `max_message_length` and the outgoing buffer budget (`max_outgoing_held`), which a
    /// message longer than could never be taken on.
    #[error("message of {len} bytes is longer than the maximum {max} (the smaller of max_message_length and max_outgoing_held)")]
    MessageTooLong {
        /// Bytes offered.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// Homa messages have at least one byte.
    #[error("empty message")]
    EmptyMessage,
    /// Destination port 0 is reserved.
    #[error("invalid destination port 0")]
    InvalidPort,
    /// The outgoing buffer space (`max_outgoing_held`) is used up; retry after some RPCs
    /// finish. (`call` and `deliver`, in both APIs, wait for room instead.)
    #[error("outgoing buffer space exhausted (would block): retry once RPCs finish, or use call (deliver for a one-way message), which waits for room")]
    WouldBlock,
    /// The socket was shut down.
    #[error("socket shut down")]
    Shutdown,
}

/// Why a receive returned no message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// An RPC of this socket failed: this is its outcome, in place of a response.
    #[error("RPC {id} to {peer} failed: {error}")]
    Rpc {
        /// The RPC.
        id: RpcId,
        /// The cookie given when it was sent.
        cookie: u64,
        /// The server it was sent to.
        peer: SocketAddr,
        /// Why it failed.
        error: RpcError,
    },
    /// The socket was shut down (or dropped) while waiting, or before.
    #[error("socket shut down")]
    Shutdown,
    /// `recv_id` for an id that is not an outstanding RPC of this socket: never sent, its
    /// outcome (response or failure, an abort's `Aborted` included) already taken, or
    /// given up by a dropped or timed-out `call`.
    #[error("no outstanding RPC {0} on this socket")]
    UnknownRpc(RpcId),
    /// Another thread or task already waits for this id.
    #[error("another caller already waits for RPC {0}")]
    AlreadyWaiting(RpcId),
    /// The limit given to a `*_timeout` receive, or to `call_timeout`, passed.
    #[error("timed out waiting for a message")]
    TimedOut,
    /// A tokio socket's `*_timeout` receive or `call_timeout` polled where tokio has no
    /// timer: in a runtime built without one, or outside any tokio runtime (under
    /// another executor).
    #[error("no tokio timer here: *_timeout calls need a tokio runtime built with enable_time() or enable_all()")]
    NoTimer,
}

impl RecvError {
    /// The RPC failure, if this is one.
    pub fn rpc_error(&self) -> Option<RpcError> {
        match self {
            RecvError::Rpc { error, .. } => Some(*error),
            _ => None,
        }
    }
}

/// Why a reply could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// No request with that id awaits a reply (already replied, or the client's RPC is
    /// gone).
    #[error("no request {0} awaits a reply on this socket")]
    UnknownRpc(RpcId),
    /// The message is not a request (a response, or a one-way message, which is owed
    /// nothing): only requests get replies.
    #[error(
        "message {0} is not a request (a response or a one-way message); only requests get replies"
    )]
    NotARequest(RpcId),
    /// The request arrived on another socket.
    #[error("request {0} arrived on another socket")]
    WrongSocket(RpcId),
    /// Longer than the longest message this socket sends: the smaller of
    /// `max_message_length` and the outgoing buffer budget (`max_outgoing_held`), which a
    /// message longer than could never be taken on.
    #[error("message of {len} bytes is longer than the maximum {max} (the smaller of max_message_length and max_outgoing_held)")]
    MessageTooLong {
        /// Bytes offered.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// Homa messages have at least one byte.
    #[error("empty message")]
    EmptyMessage,
    /// The outgoing buffer space is used up; retry later, or use `reply_when_room`.
    #[error("outgoing buffer space exhausted (would block): retry once responses are acknowledged, or use reply_when_room, which waits")]
    WouldBlock,
    /// The socket was shut down.
    #[error("socket shut down")]
    Shutdown,
}

/// Why [`Socket::call`](crate::Socket::call) failed: the send or the wait for the response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request could not be sent.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The RPC failed, the socket was shut down while waiting, or `call_timeout`'s limit
    /// passed (`TimedOut`; `NoTimer` in a tokio runtime without a timer).
    #[error(transparent)]
    Recv(#[from] RecvError),
}

impl CallError {
    /// The RPC failure (timeout, no such socket at the peer...), if this is one.
    pub fn rpc_error(&self) -> Option<RpcError> {
        match self {
            CallError::Recv(r) => r.rpc_error(),
            CallError::Send(_) => None,
        }
    }

    /// Whether the call failed because this socket was shut down, whichever step it was
    /// at: before sending ([`SendError::Shutdown`]) or while waiting
    /// ([`RecvError::Shutdown`]; also any [`RpcError::Shutdown`], which the sockets report
    /// this way). A loop that ends on shutdown asks this instead of matching each.
    pub fn is_shutdown(&self) -> bool {
        matches!(
            self,
            CallError::Send(SendError::Shutdown) | CallError::Recv(RecvError::Shutdown)
        ) || self.rpc_error() == Some(RpcError::Shutdown)
    }
}

/// Why an abort did nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AbortError {
    /// No outstanding client RPC with that id on this socket.
    #[error("no outstanding RPC {0} on this socket")]
    UnknownRpc(RpcId),
    /// The socket was shut down.
    #[error("socket shut down")]
    Shutdown,
}

pub(crate) fn rpc_error_kind(e: RpcError) -> io::ErrorKind {
    match e {
        RpcError::Timeout | RpcError::RequestLost => io::ErrorKind::TimedOut,
        RpcError::NoSuchSocket => io::ErrorKind::ConnectionRefused,
        RpcError::Shutdown => io::ErrorKind::NotConnected,
        RpcError::Aborted => io::ErrorKind::ConnectionAborted,
        RpcError::NoBufferSpace => io::ErrorKind::OutOfMemory,
        RpcError::Unreachable(errno) => io::Error::from_raw_os_error(errno).kind(),
        RpcError::NotAccepted => io::ErrorKind::Unsupported,
        // Sent again, it would be refused again: the request is wrong for that server.
        RpcError::RequestTooLong | RpcError::RequestNeverFits => io::ErrorKind::InvalidInput,
        RpcError::ResponseTooLong => io::ErrorKind::InvalidData,
    }
}

impl From<BindError> for io::Error {
    fn from(e: BindError) -> io::Error {
        let kind = match &e {
            BindError::AddrInUse(_) => io::ErrorKind::AddrInUse,
            BindError::AddrNotAvailable(_) => io::ErrorKind::AddrNotAvailable,
            BindError::PermissionDenied(_) => io::ErrorKind::PermissionDenied,
            BindError::NoFreePort => io::ErrorKind::AddrInUse,
            BindError::Config(_) => io::ErrorKind::InvalidInput,
            BindError::Io(e) => e.kind(),
        };
        match e {
            BindError::Io(e) => e,
            e => io::Error::new(kind, e),
        }
    }
}

/// Whether a destination can be an RPC's peer (see [`SendError::NotUnicast`]).
pub(crate) fn is_unicast(ip: IpAddr) -> bool {
    !(ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST))
}

/// What a destination that is not unicast is, and what to use instead.
fn not_unicast_why(ip: IpAddr) -> &'static str {
    if ip.is_unspecified() {
        "it is the unspecified address; name the server's host (127.0.0.1 or ::1 for this one)"
    } else if ip.is_multicast() {
        "Homa has no multicast"
    } else {
        "Homa has no broadcast"
    }
}

impl From<SendError> for io::Error {
    fn from(e: SendError) -> io::Error {
        let kind = match e {
            SendError::AddressFamily { .. }
            | SendError::NotUnicast { .. }
            | SendError::Ipv4Mapped { .. }
            | SendError::MessageTooLong { .. }
            | SendError::EmptyMessage
            | SendError::InvalidPort => io::ErrorKind::InvalidInput,
            SendError::WouldBlock => io::ErrorKind::WouldBlock,
            SendError::Shutdown => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, e)
    }
}

impl From<RecvError> for io::Error {
    fn from(e: RecvError) -> io::Error {
        let kind = match &e {
            RecvError::Rpc { error, .. } => rpc_error_kind(*error),
            RecvError::Shutdown => io::ErrorKind::NotConnected,
            RecvError::UnknownRpc(_) => io::ErrorKind::NotFound,
            RecvError::AlreadyWaiting(_) => io::ErrorKind::ResourceBusy,
            RecvError::TimedOut => io::ErrorKind::TimedOut,
            RecvError::NoTimer => io::ErrorKind::Unsupported,
        };
        io::Error::new(kind, e)
    }
}

impl From<ReplyError> for io::Error {
    fn from(e: ReplyError) -> io::Error {
        let kind = match e {
            ReplyError::UnknownRpc(_) => io::ErrorKind::NotFound,
            ReplyError::NotARequest(_)
            | ReplyError::WrongSocket(_)
            | ReplyError::MessageTooLong { .. }
            | ReplyError::EmptyMessage => io::ErrorKind::InvalidInput,
            ReplyError::WouldBlock => io::ErrorKind::WouldBlock,
            ReplyError::Shutdown => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, e)
    }
}

impl From<CallError> for io::Error {
    fn from(e: CallError) -> io::Error {
        match e {
            CallError::Send(e) => e.into(),
            CallError::Recv(e) => e.into(),
        }
    }
}

impl From<AbortError> for io::Error {
    fn from(e: AbortError) -> io::Error {
        let kind = match e {
            AbortError::UnknownRpc(_) => io::ErrorKind::NotFound,
            AbortError::Shutdown => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, e)
    }
}

impl From<homa_core::SendError> for SendError {
    fn from(e: homa_core::SendError) -> SendError {
        use homa_core::SendError as E;
        match e {
            E::MessageTooLong { len, max } => SendError::MessageTooLong { len, max },
            E::EmptyMessage => SendError::EmptyMessage,
            E::WouldBlock => SendError::WouldBlock,
            E::NoSuchSocket | E::Shutdown => SendError::Shutdown,
            E::InvalidPort => SendError::InvalidPort,
        }
    }
}

pub(crate) fn reply_error(e: homa_core::ReplyError, id: RpcId) -> ReplyError {
    use homa_core::ReplyError as E;
    match e {
        E::UnknownRpc => ReplyError::UnknownRpc(id),
        E::MessageTooLong { len, max } => ReplyError::MessageTooLong { len, max },
        E::EmptyMessage => ReplyError::EmptyMessage,
        E::WouldBlock => ReplyError::WouldBlock,
    }
}
