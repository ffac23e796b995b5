//! The TCP baseline: length-prefixed messages over TCP_NODELAY connections.
//!
//! A frame is a 4-byte little-endian body length followed by the body. Request bodies are
//! perf requests ([`crate::header`]); the server answers each with one response frame, in
//! order, per connection. The client spreads RPCs over several connections, sending each on
//! the one with the fewest outstanding RPCs (so, like real TCP RPC systems, a short request
//! can wait behind a long one on the same connection: that head-of-line blocking is part of
//! what the comparison with Homa shows).

use std::collections::VecDeque;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::counters::ServerCounters;
use crate::header::ResponseBuilder;
use crate::transport::{RpcClient, ServerPicker};
use crate::workload::MAX_MESSAGE_LENGTH;

/// Longest frame body accepted: longer lengths mean a corrupt or foreign stream.
pub const MAX_FRAME: usize = 16 << 20;

/// Bytes of socket buffering on each side of a connection.
const BUF_BYTES: usize = 256 << 10;

fn too_long(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("TCP frame of {len} bytes is longer than the {MAX_FRAME}-byte limit"),
    )
}

/// Writes one frame (length prefix + body). Does not flush.
pub fn write_frame<W: Write>(w: &mut W, body: &[u8]) -> io::Result<()> {
    if body.len() > MAX_FRAME {
        return Err(too_long(body.len()));
    }
    w.write_all(&(body.len() as u32).to_le_bytes())?;
    w.write_all(body)
}

/// A frame body as [`read_frame`] reads it (it derefs to the body's bytes), in a buffer
/// that keeps the longest length it has had: with `Vec::resize`, every long frame after a
/// short one had the difference zeroed again before being read over (W4's requests run
/// from 300 B to 1 MB: 1.9% of the TCP lane's samples on the testbed, which made TCP's
/// CPU look higher than it is).
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
    len: usize,
}

impl FrameBuf {
    /// The body's bytes, `len` of them, to be overwritten by a read.
    fn body_mut(&mut self, len: usize) -> &mut [u8] {
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        self.len = len;
        &mut self.buf[..len]
    }
}

impl std::ops::Deref for FrameBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Reads one frame body into `buf`. `Ok(false)` on a clean end of stream before the frame;
/// an end of stream inside a frame is an error.
pub fn read_frame<R: Read>(r: &mut R, buf: &mut FrameBuf) -> io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut len[1..])?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(too_long(len));
    }
    r.read_exact(buf.body_mut(len))?;
    Ok(true)
}

/// Async [`write_frame`]. Does not flush.
pub async fn write_frame_async<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    if body.len() > MAX_FRAME {
        return Err(too_long(body.len()));
    }
    w.write_all(&(body.len() as u32).to_le_bytes()).await?;
    w.write_all(body).await
}

/// Async [`read_frame`].
pub async fn read_frame_async<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut FrameBuf,
) -> io::Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut len[1..]).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(too_long(len));
    }
    r.read_exact(buf.body_mut(len)).await?;
    Ok(true)
}

/// Starts the perf TCP server on `addr`: a listener thread and one thread per connection.
/// Returns the bound address. Threads run until the process exits.
pub fn spawn_server(addr: SocketAddr, counters: Arc<ServerCounters>) -> io::Result<SocketAddr> {
    serve_listener(TcpListener::bind(addr)?, counters)
}

/// Serves perf requests on a listener already bound (as [`spawn_server`] does once bound).
/// Returns its address.
pub fn serve_listener(
    listener: TcpListener,
    counters: Arc<ServerCounters>,
) -> io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("perf-tcp-accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let counters = counters.clone();
                let _ = std::thread::Builder::new()
                    .name("perf-tcp-conn".into())
                    .spawn(move || {
                        // A client closing its connection mid-frame is its business.
                        let _ = serve_connection(stream, &counters);
                    });
            }
        })?;
    Ok(local)
}

