//! The `metrics` feature: every socket's counters published through the [`metrics`]
//! facade, by a background thread every [`PUBLISH_INTERVAL`] and on demand
//! ([`publish`]).
//!
//! Why absolute values, published from outside the packet path: the engine already keeps
//! its counters as plain integers under the socket's lock, and a facade call per packet
//! (a registry look-up or an atomic add each time) would put a cost on every packet for
//! numbers a scraper reads every few seconds. So the packet path is as it is without the
//! feature, and a snapshot of each socket's counters (one lock, one copy) is handed to the
//! recorder as absolute values (`Counter::absolute`, `Gauge::set`) once per interval.
//!
//! A series is a port, not a socket: the values published for a port are the sum over
//! its open sockets (IPv4 and IPv6 sockets may share one), plus, for counters, what the
//! sockets closed on it had counted by the end. So a port's counters never go back when
//! a socket closes and another opens on it (recorders keep the largest absolute value
//! a counter was given, and a new socket starts from 0), and a socket that opens and
//! closes between two publications is counted all the same.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use homa_core::Metrics;
use metrics::Label;

use super::{each_series, Kind};
use crate::inner::Inner;

/// How often the background thread publishes every socket's counters, unless changed
/// with [`set_publish_interval`].
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest interval taken: shorter ones would spend a core on publishing.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The sockets of the process, and the publishing thread's schedule.
struct Registry {
    /// Every socket opened since the last prune (dead ones are pruned at each bind).
    /// Each with its port (read without holding the socket).
    sockets: Vec<(Weak<Inner>, u16)>,
    /// `None`: publish only on demand.
    interval: Option<Duration>,
    /// Whether the publishing thread runs.
    running: bool,
    /// Bumped by [`set_publish_interval`], so the thread starts its wait over.
    generation: u64,
    /// Per port, the counters of its sockets that have closed, summed (series in
    /// `each_series` order, gauges 0). One entry per port ever closed on, so at most
    /// 65,536 of them.
    retired: Option<HashMap<u16, Vec<u64>>>,
    /// Ports with a socket closed since the last publication: published once more, so
    /// that their series take the closed sockets' last counts.
    dirty: Vec<u16>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    sockets: Vec::new(),
    interval: Some(PUBLISH_INTERVAL),
    running: false,
    generation: 0,
    retired: None,
    dirty: Vec::new(),
});
static CHANGED: Condvar = Condvar::new();

fn registry() -> MutexGuard<'static, Registry> {
    // The registry is consistent at every step, so a panic elsewhere leaves it usable.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A socket is going away (from its `Drop`): keep what it counted, for its port's
/// series.
pub(crate) fn retire(port: u16, m: &Metrics) {
    let mut r = registry();
    let sum = r
        .retired
        .get_or_insert_with(HashMap::new)
        .entry(port)
        .or_insert_with(|| values(&Metrics::default()));
    each_series(m, {
        let mut i = 0;
        move |family, _, v| {
            if family.kind == Kind::Counter {
                sum[i] = sum[i].saturating_add(v);
            }
            i += 1;
        }
    });
    r.dirty.push(port);
}

/// Count a new socket among those published (from `bind`).
pub(crate) fn register(inner: &Arc<Inner>) {
    let mut r = registry();
    r.sockets.retain(|(s, _)| s.strong_count() > 0);
    r.sockets.push((Arc::downgrade(inner), inner.port));
    start(&mut r);
}

/// Start the publishing thread if it should run and does not.
fn start(r: &mut Registry) {
    if r.running || r.interval.is_none() {
        return;
    }
    // If no thread can be started, publishing stays on demand (and is tried again at the
    // next bind).
    r.running = std::thread::Builder::new()
        .name("homa-metrics-publish".into())
        .spawn(run)
        .is_ok();
}

/// The publishing thread: every interval, [`publish`]; it ends when publishing is set to
/// on demand only.
fn run() {
    let mut r = registry();
    loop {
        let Some(interval) = r.interval else {
            r.running = false;
            return;
        };
        let generation = r.generation;
        let (guard, wait) = CHANGED
            .wait_timeout(r, interval.max(MIN_INTERVAL))
            .unwrap_or_else(PoisonError::into_inner);
        r = guard;
        if !wait.timed_out() || r.generation != generation {
            continue; // a new interval, or a spurious wake-up: wait again
        }
        drop(r);
        publish();
        r = registry();
    }
}

/// How often every socket's counters are published in the background: `Some(interval)`
/// (the default is [`PUBLISH_INTERVAL`]; less than 10 ms is taken as 10 ms), or `None`
/// to publish only when [`publish`] is called. Takes effect at once, for every socket of
/// the process.
pub fn set_publish_interval(interval: Option<Duration>) {
    let mut r = registry();
    r.interval = interval;
    r.generation += 1;
    CHANGED.notify_all();
    if !r.sockets.is_empty() {
        start(&mut r);
    }
}

