//! The engine's receive window (`max_incoming`, bytes granted and not yet received) is
//! cut to the receive buffer the kernel grants the socket, so that the kernel drops
//! nothing the grants ask for.

mod common;

use common::*;
use homa::{Options, Socket, Transport};

/// Datagrams the kernel dropped at the UDP socket bound to `port` on 127.0.0.1, for want
/// of room in its receive buffer (`/proc/net/udp`'s last column), or `None` if there is
/// no such table or socket in it.
fn kernel_drops(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    // The address as the kernel prints it: its four bytes in memory order, as one hex
    // number of this machine's byte order.
    let local = format!(
        "{:08X}:{port:04X}",
        u32::from_ne_bytes(std::net::Ipv4Addr::LOCALHOST.octets())
    );
    table
        .lines()
        .skip(1)
        .find(|l| l.split_whitespace().nth(1) == Some(local.as_str()))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

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
    let before = kernel_drops(server.local_addr().port()).expect("the socket in /proc/net/udp");
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
    assert_eq!(kernel_drops(to.port()), Some(before), "datagrams dropped");
    server.shutdown();
    echo.join().unwrap();
}
