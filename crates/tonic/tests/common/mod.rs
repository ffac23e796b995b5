//! What the tonic tests share: the generated stubs, a service with every kind of call
//! (and ways to make each fail), a server to run it on, and helpers. Each test file uses
//! part of it.
#![allow(dead_code, unused_imports)]

pub use std::net::SocketAddr;
pub use std::sync::atomic::{AtomicU64, Ordering};
pub use std::sync::Arc;
pub use std::time::Duration;
pub use tokio::sync::{mpsc, oneshot, Notify};
pub use tokio_stream::wrappers::ReceiverStream;
pub use tokio_stream::StreamExt;
pub use tonic::codec::CompressionEncoding;
pub use tonic::{Code, Request, Response, Status, Streaming};

pub mod helloworld {
    tonic::include_proto!("helloworld");
}
pub mod numbers {
    tonic::include_proto!("numbers");
}
pub use helloworld::greeter_client::GreeterClient;
pub use helloworld::greeter_server::{Greeter, GreeterServer};
pub use helloworld::{HelloReply, HelloRequest};
pub use numbers::numbers_client::NumbersClient;
pub use numbers::numbers_server::{Numbers, NumbersServer};
pub use numbers::{Blob, Number, Range};

/// Generous: an outcome that takes longer than this has failed.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct Hello;

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let who = req
            .metadata()
            .get("x-who")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nobody")
            .to_string();
        let peer = req.extensions().get::<homa_tonic::Peer>().is_some();
        let mut resp = Response::new(HelloReply {
            message: format!(
                "Hello {}! (asked by {who}, peer known: {peer})",
                req.into_inner().name
            ),
        });
        resp.metadata_mut()
            .insert("x-served-by", "homa".parse().unwrap());
        Ok(resp)
    }
}

/// The test service. `cancelled` fires when a response stream finds its client gone;
/// `produced` counts the numbers `count` calls have put in their response streams;
/// `sum_started` when a `sum` call has its first number; a `sum` call whose first number
/// is 0 reads no further until `sum_release`; `sum_abandoned` when a `sum`
/// call ends without the end of its request stream (the stream failed, or the server
/// dropped the handler). Clones share them: a test keeps one beside the server's.
#[derive(Default, Clone)]
pub struct Nums {
    pub cancelled: Arc<Notify>,
    pub produced: Arc<AtomicU64>,
    pub sum_started: Arc<Notify>,
    pub sum_release: Arc<Notify>,
    pub sum_abandoned: Arc<Notify>,
    pub echo_waiting: Arc<Notify>,
    pub echo_abandoned: Arc<Notify>,
}

/// Fires its `Notify` when dropped, unless disarmed: a handler that never finished.
pub struct Unfinished(Option<Arc<Notify>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(n) = self.0.take() {
            n.notify_one();
        }
    }
}

/// A response stream of `from..=to` that pauses (pending, and woken at once) after each
/// half, then panics. tonic sends each run of ready messages as one frame, so the panic
/// comes after frames already taken from it.
pub struct Panicky {
    steps: std::collections::VecDeque<Option<u64>>,
}

impl Panicky {
    pub fn new(from: u64, to: u64) -> Panicky {
        let mid = from + (to - from) / 2;
        let mut steps: std::collections::VecDeque<_> = (from..=mid).map(Some).collect();
        steps.push_back(None);
        steps.extend((mid + 1..=to).map(Some));
        steps.push_back(None);
        Panicky { steps }
    }
}

impl tokio_stream::Stream for Panicky {
    type Item = Result<Number, Status>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match self.steps.pop_front() {
            Some(Some(value)) => std::task::Poll::Ready(Some(Ok(Number { value }))),
            Some(None) => {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
            None => panic!("the test response stream panics, as asked"),
        }
    }
}

pub type NumberStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Number, Status>> + Send>>;

#[tonic::async_trait]
impl Numbers for Nums {
    async fn echo(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        let b = req.into_inner();
        if b.delay_ms > 0 {
            let mut unfinished = Unfinished(Some(self.echo_abandoned.clone()));
            self.echo_waiting.notify_one();
            tokio::time::sleep(Duration::from_millis(b.delay_ms.into())).await;
            unfinished.0 = None;
        }
        if b.panic {
            panic!("the test handler panics, as asked");
        }
        if b.fail == Code::OutOfRange as i32 {
            // A status too long for any Homa message.
            return Err(Status::out_of_range("x".repeat(1_200_000)));
        }
        if b.fail != 0 {
            let mut s = Status::new(Code::from(b.fail), "failed as asked");
            s.metadata_mut()
                .insert("x-why", "the test said so".parse().unwrap());
            return Err(s);
        }
        Ok(Response::new(b))
    }

