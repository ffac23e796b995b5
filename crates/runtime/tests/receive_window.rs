//! The engine's receive window (`max_incoming`, bytes granted and not yet received) is
//! cut to the receive buffer the kernel grants the socket, so that the kernel drops
//! nothing the grants ask for.

mod common;

use common::*;
use homa::{Options, Socket, Transport};

/// A receiver whose receive buffer is smaller than its grant window (loopback's 1.6 MB)
/// grants no more than the buffer holds, so the kernel drops nothing the grants asked
/// for. (Before, 1 MB messages into a 200 KB buffer had their packets dropped by the
/// dozen, each then asked for again.) Retransmissions are not counted: on a loaded
/// machine a sender that gets no CPU for a while is asked again without any loss.
#[test]
fn grants_fit_the_receive_buffer() {
    let buffer = 200_000;
    let server = Socket::bind_with(
        addr(V4),
        Options {
            recv_buffer_bytes: buffer,
            ..server_opts(Transport::Udp)
        },
    )
    .expect("bind");
    let granted = server.info().recv_buffer_bytes;
    assert!(granted > 0 && granted <= buffer, "{granted} bytes granted");
    assert!(server.config().max_incoming as usize <= granted);
    let s = server.clone();
    let echo = std::thread::spawn(move || {
        while let Ok(request) = s.recv_request() {
            if s.reply(&request, b"ok".to_vec()).is_err() {
                break;
            }
        }
    });
    let to = server.local_addr();
    let client = Socket::bind(addr(V4)).unwrap();
    for i in 0..20 {
        let request = pattern(1_000_000, i);
        assert_eq!(client.call(to, request).unwrap(), b"ok");
    }
    assert_eq!(server.info().kernel_drops, 0, "datagrams dropped");
    server.shutdown();
    echo.join().unwrap();
}
