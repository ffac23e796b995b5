//! The TCP baseline: length-prefixed messages over TCP_NODELAY connections.
//!
//! A frame is a 4-byte little-endian body length followed by the body. Request bodies are
//! perf requests ([`crate::header`]); the server answers each with one response frame, in
//! order, per connection. The client spreads RPCs over several connections, sending each on
//! the one with the fewest outstanding RPCs (so, like real TCP RPC systems, a short request
//! can wait behind a long one on the same connection: that head-of-line blocking is part of
//! what the comparison with Homa shows).

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::counters::ServerCounters;
use crate::header::{ResponseBuilder, HEADER_LEN};
use crate::transport::{RpcClient, ServerPicker};
use crate::workload::MAX_MESSAGE_LENGTH;

/// Longest frame body accepted: longer lengths mean a corrupt or foreign stream.
pub const MAX_FRAME: usize = 16 << 20;

/// Bytes of write buffering on each side of a connection.
const BUF_BYTES: usize = 256 << 10;

/// Bytes of read buffering on each side of a connection: a whole longest perf message,
/// so that a long body is read with as few calls as when it was read straight into a
/// body buffer (with 256 KB, 1 MB streams took 15-25% more CPU per RPC).
const READ_BUF_BYTES: usize = MAX_MESSAGE_LENGTH + 4;

/// Bodies at least this long are written straight from the caller's buffer (one `writev`
/// with the length prefix) instead of being copied into the connection's write buffer
/// first: a copy costs more than the system call it could save. Shorter ones are
/// buffered, so that a server's answers to pipelined requests leave in one write.
const DIRECT_BYTES: usize = 4096;

fn too_long(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("TCP frame of {len} bytes is longer than the {MAX_FRAME}-byte limit"),
    )
}

/// A frame's length prefix, refusing bodies longer than [`MAX_FRAME`].
fn prefix(body: &[u8]) -> io::Result<[u8; 4]> {
    if body.len() > MAX_FRAME {
        return Err(too_long(body.len()));
    }
    Ok((body.len() as u32).to_le_bytes())
}

/// Writes one frame (length prefix + body). A short one is only buffered (call `flush`);
/// a long one leaves at once, after whatever was buffered, without being copied.
pub fn write_frame<W: Write>(w: &mut BufWriter<W>, body: &[u8]) -> io::Result<()> {
    let len = prefix(body)?;
    if body.len() < DIRECT_BYTES {
        w.write_all(&len)?;
        return w.write_all(body);
    }
    w.flush()?;
    let mut parts = [io::IoSlice::new(&len), io::IoSlice::new(body)];
    let mut parts = &mut parts[..];
    while !parts.is_empty() {
        match w.get_mut().write_vectored(parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes one frame straight to `w` with vectored writes (nothing is buffered or copied).
pub async fn write_frame_async<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    let len = prefix(body)?;
    let mut parts = [io::IoSlice::new(&len), io::IoSlice::new(body)];
    let mut parts = &mut parts[..];
    while !parts.is_empty() {
        match w.write_vectored(parts).await? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => io::IoSlice::advance_slices(&mut parts, n),
        }
    }
    Ok(())
}

/// What [`read_frame`] kept of a frame: its body's length and the body's first bytes, up
/// to the [request header](crate::header), which is all that the perf server and clients
/// look at. The rest of the body is read from the socket and dropped where it landed, in
/// the reader's buffer: the kernel copies every byte out, as it does for Homa, and no copy
/// follows in user space (a body copied out of the read buffer cost 3% of the machine on
/// the testbed's W4 load, which made TCP's CPU look higher than it is).
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameHead {
    len: usize,
    head: [u8; HEADER_LEN],
}

impl FrameHead {
    /// The body's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the body was empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The body's first bytes: all of it, up to [`HEADER_LEN`].
    pub fn head(&self) -> &[u8] {
        &self.head[..self.len.min(HEADER_LEN)]
    }

    fn start(len: [u8; 4]) -> io::Result<Self> {
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(too_long(len));
        }
        Ok(Self {
            len,
            head: [0; HEADER_LEN],
        })
    }

    /// Takes from `buffered` (what a reader's `fill_buf` gave) what this frame still needs
    /// once `done` bytes of its body were taken; returns how many it took. Nothing
    /// buffered is the stream's end, inside the frame: an error.
    fn take(&mut self, done: usize, buffered: &[u8]) -> io::Result<usize> {
        if buffered.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "end of stream inside a frame",
            ));
        }
        let n = buffered.len().min(self.len - done);
        if done < HEADER_LEN {
            let k = n.min(HEADER_LEN - done);
            self.head[done..done + k].copy_from_slice(&buffered[..k]);
        }
        Ok(n)
    }
}

