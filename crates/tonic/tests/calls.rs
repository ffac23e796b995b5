//! Every kind of gRPC call through tonic-generated stubs over Homa on loopback, and the
//! ways calls end: statuses, deadlines, cancellation, panics, a vanished server, bad bytes.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_connects_to_an_address_given_as_text() {
    let server = TestServer::start().await;
    let text = format!("127.0.0.1:{}", server.addr.port());
    let mut client = GreeterClient::new(homa_tonic::Channel::connect(text.as_str()).await.unwrap());
    let reply = within(client.say_hello(HelloRequest {
        name: "text".into(),
    }))
    .await;
    assert!(reply
        .unwrap()
        .into_inner()
        .message
        .starts_with("Hello text!"));
    // Text that is no address says so (no lookup is made: it has no port).
    let err = homa_tonic::Channel::connect("no port here")
        .await
        .unwrap_err();
    assert!(
        matches!(err, homa_tonic::ConnectError::Resolve(_)),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("resolving the server's address"),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_with_metadata_both_ways() {
    let server = TestServer::start().await;
    let channel = homa_tonic::Channel::connect(server.addr).await.unwrap();
    let mut client = GreeterClient::new(channel);
    let mut req = Request::new(HelloRequest {
        name: "Homa".into(),
    });
    req.metadata_mut()
        .insert("x-who", "the test".parse().unwrap());
    let resp = within(client.say_hello(req)).await.unwrap();
    assert_eq!(resp.metadata().get("x-served-by").unwrap(), "homa");
    assert_eq!(
        resp.into_inner().message,
        "Hello Homa! (asked by the test, peer known: true)"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let mut s = within(client.count(Range {
        from: 1,
        to: 5000,
        ..Default::default()
    }))
    .await
    .unwrap()
    .into_inner();
    let mut expect = 1;
    while let Some(n) = within(s.message()).await.unwrap() {
        assert_eq!(n.value, expect);
        expect += 1;
    }
    assert_eq!(expect, 5001);
    server.stop().await;
}

/// Waits (up to the test's patience) until `counter` reaches `n`.
async fn reaches(counter: &AtomicU64, n: u64) {
    within(async {
        while counter.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
}

/// The server reads a response stream ahead while its client holds no PULL: a handler
/// writing through a short channel is not held to a few messages per round trip (it
/// was, and streamed small messages at a twentieth of HTTP/2's rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_stream_is_read_ahead_between_pulls() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let mut s = within(client.count(Range {
        from: 1,
        to: 200,
        ..Default::default()
    }))
    .await
    .unwrap()
    .into_inner();
    assert_eq!(within(s.message()).await.unwrap().unwrap().value, 1);
    // The handler's channel holds 4; the rest must have gone into the next batch while
    // this client reads nothing.
    reaches(&server.produced, 200).await;
    let mut expect = 2;
    while let Some(n) = within(s.message()).await.unwrap() {
        assert_eq!(n.value, expect);
        expect += 1;
    }
    assert_eq!(expect, 201);
    server.stop().await;
}

