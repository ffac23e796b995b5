//! A tonic service over Homa whose Prometheus exporter shows Homa's counters beside the
//! service's own metrics: the greeter of gRPC's "hello world", with `homa`'s `metrics`
//! feature on and `metrics-exporter-prometheus` as the process's recorder.
//!
//! ```sh
//! cargo run -p homa-tonic --example metrics_server     # greeter on 127.0.0.1:50051 (Homa)
//! curl -s http://127.0.0.1:9000/metrics                # its metrics, Homa's among them
//! ```
//!
//! (`-- GRPC_ADDR METRICS_ADDR` to choose the addresses.) At the start it greets itself
//! three times, and prints the exporter's page once, so that there is something to see.
//!
//! What the service does for it: depend on `homa` with `features = ["metrics"]` and
//! install an exporter, as it would for its own metrics. Every Homa socket of the process
//! is then published (every second; `homa::metrics::publish()` for now), series
//! `homa_...{socket="<port>",...}`.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Request, Response, Status};

mod helloworld {
    tonic::include_proto!("helloworld");
}
use helloworld::greeter_client::GreeterClient;
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
        // The service's own metric, through the same facade.
        metrics::counter!("greeter_hellos_total").increment(1);
        let reply = HelloReply {
            message: format!("Hello {}!", request.into_inner().name),
        };
        Ok(Response::new(reply))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let grpc_addr: SocketAddr = args
        .next()
        .as_deref()
        .unwrap_or("127.0.0.1:50051")
        .parse()?;
    let metrics_addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:9000").parse()?;

    // The service's exporter, as it would have one anyway: an HTTP listener on
    // 127.0.0.1, and the recorder of the `metrics` facade for the whole process.
    PrometheusBuilder::new()
        .with_http_listener(metrics_addr)
        .install()?;
    metrics::describe_counter!("greeter_hellos_total", "Greetings answered.");

    // The service over Homa, unchanged.
    let server = homa_tonic::Server::builder()
        .add_service(GreeterServer::new(MyGreeter))
        .serve(grpc_addr);
    let server = tokio::spawn(server);
    println!("greeter on {grpc_addr} (Homa over UDP); metrics at http://{metrics_addr}/metrics");

    // Something to count: three greetings from a client of our own (retried while the
    // server's socket opens).
    let mut client = loop {
        let channel = homa_tonic::Channel::connect(grpc_addr).await?;
        let mut client = GreeterClient::new(channel);
        let hello = HelloRequest {
            name: "metrics".into(),
        };
        match client.say_hello(hello).await {
            Ok(_) => break client,
            Err(_) if !server.is_finished() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(e.into()),
        }
    };
    for _ in 0..2 {
        let hello = HelloRequest {
            name: "metrics".into(),
        };
        client.say_hello(hello).await?;
    }

    // Published every second anyway; now, so that the page below has them.
    homa::metrics::publish();
    let page = fetch(metrics_addr).await?;
    println!("\nhttp://{metrics_addr}/metrics, the series that are not zero:");
    for line in page.lines() {
        let counted = line.starts_with("greeter_") || line.starts_with("homa_");
        if counted && !line.ends_with(" 0") {
            println!("  {line}");
        }
    }
    println!("\nserving until interrupted (Ctrl-C)");
    server.await??;
    Ok(())
}

/// The exporter's page, as a scraper gets it (plain HTTP/1.0, to need no client crate).
async fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut page = String::new();
    stream.read_to_string(&mut page).await?;
    Ok(page)
}
