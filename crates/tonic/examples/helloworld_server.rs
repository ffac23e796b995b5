//! The greeter of gRPC's "hello world", served over Homa.
//!
//! ```sh
//! cargo run -p homa-tonic --example helloworld_server     # serves 127.0.0.1:50051
//! cargo run -p homa-tonic --example helloworld_client     # in another terminal
//! ```
//!
//! Against tonic's own helloworld server only one line differs (the one that serves).
//! For the comparison client (`helloworld_client_tcp`) the same service is also served
//! over tonic's HTTP/2 transport on the same port number: TCP and UDP ports are apart.

use tonic::{Request, Response, Status};

mod helloworld {
    tonic::include_proto!("helloworld");
}
use helloworld::greeter_server::{Greeter, GreeterServer};
use helloworld::{HelloReply, HelloRequest};

#[derive(Default)]
struct MyGreeter;

#[tonic::async_trait]
impl Greeter for MyGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let reply = HelloReply {
            message: format!("Hello {}!", request.into_inner().name),
        };
        Ok(Response::new(reply))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into())
        .parse()?;
    println!("greeter listening on {addr} (Homa over UDP, and HTTP/2 over TCP)");

    // Over TCP, as tonic's example has it (only for the comparison client).
    let tcp = tonic::transport::Server::builder()
        .add_service(GreeterServer::new(MyGreeter))
        .serve(addr);

    // Over Homa: the one line that changes.
    let homa = homa_tonic::Server::builder()
        .add_service(GreeterServer::new(MyGreeter))
        .serve(addr);

    tokio::select! {
        r = tcp => r?,
        r = homa => r?,
    }
    Ok(())
}
