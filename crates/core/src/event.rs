use crate::buffer::MessageBuf;
use crate::error::RpcError;
use homa_wire::RpcId;
use std::net::SocketAddr;

/// What the engine tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole request arrived at a server socket; answer it with `Endpoint::reply`.
    Request {
        /// The local (server) port.
        port: u16,
        /// The RPC's id on this side (odd).
        id: RpcId,
        /// The client's address and port.
        peer: SocketAddr,
        /// The request bytes. Hand back with `Endpoint::release` when done with them.
        data: MessageBuf,
    },
    /// The response to one of our requests.
    Response {
        /// The local (client) port.
        port: u16,
        /// The id `send_request` returned.
        id: RpcId,
        /// The cookie given to `send_request`.
        cookie: u64,
        /// The server's address and port.
        peer: SocketAddr,
        /// Only retrievable by id (the runtime's routing hint).
        private: bool,
        /// The response bytes. Hand back with `Endpoint::release` when done with them.
        data: MessageBuf,
    },
    /// A whole one-way message arrived at a socket that takes them
    /// ([`Endpoint::set_one_way`](crate::Endpoint::set_one_way)). Nothing is to be sent
    /// back: its sender learns from the engine that it arrived.
    Message {
        /// The local port.
        port: u16,
        /// The message's id on this side (odd).
        id: RpcId,
        /// The sender's address and port.
        peer: SocketAddr,
        /// The message bytes. Hand back with `Endpoint::release` when done with them.
        data: MessageBuf,
    },
    /// One of our one-way messages ([`Endpoint::send_message`](crate::Endpoint::send_message))
    /// arrived whole: its receiver acknowledged it.
    Delivered {
        /// The local port it was sent from.
        port: u16,
        /// The id `send_message` returned.
        id: RpcId,
        /// The cookie given to `send_message`.
        cookie: u64,
        /// The receiver's address and port.
        peer: SocketAddr,
        /// Only retrievable by id.
        private: bool,
    },
    /// One of our requests or one-way messages failed.
    Failed {
        /// The local (client) port.
        port: u16,
        /// The id `send_request` (or `send_message`) returned.
        id: RpcId,
        /// The cookie given to `send_request` (or `send_message`).
        cookie: u64,
        /// The server's address and port.
        peer: SocketAddr,
        /// Only retrievable by id.
        private: bool,
        /// Why.
        error: RpcError,
    },
}