    type CountStream = NumberStream;
    async fn count(&self, req: Request<Range>) -> Result<Response<NumberStream>, Status> {
        let Range {
            from,
            to,
            fail,
            panic,
        } = req.into_inner();
        if panic {
            return Ok(Response::new(Box::pin(Panicky::new(from, to))));
        }
        let (tx, rx) = mpsc::channel(4);
        let cancelled = self.cancelled.clone();
        let produced = self.produced.clone();
        tokio::spawn(async move {
            for value in from..=to {
                if tx.send(Ok(Number { value })).await.is_err() {
                    cancelled.notify_one();
                    return;
                }
                produced.fetch_add(1, Ordering::Relaxed);
            }
            if fail != 0 {
                let mut s = Status::new(Code::from(fail), "the stream fails as asked");
                s.metadata_mut()
                    .insert("x-why", "a trailer".parse().unwrap());
                let _ = tx.send(Err(s)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn sum(&self, req: Request<Streaming<Number>>) -> Result<Response<Number>, Status> {
        let mut unfinished = Unfinished(Some(self.sum_abandoned.clone()));
        let mut s = req.into_inner();
        let mut value = 0;
        loop {
            match s.message().await {
                Ok(Some(n)) => {
                    if value == 0 {
                        self.sum_started.notify_one();
                        if n.value == 0 {
                            self.sum_release.notified().await;
                        }
                    }
                    value += n.value;
                }
                Ok(None) => break,
                Err(e) => return Err(e),
            }
        }
        unfinished.0 = None;
        Ok(Response::new(Number { value }))
    }

    type DoubleStream = NumberStream;
    async fn double(
        &self,
        req: Request<Streaming<Number>>,
    ) -> Result<Response<NumberStream>, Status> {
        let s = req.into_inner();
        Ok(Response::new(Box::pin(
            s.map(|n| n.map(|n| Number { value: n.value * 2 })),
        )))
    }

    type ReflectStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Blob, Status>> + Send>>;
    /// Each blob back; a first blob that asks to fail with ABORTED instead drops the
    /// request stream and answers three empty blobs, then keeps the call open.
    async fn reflect(
        &self,
        req: Request<Streaming<Blob>>,
    ) -> Result<Response<Self::ReflectStream>, Status> {
        let mut s = req.into_inner();
        let Some(first) = s.message().await? else {
            return Ok(Response::new(Box::pin(tokio_stream::empty())));
        };
        if first.fail == Code::Aborted as i32 {
            drop(s);
            let three = tokio_stream::iter(vec![Ok(Blob::default()); 3]);
            return Ok(Response::new(Box::pin(
                three.chain(tokio_stream::pending()),
            )));
        }
        let rest = tokio_stream::once(Ok(first)).chain(s);
        Ok(Response::new(Box::pin(rest)))
    }
}

/// A server of [`Nums`] and the greeter; its service's signals (`server.sum_started`...)
/// are read through it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<Result<(), homa::RecvError>>,
    pub signals: Nums,
}

impl std::ops::Deref for TestServer {
    type Target = Nums;
    fn deref(&self) -> &Nums {
        &self.signals
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(homa::Options {
            server: Some(true),
            ..Default::default()
        })
        .await
    }

    pub async fn start_with(opts: homa::Options) -> TestServer {
        TestServer::start_with_grace(opts, homa_tonic::SHUTDOWN_GRACE).await
    }

    /// A server whose stop ends every call at once (a server going away).
    pub async fn start_abrupt() -> TestServer {
        let opts = homa::Options {
            server: Some(true),
            ..Default::default()
        };
        TestServer::start_with_grace(opts, Duration::ZERO).await
    }

    pub async fn start_with_grace(opts: homa::Options, grace: Duration) -> TestServer {
        TestServer::start_at("127.0.0.1:0".parse().unwrap(), opts, grace).await
    }

    /// On `addr` (a port a stopped server had, say).
    pub async fn start_at(addr: SocketAddr, opts: homa::Options, grace: Duration) -> TestServer {
        let signals = Nums::default();
        let nums = signals.clone();
        let routes = homa_tonic::Server::builder()
            .add_service(GreeterServer::new(Hello))
            .add_service(
                NumbersServer::new(nums)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .send_compressed(CompressionEncoding::Gzip),
            )
            .into_routes();
        let sock = homa::aio::Socket::bind_with(addr, opts).await.unwrap();
        let addr = sock.local_addr();
        let (stop, stopped) = oneshot::channel();
        let stopped = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(homa_tonic::serve_with_grace(sock, routes, stopped, grace));
        TestServer {
            addr,
            stop: Some(stop),
            task,
            signals,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }

    pub async fn numbers(&self) -> NumbersClient<homa_tonic::Channel> {
        NumbersClient::new(homa_tonic::Channel::connect(self.addr).await.unwrap())
    }
}

/// A `Count` stream that never ends by itself.
pub async fn endless_count(client: &mut NumbersClient<homa_tonic::Channel>) -> Streaming<Number> {
    within(client.count(Range {
        from: 0,
        to: u64::MAX,
        ..Default::default()
    }))
    .await
    .unwrap()
    .into_inner()
}

/// Reads `s` until it ends or fails, within the patience: how it ended.
pub async fn drain_to_end(s: &mut Streaming<Number>) -> Result<Option<Number>, Status> {
    within(async {
        loop {
            match s.message().await {
                Ok(Some(_)) => {}
                other => return other,
            }
        }
    })
    .await
}

pub async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .expect("no outcome within the test's patience")
}

/// Blobs of these lengths, each filled with its index.
pub fn blobs(lengths: &[usize]) -> Vec<Blob> {
    lengths
        .iter()
        .enumerate()
        .map(|(i, &len)| Blob {
            data: vec![i as u8; len],
            ..Default::default()
        })
        .collect()
}
