//! The same greeter client over tonic's HTTP/2 transport (TCP), for comparison with
//! `helloworld_client`: only the line that makes the channel differs. Start
//! `helloworld_server` first (it serves both).
//!
//! ```sh
//! cargo run -p homa-tonic --example helloworld_client_tcp [-- 127.0.0.1:50051]
//! ```

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

    // Over TCP, as tonic's example has it.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;

    let mut client = GreeterClient::new(channel);
    let request = tonic::Request::new(HelloRequest {
        name: "Tonic".into(),
    });
    let response = client.say_hello(request).await?;
    println!("RESPONSE={:?}", response.into_inner().message);
    Ok(())
}
