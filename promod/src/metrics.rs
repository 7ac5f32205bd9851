//! Prometheus metrics: one process-wide recorder, rendered by every role's
//! `/metrics`, and the HTTP middleware that counts requests per role and route.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process-wide handle; the first call installs the recorder.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Only fails when another recorder is installed (never in promod).
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub async fn render() -> String {
    collect_process();
    handle().render()
}

/// The process's own numbers, read when scraped: CPU seconds, resident and
/// virtual memory, open and max file descriptors, threads, start time
/// (metrics-process, the `process_*` names of Prometheus' client libraries),
/// and the Tokio runtime's workers, live tasks and global queue depth.
fn collect_process() {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    PROCESS
        .get_or_init(|| {
            let c = metrics_process::Collector::default();
            c.describe();
            c
        })
        .collect();
    let rt = tokio::runtime::Handle::current().metrics();
    metrics::gauge!("promo_tokio_workers").set(rt.num_workers() as f64);
    metrics::gauge!("promo_tokio_alive_tasks").set(rt.num_alive_tasks() as f64);
    metrics::gauge!("promo_tokio_global_queue_depth").set(rt.global_queue_depth() as f64);
}

/// Counts and times every request, labelled by role and matched route.
pub async fn track(State(role): State<&'static str>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let labels = [
        ("role", role.to_owned()),
        ("method", method),
        ("route", route),
    ];
    metrics::histogram!("promo_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    let mut labels = labels.to_vec();
    labels.push(("status", status));
    metrics::counter!("promo_http_requests_total", &labels).increment(1);
    resp
}