fn serve_connection(stream: TcpStream, counters: &ServerCounters) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(BUF_BYTES, stream.try_clone()?);
    let mut writer = BufWriter::with_capacity(BUF_BYTES, stream);
    let mut body = FrameBuf::default();
    let mut responses = ResponseBuilder::default();
    while read_frame(&mut reader, &mut body)? {
        match responses.respond(&body, MAX_MESSAGE_LENGTH) {
            Ok(resp) => {
                counters.count_tcp(body.len(), resp.len());
                write_frame(&mut writer, resp)?;
            }
            Err(_) => {
                // Keep the stream in step: every request frame gets one response frame.
                counters.count_malformed();
                write_frame(&mut writer, &[])?;
            }
        }
        // Coalesce responses to pipelined requests; flush before blocking on a read.
        if reader.buffer().is_empty() {
            writer.flush()?;
        }
    }
    writer.flush()
}

/// A blocking TCP perf client on one connection, one RPC at a time (for `perf rtt`).
#[derive(Debug)]
pub struct BlockingClient {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    buf: FrameBuf,
}

impl BlockingClient {
    /// Connects with TCP_NODELAY.
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::with_capacity(BUF_BYTES, stream.try_clone()?),
            writer: BufWriter::with_capacity(BUF_BYTES, stream),
            buf: FrameBuf::default(),
        })
    }

    /// Sends `request` and waits for its response; returns the response length.
    pub fn call(&mut self, request: &[u8]) -> io::Result<usize> {
        write_frame(&mut self.writer, request)?;
        self.writer.flush()?;
        if !read_frame(&mut self.reader, &mut self.buf)? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(self.buf.len())
    }
}

type Waiter = oneshot::Sender<io::Result<usize>>;

#[derive(Debug)]
struct Connection {
    writer: tokio::sync::Mutex<tokio::io::BufWriter<tokio::net::tcp::OwnedWriteHalf>>,
    /// Callers waiting for responses, in the order their requests were written.
    pending: Mutex<VecDeque<Waiter>>,
    outstanding: AtomicUsize,
    /// Set (under `pending`'s lock) once the reader has stopped.
    dead: AtomicBool,
}

/// An async TCP perf client over several connections to each of one or more servers (see
/// the module docs); each RPC goes to a server picked at random.
#[derive(Debug)]
pub struct TcpRpcClient {
    /// Connections, per server.
    servers: Vec<Vec<Arc<Connection>>>,
    picker: ServerPicker,
    next: AtomicUsize,
}

impl TcpRpcClient {
    /// Opens `connections` connections to each of `addrs` (TCP_NODELAY) and starts their
    /// readers on the current tokio runtime.
    pub async fn connect(addrs: &[SocketAddr], connections: usize) -> io::Result<Self> {
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no server address given",
            ));
        }
        let mut servers = Vec::new();
        for &addr in addrs {
            let mut conns = Vec::new();
            for _ in 0..connections.max(1) {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let (read, write) = stream.into_split();
                let conn = Arc::new(Connection {
                    writer: tokio::sync::Mutex::new(tokio::io::BufWriter::with_capacity(
                        BUF_BYTES, write,
                    )),
                    pending: Mutex::new(VecDeque::new()),
                    outstanding: AtomicUsize::new(0),
                    dead: AtomicBool::new(false),
                });
                tokio::spawn(read_responses(
                    tokio::io::BufReader::with_capacity(BUF_BYTES, read),
                    conn.clone(),
                ));
                conns.push(conn);
            }
            servers.push(conns);
        }
        Ok(Self {
            picker: ServerPicker::new(servers.len()),
            servers,
            next: AtomicUsize::new(0),
        })
    }

    /// A server picked at random, then its connection with the fewest outstanding RPCs,
    /// ties broken round-robin.
    fn pick(&self) -> &Arc<Connection> {
        let conns = &self.servers[self.picker.pick()];
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = conns.len();
        (0..n)
            .map(|i| &conns[(start + i) % n])
            .min_by_key(|c| c.outstanding.load(Ordering::Relaxed))
            .expect("at least one connection")
    }

    async fn call_on(&self, conn: &Connection, request: &[u8]) -> io::Result<usize> {
        let (tx, rx) = oneshot::channel();
        {
            let mut w = conn.writer.lock().await;
            {
                let mut pending = conn.pending.lock().expect("pending lock");
                if conn.dead.load(Ordering::Acquire) {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "TCP connection to the perf server closed",
                    ));
                }
                pending.push_back(tx);
            }
            write_frame_async(&mut *w, request).await?;
            w.flush().await?;
        }
        rx.await
            .unwrap_or_else(|_| Err(io::ErrorKind::ConnectionReset.into()))
    }
}

