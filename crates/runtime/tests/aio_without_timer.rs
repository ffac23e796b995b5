//! A tokio socket's `*_timeout` receives in a runtime built without its timer are an
//! error, and print nothing (tokio's own timeout panics there). Its own test binary: it
//! installs a panic hook, which is process-wide.
#![cfg(feature = "tokio")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn timed_receives_without_a_timer_are_a_quiet_error() {
    std::panic::set_hook(Box::new(|_| {
        HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let opts = homa::Options {
            server: Some(true),
            ..Default::default()
        };
        let server = homa::aio::Socket::bind_with("127.0.0.1:0".parse().unwrap(), opts)
            .await
            .unwrap();
        let r = server
            .recv_timeout(Duration::from_millis(10))
            .await
            .map(|m| m.len());
        assert!(matches!(r, Err(homa::RecvError::NoTimer)), "{r:?}");
        let r = server
            .recv_request_timeout(Duration::ZERO)
            .await
            .map(|m| m.len());
        assert!(r.unwrap_err().to_string().contains("enable_time"));
        // A timed call sends nothing it could not time.
        let caller = homa::aio::Socket::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let r = caller
            .call_timeout(server.local_addr(), b"x".to_vec(), Duration::from_secs(1))
            .await
            .map(|m| m.len());
        assert!(
            matches!(r, Err(homa::CallError::Recv(homa::RecvError::NoTimer))),
            "{r:?}"
        );
        assert_eq!(caller.metrics().packets_sent.iter().sum::<u64>(), 0);
        assert_eq!(HOOK_CALLS.load(Ordering::SeqCst), 0, "a panic message");
        // Without the timer, the untimed receives and calls work.
        let client = homa::aio::Socket::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let dest = server.local_addr();
        let serving = server.clone();
        tokio::spawn(async move {
            let request = serving.recv_request().await.unwrap();
            serving.reply(&request, b"pong".to_vec()).unwrap();
        });
        assert_eq!(client.call(dest, b"ping".to_vec()).await.unwrap(), b"pong");
    });
}
