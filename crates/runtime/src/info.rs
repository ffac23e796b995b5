//! `Socket::info()`: per-socket and per-RPC progress, like Linux Homa's `HOMAIOCINFO`.

use crate::options::Transport;
use homa_core::RpcId;
use std::net::SocketAddr;
use std::time::Duration;

/// A snapshot of a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketInfo {
    /// The bound address.
    pub local_addr: SocketAddr,
    /// The Homa port (equal to `local_addr.port()`).
    pub port: u16,
    /// UDP or raw IP.
    pub transport: Transport,
    /// The socket was shut down.
    pub shutdown: bool,
    /// Live client RPCs in the engine.
    pub client_rpcs: u64,
    /// Live server RPCs in the engine (receiving, in service, sending, awaiting ACK).
    pub server_rpcs: u64,
    /// Bytes of incoming message data held: being received, or delivered and not yet
    /// dropped by the application.
    pub incoming_held: u64,
    /// Bytes of outgoing message data held.
    pub outgoing_held: u64,
    /// Messages (and RPC failures) delivered but not yet taken by a receive call.
    pub queued: usize,
    /// Callers blocked in `recv`/`recv_id`/`call`.
    pub waiters: usize,
    /// Maximum transmission unit used (bytes of an IP packet).
    pub mtu: u32,
    /// Link speed the pacer assumes, Mbit/s.
    pub link_mbps: u32,
    /// Runs of equal-size packets to one peer go out as one UDP GSO send (UDP mode, when
    /// the kernel has it; turned off if a send fails with it).
    pub gso: bool,
    /// The kernel may hand over several datagrams in one receive (UDP GRO).
    pub gro: bool,
    /// The RPCs this socket follows, ordered by id: its client RPCs until their response
    /// or failure is delivered, and its server RPCs from the delivery of the request
    /// until the response is fully sent. (Requests still arriving and responses awaiting
    /// their ACK are only counted in `server_rpcs`.)
    pub rpcs: Vec<RpcInfo>,
}

/// Where an RPC is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RpcState {
    /// Client: request bytes still to send.
    SendingRequest,
    /// Client: the request is out, no response byte yet.
    AwaitingResponse,
    /// Client: response bytes arriving.
    ReceivingResponse,
    /// Server: the request was delivered; the application has not replied.
    InService,
    /// Server: sending the response.
    SendingResponse,
}

/// Progress of one RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RpcInfo {
    /// The id on this side.
    pub id: RpcId,
    /// The other side.
    pub peer: SocketAddr,
    /// The cookie given to `send_request` (0 on the server side).
    pub cookie: u64,
    /// Where it is.
    pub state: RpcState,
    /// This side is the client.
    pub is_client: bool,
    /// Length of the message this side sends (0 for a server that has not replied yet).
    pub out_length: u32,
    /// Bytes of it transmitted so far.
    pub bytes_sent: u32,
    /// Bytes of it the receiver allows (unscheduled bytes plus grants).
    pub granted: u32,
    /// Length of the message this side receives, once its first packet arrived.
    pub in_length: Option<u32>,
    /// Bytes of it received.
    pub bytes_received: u32,
    /// Time since the RPC started (client) or its request was delivered (server).
    pub age: Duration,
}
