//! Request tracing and Prometheus metrics.
//!
//! Each request is traced with method, route, status and latency; never headers, bodies or
//! query strings, so tokens and payloads cannot reach the logs. Metrics are served on their
//! own listener, away from the public api.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Traces one request and records its metrics.
pub async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    // The route template (/v1/keys/{key_id}), not the concrete path, keeps label sets small.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    tracing::info!(%method, route = %route, status, latency_ms = elapsed.as_secs_f64() * 1000.0, "request");
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("enclosure_http_requests_total", &labels).increment(1);
    metrics::histogram!("enclosure_http_request_seconds", &labels).record(elapsed.as_secs_f64());
    response
}

/// Starts the Prometheus exporter on `addr` (plain HTTP, meant for a private interface).
pub fn install_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| anyhow::anyhow!("starting the metrics listener on {addr}: {e}"))
}
