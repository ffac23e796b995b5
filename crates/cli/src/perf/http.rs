//! A tiny HTTP/1.0 responder for the metrics endpoint: `GET /metrics` (Prometheus text) and
//! `GET /metrics.json`. One thread, one request per connection, `Connection: close`:
//! enough for a scraper or curl, and no HTTP stack in the dependency tree.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// What the endpoint serves.
pub trait MetricsSource: Send + Sync + 'static {
    /// Prometheus text exposition.
    fn prometheus(&self) -> String;
    /// The same metrics as JSON.
    fn json(&self) -> serde_json::Value;
}

/// Binds `addr` and serves metrics from `source` on a background thread.
pub fn spawn(addr: SocketAddr, source: Arc<dyn MetricsSource>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("perf-metrics-http".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                // A misbehaving client only loses its own response.
                let _ = serve(stream, &*source);
            }
        })?;
    Ok(local)
}

fn serve(stream: TcpStream, source: &dyn MetricsSource) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers (bounded), so the client sees its request consumed.
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
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
    let mut out = stream;
    write!(
        out,
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

/// Fetches `path` from a local endpoint (for tests and `homa perf server`'s self-check).
pub fn get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    io::Read::read_to_string(&mut s, &mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl MetricsSource for Fixed {
        fn prometheus(&self) -> String {
            "x_total 1\n".into()
        }
        fn json(&self) -> serde_json::Value {
            serde_json::json!({"x": 1})
        }
    }

    #[test]
    fn serves_both_formats_and_404() {
        let addr = spawn("127.0.0.1:0".parse().unwrap(), Arc::new(Fixed)).unwrap();
        assert_eq!(get(addr, "/metrics").unwrap(), (200, "x_total 1\n".into()));
        let (code, body) = get(addr, "/metrics.json").unwrap();
        assert_eq!(code, 200);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["x"],
            1
        );
        assert_eq!(get(addr, "/nope").unwrap().0, 404);
    }
}
