//! An HTTP endpoint for metrics: `GET /metrics` (Prometheus text) and `GET /metrics.json`,
//! one request per connection, for a Prometheus scraper, `curl` or `homa metrics`.
//!
//! HTTP is hyper's (HTTP/1, on a single-threaded tokio runtime on a thread of the
//! endpoint's own, so it serves the blocking API as well as the tokio one); this file
//! sets the limits on what a client may cost and routes the two paths.

use std::convert::Infallible;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// The time a client has to send its whole request, and then to take the whole answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request (request line and headers) read; longer ones are answered `431`.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Connections served at once; more are answered `503` and closed.
pub const MAX_CONNECTIONS: usize = 8;

/// What one client may cost the endpoint.
#[derive(Debug, Clone, Copy)]
struct Limits {
    request_timeout: Duration,
    max_connections: usize,
}

const LIMITS: Limits = Limits {
    request_timeout: REQUEST_TIMEOUT,
    max_connections: MAX_CONNECTIONS,
};

/// What a metrics endpoint serves, computed afresh for every request.
///
/// Implemented by [`Socket`](crate::Socket) and [`aio::Socket`](crate::aio::Socket)
/// (series labelled `socket="<port>"`) and by `Arc`s of sources; implement it yourself to
/// serve several sockets or counters of your own next to Homa's.
pub trait Source: Send + Sync + 'static {
    /// The Prometheus text exposition (see [`to_prometheus`](super::to_prometheus)).
    fn prometheus(&self) -> String;
    /// The same metrics as JSON (see [`to_json`](super::to_json)).
    fn json(&self) -> Value;
}

impl<T: Source + ?Sized> Source for Arc<T> {
    fn prometheus(&self) -> String {
        (**self).prometheus()
    }
    fn json(&self) -> Value {
        (**self).json()
    }
}

/// A socket's counters as Prometheus text, labelled `socket="<port>"`.
fn socket_prometheus(local: SocketAddr, m: &crate::Metrics) -> String {
    super::to_prometheus(m, &[("socket", &local.port().to_string())])
}

/// A socket's counters as JSON, with `"socket": <port>` beside them (as the Prometheus
/// text's label), so that a reader of several sockets' can tell them apart.
fn socket_json(local: SocketAddr, m: &crate::Metrics) -> Value {
    let mut v = super::to_json(m);
    if let Value::Object(o) = &mut v {
        o.insert("socket".into(), local.port().into());
    }
    v
}

impl Source for crate::Socket {
    fn prometheus(&self) -> String {
        socket_prometheus(self.local_addr(), &self.metrics())
    }
    fn json(&self) -> Value {
        socket_json(self.local_addr(), &self.metrics())
    }
}

#[cfg(feature = "tokio")]
impl Source for crate::aio::Socket {
    fn prometheus(&self) -> String {
        socket_prometheus(self.local_addr(), &self.metrics())
    }
    fn json(&self) -> Value {
        socket_json(self.local_addr(), &self.metrics())
    }
}

/// A running metrics endpoint (see [`serve`]). Dropping it stops the endpoint: the
/// listener closes at once; answers already being written finish on the endpoint's
/// thread, each within its time limit.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    /// Closed (or sent on) once the listener is closed. In a mutex, which only `drop`
    /// takes, so that the server is `Sync` (a receiver alone is not): it can live in an
    /// application's shared state.
    closed: std::sync::Mutex<mpsc::Receiver<()>>,
}

impl MetricsServer {
    /// The address the endpoint listens on (with the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Longest a drop waits for the endpoint's thread to close its listener. The thread never
/// waits on a client, so this is only a bound in case a [`Source`] is slow.
const STOP_WAIT: Duration = Duration::from_secs(5);

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let closed = self.closed.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = closed.recv_timeout(STOP_WAIT);
    }
}

/// Serve `source`'s metrics over HTTP at `addr` from a background thread:
/// `GET /metrics` answers Prometheus text, `GET /metrics.json` JSON. Read them with
/// `homa metrics ADDR`, `curl`, or a Prometheus scrape job. A socket served as the
/// source labels its series `socket="<port>"` and puts `"socket": <port>` in the JSON.
///
/// What a client can cost is bounded: a request (line and headers) of at most
/// [`MAX_REQUEST_BYTES`] (longer ones get `431`), sent within [`REQUEST_TIMEOUT`] in all
/// (not per read), and the answer taken within as much again. At most
/// [`MAX_CONNECTIONS`] connections are served at once, side by side, so a slow client
/// delays nobody else; beyond that, new connections are answered `503` and closed at
/// once. Stopping (dropping the [`MetricsServer`]) never waits for a client.
///
/// ```
/// use std::sync::Arc;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sock = Arc::new(homa::Socket::bind("127.0.0.1:0".parse()?)?);
/// let endpoint = homa::metrics::serve("127.0.0.1:0".parse()?, sock.clone())?;
/// println!("metrics at http://{}/metrics", endpoint.local_addr());
/// # Ok(())
/// # }
/// ```
pub fn serve(addr: SocketAddr, source: impl Source) -> io::Result<MetricsServer> {
    serve_within(addr, source, LIMITS)
}

