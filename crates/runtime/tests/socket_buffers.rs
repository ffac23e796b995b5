//! Socket buffers: `SocketInfo` reports what the kernel granted, and a process whose
//! socket buffers the kernel capped (no `CAP_NET_ADMIN`, a request above
//! `net.core.rmem_max`) says so in a warning, once. Its own test binary: the warning is
//! once per process, so no other test may take it first.

mod common;

use common::*;
use homa::{Options, Socket, Transport};
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Collects the message of every event logged on the thread it is the default of.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

struct MessageOf<'a>(&'a mut String);

impl Visit for MessageOf<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Warnings {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = String::new();
        event.record(&mut MessageOf(&mut message));
        self.0.lock().unwrap().push(message);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn sysctl(name: &str) -> usize {
    std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
        .expect(name)
        .trim()
        .parse()
        .expect(name)
}

/// Whether this thread may force socket buffers past the sysctl limits.
fn may_force() -> bool {
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let v: libc::c_int = 1 << 20;
    // SAFETY: a valid socket, and an int option of the right size.
    let r = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&probe),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// Bind with these buffer sizes asked for, and return what the socket reports and the
/// warnings logged on this thread meanwhile.
fn bind_asking(recv: usize, send: usize) -> ((usize, usize), Vec<String>) {
    let warnings = Warnings::default();
    let socket = tracing::subscriber::with_default(warnings.clone(), || {
        Socket::bind_with(
            addr(V4),
            Options {
                recv_buffer_bytes: recv,
                send_buffer_bytes: send,
                ..Options::default()
            },
        )
        .expect("bind")
    });
    let info = socket.info();
    let logged = warnings.0.lock().unwrap().clone();
    ((info.recv_buffer_bytes, info.send_buffer_bytes), logged)
}

#[test]
fn a_socket_reports_the_buffers_it_was_granted() {
    let (rmem, wmem) = (sysctl("rmem_max"), sysctl("wmem_max"));
    let force = may_force();
    let (recv, send) = (1 << 20, 3 << 18);
    let granted = |asked: usize, max: usize| 2 * if force { asked } else { asked.min(max) };
    let (got, warnings) = bind_asking(recv, send);
    assert_eq!(got, (granted(recv, rmem), granted(send, wmem)));
    let capped = !force && (recv > rmem || send > wmem);
    assert_eq!(!warnings.is_empty(), capped, "{warnings:?}");
}

/// Take `CAP_NET_ADMIN` out of the calling thread's effective set.
fn drop_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget and capset with a version-3 header and two data words, for the
    // calling thread (pid 0): they change this thread's capabilities only.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !(1 << CAP_NET_ADMIN);
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0,
            "capset: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn a_socket_the_kernel_caps_says_so() {
    if !may_force() {
        println!("skipping: needs CAP_NET_ADMIN, to drop it and see the cap");
        return;
    }
    let rmem = sysctl("rmem_max");
    let wmem = sysctl("wmem_max");
    // A thread of its own: capabilities are per thread, and it ends with the test.
    let (got, warnings) = std::thread::spawn(move || {
        drop_net_admin();
        assert!(
            !may_force(),
            "CAP_NET_ADMIN dropped, yet buffers are forced"
        );
        bind_asking(rmem + 4096, wmem / 2)
    })
    .join()
    .unwrap();
    assert_eq!(got, (2 * rmem, wmem));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let receive = format!("receive {rmem} of {} bytes", rmem + 4096);
    assert!(
        warnings[0].contains(&receive) && warnings[0].contains("net.core.rmem_max"),
        "{warnings:?}"
    );
}

/// Datagrams the kernel dropped at the UDP socket bound to `port` on 127.0.0.1, for want
/// of room in its receive buffer (`/proc/net/udp`'s last column), or `None` if the
/// kernel does not say.
fn kernel_drops(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let local = format!("0100007F:{port:04X}");
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
    assert_eq!(server.info().recv_buffer_bytes, 2 * buffer);
    assert!(server.config().max_incoming as usize <= buffer);
    let Some(before) = kernel_drops(server.local_addr().port()) else {
        println!("skipping: /proc/net/udp does not list the socket's drops");
        return;
    };
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
