//! The greeter client of gRPC's "hello world", over Homa. Start `helloworld_server` first.
//!
//! ```sh
//! cargo run -p homa-tonic --example helloworld_client [-- 127.0.0.1:50051]
//! ```
//!
//! Against `helloworld_client_tcp` (tonic's own example) only the line that makes the
//! channel differs.

mod helloworld {
    tonic::include_proto!("helloworld");
}
use helloworld::greeter_client::GreeterClient;
use helloworld::HelloRequest;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into());

    // Over Homa: the one line that changes.
    let channel = homa_tonic::Channel::connect(addr).await?;

    let mut client = GreeterClient::new(channel);
    let request = tonic::Request::new(HelloRequest {
        name: "Tonic".into(),
    });
    let response = client.say_hello(request).await?;
    println!("RESPONSE={:?}", response.into_inner().message);
    Ok(())
}