fn serve_within(
    addr: SocketAddr,
    source: impl Source,
    limits: Limits,
) -> io::Result<MetricsServer> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let listener = {
        let _in_runtime = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let source: Arc<dyn Source> = Arc::new(source);
    let (stop, stopped) = oneshot::channel();
    let (closed_tx, closed) = mpsc::channel();
    std::thread::Builder::new()
        .name("homa-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let answering = accept(listener, source, limits, stopped).await;
                let _ = closed_tx.send(());
                // Let the answers under way finish (each within its time limit).
                answering.join_all().await;
            })
        })?;
    Ok(MetricsServer {
        addr,
        stop: Some(stop),
        closed: std::sync::Mutex::new(closed),
    })
}

/// Accept connections until `stop`, serving at most `max_connections` at once; returns
/// (having closed the listener) the connections still being answered.
async fn accept(
    listener: tokio::net::TcpListener,
    source: Arc<dyn Source>,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
) -> JoinSet<()> {
    let mut answering = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                while answering.try_join_next().is_some() {}
                if answering.len() >= limits.max_connections {
                    if let Ok(stream) = stream.into_std() {
                        shed(stream);
                    }
                    continue;
                }
                answering.spawn(answer(stream, source.clone(), limits));
            }
            // A client that reset, or no descriptors left: that connection is lost. A
            // short pause keeps a lasting failure from spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    answering
}

/// Answer one connection: one request, its head within `request_timeout`, the whole
/// exchange within twice that.
async fn answer(stream: tokio::net::TcpStream, source: Arc<dyn Source>, limits: Limits) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let answer = route(&request, &*source);
        async move { Ok::<_, Infallible>(answer) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .max_buf_size(MAX_REQUEST_BYTES)
        .keep_alive(false)
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(2 * limits.request_timeout, connection).await;
}

/// The answer given to connections beyond `MAX_CONNECTIONS`.
const BUSY: &[u8] = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n";

