//! The server's metrics, for `GET /metrics` (issue 13): a handful of functions the rest of the
//! server calls ([`request`], [`refused`], [`synced`], [`flushed`], [`committed`]) and
//! [`render`], which writes them in the Prometheus text format (OpenMetrics 1.0, which
//! Prometheus reads natively), with the prometheus-client crate.
//!
//! One registry per process, like a logger: the counts are about the process, and a global
//! spares threading a handle through the store backends and the sync engine (two lines in each
//! instead). Labels carry only codes and route templates, so a scrape never holds an id, a
//! name, a path or any text a device chose, and their number is bounded by the code and the
//! route lists. Gauges of now (live connections, store size) are read at the scrape.
//!
//! It may use the protocol's error codes; it knows nothing of HTTP frameworks or stores.

use casenote_protocol::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Duration;

/// The media type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Code {
    code: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    latency: Histograms<Route>,
    refusals: Family<Code, Counter>,
    rejections: Family<Code, Counter>,
    stored: Counter,
    pulled: Counter,
    scanned: Counter,
    quarantined: Counter,
    flush_seconds: Histogram,
    flush_requests: Histogram,
    live: Gauge,
    in_flight: Gauge,
    store_bytes: Gauge,
}

/// Request latencies: 1 ms to about 65 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    fn new() -> Self {
        let m = Metrics {
            registry: Registry::with_prefix("casenote"),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            refusals: Family::default(),
            rejections: Family::default(),
            stored: Counter::default(),
            pulled: Counter::default(),
            scanned: Counter::default(),
            quarantined: Counter::default(),
            // 0.25 ms to about 4 s, doubling: a flush is an fsync or a few.
            flush_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
            // 1 to 512 requests, doubling.
            flush_requests: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            live: Gauge::default(),
            in_flight: Gauge::default(),
            store_bytes: Gauge::default(),
        };
        m.register()
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "http_requests",
            "HTTP requests answered, by route template and status",
            self.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to its response head), by route template",
            self.latency.clone(),
        );
        r.register(
            "refusals",
            "Error answers, by error code (casenote_protocol::ErrorCode)",
            self.refusals.clone(),
        );
        r.register(
            "sync_rejections",
            "Pushed documents refused in sync answers, by error code",
            self.rejections.clone(),
        );
        r.register(
            "sync_changes_stored",
            "Pushed changes new to the server, stored durably",
            self.stored.clone(),
        );
        r.register(
            "sync_changes_pulled",
            "Changes sent to devices in sync answers",
            self.pulled.clone(),
        );
        r.register(
            "sync_log_entries_scanned",
            "Log entries read by the log scans of sync answers",
            self.scanned.clone(),
        );
        r.register(
            "quarantined_changes",
            "Pushed changes refused by the record rules and quarantined",
            self.quarantined.clone(),
        );
        r.register(
            "store_flush_duration_seconds",
            "sled: one group-commit flush; PostgreSQL: one write transaction's COMMIT",
            self.flush_seconds.clone(),
        );
        r.register(
            "store_flush_requests",
            "sled: the requests that shared one group-commit flush",
            self.flush_requests.clone(),
        );
        r.register(
            "live_connections",
            "Open live-channel connections (GET /v1/live)",
            self.live.clone(),
        );
        r.register(
            "http_requests_in_flight",
            "Requests being served under the request cap (limits::HTTP_REQUESTS_IN_FLIGHT_MAX)",
            self.in_flight.clone(),
        );
        r.register(
            "store_size_bytes",
            "The store's size: sled's files on disk, or PostgreSQL's database",
            self.store_bytes.clone(),
        );
        self
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// A request answered: its route template (`/v1/history/{doc_id}`, never the path the peer
/// sent), status, and time to answer.
pub fn request(route: &str, status: u16, elapsed: Duration) {
    let m = &*METRICS;
    let route = route.to_string();
    m.latency
        .get_or_create(&Route {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    m.requests
        .get_or_create(&RouteStatus { route, status })
        .inc();
}

/// An error answer with `code`.
pub fn refused(code: ErrorCode) {
    METRICS
        .refusals
        .get_or_create(&Code {
            code: code.as_str(),
        })
        .inc();
}

/// A sync done: changes it stored, changes it sent, changes quarantined, and the codes of the
/// pushed documents it refused.
pub fn synced(
    stored: usize,
    pulled: usize,
    quarantined: usize,
    rejected: impl Iterator<Item = ErrorCode>,
) {
    let m = &*METRICS;
    m.stored.inc_by(stored as u64);
    m.pulled.inc_by(pulled as u64);
    m.quarantined.inc_by(quarantined as u64);
    for code in rejected {
        m.rejections
            .get_or_create(&Code {
                code: code.as_str(),
            })
            .inc();
    }
}

/// A log scan of a sync answer read `entries` log entries.
pub fn log_scanned(entries: usize) {
    METRICS.scanned.inc_by(entries as u64);
}

/// A sled group-commit flush: how long it took, and how many requests it served.
pub fn flushed(elapsed: Duration, requests: usize) {
    METRICS.flush_seconds.observe(elapsed.as_secs_f64());
    METRICS.flush_requests.observe(requests as f64);
}

/// A PostgreSQL write transaction's COMMIT, and how long it took.
pub fn committed(elapsed: Duration) {
    METRICS.flush_seconds.observe(elapsed.as_secs_f64());
}

/// Every metric as Prometheus text, with the gauges of now (capped requests in flight: the
/// `/metrics` request itself is not capped, so it never counts itself).
pub fn render(live_connections: usize, in_flight: usize, store_bytes: Option<u64>) -> String {
    let m = &*METRICS;
    m.live
        .set(i64::try_from(live_connections).unwrap_or(i64::MAX));
    m.in_flight
        .set(i64::try_from(in_flight).unwrap_or(i64::MAX));
    if let Some(bytes) = store_bytes {
        m.store_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
    out
}
