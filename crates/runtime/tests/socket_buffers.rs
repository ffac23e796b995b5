//! Socket buffers: `SocketInfo` reports what the kernel granted, and a process whose
//! socket buffers the kernel capped (no `CAP_NET_ADMIN`, a request above
//! `net.core.rmem_max`) says so in a warning, once. Its own test binary, and no test here
//! binds a socket but to see the warning: it is once per process, so no other socket may
//! take it first. (Of the two tests, only one can warn in a given process: the first
//! where the process may not force buffers, the second only where it may.)

mod common;

use common::*;
use homa::{Options, Socket};
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
    let granted = |asked: usize, max: usize| if force { asked } else { asked.min(max) };
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
    assert_eq!(got, (rmem, wmem / 2));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let receive = format!("receive {rmem} of {} bytes", rmem + 4096);
    assert!(
        warnings[0].contains(&receive) && warnings[0].contains("net.core.rmem_max"),
        "{warnings:?}"
    );
}
