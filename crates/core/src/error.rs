//! Per-operation error types.

/// Why an RPC failed; carried by [`crate::Event::Failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RpcError {
    /// Nothing came for the RPC for `timeout_ticks`: the peer is gone, or it dropped the
    /// request (no server socket on that port in raw-IP mode or between engines, a client
    /// socket there, a socket shut down but not yet closed, or a server that never
    /// answered and let it go).
    #[error("RPC timed out: nothing came from the peer for it (gone, or it dropped the request)")]
    Timeout,
    /// The destination has no socket on that port. (A socket there that is not a server
    /// drops requests, counted as `not_server`; its clients time out.)
    #[error("no socket on that port at the peer")]
    NoSuchSocket,
    /// The local socket was shut down.
    #[error("socket shut down")]
    Shutdown,
    /// The application aborted the RPC.
    #[error("RPC aborted")]
    Aborted,
    /// The response is longer than this endpoint could ever buffer.
    #[error("response does not fit in the receive buffer space")]
    NoBufferSpace,
    /// The local network stack cannot send to the peer (no route to it, a packet too
    /// long for the path, an address that is not usable): the operating system's error
    /// number. Reported at once rather than after a timeout. Also (raw IP over IPv6,
    /// `EPROTONOSUPPORT`, as the Linux module reports it) a peer host that answered that
    /// nothing there takes IP protocol 146 (ICMP protocol unreachable): no Homa over raw
    /// IP (it may run Homa over UDP).
    #[error("{}", unreachable_text(*.0))]
    Unreachable(i32),
    /// A one-way message ([`crate::Endpoint::send_message`]) to a port that does not
    /// take them: the peer said so, or is still heard from `timeout_ticks` after the
    /// question and has not answered it (a peer that does not know this extension, such
    /// as the Linux module, stays silent about it).
    #[error("the peer does not take one-way messages on that port")]
    NotAccepted,
    /// The server said it takes no message this long: the request is longer than its
    /// `max_message_length` (lower than ours). Sent again, it would be refused again.
    #[error("the server takes no request this long (over its max_message_length)")]
    RequestTooLong,
    /// The server said the request is longer than its whole receive buffer space
    /// (`max_incoming_held`): no wait would make room for it.
    #[error("the request is longer than the server's receive buffer space could ever hold")]
    RequestNeverFits,
    /// The response is longer than this endpoint's `max_message_length` (the server's is
    /// higher): it would be refused however often it came.
    #[error("the response is longer than this socket's max_message_length")]
    ResponseTooLong,
    /// The server kept answering that it does not have the request: sent again 16 times
    /// in a row, it never got there whole, with no sign that the server held it (a
    /// GRANT, or a BUSY while it asked for none of its bytes). Usually the path drops its
    /// packets while letting short ones through: packets longer than a hop's MTU where
    /// nothing fragments them, or IP fragments filtered by a firewall (smaller packets,
    /// through a lower MTU on the bound interface, get through). Random loss almost
    /// never gets there (each attempt would have to be lost whole, 17 times running).
    #[error("the request never got to the server whole: it kept answering that it does not have it (a path dropping long packets or IP fragments?)")]
    RequestLost,
}

/// What [`RpcError::Unreachable`] says.
fn unreachable_text(errno: i32) -> String {
    let os = std::io::Error::from_raw_os_error(errno);
    // (EPROTONOSUPPORT is 93 on Linux, the only system whose hosts answer so here.)
    if errno == 93 {
        format!(
            "the peer host runs no Homa over raw IP: it answered ICMP protocol unreachable ({os})"
        )
    } else {
        format!("cannot send to the peer: {os}")
    }
}

/// Why a request could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Longer than the longest message this endpoint sends: the smaller of
    /// `max_message_length` and `max_outgoing_held`.
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
    /// The outgoing-data cap is reached; try again after some RPCs finish.
    #[error("outgoing buffer space exhausted (would block)")]
    WouldBlock,
    /// The local port is not bound.
    #[error("local socket not bound")]
    NoSuchSocket,
    /// The local socket is shut down.
    #[error("socket shut down")]
    Shutdown,
    /// Destination port 0 is reserved.
    #[error("invalid destination port 0")]
    InvalidPort,
}

/// Why a reply could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// No request with that id is waiting for a reply on this socket.
    #[error("no request with that id awaits a reply")]
    UnknownRpc,
    /// Longer than the longest message this endpoint sends: the smaller of
    /// `max_message_length` and `max_outgoing_held`.
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
    /// The outgoing-data cap is reached; try again later.
    #[error("outgoing buffer space exhausted (would block)")]
    WouldBlock,
}

/// Why a socket could not be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// Another socket of this endpoint has the port.
    #[error("port {0} already in use")]
    PortInUse(u16),
    /// Every automatic port (32768..=65535) is taken.
    #[error("no free automatic port")]
    NoFreePort,
}

/// Why a new outgoing message was refused; becomes the operation's own error.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refused {
    Empty,
    TooLong { len: usize, max: u32 },
    WouldBlock,
}

impl From<Refused> for SendError {
    fn from(r: Refused) -> SendError {
        match r {
            Refused::Empty => SendError::EmptyMessage,
            Refused::TooLong { len, max } => SendError::MessageTooLong { len, max },
            Refused::WouldBlock => SendError::WouldBlock,
        }
    }
}

impl From<Refused> for ReplyError {
    fn from(r: Refused) -> ReplyError {
        match r {
            Refused::Empty => ReplyError::EmptyMessage,
            Refused::TooLong { len, max } => ReplyError::MessageTooLong { len, max },
            Refused::WouldBlock => ReplyError::WouldBlock,
        }
    }
}
