//! What the load generators need from a transport, so Homa and TCP run the same code.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use homa::Bytes;

/// Which transport a measurement runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Proto {
    /// Homa over UDP (the `homa` runtime).
    Homa,
    /// Length-prefixed messages over TCP_NODELAY connections.
    Tcp,
    /// Unary gRPC calls through tonic over Homa (`homa-tonic`).
    GrpcHoma,
    /// Unary gRPC calls through tonic over HTTP/2 (tonic's transport, TCP).
    GrpcH2,
}

impl Proto {
    /// Lower-case name, as in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Homa => "homa",
            Self::Tcp => "tcp",
            Self::GrpcHoma => "grpc_homa",
            Self::GrpcH2 => "grpc_h2",
        }
    }
}

/// `--proto`: one transport or both, back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ProtoChoice {
    /// Homa only.
    Homa,
    /// TCP only.
    Tcp,
    /// Homa and TCP: a client runs Homa, then TCP; a server serves both at once.
    Both,
    /// gRPC (tonic) over Homa only.
    GrpcHoma,
    /// gRPC (tonic) over HTTP/2 only.
    GrpcH2,
}

impl ProtoChoice {
    /// The transports to run, in order.
    pub fn protos(self) -> &'static [Proto] {
        match self {
            Self::Homa => &[Proto::Homa],
            Self::Tcp => &[Proto::Tcp],
            Self::Both => &[Proto::Homa, Proto::Tcp],
            Self::GrpcHoma => &[Proto::GrpcHoma],
            Self::GrpcH2 => &[Proto::GrpcH2],
        }
    }
}

/// A client that can issue many concurrent RPCs to one perf server.
pub trait RpcClient: Send + Sync + 'static {
    /// Sends `request` (a perf request, see [`crate::header`]) and waits for the response;
    /// returns the response's length in bytes. The request is shared, not copied: Homa
    /// sends from it directly, as an application handing over `Bytes` would.
    fn call(&self, request: Bytes) -> impl Future<Output = io::Result<usize>> + Send;

    /// Homa clients: the counters of the client's socket (for the packets it exchanged).
    fn homa_metrics(&self) -> Option<homa::Metrics> {
        None
    }

    /// Homa clients: the system calls and wake-ups of the client's socket.
    fn homa_io(&self) -> Option<homa::IoCounts> {
        None
    }

    /// Transport counters worth printing when RPCs failed (Homa: the endpoint's metrics).
    fn diagnostics(&self) -> Option<String> {
        None
    }

    /// The length of the response a perf server of this transport gives to a request
    /// whose header asks for `asked` bytes (responses are cut to what one message holds).
    fn response_len(&self, asked: usize) -> usize {
        asked.min(crate::workload::MAX_MESSAGE_LENGTH)
    }
}

/// [`RpcClient::call`], failing unless the response is as long as the request asked
/// (`asked` bytes): anything else is not a perf server of this transport answering (a
/// server of another `--proto` may well answer with an error of its own, which must not
/// count as a round trip).
pub async fn checked_call<C: RpcClient>(
    client: &C,
    request: Bytes,
    asked: usize,
) -> io::Result<usize> {
    let got = client.call(request).await?;
    let want = client.response_len(asked);
    if got == want {
        Ok(got)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a response of {got} bytes where {want} were asked for: is the server a \
                 `homa perf server` started with the same --proto?"
            ),
        ))
    }
}

/// Sends `buf` as a request without copying it: lends it to `client.call` as `Bytes` and
/// takes the allocation back afterwards if nothing else holds it any more (else `buf`
/// becomes a fresh zeroed buffer of the same length). The caller writes the perf header
/// before each call, asking for `response_len` bytes back (see [`checked_call`]).
pub async fn call_lending<C: RpcClient>(
    client: &C,
    buf: &mut Vec<u8>,
    response_len: usize,
) -> io::Result<usize> {
    let len = buf.len();
    call_lending_prefix(client, buf, len, response_len).await
}

