//! A streaming service over Homa: every kind of gRPC call (`proto/numbers.proto`).
//!
//! ```sh
//! cargo run -p homa-tonic --example streaming_server      # serves 127.0.0.1:50052
//! cargo run -p homa-tonic --example streaming_client      # in another terminal
//! ```

use std::pin::Pin;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

mod numbers {
    tonic::include_proto!("numbers");
}
use numbers::numbers_server::{Numbers, NumbersServer};
use numbers::{Blob, Number, Range};

type NumberStream = Pin<Box<dyn Stream<Item = Result<Number, Status>> + Send>>;

struct MyNumbers;

#[tonic::async_trait]
impl Numbers for MyNumbers {
    async fn echo(&self, request: Request<Blob>) -> Result<Response<Blob>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    type CountStream = NumberStream;
    /// Server streaming: the numbers `from..=to`, produced as the client reads them
    /// (the channel's bound and Homa's PULLs keep the server from running ahead).
    async fn count(&self, request: Request<Range>) -> Result<Response<NumberStream>, Status> {
        let Range { from, to, .. } = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            for value in from..=to {
                if tx.send(Ok(Number { value })).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    /// Client streaming: the sum of what the client sends.
    async fn sum(&self, request: Request<Streaming<Number>>) -> Result<Response<Number>, Status> {
        let mut numbers = request.into_inner();
        let mut value = 0u64;
        while let Some(n) = numbers.message().await? {
            value = value.wrapping_add(n.value);
        }
        Ok(Response::new(Number { value }))
    }

    type DoubleStream = NumberStream;
    /// Bidirectional: each number doubled, as it comes.
    async fn double(
        &self,
        request: Request<Streaming<Number>>,
    ) -> Result<Response<NumberStream>, Status> {
        let doubled = request.into_inner().map(|n| {
            n.map(|n| Number {
                value: n.value.wrapping_mul(2),
            })
        });
        Ok(Response::new(Box::pin(doubled)))
    }

    type ReflectStream = Pin<Box<dyn Stream<Item = Result<Blob, Status>> + Send>>;
    /// Bidirectional: each blob back, as it comes.
    async fn reflect(
        &self,
        request: Request<Streaming<Blob>>,
    ) -> Result<Response<Self::ReflectStream>, Status> {
        Ok(Response::new(Box::pin(request.into_inner())))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50052".into())
        .parse()?;
    println!("numbers listening on {addr} (Homa)");
    homa_tonic::Server::builder()
        .add_service(NumbersServer::new(MyNumbers))
        .serve(addr)
        .await?;
    Ok(())
}
