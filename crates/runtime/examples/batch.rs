//! The batch API, both sides: a server that takes whatever requests arrived together and
//! answers them with one batch, and a client that keeps a window of requests outstanding,
//! sending new ones in batches as outcomes come back in batches.
//!
//! `cargo run --release -p homa-transport --example batch -- [RPCS] [WINDOW]`
//!
//! It checks every response and prints how many RPCs completed and how long it took.

use homa::{Options, RecvError, Socket};
use std::collections::HashSet;
use std::time::Instant;

/// The server's answer to a request: its bytes reversed.
fn answer(request: &[u8]) -> Vec<u8> {
    request.iter().rev().copied().collect()
}

fn request(i: u64) -> Vec<u8> {
    format!("request {i:>10}").into_bytes()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let rpcs = args.next().transpose()?.unwrap_or(100_000);
    let window = args.next().transpose()?.unwrap_or(64).max(1);

    let opts = Options {
        server: Some(true),
        ..Default::default()
    };
    let server = Socket::bind_with("127.0.0.1:0".parse()?, opts)?;
    let dest = server.local_addr();
    let s = server.clone();
    let serving = std::thread::spawn(move || {
        let mut requests = Vec::new();
        // Ends when the socket is shut down.
        while s.recv_request_batch(&mut requests, 64).is_ok() {
            let mut replies = s.batch(); // leaves when dropped, at the end of this block
            for r in requests.drain(..) {
                if let Err(e) = replies.reply(&r, answer(&r.to_vec())) {
                    eprintln!("reply failed: {e}");
                }
            }
        }
    });

    let client = Socket::bind("127.0.0.1:0".parse()?)?;
    let start = Instant::now();
    let (mut next, mut outstanding) = (0u64, 0u64);
    let mut done = HashSet::new();
    let mut outcomes = Vec::new();
    while (done.len() as u64) < rpcs {
        // Top the window up: all of these leave together when the batch is sent.
        let mut batch = client.batch();
        while outstanding < window && next < rpcs {
            // The cookie (here the request's number) comes back with its response.
            batch.send_request(dest, request(next), next)?;
            next += 1;
            outstanding += 1;
        }
        batch.send();
        // Take every outcome that is ready (at least one).
        client.recv_batch(&mut outcomes, window as usize)?;
        for outcome in outcomes.drain(..) {
            match outcome {
                Ok(response) => {
                    let i = response.cookie();
                    if response.to_vec() != answer(&request(i)) {
                        return Err(format!("response {i}: wrong bytes").into());
                    }
                    done.insert(i);
                    outstanding -= 1;
                }
                Err(RecvError::Rpc { cookie, error, .. }) => {
                    return Err(format!("request {cookie} failed: {error}").into());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{rpcs} RPCs with {window} outstanding, every response checked: {secs:.2} s, {:.0} RPC/s",
        rpcs as f64 / secs
    );
    server.shutdown();
    serving.join().expect("the server thread does not panic");
    Ok(())
}
