//! Calls that used to go wrong: streams of long messages behind short ones, channels
//! sharing a socket, a dropped `serve`, tonic's `Routes` and interceptors, request
//! metadata too long for Homa, and a request stream its handler dropped.

mod common;
use common::*;

/// A long message right behind a short one, both ways: tonic packs both into one data
/// frame, which used to be taken for one message too long for Homa (RESOURCE_EXHAUSTED,
/// nothing delivered), though each fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_messages_behind_short_ones_in_a_stream_both_ways() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    for lengths in [
        &[20_000, 990_000][..],
        &[10, 990_000],
        &[990_000, 990_000],
        &[100, 200, 300, 990_000, 5, 990_000, 7],
    ] {
        let sent = blobs(lengths);
        let back = within(async {
            let mut s = client
                .reflect(tokio_stream::iter(sent.clone()))
                .await?
                .into_inner();
            let mut back = Vec::new();
            while let Some(b) = s.message().await? {
                back.push(b);
            }
            Ok::<_, Status>(back)
        })
        .await
        .unwrap_or_else(|e| panic!("{lengths:?}: {e:?}"));
        assert_eq!(back, sent, "{lengths:?}");
    }
    server.stop().await;
}

/// Channels sharing one socket (`Channel::with_socket`) keep their calls apart: each
/// counted its call ids from 1, the server knows a call by (client, id), and two
/// overlapping calls cancelled each other or took each other's batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_sharing_a_socket_keep_their_calls_apart() {
    let server = TestServer::start().await;
    let sock = homa::aio::Socket::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let channel = || homa_tonic::Channel::with_socket(sock.clone(), server.addr);
    let (mut a, mut b) = (NumbersClient::new(channel()), NumbersClient::new(channel()));
    // Unary calls that wait at the server, overlapping.
    let slow = |data: u8| Blob {
        data: vec![data; 10],
        delay_ms: 300,
        ..Default::default()
    };
    let (ra, rb) = within(async { tokio::join!(a.echo(slow(1)), b.echo(slow(2))) }).await;
    assert_eq!(ra.unwrap().into_inner().data, vec![1; 10]);
    assert_eq!(rb.unwrap().into_inner().data, vec![2; 10]);
    // Streams, overlapping, each read to its end.
    let count = |mut c: NumbersClient<homa_tonic::Channel>, from: u64| async move {
        let mut s = c
            .count(Range {
                from,
                to: from + 9_999,
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut got = Vec::new();
        while let Some(n) = s.message().await? {
            got.push(n.value);
        }
        Ok::<_, Status>(got)
    };
    let (sa, sb) = within(async { tokio::join!(count(a, 0), count(b, 1_000_000)) }).await;
    assert_eq!(sa.unwrap(), (0..10_000).collect::<Vec<_>>());
    assert_eq!(sb.unwrap(), (1_000_000..1_010_000).collect::<Vec<_>>());
    server.stop().await;
}

/// A `serve` whose future is dropped (a `select!` against Ctrl-C, an aborted task) ends
/// its calls and closes its socket: new calls fail at once instead of waiting on a port
/// still bound and unserved, and the port can be bound again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_serve_ends_its_calls_and_frees_its_port() {
    let server = TestServer::start().await;
    let mut streaming = server.numbers().await;
    let mut s = endless_count(&mut streaming).await;
    assert_eq!(within(s.message()).await.unwrap().unwrap().value, 0);
    server.task.abort();
    let _ = server.task.await;
    let err = drain_to_end(&mut s).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let mut late = NumbersClient::new(homa_tonic::Channel::connect(server.addr).await.unwrap());
    let err = within(late.echo(Blob::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let opts = homa::Options {
        server: Some(true),
        ..Default::default()
    };
    within(async {
        // The engine lets go of the port as its socket closes, moments after.
        while homa::aio::Socket::bind_with(server.addr, opts.clone())
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// `Server::add_routes` with tonic's `Routes` (it panicked: every `Routes` brings a
/// fallback, and two cannot merge), and `add_service` with a service behind an
/// interceptor (refused at compile time: its response type is not tonic's body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_intercepted_services_are_served() {
    fn needs_token(req: Request<()>) -> Result<Request<()>, Status> {
        match req.metadata().get("x-token") {
            Some(t) if t == "let-me-in" => Ok(req),
            _ => Err(Status::unauthenticated("no token")),
        }
    }
    let mut builder = tonic::service::RoutesBuilder::default();
    builder.add_service(GreeterServer::new(Hello));
    let routes = homa_tonic::Server::builder()
        .add_service(NumbersServer::with_interceptor(
            Nums::default(),
            needs_token,
        ))
        .add_routes(builder.routes())
        .into_routes();
    let sock = homa::aio::Socket::bind_with(
        "127.0.0.1:0".parse().unwrap(),
        homa::Options {
            server: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let addr = sock.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(homa_tonic::serve(sock, routes, async {
        let _ = stopped.await;
    }));
    let channel = homa_tonic::Channel::connect(addr).await.unwrap();
    let reply = within(GreeterClient::new(channel.clone()).say_hello(HelloRequest {
        name: "routes".into(),
    }))
    .await
    .unwrap();
    assert!(reply.into_inner().message.starts_with("Hello routes!"));
    let mut numbers = NumbersClient::new(channel);
    let err = within(numbers.echo(Blob::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let mut req = Request::new(Blob {
        data: vec![3; 3],
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-token", "let-me-in".parse().unwrap());
    assert_eq!(
        within(numbers.echo(req)).await.unwrap().into_inner().data,
        vec![3; 3]
    );
    stop.send(()).unwrap();
    within(task).await.unwrap().unwrap();
}

/// Request metadata too long for one Homa message is RESOURCE_EXHAUSTED, as a message
/// too long is, whether or not a request message is ready at the OPEN (with none, it was
/// UNAVAILABLE, a code clients retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_metadata_too_long_for_homa_is_resource_exhausted() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let (_tx, rx) = mpsc::channel::<Number>(1);
    let mut req = Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("x-big", "x".repeat(1_200_000).parse().unwrap());
    let err = within(client.sum(req)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("Homa's maximum"), "{err:?}");
    // A unary call says it is the metadata that is too long, not its short message.
    let mut req = Request::new(Blob {
        data: vec![1; 5],
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-big", "x".repeat(1_200_000).parse().unwrap());
    let err = within(client.echo(req)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("metadata") && err.message().contains("Homa's maximum"),
        "{err:?}"
    );
    server.stop().await;
}

/// A handler that drops its request stream and goes on answering: the client stops
/// sending (each further SEND is refused) instead of draining its whole request stream
/// into refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stream_the_handler_dropped_stops_being_sent() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let taken = Arc::new(AtomicU64::new(0));
    let counter = taken.clone();
    let first = Blob {
        fail: Code::Aborted as i32,
        ..Default::default()
    };
    // Endless: as fast as the client's pump takes it.
    let rest = tokio_stream::iter(0u64..).map(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
        Blob::default()
    });
    let mut answers = within(client.reflect(tokio_stream::once(first).chain(rest)))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        within(answers.message()).await.unwrap().unwrap();
    }
    // The pump stops: the count settles (a few batches at most) well within the patience.
    let settled = within(async {
        let mut last = taken.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = taken.load(Ordering::Relaxed);
            if now == last {
                return now;
            }
            last = now;
        }
    })
    .await;
    assert!(settled < 1_000_000, "{settled} request messages taken");
    drop(answers);
    server.stop().await;
}