async fn read_responses(
    mut reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    conn: Arc<Connection>,
) {
    let mut buf = FrameBuf::default();
    let end = loop {
        match read_frame_async(&mut reader, &mut buf).await {
            Ok(true) => {
                let waiter = conn.pending.lock().expect("pending lock").pop_front();
                if let Some(w) = waiter {
                    let _ = w.send(Ok(buf.len()));
                }
            }
            Ok(false) => break io::Error::from(io::ErrorKind::UnexpectedEof),
            Err(e) => break e,
        }
    };
    let mut pending = conn.pending.lock().expect("pending lock");
    conn.dead.store(true, Ordering::Release);
    for w in pending.drain(..) {
        let _ = w.send(Err(io::Error::new(end.kind(), end.to_string())));
    }
}

impl RpcClient for TcpRpcClient {
    async fn call(&self, request: homa::Bytes) -> io::Result<usize> {
        let conn = self.pick().clone();
        conn.outstanding.fetch_add(1, Ordering::Relaxed);
        let r = self.call_on(&conn, &request).await;
        conn.outstanding.fetch_sub(1, Ordering::Relaxed);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::RequestHeader;

    #[test]
    fn frames_round_trip() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").unwrap();
        write_frame(&mut wire, b"").unwrap();
        write_frame(&mut wire, &[7u8; 70_000]).unwrap();
        assert_eq!(&wire[..9], &[5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o']);
        write_frame(&mut wire, b"bye").unwrap();
        let mut r = &wire[..];
        let mut buf = FrameBuf::default();
        assert!(read_frame(&mut r, &mut buf).unwrap());
        assert_eq!(&*buf, b"hello");
        assert!(read_frame(&mut r, &mut buf).unwrap());
        assert!(buf.is_empty());
        assert!(read_frame(&mut r, &mut buf).unwrap());
        assert_eq!(&*buf, &[7u8; 70_000][..]);
        // A short frame after a long one is only its own bytes.
        assert!(read_frame(&mut r, &mut buf).unwrap());
        assert_eq!(&*buf, b"bye");
        assert!(!read_frame(&mut r, &mut buf).unwrap());
        // Truncated inside a frame: an error, not a clean end.
        let mut r = &wire[..7];
        assert!(read_frame(&mut r, &mut buf).is_err());
        // Oversized length prefix.
        let mut r = &[0xff, 0xff, 0xff, 0xff][..];
        assert_eq!(
            read_frame(&mut r, &mut buf).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn async_frames_round_trip() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut wire = Vec::new();
            write_frame_async(&mut wire, b"abc").await.unwrap();
            let mut r = &wire[..];
            let mut buf = FrameBuf::default();
            assert!(read_frame_async(&mut r, &mut buf).await.unwrap());
            assert_eq!(&*buf, b"abc");
            assert!(!read_frame_async(&mut r, &mut buf).await.unwrap());
        });
    }

    #[test]
    fn server_answers_blocking_and_pipelined_clients() {
        let counters = Arc::new(ServerCounters::default());
        let addr = spawn_server("127.0.0.1:0".parse().unwrap(), counters.clone()).unwrap();
        let mut c = BlockingClient::connect(addr).unwrap();
        let req = RequestHeader {
            response_len: 3000,
            id: 1,
            sent_ns: 0,
        }
        .request(100);
        assert_eq!(c.call(&req).unwrap(), 3000);
        // Malformed request: still one (empty) response, stream stays usable.
        assert_eq!(c.call(&[1, 2, 3]).unwrap(), 0);
        assert_eq!(c.call(&req).unwrap(), 3000);

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = Arc::new(TcpRpcClient::connect(&[addr], 3).await.unwrap());
            let mut tasks = Vec::new();
            for i in 0..64u32 {
                let client = client.clone();
                tasks.push(tokio::spawn(async move {
                    let len = 1 + (i as usize * 997) % 200_000;
                    let req = RequestHeader {
                        response_len: len as u32,
                        id: i,
                        sent_ns: 0,
                    }
                    .request(len);
                    (len, client.call(req.into()).await.unwrap())
                }));
            }
            for t in tasks {
                let (len, got) = t.await.unwrap();
                assert_eq!(got, len);
            }
        });
        assert_eq!(counters.snapshot().tcp_requests, 2 + 64);
        assert_eq!(counters.snapshot().malformed, 1);
    }
}
