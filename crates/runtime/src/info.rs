//! `Socket::info()`: per-socket and per-RPC progress, like Linux Homa's `HOMAIOCINFO`.

use crate::options::Transport;
use homa_core::RpcId;
use std::net::SocketAddr;

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
    /// A graceful shutdown is under way: the socket takes no more requests and waits for
    /// the responses it owes (see `Socket::shutdown_gracefully`).
    pub draining: bool,
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
    /// Callers waiting for a message or an RPC's outcome: in a receive, or in `call` for
    /// its response.
    pub waiters: usize,
    /// Callers waiting for outgoing buffer room (`max_outgoing_held`): `call` and
    /// `deliver` before their message can start, `reply_when_room` before its response
    /// can. Not counted in `waiters`.
    pub room_waiters: usize,
    /// Maximum transmission unit used (bytes of an IP packet).
    pub mtu: u32,
    /// Link speed the pacer assumes, Mbit/s.
    pub link_mbps: u32,
    /// Runs of equal-size packets to one peer go out as one UDP GSO send (UDP mode, when
    /// the kernel has it; turned off if a send fails with it).
    pub gso: bool,
    /// A thread blocked on the socket (blocking API, UDP) is woken by a datagram from the
    /// socket's own wake-up socket, and waits in the receive call itself: one system call
    /// per wake-up. False where such datagrams cannot be sent or do not arrive (found at
    /// bind, or when one went missing: a firewall that drops empty UDP datagrams, say):
    /// waiting threads then sleep in `ppoll` on the socket and an `eventfd`, a system
    /// call more per wake-up. Always false for the tokio API and raw IP, which need none.
    pub wake_datagrams: bool,
    /// The kernel may hand over several datagrams in one receive (UDP GRO; with
    /// `Options::gro`, on once long messages have arrived).
    pub gro: bool,
    /// Bytes each received datagram may take in the receive buffers before it continues
    /// in a spill buffer: 65,536, or the longest datagram seen (rounded up to 1 KiB) once
    /// long datagrams of at most 16 KiB have been arriving (jumbo frames without GRO),
    /// so that long messages keep the received packets instead of copying them. Back to
    /// 65,536 for good after a longer datagram.
    pub receive_slot_bytes: usize,
    /// Bytes of receive buffer the kernel granted the socket (`SO_RCVBUF`, which reports
    /// twice this: the rest is its allowance for bookkeeping). Without `CAP_NET_ADMIN` it
    /// grants at most `net.core.rmem_max`, whatever `Options::recv_buffer_bytes` asked
    /// (the runtime then logs a warning), and the engine's `max_incoming` is cut to it.
    /// Over raw IP, the buffer of the socket the process's Homa sockets share.
    pub recv_buffer_bytes: usize,
    /// The same for the send buffer (`SO_SNDBUF`, `net.core.wmem_max`,
    /// `Options::send_buffer_bytes`).
    pub send_buffer_bytes: usize,
    /// Datagrams the kernel dropped on their way into the socket since it was opened,
    /// nearly always because its receive buffer was full (`SO_MEMINFO`; 0 where the
    /// kernel does not say). Non-zero means senders were asked again for what was lost:
    /// give the socket a larger buffer (`recv_buffer_bytes`). Over raw IP, the count of
    /// the socket the process's Homa sockets share.
    pub kernel_drops: u64,
    /// Times a send found the socket's send buffer full, so packets waited in user space
    /// for room (the tokio flavour; blocking sockets wait in the kernel instead). Often
    /// non-zero means `Options::send_buffer_bytes` is small for the link's queue.
    pub send_buffer_full: u64,
    /// What the socket has asked of the kernel and of other threads since it was opened
    /// (see [`IoCounts`]).
    pub io: IoCounts,
    /// Every live RPC of the socket in the engine, ordered by id (then peer): client RPCs
    /// until their response or failure is delivered, server RPCs from the first packet
    /// of the request until the client acknowledges the response.
    pub rpcs: Vec<RpcInfo>,
}

/// What a socket has asked of the kernel and of other threads, since it was opened: the
/// costs of moving its packets that a packet count does not show. Divided by the RPCs
/// completed, they say what each RPC cost in system calls and wake-ups (`homa perf` does
/// so in its JSON). Packets themselves are counted in [`Metrics`](crate::Metrics).
///
/// Over raw IP, receives are made by a reader thread shared by the process's sockets and
/// are not counted here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoCounts {
    /// System calls that sent on the socket (`sendto`, `sendmsg`, `sendmmsg`): each sends
    /// one datagram, one UDP GSO run of them, or a batch of either.
    pub send_calls: u64,
    /// System calls that read the socket (`recvfrom`, `recvmsg`, `recvmmsg`), whether
    /// they found datagrams, waited for the first (blocking), or found none (a
    /// non-blocking try, busy-polling included).
    pub receive_calls: u64,
    /// `ppoll` calls that waited for the socket (a thread waiting with a deadline, or the
    /// background thread).
    pub waits: u64,
    /// Re-arms of the socket's timers (`timerfd_settime`).
    pub timer_sets: u64,
    /// Threads or tasks the socket woke: a caller handed its message, failure or the
    /// driver role; a driver woken to act on new work or an earlier deadline; a task
    /// woken by outgoing buffer room. (Not counted: the wake-ups arriving datagrams
    /// cause, of a thread blocked in a receive or of the tokio driver task through the
    /// runtime's readiness events.)
    pub wakeups: u64,
}

/// Where an RPC is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RpcState {
    /// Client: request bytes still to send.
    SendingRequest,
    /// Client: the request is out, no response byte yet.
    AwaitingResponse,
    /// Client: response bytes arriving.
    ReceivingResponse,
    /// Server: request bytes arriving.
    ReceivingRequest,
    /// Server: the request was delivered; the application has not replied.
    InService,
    /// Server: sending the response.
    SendingResponse,
    /// Server: the response is fully sent; waiting for the client's ACK.
    AwaitingAck,
}

/// Progress of one RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RpcInfo {
    /// The id on this side.
    pub id: RpcId,
    /// The other side.
    pub peer: SocketAddr,
    /// The cookie given to `send_request` or `send_message` (0 for `call` and `deliver`,
    /// and on the server side).
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
    /// Length of the message this side receives, from its first packet until it is
    /// delivered (`None` before, and for a request once it is with the application).
    pub in_length: Option<u32>,
    /// Bytes of it received (0 once a request is with the application).
    pub bytes_received: u32,
    /// Bytes of it the sender may send without further grants from this side.
    pub in_granted: u32,
    /// Its reception waits for receive buffer space (`max_incoming_held`).
    pub in_stalled: bool,
    /// Timer ticks without word from the peer (the RPC fails with a timeout once this
    /// reaches the configured limit).
    pub silent_ticks: u32,
}
