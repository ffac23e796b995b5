//! A minimal HTTP endpoint for metrics: `GET /metrics` (Prometheus text) and
//! `GET /metrics.json`, served by one background thread, one request per connection.
//! Enough for a Prometheus scraper, `curl` or `homa metrics`, without an HTTP stack in
//! the dependency tree.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// How long a client may take to send its request before the endpoint gives up on it
/// (the endpoint answers one connection at a time).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What a metrics endpoint serves, computed afresh for every request.
///
/// Implemented by [`Socket`](crate::Socket) and [`tokio::Socket`](crate::tokio::Socket)
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

impl Source for crate::Socket {
    fn prometheus(&self) -> String {
        socket_prometheus(self.local_addr(), &self.metrics())
    }
    fn json(&self) -> Value {
        super::to_json(&self.metrics())
    }
}

#[cfg(feature = "tokio")]
impl Source for crate::tokio::Socket {
    fn prometheus(&self) -> String {
        socket_prometheus(self.local_addr(), &self.metrics())
    }
    fn json(&self) -> Value {
        super::to_json(&self.metrics())
    }
}

/// A running metrics endpoint (see [`serve`]). Dropping it stops the endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address the endpoint listens on (with the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accepting thread with a connection of our own; it sees the flag.
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let woke =
            TcpStream::connect_timeout(&SocketAddr::new(ip, self.addr.port()), REQUEST_TIMEOUT);
        if let (Ok(_), Some(t)) = (woke, self.thread.take()) {
            let _ = t.join();
        }
    }
}

/// Serve `source`'s metrics over HTTP at `addr` from a background thread:
/// `GET /metrics` answers Prometheus text, `GET /metrics.json` JSON. Read them with
/// `homa metrics ADDR`, `curl`, or a Prometheus scrape job.
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
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("homa-metrics".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    // A misbehaving client only loses its own answer.
                    if let Ok(s) = stream {
                        let _ = answer(s, &source);
                    }
                }
            })?
    };
    Ok(MetricsServer {
        addr,
        stop,
        thread: Some(thread),
    })
}

fn answer(stream: TcpStream, source: &dyn Source) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read the headers (a bounded number), so the client sees its request consumed.
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", source.prometheus()),
        ("GET", "/metrics.json") => ("200 OK", "application/json", format!("{}\n", source.json())),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /metrics.json\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    // One write: the whole answer in as few segments as it takes.
    let answer = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    (&stream).write_all(answer.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

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
    }
}
