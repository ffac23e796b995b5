//! gRPC over Homa: tonic clients and servers, unchanged, on Homa RPCs.
//!
//! A gRPC unary call is a request and a response, which is exactly a Homa RPC. This crate
//! carries tonic's calls over Homa (the [`homa`] crate's tokio sockets) instead of HTTP/2
//! over TCP: a tonic-generated client takes a [`Channel`], and [`Server`] (or [`serve`])
//! runs tonic services. Two lines change:
//!
//! ```text
//! - let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect().await?;
//! + let channel = homa_tonic::Channel::connect("127.0.0.1:50051".parse()?).await?;
//!   let mut client = GreeterClient::new(channel);
//!
//! - tonic::transport::Server::builder().add_service(GreeterServer::new(greeter)).serve(addr).await?;
//! + homa_tonic::Server::builder().add_service(GreeterServer::new(greeter)).serve(addr).await?;
//! ```
//!
//! All four kinds of call work (unary, server streaming, client streaming, bidirectional),
//! with metadata, trailers, status codes, deadlines (`grpc-timeout`), cancellation and
//! tonic's compression (the gRPC messages travel as tonic encoded them).
//!
//! # Example
//!
//! A service written by hand against tonic's server API (generated code does the same),
//! served over Homa and called through tonic's client API:
//!
//! ```
//! use bytes::{Buf, BufMut, Bytes};
//! use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
//!
//! /// Messages are raw bytes.
//! #[derive(Default, Clone)]
//! struct Raw;
//! impl Codec for Raw {
//!     type Encode = Bytes;
//!     type Decode = Bytes;
//!     type Encoder = Raw;
//!     type Decoder = Raw;
//!     fn encoder(&mut self) -> Raw { Raw }
//!     fn decoder(&mut self) -> Raw { Raw }
//! }
//! impl Encoder for Raw {
//!     type Item = Bytes;
//!     type Error = tonic::Status;
//!     fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
//!         dst.put(item);
//!         Ok(())
//!     }
//! }
//! impl Decoder for Raw {
//!     type Item = Bytes;
//!     type Error = tonic::Status;
//!     fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
//!         Ok(Some(src.copy_to_bytes(src.remaining())))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The server: one method, "/echo.Echo/Say", that answers with what it got.
//! let routes = tonic::service::Routes::from(
//!     axum::Router::new().route_service("/echo.Echo/Say", tower::service_fn(
//!         |req: http::Request<homa_tonic::RequestBody>| async move {
//!             struct Say;
//!             impl tonic::server::UnaryService<Bytes> for Say {
//!                 type Response = Bytes;
//!                 type Future = std::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;
//!                 fn call(&mut self, r: tonic::Request<Bytes>) -> Self::Future {
//!                     std::future::ready(Ok(tonic::Response::new(r.into_inner())))
//!                 }
//!             }
//!             Ok::<_, std::convert::Infallible>(tonic::server::Grpc::new(Raw).unary(Say, req).await)
//!         })),
//! );
//! let opts = homa::Options { server: Some(true), ..Default::default() };
//! let sock = homa::tokio::Socket::bind_with("127.0.0.1:0".parse()?, opts).await?;
//! let addr = sock.local_addr();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(homa_tonic::serve(sock, routes, async { let _ = stopped.await; }));
//!
//! // The client.
//! let channel = homa_tonic::Channel::connect(addr).await?;
//! let mut grpc = tonic::client::Grpc::new(channel);
//! grpc.ready().await?;
//! let path = http::uri::PathAndQuery::from_static("/echo.Echo/Say");
//! let answer = grpc.unary(tonic::Request::new(Bytes::from("hi")), path, Raw).await?;
//! assert_eq!(answer.into_inner(), "hi");
//! stop.send(()).unwrap();
//! server.await??;
//! # Ok(())
//! # }
//! ```
//!
//! # The wire mapping
//!
//! Each gRPC call is one or more Homa RPCs between the client's socket and the server's.
//! Every Homa message, request or response, is one *frame*; integers are big-endian:
//!
//! ```text
//! frame    = kind:u8 flags:u8 call:u64
//!            [path]              OPEN only: u16 length, bytes ("/package.Service/Method")
//!            [headers]           if flags & HEADERS
//!            messages:u32 length, bytes
//!            [trailers]          replies with flags & END only
//! headers  = count:u16 { name-length:u16 name value-length:u32 value }
//!            (trailers use the same layout)
//! kind     = OPEN 1 | SEND 2 | PULL 3 | CANCEL 4      in a request
//!            0x80 | the request's kind                in its reply
//! flags    = END 0x01 | HEADERS 0x02
//! ```
//!
//! `call` is chosen by the client, unique among its calls on its socket; the server
//! knows a call by (client address, call). `messages` are gRPC length-prefixed messages
//! (1-byte compressed flag, 4-byte length, message) exactly as an HTTP/2 DATA stream
//! carries them, so compression (`grpc-encoding`) needs nothing here. Request headers
//! are the HTTP/2 request headers without pseudo-headers (`content-type`, `te`,
//! `grpc-timeout`, `grpc-encoding`, custom metadata...); response headers and trailers are
//! HTTP/2's (`grpc-status`, `grpc-message`, custom metadata). Header names are lower case.
//!
//! **Requests.** The client sends OPEN with the path, the request headers and the
//! request messages it has at once. If that is the whole request (always for unary and
//! server-streaming calls) the OPEN carries END and also acts as the first PULL (below):
//! a unary call is a single Homa RPC. Otherwise the server replies to the OPEN at once
//! (an empty acknowledgement) and the client sends the rest of the request in SEND
//! frames, the last with END, one at a time: the server replies to a SEND (empty
//! acknowledgement) when the handler has taken its messages, and the client sends the
//! next SEND only after that reply. The server thus holds at most one unread batch per
//! call, however fast the client writes.
//!
//! **Responses.** The reply to an OPEN with END, or to a PULL, is the next batch of
//! response messages; the first batch of a call carries HEADERS (the response headers),
//! and the last carries END and the trailers. The server answers the first PULL as soon
//! as the handler has returned its response head, with the messages ready then (for a
//! unary call: all of them, and END); later PULLs wait for at least one message. A batch
//! grows to at most 64 KiB of messages and never beyond Homa's maximum message length.
//! After an OPEN without END (and its acknowledgement) the client sends its first PULL.
//! The client has at most one PULL outstanding and sends the next when a batch arrives,
//! so it holds at most the batch being read and the one on its way.
//!
//! **Errors.** A status that ends a call before any response headers is a
//! "trailers-only" reply: END, HEADERS carrying `grpc-status` (and `content-type`), and
//! an empty trailer block. A frame the server cannot parse, or a SEND/PULL for a call it
//! does not know, gets such a reply with `INTERNAL` / `NOT_FOUND` and changes nothing
//! else. A failed Homa RPC (timeout, no such server) is `UNAVAILABLE` to the caller.
//! A message that does not fit in one Homa message (`max_message_length`, 1,000,000
//! bytes by default) fails with `RESOURCE_EXHAUSTED` on the side that would send it.
//!
//! **Deadlines and cancellation.** `grpc-timeout` travels as a header; the client aborts
//! its RPCs when it passes (the caller gets `DEADLINE_EXCEEDED`), and so does the server
//! (the call's handler is dropped). A client that drops a call before its end aborts its
//! Homa RPCs and sends CANCEL (a fire-and-forget RPC with an empty reply); the server
//! then drops the handler's future and response stream, and the handler's request
//! stream yields `CANCELLED`.
//!
//! # Limits
//! - A server whose client vanished without a CANCEL keeps a streaming call's state until
//!   its deadline (if any) or until the server shuts down.
//! - When [`serve`] stops it shuts its socket down, ending the calls still running.
#![warn(missing_docs)]

mod batch;
mod client;
mod frame;
mod server;

pub use client::{Channel, ResponseBody, ResponseFuture};
pub use server::{serve, RequestBody, ServeError, Server};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The Homa address of the client, in the extensions of every request a handler gets
/// (`request.extensions().get::<homa_tonic::Peer>()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);