/// The client reads a request stream ahead while its last SEND waits for the handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stream_is_read_ahead_while_the_handler_waits() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let (tx, rx) = mpsc::channel(1);
    let sent = Arc::new(AtomicU64::new(0));
    let count = sent.clone();
    tokio::spawn(async move {
        for value in 0..=200u64 {
            tx.send(Number { value }).await.unwrap();
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    let call = tokio::spawn(async move { client.sum(ReceiverStream::new(rx)).await });
    // The handler took its first number, 0, and reads no further until released.
    within(server.sum_started.notified()).await;
    reaches(&sent, 201).await;
    server.sum_release.notify_one();
    let sum = within(call).await.unwrap().unwrap();
    assert_eq!(sum.into_inner().value, 200 * 201 / 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_streaming_from_a_slow_writer() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for value in 1..=300u64 {
            if value % 50 == 0 {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tx.send(Number { value }).await.unwrap();
        }
    });
    let sum = within(client.sum(ReceiverStream::new(rx))).await.unwrap();
    assert_eq!(sum.into_inner().value, 300 * 301 / 2);
    // A request stream that is all there at once goes in the OPEN.
    let all = tokio_stream::iter((1..=10u64).map(|value| Number { value }));
    assert_eq!(
        within(client.sum(all)).await.unwrap().into_inner().value,
        55
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_ping_pong() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let (tx, rx) = mpsc::channel(1);
    let mut answers = within(client.double(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    // Each number waits for the answer to the one before: the mapping must not hold
    // messages back waiting for more.
    for value in 1..=20u64 {
        tx.send(Number { value }).await.unwrap();
        let n = within(answers.message()).await.unwrap().unwrap();
        assert_eq!(n.value, value * 2);
    }
    drop(tx);
    assert!(within(answers.message()).await.unwrap().is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_trailers_round_trip() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let err = within(client.echo(Blob {
        fail: Code::NotFound as i32,
        ..Default::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "failed as asked");
    assert_eq!(err.metadata().get("x-why").unwrap(), "the test said so");
    // A status after response messages travels in the trailers.
    let mut s = within(client.count(Range {
        from: 1,
        to: 3,
        fail: Code::DataLoss as i32,
        ..Default::default()
    }))
    .await
    .unwrap()
    .into_inner();
    for expect in 1..=3 {
        assert_eq!(within(s.message()).await.unwrap().unwrap().value, expect);
    }
    let err = within(s.message()).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss);
    assert_eq!(err.message(), "the stream fails as asked");
    assert_eq!(err.metadata().get("x-why").unwrap(), "a trailer");
    // Another service on the same server, through another channel.
    let mut hello = GreeterClient::new(homa_tonic::Channel::connect(server.addr).await.unwrap());
    let ok = within(hello.say_hello(HelloRequest { name: "x".into() })).await;
    assert!(ok.is_ok());
    server.stop().await;
}

/// A status whose message does not fit in a Homa message ends the call with
/// RESOURCE_EXHAUSTED: the reply used to be dropped, and the client, hearing nothing,
/// timed out as if the server had gone (UNAVAILABLE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_too_long_for_homa_is_resource_exhausted() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let err = within(client.echo(Blob {
        fail: Code::OutOfRange as i32,
        ..Default::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("maximum message length"), "{err:?}");
    // The server goes on serving.
    assert!(within(client.echo(Blob::default())).await.is_ok());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_unimplemented() {
    let server = TestServer::start().await;
    // A server with only the greeter...
    let routes = homa_tonic::Server::builder()
        .add_service(GreeterServer::new(Hello))
        .into_routes();
    let opts = homa::Options {
        server: Some(true),
        ..Default::default()
    };
    let sock = homa::aio::Socket::bind_with("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap();
    let addr = sock.local_addr();
    let task = tokio::spawn(homa_tonic::serve(sock, routes, std::future::pending()));
    // ...asked for a numbers method.
    let mut client = NumbersClient::new(homa_tonic::Channel::connect(addr).await.unwrap());
    let err = within(client.echo(Blob::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    task.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_exceeded() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let mut req = Request::new(Blob {
        delay_ms: 60_000,
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(200));
    let err = within(client.echo(req)).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    // The server is still fine.
    let ok = within(client.echo(Blob {
        data: b"after".to_vec(),
        ..Default::default()
    }))
    .await;
    assert_eq!(ok.unwrap().into_inner().data, b"after");
    // A stream's deadline ends the stream.
    let mut req = Request::new(Range {
        from: 0,
        to: u64::MAX,
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(300));
    let mut s = within(client.count(req)).await.unwrap().into_inner();
    let end = drain_to_end(&mut s).await;
    assert_eq!(end.unwrap_err().code(), Code::DeadlineExceeded);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cancels_mid_stream_and_the_server_sees_it() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let mut s = endless_count(&mut client).await;
    for expect in 0..3 {
        assert_eq!(within(s.message()).await.unwrap().unwrap().value, expect);
    }
    drop(s);
    within(server.cancelled.notified()).await;

    // And a request stream: once the handler has a number, the client gives up; the
    // handler's request stream fails or the handler is dropped.
    let (tx, rx) = mpsc::channel(1);
    tx.send(Number { value: 1 }).await.unwrap();
    let call = tokio::spawn(async move { client.sum(ReceiverStream::new(rx)).await });
    within(server.sum_started.notified()).await;
    call.abort();
    within(server.sum_abandoned.notified()).await;
    drop(tx);

    // And a unary call whose handler waits: dropping the call drops the handler.
    let mut client = server.numbers().await;
    let call = tokio::spawn(async move {
        client
            .echo(Blob {
                delay_ms: 60_000,
                ..Default::default()
            })
            .await
    });
    within(server.echo_waiting.notified()).await;
    call.abort();
    within(server.echo_abandoned.notified()).await;
    server.stop().await;
}

/// A response stream that panics after messages: the messages arrive, then `INTERNAL`
/// (those read ahead into a batch were dropped with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_panics_delivers_what_it_produced_first() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let mut s = within(client.count(Range {
        from: 1,
        to: 10,
        panic: true,
        ..Default::default()
    }))
    .await
    .unwrap()
    .into_inner();
    for expect in 1..=10 {
        assert_eq!(within(s.message()).await.unwrap().unwrap().value, expect);
    }
    let err = within(s.message()).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    // And the server goes on serving.
    let all = tokio_stream::iter((1..=4u64).map(|value| Number { value }));
    assert_eq!(
        within(client.sum(all)).await.unwrap().into_inner().value,
        10
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panic_or_error_then_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let err = within(client.echo(Blob {
        panic: true,
        ..Default::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    let err = within(client.echo(Blob {
        fail: Code::Aborted as i32,
        ..Default::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    // A panic after the handler waited (on its own task).
    let err = within(client.echo(Blob {
        panic: true,
        delay_ms: 5,
        ..Default::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    let ok = within(client.echo(Blob {
        data: b"still here".to_vec(),
        ..Default::default()
    }))
    .await;
    assert_eq!(ok.unwrap().into_inner().data, b"still here");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_mid_call_is_unavailable() {
    let server = TestServer::start_abrupt().await;
    let mut client = server.numbers().await;
    let mut streaming = server.numbers().await;
    let call = tokio::spawn(async move {
        client
            .echo(Blob {
                delay_ms: 60_000,
                ..Default::default()
            })
            .await
    });
    let mut s = endless_count(&mut streaming).await;
    assert_eq!(within(s.message()).await.unwrap().unwrap().value, 0);
    within(server.echo_waiting.notified()).await;
    server.stop().await;
    let err = within(call).await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let end = drain_to_end(&mut s).await;
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_finishes_its_calls_and_refuses_new_ones() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let mut late = server.numbers().await;
    // A call in progress at the signal, whose 300,000-byte answer leaves only as the
    // client's grants come back.
    let call = tokio::spawn(async move {
        client
            .echo(Blob {
                data: vec![7; 300_000],
                delay_ms: 200,
                ..Default::default()
            })
            .await
    });
    within(server.echo_waiting.notified()).await;
    let TestServer {
        stop: Some(stop),
        task,
        ..
    } = server
    else {
        unreachable!()
    };
    stop.send(()).unwrap();
    // A call opened after the signal is refused, and says why.
    let err = within(late.echo(Blob::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("shutting down"), "{err:?}");
    // The call in progress ends as it would have, whole.
    let done = within(call).await.unwrap().unwrap().into_inner();
    assert_eq!(done.data, vec![7; 300_000]);
    within(task).await.unwrap().unwrap();
}

/// A grace with no limit (`Duration::MAX`) on a runtime without tokio's timer: the
/// stream in progress at the signal runs to its end, and then `serve` returns.
#[test]
fn a_stop_with_no_limit_needs_no_timer_and_waits_for_the_call() {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_io()
        .build()
        .unwrap();
    let routes = homa_tonic::Server::builder()
        .add_service(NumbersServer::new(Nums::default()))
        .into_routes();
    let opts = homa::Options {
        server: Some(true),
        ..Default::default()
    };
    let sock = server_rt
        .block_on(homa::aio::Socket::bind_with(
            "127.0.0.1:0".parse().unwrap(),
            opts,
        ))
        .unwrap();
    let addr = sock.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let task = server_rt.spawn(homa_tonic::serve_with_grace(
        sock,
        routes,
        stopped,
        Duration::MAX,
    ));

    let client_rt = tokio::runtime::Runtime::new().unwrap();
    client_rt.block_on(async {
        let mut client = NumbersClient::new(homa_tonic::Channel::connect(addr).await.unwrap());
        let mut late = NumbersClient::new(homa_tonic::Channel::connect(addr).await.unwrap());
        let mut s = within(client.count(Range {
            from: 1,
            to: 50,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
        assert_eq!(within(s.message()).await.unwrap().unwrap().value, 1);
        stop.send(()).unwrap();
        let err = within(late.echo(Blob::default())).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        let mut sum = 1;
        while let Some(n) = within(s.message()).await.unwrap() {
            sum += n.value;
        }
        assert_eq!(sum, (1..=50).sum::<u64>(), "the stream in progress was cut");
        within(task).await.unwrap().unwrap();
    });
}

/// A server that took the request and then went silent (a crashed host: no ICMP, no
/// Homa packets): the client's Homa RPC times out and the call is `UNAVAILABLE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out_as_unavailable() {
    let hole = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    let swallow = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            if hole.recv_from(&mut buf).await.is_err() {
                return;
            }
        }
    });
    // A short Homa timeout (in 1 ms ticks), so that the test does not wait for the
    // default one.
    let mut opts = homa::Options::default();
    opts.config.resend_ticks = 2;
    opts.config.resend_interval = 2;
    opts.config.timeout_ticks = 30;
    let sock = homa::aio::Socket::bind_with("127.0.0.1:0".parse().unwrap(), opts)
        .await
        .unwrap();
    let mut client = NumbersClient::new(homa_tonic::Channel::with_socket(sock, addr));
    let err = within(client.echo(Blob::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    swallow.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_an_error_and_disturb_nothing() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let raw = homa::aio::Socket::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for junk in [
        &b"x"[..],
        b"\x01\x03garbage that is not a frame",
        &[0xffu8; 3000],
    ] {
        let reply = within(raw.call(server.addr, junk.to_vec())).await.unwrap();
        let text = String::from_utf8_lossy(&reply.to_vec()).into_owned();
        // grpc-message is percent-encoded, as on HTTP/2.
        assert!(text.contains("malformed%20request%20frame"), "{text:?}");
        assert!(text.contains("grpc-status"), "{text:?}");
    }
    let ok = within(client.echo(Blob {
        data: b"fine".to_vec(),
        ..Default::default()
    }))
    .await;
    assert_eq!(ok.unwrap().into_inner().data, b"fine");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_wait_for_room_when_the_servers_response_budget_is_used_up() {
    // The server's responses may hold 20,000 bytes until their clients acknowledge them:
    // 16 calls at once, each answered with 8,000 bytes, mostly find it used up. Each
    // must still get its own answer.
    let mut opts = homa::Options {
        server: Some(true),
        ..Default::default()
    };
    opts.config.max_outgoing_held = 20_000;
    let server = TestServer::start_with(opts).await;
    // A channel (a client socket) per call, dropped when its call is done: closing, it
    // acknowledges the response it got, which gives that response's room back.
    let calls: Vec<_> = (0..16u8)
        .map(|i| {
            let addr = server.addr;
            tokio::spawn(async move {
                let channel = homa_tonic::Channel::connect(addr).await.unwrap();
                let mut client = NumbersClient::new(channel);
                let data = vec![i; 8_000];
                let resp = client.echo(Blob {
                    data: data.clone(),
                    ..Default::default()
                });
                let resp = within(resp)
                    .await
                    .unwrap_or_else(|e| panic!("call {i}: {e:?}"));
                assert!(resp.into_inner().data == data, "call {i}: wrong bytes");
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_up_to_homas_maximum_and_not_beyond() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let big = vec![7u8; 990_000];
    let ok = within(client.echo(Blob {
        data: big.clone(),
        ..Default::default()
    }))
    .await;
    assert_eq!(ok.unwrap().into_inner().data, big);
    let err = within(client.echo(Blob {
        data: vec![1; 1_000_001],
        ..Default::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("Homa's maximum"), "{err:?}");
    server.stop().await;
}

/// A unary call is one Homa RPC whatever its messages' length: a request or response
/// over the 64 KiB batch size still goes with END (it went without, and the call took
/// the streaming path: four Homa RPCs for a 65,600-byte echo, two for a long response).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_unary_call_is_one_homa_rpc() {
    let server = TestServer::start().await;
    let sock = homa::aio::Socket::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut client =
        NumbersClient::new(homa_tonic::Channel::with_socket(sock.clone(), server.addr));
    let lengths = [100, 65_000, 65_600, 200_000, 990_000];
    for (i, &len) in lengths.iter().enumerate() {
        let data = vec![i as u8; len];
        let reply = within(client.echo(Blob {
            data: data.clone(),
            ..Default::default()
        }))
        .await;
        assert_eq!(reply.unwrap().into_inner().data, data, "{len} bytes");
        assert_eq!(
            sock.metrics().responses_delivered,
            i as u64 + 1,
            "a unary echo of {len} bytes took more than one Homa RPC"
        );
    }
    server.stop().await;
}

/// A request stream whose second message is too long for a Homa message ends its call
/// with RESOURCE_EXHAUSTED, as a first one does. (It ended with UNAVAILABLE, "the peer
/// stopped responding": the server dropped the PULL it held, unanswered, when the
/// client's pump cancelled the call.) Blobs to the Sum method: an empty Blob reads as the
/// Number 0, and the long one never leaves the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_long_message_later_in_a_request_stream_is_resource_exhausted() {
    let server = TestServer::start().await;
    for bidi in [false, true] {
        let channel = homa_tonic::Channel::connect(server.addr).await.unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        let (tx, rx) = mpsc::channel(1);
        tx.send(Blob::default()).await.unwrap();
        let codec = tonic_prost::ProstCodec::<Blob, Number>::default();
        let call = async {
            grpc.ready().await.unwrap();
            let req = Request::new(ReceiverStream::new(rx));
            if bidi {
                let path = http::uri::PathAndQuery::from_static("/numbers.Numbers/Double");
                let mut answers = grpc.streaming(req, path, codec).await?.into_inner();
                while answers.message().await?.is_some() {}
                Ok(())
            } else {
                let path = http::uri::PathAndQuery::from_static("/numbers.Numbers/Sum");
                grpc.client_streaming(req, path, codec).await.map(drop)
            }
        };
        let feed = async {
            if !bidi {
                // The first message reached the handler: the call is open at the server.
                server.sum_started.notified().await;
            }
            let long = Blob {
                data: vec![1; 1_100_000],
                ..Default::default()
            };
            let _ = tx.send(long).await;
        };
        let (err, ()) = within(async { tokio::join!(call, feed) }).await;
        let err: Status = err.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "bidi {bidi}: {err:?}");
        assert!(err.message().contains("Homa's maximum"), "{err:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_compression_when_the_codecs_ask() {
    let server = TestServer::start().await;
    let channel = homa_tonic::Channel::connect(server.addr).await.unwrap();
    let mut client = NumbersClient::new(channel)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    // Compressible: 2 MB of zeros fits a Homa message only compressed.
    let data = vec![0u8; 2_000_000];
    let resp = within(client.echo(Blob {
        data: data.clone(),
        ..Default::default()
    }))
    .await;
    assert_eq!(resp.unwrap().into_inner().data, data);
    // A client that sends compressed but does not accept compression: the server's
    // answer, uncompressed, is over Homa's maximum, and the server says so.
    let channel = homa_tonic::Channel::connect(server.addr).await.unwrap();
    let mut client = NumbersClient::new(channel).send_compressed(CompressionEncoding::Gzip);
    let err = within(client.echo(Blob {
        data,
        ..Default::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("Homa's maximum"), "{err:?}");
    server.stop().await;
}

/// A request longer than the server's `max_message_length` (shorter than the client's)
/// is refused as too long, not as a lost server: `RESOURCE_EXHAUSTED`, which retry
/// policies do not retry (it was `UNAVAILABLE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_the_server_takes_is_resource_exhausted() {
    let mut opts = homa::Options {
        server: Some(true),
        ..Default::default()
    };
    opts.config.max_message_length = 200_000;
    let server = TestServer::start_with(opts).await;
    let mut client = server.numbers().await;
    let err = within(client.echo(Blob {
        data: vec![3; 500_000],
        ..Default::default()
    }))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Shorter ones still go.
    let ok = within(client.echo(Blob {
        data: vec![4; 100_000],
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(ok.into_inner().data, vec![4; 100_000]);
    server.stop().await;
}

/// More metadata entries than a call's header block counts (65,535) are refused with
/// `RESOURCE_EXHAUSTED`: they were cut silently, tonic's own headers among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_metadata_than_a_call_carries_is_refused_not_cut() {
    let server = TestServer::start().await;
    let mut client = server.numbers().await;
    let mut req = Request::new(Blob {
        data: b"m".to_vec(),
        ..Default::default()
    });
    for i in 0..70_000u32 {
        req.metadata_mut()
            .append("x-in", i.to_string().parse().unwrap());
    }
    let err = within(client.echo(req)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("metadata entries"), "{err:?}");
    // The channel still works.
    let ok = within(client.echo(Blob {
        data: b"after".to_vec(),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(ok.into_inner().data, b"after");
    server.stop().await;
}

/// A stream whose server stopped at once and came back on the same port ends with
/// `UNAVAILABLE`, as a lost connection does over HTTP/2 (it was `NOT_FOUND`, which retry
/// policies take for a final answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_a_server_restart_is_unavailable() {
    let opts = homa::Options {
        server: Some(true),
        ..Default::default()
    };
    let server = TestServer::start_with_grace(opts.clone(), Duration::ZERO).await;
    let addr = server.addr;
    let mut client = server.numbers().await;
    let mut s = endless_count(&mut client).await;
    within(s.message()).await.unwrap().expect("a first number");
    server.stop().await;
    // The port is free again once the old socket is gone (shortly after, for tokio):
    // probed with a blocking socket, whose drop frees it at once.
    let again = within(async {
        loop {
            if let Ok(sock) = homa::Socket::bind_with(addr, opts.clone()) {
                drop(sock);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    again.await;
    let restarted = TestServer::start_at(addr, opts, Duration::ZERO).await;
    let err = within(drain_to_end(&mut s)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    restarted.stop().await;
}