/// Tell a client we are busy without waiting for it: the short answer fits the socket's
/// send buffer, and what the client has sent so far is read past (unread bytes at close
/// would make the kernel reset the connection, and the client might lose the answer).
fn shed(stream: std::net::TcpStream) {
    let _ = stream.set_nonblocking(true);
    let _ = (&stream).write_all(BUSY);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 1024];
    for _ in 0..MAX_REQUEST_BYTES / sink.len() {
        if !matches!((&stream).read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// The answer to `request`.
fn route(request: &Request<Incoming>, source: &dyn Source) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => response(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            source.prometheus(),
        ),
        (&Method::GET, "/metrics.json") => response(
            StatusCode::OK,
            "application/json",
            format!("{}\n", source.json()),
        ),
        (&Method::GET, _) => response(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics or /metrics.json\n".into(),
        ),
        _ => response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        ),
    }
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;

    /// It can live in an application's shared state (`Arc<AppState>`).
    #[test]
    fn the_server_handle_is_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        shareable::<MetricsServer>();
    }
    use std::time::Instant;

    struct Fixed;
    impl Source for Fixed {
        fn prometheus(&self) -> String {
            "x_total 1\n".into()
        }
        fn json(&self) -> Value {
            serde_json::json!({"x": 1})
        }
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        // Generous, so a regression that stops serving fails instead of hanging.
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn serves_both_formats_404_405_and_stops_when_dropped() {
        let server = serve("127.0.0.1:0".parse().unwrap(), Fixed).unwrap();
        let addr = server.local_addr();
        let text = get(addr, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 10\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nx_total 1\n"), "{text}");
        let text = get(addr, "GET /metrics.json?pretty HTTP/1.1\r\n\r\n");
        let body = text.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(serde_json::from_str::<Value>(body).unwrap()["x"], 1);
        assert!(get(addr, "GET /other HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 404"));
        assert!(get(addr, "POST /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 405"));
        drop(server);
        assert!(
            TcpStream::connect(addr).is_err(),
            "the listener closed with the server"
        );
    }

    /// Limits for the tests below: requests may take a minute, so that only the
    /// behaviour under test (not a slow machine) decides what happens.
    const PATIENT: Limits = Limits {
        request_timeout: Duration::from_secs(60),
        max_connections: 3,
    };

    /// A connection that sends a byte of a request every 50 ms and never finishes it.
    /// Returns once the server closes it, with the bytes it had sent; panics if the server
    /// had not closed it after `give_up`.
    fn trickle(addr: SocketAddr, give_up: Duration) -> usize {
        let mut s = TcpStream::connect(addr).unwrap();
        let start = Instant::now();
        let mut sent = 0;
        while start.elapsed() < give_up {
            if s.write_all(b"G").is_err() {
                return sent;
            }
            sent += 1;
            // A closed connection also shows as a readable EOF or a reset.
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 64];
            match s.read(&mut b) {
                Ok(_) => return sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return sent,
            }
            s.set_nonblocking(false).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server still reads a request that began {give_up:?} ago");
    }

    #[test]
    fn a_request_has_its_time_in_all_not_per_read() {
        // Limits: two seconds per request, the default.
        let server = serve("127.0.0.1:0".parse().unwrap(), Fixed).unwrap();
        let addr = server.local_addr();
        // A byte every 50 ms would keep a per-read timeout happy for ever.
        let t = std::thread::spawn(move || trickle(addr, Duration::from_secs(120)));
        // Meanwhile, others are served.
        assert!(get(addr, "GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 200"));
        let sent = t.join().unwrap();
        assert!(sent > 0);
    }

    #[test]
    fn slow_clients_delay_nobody_and_extra_ones_are_shed() {
        let server = serve_within("127.0.0.1:0".parse().unwrap(), Fixed, PATIENT).unwrap();
        let addr = server.local_addr();
        // Three silent clients take every serving thread (each may take a minute)...
        let silent: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // ...the next is told at once that the endpoint is busy. (It only reads: a request
        // the endpoint has not read by the time it closes would make the kernel reset the
        // connection, and the answer could be lost.)
        let mut text = String::new();
        TcpStream::connect(addr)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.starts_with("HTTP/1.0 503"), "{text}");
        // One of them sends its request: it is answered, and its thread frees.
        let mut first = &silent[0];
        first.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        first.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.0 200"), "{text}");
        // A new client is served (retrying while the freed thread finishes closing).
        let start = Instant::now();
        loop {
            let mut s = TcpStream::connect(addr).unwrap();
            let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
            let mut text = String::new();
            match s.read_to_string(&mut text) {
                Ok(_) if text.starts_with("HTTP/1.0 200") => break,
                Ok(_) => assert!(text.starts_with("HTTP/1.0 503"), "{text}"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset), // shed
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "never served again"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(silent);
    }

    #[test]
    fn long_requests_are_refused_and_serving_goes_on() {
        let server = serve("127.0.0.1:0".parse().unwrap(), Fixed).unwrap();
        let addr = server.local_addr();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        // A header line that never ends: the server stops reading past the limit.
        let line = format!(
            "GET /metrics HTTP/1.0\r\nX: {}",
            "a".repeat(4 * MAX_REQUEST_BYTES)
        );
        let _ = s.write_all(line.as_bytes()); // may fail once the server has closed
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        // (HTTP/1.1: the request line is in the head that was never read whole, so its
        // version is not known.)
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
        assert!(get(addr, "GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 200"));
    }

    #[test]
    fn stopping_does_not_wait_for_a_slow_client() {
        let server = serve_within("127.0.0.1:0".parse().unwrap(), Fixed, PATIENT).unwrap();
        let addr = server.local_addr();
        let _silent = TcpStream::connect(addr).unwrap();
        // Make sure the silent client is being served (not still in the backlog).
        assert!(get(addr, "GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 200"));
        let (done, stopped) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(server);
            let _ = done.send(());
        });
        // The silent client may keep its thread for a minute; the drop must not wait.
        stopped
            .recv_timeout(Duration::from_secs(30))
            .expect("dropping the endpoint waited for a client");
        assert!(TcpStream::connect(addr).is_err(), "the listener closed");
    }

    #[test]
    fn socket_metrics_carry_its_port() {
        let sock = Arc::new(crate::Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap());
        let port = sock.local_addr().port();
        let server = serve("127.0.0.1:0".parse().unwrap(), sock.clone()).unwrap();
        let text = get(server.local_addr(), "GET /metrics HTTP/1.0\r\n\r\n");
        let series = format!("homa_packets_sent_total{{socket=\"{port}\",type=\"data\"}} 0");
        assert!(text.contains(&series), "{text}");
        let text = get(server.local_addr(), "GET /metrics.json HTTP/1.0\r\n\r\n");
        let json: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(json["client_rpcs"], 0);
        assert_eq!(
            json["socket"], port,
            "the JSON names the socket as the text does"
        );
    }
}
