//! The tokio flavour over loopback.

mod common;

use common::*;
use homa::tokio::Socket;
use homa::{RecvError, RpcError, Transport};
use std::time::Duration;

async fn echo_server(bind: &str, transport: Transport) -> Socket {
    let server = Socket::bind_with(addr(bind), server_opts(transport))
        .await
        .unwrap();
    let s = server.clone();
    tokio::spawn(async move {
        while let Ok(req) = s.recv().await {
            let resp = answer(&req.to_vec());
            if s.reply(&req, resp).await.is_err() {
                break;
            }
        }
    });
    server
}

async fn sizes(bind: &str, transport: Transport) {
    let server = echo_server(bind, transport).await;
    let client = Socket::bind_with(addr(bind), client_opts(transport))
        .await
        .unwrap();
    for (i, len) in [1usize, 100, 1500, 65_536, 65_537, 200_000, 1_000_000]
        .into_iter()
        .enumerate()
    {
        let req = pattern(len, i as u64);
        let id = client
            .send_request(server.local_addr(), req.clone(), i as u64)
            .await
            .unwrap();
        let resp = client.recv().await.unwrap();
        assert_eq!((resp.id(), resp.cookie(), resp.len()), (id, i as u64, len));
        assert!(resp == answer(&req));
        let resp = client
            .call(server.local_addr(), req.as_slice())
            .await
            .unwrap();
        assert!(resp == answer(&req));
    }
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_every_size_udp_v4_and_v6() {
    sizes(V4, Transport::Udp).await;
    sizes(V6, Transport::Udp).await;
}

#[tokio::test(flavor = "current_thread")]
async fn tokio_current_thread_runtime() {
    sizes(V4, Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_raw_ip() {
    if raw_available("tokio_raw_ip") {
        sizes(V4, Transport::RawIp).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_many_tasks() {
    const TASKS: usize = 16;
    const RPCS: usize = 100;
    let server = echo_server(V4, Transport::Udp).await;
    let dest = server.local_addr();
    let client = Socket::bind(addr(V4)).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..RPCS {
                let len = if i % 20 == 0 {
                    100_000
                } else {
                    1 + (t * 31 + i * 7) % 2000
                };
                let req = pattern(len, (t * RPCS + i) as u64);
                let resp = c.call(dest, req.as_slice()).await.unwrap();
                assert!(resp == answer(&req), "task {t} rpc {i}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(client.metrics().responses_delivered, (TASKS * RPCS) as u64);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_shutdown_wakes_waiting_tasks() {
    let client = Socket::bind(addr(V4)).await.unwrap();
    let c = client.clone();
    let waiter = tokio::spawn(async move { c.recv().await.map(|m| m.len()) });
    let c2 = client.clone();
    assert!(tokio::time::timeout(Duration::from_secs(5), async {
        while c2.info().waiters == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .is_ok());
    client.shutdown();
    let r = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("woke")
        .unwrap();
    assert!(matches!(r, Err(RecvError::Shutdown)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_dropped_recv_future_loses_nothing() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp))
        .await
        .unwrap();
    let client = Socket::bind(addr(V4)).await.unwrap();
    // A recv that is cancelled (its future dropped) before the request arrives...
    assert!(
        tokio::time::timeout(Duration::from_millis(20), server.recv())
            .await
            .is_err()
    );
    // ...and one racing against a request: whichever way the race goes, the request is
    // delivered exactly once.
    client
        .send_request(server.local_addr(), b"one".to_vec(), 1)
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_micros(1), server.recv()).await;
    let req = match first {
        Ok(r) => r.unwrap(),
        Err(_) => server.recv().await.unwrap(),
    };
    assert_eq!(req, b"one");
    server.reply(&req, b"two".to_vec()).await.unwrap();
    assert_eq!(client.recv().await.unwrap(), b"two");
    assert_eq!(server.info().queued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_dropped_call_keeps_no_response() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp))
        .await
        .unwrap();
    let client = Socket::bind(addr(V4)).await.unwrap();
    // The call is polled once (request sent, waiting) and then left alone...
    let mut call = Box::pin(client.call(server.local_addr(), b"ping".to_vec()));
    assert!(tokio::time::timeout(Duration::from_millis(1), &mut call)
        .await
        .is_err());
    let req = server.recv().await.unwrap();
    server.reply(&req, b"pong".to_vec()).await.unwrap();
    // ...while the response arrives and is handed to it; then it is dropped.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while client.info().client_rpcs > 0 {
        assert!(std::time::Instant::now() < deadline, "no response");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(call);
    let info = client.info();
    assert_eq!(info.queued, 0, "a dropped call's response stayed queued");
    assert_eq!(info.incoming_held, 0, "its buffer was not given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_silent_server_times_out_and_abort_works() {
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = Socket::bind(addr(V4)).await.unwrap();
    let r = client
        .call(hole.local_addr().unwrap(), b"anyone?".to_vec())
        .await;
    assert_eq!(r.unwrap_err().rpc_error(), Some(RpcError::Timeout));
    let id = client
        .send_request(hole.local_addr().unwrap(), b"x".to_vec(), 3)
        .await
        .unwrap();
    client.abort(id).unwrap();
    match client.recv().await {
        Err(RecvError::Rpc {
            cookie: 3,
            error: RpcError::Aborted,
            ..
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn tokio_bind_outside_runtime_is_an_error_not_a_panic() {
    let r = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A runtime without I/O enabled: binding must fail cleanly.
        rt.block_on(Socket::bind(addr(V4))).map(|_| ())
    })
    .join()
    .unwrap();
    assert!(r.is_err());
}
