//! Acknowledgements reach the socket whose responses they acknowledge. Two server sockets
//! on one host are two engines (or two processes): an ack for one that rode on a request
//! to the other was thrown away there, so a client alternating between them left each
//! holding every response it had answered, until its outgoing budget ran out and `reply`
//! failed (a reviewer's client failed at its 205th call with a timeout).

use homa::{Options, Socket};
use std::time::Duration;

const CALLS: usize = 600;
const RESPONSE: usize = 20_000;

#[test]
fn a_client_alternating_between_two_servers_acknowledges_each() {
    let mut opts = Options {
        server: Some(true),
        ..Default::default()
    };
    // Room for about 50 unacknowledged responses.
    opts.config.max_outgoing_held = 1 << 20;
    let servers: Vec<Socket> = (0..2)
        .map(|_| Socket::bind_with("127.0.0.1:0".parse().unwrap(), opts.clone()).unwrap())
        .collect();
    let mut threads = Vec::new();
    for s in &servers {
        let s = s.clone();
        threads.push(std::thread::spawn(move || {
            let mut failed = 0;
            while let Ok(r) = s.recv_request() {
                failed += usize::from(s.reply(&r, vec![7u8; RESPONSE]).is_err());
            }
            failed
        }));
    }
    let client = Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    for i in 0..CALLS {
        let dest = servers[i % 2].local_addr();
        let resp = client
            .call_timeout(dest, vec![1u8; 16], Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("call {i} to {dest}: {e}"));
        assert!(resp == vec![7u8; RESPONSE], "call {i}");
    }
    for s in &servers {
        // Each holds the responses not yet acknowledged: the last few, not hundreds.
        let held = s.metrics().server_rpcs;
        assert!(
            held <= 8,
            "{}: {held} answered RPCs still held",
            s.local_addr()
        );
        s.shutdown();
    }
    for t in threads {
        assert_eq!(t.join().unwrap(), 0, "a reply failed");
    }
}
