//! Binding a tokio socket in a runtime built without I/O is an error, and prints nothing:
//! no panic message, no backtrace. (Its own test binary: it installs a panic hook, which
//! is process-wide.)

use std::sync::atomic::{AtomicUsize, Ordering};

static HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn binding_without_io_is_a_quiet_error() {
    std::panic::set_hook(Box::new(|_| {
        HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let r = rt.block_on(homa::aio::Socket::bind("127.0.0.1:0".parse().unwrap()));
    let err = r.expect_err("a runtime without I/O cannot drive a socket");
    assert!(
        err.to_string().contains("I/O enabled"),
        "the error says what is missing: {err}"
    );
    assert_eq!(
        HOOK_CALLS.load(Ordering::SeqCst),
        0,
        "the panic inside tokio reached the panic hook (and would have printed)"
    );
    // The hook still sees panics outside the bind.
    let _ = std::panic::catch_unwind(|| panic!("on purpose"));
    assert_eq!(HOOK_CALLS.load(Ordering::SeqCst), 1);
}
