//! The operations both flavours' sockets offer that never wait: one implementation,
//! written once here and expanded into each socket's `impl` (so that each type documents
//! them itself, and the two cannot drift apart).

/// Expands, inside `impl Socket` of either flavour (a type with an `inner()` returning
/// `&Arc<Inner>`), the methods that do not wait.
macro_rules! socket_commands {
    () => {
        /// The bound address (with the automatic port, if port 0 was asked for).
        pub fn local_addr(&self) -> std::net::SocketAddr {
            self.inner().local
        }

        /// UDP or raw IP.
        pub fn transport(&self) -> $crate::Transport {
            self.inner().transport
        }

        /// The engine configuration in force (MTU and link speed as detected).
        pub fn config(&self) -> $crate::Config {
            self.inner().lock().ep.config().clone()
        }

        /// Start an RPC: send `data` as a request to `dest`. Returns at once with the
        /// RPC's id (nothing to wait for: the request is queued, and sent before this
        /// returns on a blocking socket; on a tokio one, sent by the calling task when no
        /// other command sent within the last 50 us, else by the socket's driver task
        /// soon after, together with the others); the response, or the RPC's failure
        /// carrying `cookie`, comes from [`recv`](Self::recv),
        /// [`recv_batch`](Self::recv_batch) or [`recv_id`](Self::recv_id). `data` is
        /// anything that converts into a [`Payload`](crate::Payload): a `Vec<u8>` or
        /// [`Bytes`](crate::Bytes) is taken without copying (share one `Bytes` to send the
        /// same bytes again and again), a `&[u8]`, array or `&str` is copied once (see
        /// [`Payload`](crate::Payload) for what is copied into packets). While the outgoing buffer budget
        /// (`max_outgoing_held`) is used up by RPCs in flight, fails at once with
        /// [`SendError::WouldBlock`](crate::SendError::WouldBlock) (`call` waits for
        /// room instead).
        pub fn send_request(
            &self,
            dest: std::net::SocketAddr,
            data: impl Into<$crate::Payload>,
            cookie: u64,
        ) -> Result<$crate::RpcId, $crate::SendError> {
            self.inner().send_request(dest, data.into(), cookie, false)
        }

        /// Like [`send_request`](Self::send_request), but the response (or failure) is
        /// only returned by [`recv_id`](Self::recv_id) with this id, never by `recv`.
        pub fn send_request_private(
            &self,
            dest: std::net::SocketAddr,
            data: impl Into<$crate::Payload>,
            cookie: u64,
        ) -> Result<$crate::RpcId, $crate::SendError> {
            self.inner().send_request(dest, data.into(), cookie, true)
        }

        /// Send `data` as a one-way message to `dest`, a socket that takes them
        /// ([`Options::one_way`](crate::Options::one_way)): no response comes back, and
        /// the receiving application gets it as a [`Message`](crate::Message) of kind
        /// [`OneWay`](crate::MessageKind::OneWay). Returns at once with its id, like
        /// [`send_request`](Self::send_request); once the receiver has acknowledged the
        /// whole message, [`recv`](Self::recv), [`recv_batch`](Self::recv_batch) or
        /// [`recv_id`](Self::recv_id) return a [`Delivered`](crate::MessageKind::Delivered)
        /// message (no bytes) with this id and `cookie`, or the failure: a port that does
        /// not take one-way messages (or a peer that does not know them, such as the Linux
        /// module) fails it with [`RpcError::NotAccepted`](crate::RpcError::NotAccepted).
        ///
        /// One-way messages are this implementation's extension (docs/PROTOCOL.md,
        /// "One-way messages"): the first one to a port waits a round trip while the
        /// engine asks the port whether it takes them, and nothing of the extension is
        /// sent to a port that did not say yes.
        pub fn send_message(
            &self,
            dest: std::net::SocketAddr,
            data: impl Into<$crate::Payload>,
            cookie: u64,
        ) -> Result<$crate::RpcId, $crate::SendError> {
            self.inner()
                .start_message(dest, data.into(), cookie, false, $crate::inner::Push::Now)
                .map(|(id, _)| id)
        }

        /// Like [`send_message`](Self::send_message), but the delivery (or failure) is
        /// only returned by [`recv_id`](Self::recv_id) with this id, never by `recv`.
        pub fn send_message_private(
            &self,
            dest: std::net::SocketAddr,
            data: impl Into<$crate::Payload>,
            cookie: u64,
        ) -> Result<$crate::RpcId, $crate::SendError> {
            self.inner()
                .start_message(dest, data.into(), cookie, true, $crate::inner::Push::Now)
                .map(|(id, _)| id)
        }

        /// Send the response to `request`, a request this socket received (not a one-way
        /// message: nothing is owed for those). Returns at once, like
        /// [`send_request`](Self::send_request). Responses have an outgoing buffer
        /// budget of their own (`max_outgoing_held`, held by each response until its
        /// client acknowledges it): while it is used up, fails at once with
        /// [`ReplyError::WouldBlock`](crate::ReplyError::WouldBlock)
        /// (`reply_when_room` waits for room instead).
        pub fn reply(
            &self,
            request: &$crate::Message,
            data: impl Into<$crate::Payload>,
        ) -> Result<(), $crate::ReplyError> {
            self.inner()
                .reply(request, data.into(), $crate::inner::Push::Now)
        }

        /// A [`Batch`](crate::Batch): requests and replies whose packets leave together,
        /// in as few system calls as the kernel allows, when it is sent or dropped (some
        /// may leave sooner, with the socket's other traffic: see `Batch`).
        pub fn batch(&self) -> $crate::Batch<'_> {
            $crate::Batch::new(self.inner())
        }

        /// Abort the client RPC `id`: its outcome becomes
        /// `RecvError::Rpc { error: Aborted, .. }`, for the caller waiting on it or, if none
        /// waits, for the next [`recv`](Self::recv) (or [`recv_id`](Self::recv_id), for a
        /// private RPC). An RPC whose response has already arrived is not outstanding:
        /// [`AbortError::UnknownRpc`](crate::AbortError::UnknownRpc), and the response
        /// stays to be taken.
        pub fn abort(&self, id: $crate::RpcId) -> Result<(), $crate::AbortError> {
            self.inner().abort(id)
        }

        /// Abort every client RPC of this socket; returns how many.
        pub fn abort_all(&self) -> Result<usize, $crate::AbortError> {
            self.inner().abort_all()
        }

        /// Shut the socket down: its client RPCs fail, every waiting caller gets
        /// `Err(RecvError::Shutdown)`, later calls fail. Messages that had arrived but
        /// were not yet taken are dropped, their memory given back. The port stays bound
        /// until the last clone of the socket and every message it delivered are dropped.
        ///
        /// Its server RPCs end at once too, as closing a socket does in the Linux
        /// module: a response that `reply` accepted but that has not all left yet (one
        /// longer than the unscheduled bytes waits for its client's grants) is lost, and
        /// its client sees the RPC fail. Dropping the last clone does the same. A server
        /// that wants its last responses delivered calls `shutdown_gracefully` instead.
        pub fn shutdown(&self) {
            self.inner().shutdown();
        }

        /// Per-socket and per-RPC progress.
        pub fn info(&self) -> $crate::SocketInfo {
            self.inner().info()
        }

        /// A snapshot of the engine's counters (packets and bytes by type, drops by
        /// reason, timeouts, live RPCs...).
        pub fn metrics(&self) -> $crate::Metrics {
            self.inner().lock().ep.metrics()
        }
    };
}

pub(crate) use socket_commands;