/// Whether the read of a frame's first byte found one: `false` for a clean end of stream.
fn frame_begins(first: io::Result<()>) -> io::Result<bool> {
    match first {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads one frame, keeping its length and head (see [`FrameHead`]). `Ok(None)` on a clean
/// end of stream before the frame; an end of stream inside a frame is an error.
pub fn read_frame<R: BufRead>(r: &mut R) -> io::Result<Option<FrameHead>> {
    let mut len = [0u8; 4];
    if !frame_begins(r.read_exact(&mut len[..1]))? {
        return Ok(None);
    }
    r.read_exact(&mut len[1..])?;
    let mut frame = FrameHead::start(len)?;
    let mut done = 0;
    while done < frame.len {
        let n = frame.take(done, r.fill_buf()?)?;
        r.consume(n);
        done += n;
    }
    Ok(Some(frame))
}

/// Async [`read_frame`].
pub async fn read_frame_async<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<FrameHead>> {
    let mut len = [0u8; 4];
    if !frame_begins(r.read_exact(&mut len[..1]).await.map(drop))? {
        return Ok(None);
    }
    r.read_exact(&mut len[1..]).await?;
    let mut frame = FrameHead::start(len)?;
    let mut done = 0;
    while done < frame.len {
        let n = frame.take(done, r.fill_buf().await?)?;
        r.consume(n);
        done += n;
    }
    Ok(Some(frame))
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
    let mut reader = BufReader::with_capacity(READ_BUF_BYTES, stream.try_clone()?);
    let mut writer = BufWriter::with_capacity(BUF_BYTES, stream);
    let mut responses = ResponseBuilder::default();
    while let Some(request) = read_frame(&mut reader)? {
        match responses.respond(request.head(), MAX_MESSAGE_LENGTH) {
            Ok(resp) => {
                counters.count_tcp(request.len(), resp.len());
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
}

impl BlockingClient {
    /// Connects with TCP_NODELAY.
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::with_capacity(READ_BUF_BYTES, stream.try_clone()?),
            writer: BufWriter::with_capacity(BUF_BYTES, stream),
        })
    }

    /// Sends `request` and waits for its response; returns the response length.
    pub fn call(&mut self, request: &[u8]) -> io::Result<usize> {
        write_frame(&mut self.writer, request)?;
        self.writer.flush()?;
        match read_frame(&mut self.reader)? {
            Some(response) => Ok(response.len()),
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

type Waiter = oneshot::Sender<io::Result<usize>>;

#[derive(Debug)]
struct Connection {
    /// Each request leaves in one vectored write, straight from the caller's buffer.
    writer: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
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
                    writer: tokio::sync::Mutex::new(write),
                    pending: Mutex::new(VecDeque::new()),
                    outstanding: AtomicUsize::new(0),
                    dead: AtomicBool::new(false),
                });
                tokio::spawn(read_responses(
                    tokio::io::BufReader::with_capacity(READ_BUF_BYTES, read),
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
        }
        rx.await
            .unwrap_or_else(|_| Err(io::ErrorKind::ConnectionReset.into()))
    }
}

async fn read_responses(
    mut reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    conn: Arc<Connection>,
) {
    let end = loop {
        match read_frame_async(&mut reader).await {
            Ok(Some(response)) => {
                let waiter = conn.pending.lock().expect("pending lock").pop_front();
                if let Some(w) = waiter {
                    let _ = w.send(Ok(response.len()));
                }
            }
            Ok(None) => break io::Error::from(io::ErrorKind::UnexpectedEof),
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

    /// Frames of every kind, in order: short (buffered), empty, long (written directly,
    /// after what was buffered), short again.
    fn wire() -> (Vec<u8>, Vec<Vec<u8>>) {
        let long: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let bodies = vec![
            b"hello".to_vec(),
            Vec::new(),
            long,
            b"0123456789abcdefXYZ".to_vec(),
        ];
        let mut w = BufWriter::with_capacity(64, Vec::new());
        for b in &bodies {
            write_frame(&mut w, b).unwrap();
        }
        w.flush().unwrap();
        (w.into_inner().unwrap(), bodies)
    }

    #[test]
    fn frames_round_trip() {
        let (wire, bodies) = wire();
        assert_eq!(&wire[..9], &[5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(
            wire.len(),
            bodies.iter().map(|b| 4 + b.len()).sum::<usize>()
        );
        // A reader's buffer far shorter than a header: frames and heads span its fills.
        for capacity in [3, 64, READ_BUF_BYTES] {
            let mut r = BufReader::with_capacity(capacity, &wire[..]);
            for b in &bodies {
                let f = read_frame(&mut r).unwrap().expect("a frame");
                assert_eq!(f.len(), b.len());
                assert_eq!(f.head(), &b[..b.len().min(HEADER_LEN)]);
            }
            assert!(read_frame(&mut r).unwrap().is_none());
        }
        // Truncated inside a frame (in its prefix, or in its body): an error, not a clean end.
        for cut in [7, 11, wire.len() - 1] {
            let mut r = &wire[..cut];
            let mut last = Ok(None);
            for _ in 0..bodies.len() {
                last = read_frame(&mut r);
                if !matches!(last, Ok(Some(_))) {
                    break;
                }
            }
            assert_eq!(
                last.unwrap_err().kind(),
                io::ErrorKind::UnexpectedEof,
                "cut at {cut}"
            );
        }
        // Oversized length prefix, when reading and when writing.
        let mut r = &[0xff, 0xff, 0xff, 0xff][..];
        assert_eq!(
            read_frame(&mut r).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut w = BufWriter::new(Vec::new());
        let err = write_frame(&mut w, &vec![0; MAX_FRAME + 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn async_frames_round_trip() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (wire, bodies) = wire();
            let mut written = Vec::new();
            for b in &bodies {
                write_frame_async(&mut written, b).await.unwrap();
            }
            assert_eq!(written, wire);
            for capacity in [3, READ_BUF_BYTES] {
                let mut r = tokio::io::BufReader::with_capacity(capacity, &wire[..]);
                for b in &bodies {
                    let f = read_frame_async(&mut r).await.unwrap().expect("a frame");
                    assert_eq!(f.len(), b.len());
                    assert_eq!(f.head(), &b[..b.len().min(HEADER_LEN)]);
                }
                assert!(read_frame_async(&mut r).await.unwrap().is_none());
            }
            let mut r = &wire[..wire.len() - 1];
            let mut last = Ok(None);
            for _ in 0..bodies.len() {
                last = read_frame_async(&mut r).await;
            }
            assert_eq!(last.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
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
