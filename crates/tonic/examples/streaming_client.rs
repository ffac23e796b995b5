//! Calls every kind of gRPC method of `streaming_server` over Homa.
//!
//! ```sh
//! cargo run -p homa-tonic --example streaming_client [-- 127.0.0.1:50052]
//! ```

use tokio_stream::wrappers::ReceiverStream;

mod numbers {
    tonic::include_proto!("numbers");
}
use numbers::numbers_client::NumbersClient;
use numbers::{Number, Range};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50052".into());
    let channel = homa_tonic::Channel::connect(addr).await?;
    let mut client = NumbersClient::new(channel);

    // Server streaming: 100,000 numbers, many per Homa RPC.
    let mut count = client
        .count(Range {
            from: 1,
            to: 100_000,
            ..Default::default()
        })
        .await?
        .into_inner();
    let (mut n, mut last) = (0, 0);
    while let Some(number) = count.message().await? {
        n += 1;
        last = number.value;
    }
    println!("count: {n} numbers, the last {last}");

    // Client streaming: the numbers 1..=1000 summed at the server.
    let numbers = tokio_stream::iter((1..=1000).map(|value| Number { value }));
    let sum = client.sum(numbers).await?.into_inner().value;
    println!("sum of 1..=1000: {sum}");

    // Bidirectional: each answer arrives before the next number is sent.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut doubled = client.double(ReceiverStream::new(rx)).await?.into_inner();
    for value in [1, 2, 3, 21] {
        tx.send(Number { value }).await?;
        let answer = doubled.message().await?.ok_or("the stream ended early")?;
        println!("double({value}) = {}", answer.value);
    }
    drop(tx);
    assert!(doubled.message().await?.is_none());
    Ok(())
}
