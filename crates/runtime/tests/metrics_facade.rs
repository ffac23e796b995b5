//! The `metrics` feature (on in this crate's tests, see Cargo.toml): every socket's
//! counters reach the `metrics` facade's recorder under the names, labels, kinds and
//! values of `homa::metrics::to_prometheus`, on demand and from the background thread.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use homa::{Options, Socket};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;

/// A series: name, and its labels sorted, as `name{k="v",...}`.
type Series = String;

fn series(name: &str, labels: &mut [(String, String)]) -> Series {
    labels.sort();
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// What a recorder holds: series -> (kind, description, value).
fn recorded(snapshotter: &Snapshotter) -> BTreeMap<Series, (MetricKind, Option<String>, u64)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _unit, description, value)| {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let value = match value {
                DebugValue::Counter(v) => v,
                DebugValue::Gauge(v) => {
                    assert_eq!(v.0.fract(), 0.0, "{key}: a gauge of a whole number");
                    v.0 as u64
                }
                DebugValue::Histogram(_) => panic!("{key}: no histogram is published"),
            };
            let description = description.map(|d| d.to_string());
            (series(key.name(), &mut labels), (kind, description, value))
        })
        .collect()
}

/// What the Prometheus text says, for the series of the socket on `port`:
/// series -> (kind, help, value).
fn expected(text: &str) -> BTreeMap<Series, (MetricKind, Option<String>, u64)> {
    let mut kind = BTreeMap::new();
    let mut help = BTreeMap::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("HELP name text");
            help.insert(name.to_owned(), text.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE name type");
            let ty = match ty {
                "counter" => MetricKind::Counter,
                "gauge" => MetricKind::Gauge,
                other => panic!("type {other}"),
            };
            kind.insert(name.to_owned(), ty);
        } else {
            let (head, value) = line.rsplit_once(' ').expect("series value");
            let (name, labels) = head.split_once('{').expect("labelled");
            let mut labels: Vec<(String, String)> = labels
                .trim_end_matches('}')
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("k=v");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            out.insert(
                series(name, &mut labels),
                (
                    kind[name],
                    help.get(name).cloned(),
                    value.parse().expect("value"),
                ),
            );
        }
    }
    out
}

/// A server and a client with a few RPCs done between them.
fn busy_pair() -> (Socket, Socket) {
    let opts = Options {
        server: Some(true),
        ..Default::default()
    };
    let server = Socket::bind_with("127.0.0.1:0".parse().unwrap(), opts).unwrap();
    let serving = server.clone();
    std::thread::spawn(move || {
        while let Ok(request) = serving.recv_request() {
            let answer = request.to_vec();
            if serving.reply(&request, answer).is_err() {
                break;
            }
        }
    });
    let client = Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    for len in [100, 5_000, 100_000] {
        let request = vec![7u8; len];
        assert_eq!(
            client.call(server.local_addr(), request.clone()).unwrap(),
            request
        );
    }
    (server, client)
}

/// `socket`'s counters once they stop changing (acks and NEED_ACKs settle within
/// milliseconds), as Prometheus text.
fn settled(socket: &Socket) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = socket.metrics();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = socket.metrics();
        if now == last {
            let port = socket.local_addr().port().to_string();
            return homa::metrics::to_prometheus(&now, &[("socket", &port)]);
        }
        assert!(Instant::now() < deadline, "the counters never settled");
        last = now;
    }
}

#[test]
fn publish_gives_the_recorder_every_series_of_every_socket() {
    let (server, client) = busy_pair();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    for socket in [&server, &client] {
        let port = format!("socket=\"{}\"", socket.local_addr().port());
        let label = socket.local_addr().port().to_string();
        // Counters that did not move while they were published (a late ack may come).
        let want = loop {
            let text = settled(socket);
            // This thread's recorder only: other tests' sockets publish elsewhere.
            metrics::with_local_recorder(&recorder, homa::metrics::publish);
            if homa::metrics::to_prometheus(&socket.metrics(), &[("socket", &label)]) == text {
                break expected(&text);
            }
        };
        let got: BTreeMap<_, _> = recorded(&snapshotter)
            .into_iter()
            .filter(|(series, _)| series.contains(&port))
            .collect();
        assert_eq!(got, want, "socket {port}");
        // Not all zero: the RPCs are in it.
        let delivered = if socket.local_addr() == server.local_addr() {
            "homa_requests_delivered_total"
        } else {
            "homa_responses_delivered_total"
        };
        let key = format!("{delivered}{{{port}}}");
        assert_eq!(got[&key].2, 3, "{key}");
    }
    // Every series the text has (names, labels, kinds, help) is published: the Prometheus
    // writer and the facade walk one table, and this checks the walk gave both the same.
    assert!(expected(&settled(&server)).len() > 60);
}

#[test]
fn record_takes_labels_of_your_own() {
    let mut m = homa::Metrics::default();
    m.packets_sent[1] = 4;
    m.client_rpcs = 2;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        homa::metrics::record(&m, &[("service", "greeter"), ("zone", "a")])
    });
    let got = recorded(&snapshotter);
    let want = expected(&homa::metrics::to_prometheus(
        &m,
        &[("service", "greeter"), ("zone", "a")],
    ));
    // `record` does not describe (publish does): compare without the help texts.
    let strip = |m: BTreeMap<Series, (MetricKind, Option<String>, u64)>| {
        m.into_iter()
            .map(|(s, (k, _, v))| (s, (k, v)))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(strip(got.clone()), strip(want));
    assert_eq!(
        got[r#"homa_packets_sent_total{service="greeter",type="grant",zone="a"}"#].2,
        4
    );
}

#[test]
fn the_background_thread_publishes_to_the_global_recorder() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only global recorder of this test binary");
    homa::metrics::set_publish_interval(Some(Duration::from_millis(20)));
    let (server, _client) = busy_pair();
    let key = format!(
        "homa_requests_delivered_total{{socket=\"{}\"}}",
        server.local_addr().port()
    );
    // The snapshot takes the counters it reads (the debugging recorder resets them), so
    // each later publication shows the value again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((MetricKind::Counter, Some(help), 3)) = recorded(&snapshotter).remove(&key) {
            assert_eq!(help, "Requests delivered to server sockets.");
            break;
        }
        assert!(Instant::now() < deadline, "{key} never published as 3");
        std::thread::sleep(Duration::from_millis(20));
    }
    homa::metrics::set_publish_interval(None);
}