/// Publish the counters of every open socket of the process now, through the recorder
/// installed for the `metrics` facade (nothing happens without one). Call it right before
/// your exporter renders, if you want values that are not up to an interval old.
///
/// Each port's series are labelled `socket="<port>"`. Sockets that share a port (IPv4
/// and IPv6, say) are summed into its series, and a port's counters keep what its closed
/// sockets counted: they never go back when a socket closes and a new one opens on the
/// same port, and a socket opened and closed between two publications still counts.
/// A port whose sockets have all closed keeps its series, counters at their last values
/// and gauges at 0. A process that opens sockets on many ports in turn (clients on
/// ephemeral ports, one per connection) leaves a series set per port in the recorder;
/// exporters can forget idle series (`metrics-exporter-prometheus`:
/// `PrometheusBuilder::idle_timeout`).
///
/// Reading a socket's counters holds the socket for that moment: one whose last handle is
/// dropped just then frees its port a few microseconds later, on the publishing thread,
/// so a program that binds the same port again at once may, rarely, see
/// `BindError::AddrInUse` and retry.
pub fn publish() {
    let (sockets, mut ports) = {
        let mut r = registry();
        // Held weakly: a socket is held (and its port stays bound) only while its
        // counters are read below, so that a socket whose last handle is dropped meanwhile
        // closes there, in its owner's thread, almost always.
        let sockets: Vec<(Weak<Inner>, u16)> = r
            .sockets
            .iter()
            .filter(|(w, _)| w.strong_count() > 0)
            .cloned()
            .collect();
        let mut ports: Vec<u16> = sockets.iter().map(|&(_, p)| p).collect();
        ports.append(&mut r.dirty);
        ports.sort_unstable();
        ports.dedup();
        // What closed sockets counted, per port to publish. (A socket whose last handle
        // is dropped while this runs is in neither list until its `Drop` has retired it:
        // its port may then read low once, which a recorder's counters ignore, and is
        // published again at the next call.)
        let zero = values(&Metrics::default());
        let ports: Vec<(u16, Vec<u64>)> = ports
            .into_iter()
            .map(|p| {
                let retired = r.retired.as_ref().and_then(|m| m.get(&p));
                (p, retired.cloned().unwrap_or_else(|| zero.clone()))
            })
            .collect();
        (sockets, ports)
    };
    if ports.is_empty() {
        return;
    }
    describe();
    for (weak, port) in &sockets {
        // A socket broken by a panic has nothing trustworthy to report. (Dropped here,
        // not while the registry is locked: dropping the last handle of a socket retires
        // it, which locks the registry.)
        let Some(m) = weak.upgrade().and_then(|inner| {
            let g = inner.lock_unless_poisoned()?;
            Some(g.ep.metrics())
        }) else {
            continue;
        };
        let Ok(k) = ports.binary_search_by_key(port, |&(p, _)| p) else {
            continue;
        };
        add(&mut ports[k].1, &values(&m));
    }
    for (port, sum) in &ports {
        record_values(sum, &[("socket", &port.to_string())]);
    }
}

/// Give one snapshot of counters to the `metrics` facade's recorder, with `labels` on
/// every series: the same names and labels as [`to_prometheus`](super::to_prometheus),
/// counters as absolute values ([`metrics::Counter::absolute`]), gauges set
/// ([`metrics::Gauge::set`]). [`publish`] does this for every port; call it yourself to
/// publish counters under labels of your own.
pub fn record(m: &Metrics, labels: &[(&str, &str)]) {
    record_values(&values(m), labels);
}

/// Every series' value, in `each_series` order.
fn values(m: &Metrics) -> Vec<u64> {
    let mut v = Vec::with_capacity(128);
    each_series(m, |_, _, value| v.push(value));
    v
}

/// Add `b` to `a`, series by series.
fn add(a: &mut [u64], b: &[u64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.saturating_add(*y);
    }
}

/// Give `values` (in `each_series` order) to the recorder under `labels`.
fn record_values(values: &[u64], labels: &[(&str, &str)]) {
    let base: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(k.to_string(), v.to_string()))
        .collect();
    let mut i = 0;
    each_series(&Metrics::default(), |family, label, _| {
        let value = values[i];
        i += 1;
        let mut labels = base.clone();
        if let Some((k, v)) = label {
            labels.push(Label::new(k, v));
        }
        match family.kind {
            Kind::Counter => metrics::counter!(family.name, labels).absolute(value),
            // Exact up to 2^53, far beyond any count of RPCs or bytes held.
            Kind::Gauge => metrics::gauge!(family.name, labels).set(value as f64),
        }
    });
}

/// Tell the recorder what each metric is (exporters turn it into `# HELP` lines).
/// Repeated at every publication: a recorder installed after the first one learns it too.
fn describe() {
    let mut last = "";
    each_series(&Metrics::default(), |family, _, _| {
        if family.name == last {
            return;
        }
        last = family.name;
        match family.kind {
            Kind::Counter => metrics::describe_counter!(family.name, family.help),
            Kind::Gauge => metrics::describe_gauge!(family.name, family.help),
        }
    });
}