/// [`call_lending`] with only the first `len` bytes of `buf` as the request (`buf` may be
/// longer: a pooled buffer of a size class); `buf` comes back at its whole length.
pub async fn call_lending_prefix<C: RpcClient>(
    client: &C,
    buf: &mut Vec<u8>,
    len: usize,
    response_len: usize,
) -> io::Result<usize> {
    let whole = Bytes::from(std::mem::take(buf));
    let request = whole.slice(..len.min(whole.len()));
    let result = checked_call(client, request, response_len).await;
    *buf = match whole.try_into_mut() {
        Ok(b) => b.into(),
        Err(shared) => vec![0u8; shared.len()],
    };
    result
}

/// Picks which of `n` servers the next RPC goes to: uniformly at random (a SplitMix64 hash
/// of a counter), so several clients spread their load without coordinating and a run is
/// the same every time.
#[derive(Debug)]
pub struct ServerPicker {
    n: usize,
    next: AtomicU64,
}

impl ServerPicker {
    /// A picker over `n` servers (`n` at least 1).
    pub fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            next: AtomicU64::new(0),
        }
    }

    /// The next server's index, in `0..n`.
    pub fn pick(&self) -> usize {
        if self.n == 1 {
            return 0;
        }
        let mut z = self
            .next
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % self.n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers every call with the request's length, keeping the request if asked to.
    struct Fake {
        keep: bool,
        kept: Mutex<Vec<Bytes>>,
    }

    impl Fake {
        fn new(keep: bool) -> Fake {
            Fake {
                keep,
                kept: Mutex::new(Vec::new()),
            }
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    impl RpcClient for Fake {
        async fn call(&self, request: Bytes) -> io::Result<usize> {
            let n = request.len();
            if self.keep {
                self.kept.lock().unwrap().push(request);
            }
            Ok(n)
        }
    }

    #[test]
    fn lent_requests_come_back_without_copies_unless_still_held() {
        let rt = runtime();
        let free = Fake::new(false);
        let mut buf = vec![7u8; 1000];
        let ptr = buf.as_ptr();
        assert_eq!(
            rt.block_on(call_lending(&free, &mut buf, 1000)).unwrap(),
            1000
        );
        assert_eq!(buf.as_ptr(), ptr, "the same allocation came back");
        assert!(buf.iter().all(|&b| b == 7));
        let held = Fake::new(true);
        rt.block_on(call_lending(&held, &mut buf, 1000)).unwrap();
        assert_eq!(buf.len(), 1000);
        assert_ne!(buf.as_ptr(), ptr, "still shared: a fresh buffer instead");
        assert!(held.kept.lock().unwrap()[0].iter().all(|&b| b == 7));
    }

    /// A response of another length than asked is not a round trip of a perf server (a
    /// server of another `--proto` answering with an error of its own): an error that
    /// says so, whatever the transport returned.
    #[test]
    fn a_response_of_the_wrong_length_is_an_error() {
        let rt = runtime();
        let echo = Fake::new(false); // answers with the request's length
        let err = rt
            .block_on(checked_call(&echo, Bytes::from(vec![0u8; 100]), 5_000))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let text = err.to_string();
        assert!(
            text.contains("100 bytes where 5000 were asked for") && text.contains("--proto"),
            "{text}"
        );
        // Asked for more than a message holds: the server's cut length is right.
        let big = Bytes::from(vec![0u8; crate::workload::MAX_MESSAGE_LENGTH]);
        assert!(rt.block_on(checked_call(&echo, big, usize::MAX)).is_ok());
    }

    #[test]
    fn a_lent_prefix_is_the_request_and_the_whole_buffer_comes_back() {
        let rt = runtime();
        let held = Fake::new(true);
        let mut buf = vec![7u8; 1000];
        assert_eq!(
            rt.block_on(call_lending_prefix(&held, &mut buf, 600, 600))
                .unwrap(),
            600
        );
        assert_eq!(held.kept.lock().unwrap()[0].len(), 600);
        assert_eq!(
            buf.len(),
            1000,
            "still shared: a fresh buffer of the whole length"
        );
        let free = Fake::new(false);
        let ptr = buf.as_ptr();
        assert_eq!(
            rt.block_on(call_lending_prefix(&free, &mut buf, 10, 10))
                .unwrap(),
            10
        );
        assert_eq!(
            (buf.len(), buf.as_ptr()),
            (1000, ptr),
            "the same allocation, whole"
        );
    }

    #[test]
    fn picker_spreads_evenly_over_servers() {
        let p = ServerPicker::new(3);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[p.pick()] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(ServerPicker::new(1).pick(), 0);
    }
}
