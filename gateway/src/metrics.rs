//! Prometheus metrics, kept in-process: requests by route template, method and status, latency
//! histograms by route, and desktops by state (read from the store at scrape time).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::store::Store;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (bound, n) in BUCKETS.iter().zip(self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    actions: BTreeMap<(&'static str, &'static str), Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn record(&self, route: &str, method: &str, status: u16, took: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner
            .requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        inner.latency.entry(route.to_string()).or_default().observe(took);
    }

    /// Times one desktop action by its name and how it ended.
    pub fn record_action(&self, action: &'static str, outcome: &'static str, took: Duration) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.actions.entry((action, outcome)).or_default().observe(took);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, store: &Store) -> (&'static str, String) {
        let mut out = String::new();
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP orgo_http_requests_total API requests by route, method and status.\n");
        out.push_str("# TYPE orgo_http_requests_total counter\n");
        for ((route, method, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "orgo_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP orgo_http_request_duration_seconds API request latency by route.\n");
        out.push_str("# TYPE orgo_http_request_duration_seconds histogram\n");
        for (route, h) in &inner.latency {
            h.render(
                &mut out,
                "orgo_http_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        out.push_str("# HELP orgo_action_duration_seconds Desktop actions by name and outcome.\n");
        out.push_str("# TYPE orgo_action_duration_seconds histogram\n");
        for ((action, outcome), h) in &inner.actions {
            let labels = format!("action=\"{action}\",outcome=\"{outcome}\"");
            h.render(&mut out, "orgo_action_duration_seconds", &labels);
        }
        drop(inner);
        out.push_str("# HELP orgo_desktops Desktops by state.\n# TYPE orgo_desktops gauge\n");
        let mut by_state: BTreeMap<&str, u64> = ["creating", "running", "stopping", "stopped", "error"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
        for c in store.all_computers().unwrap_or_default() {
            *by_state.entry(c.status.as_str()).or_default() += 1;
        }
        for (state, n) in by_state {
            let _ = writeln!(out, "orgo_desktops{{state=\"{state}\"}} {n}");
        }
        ("text/plain; version=0.0.4", out)
    }
}

/// Middleware: times every request and counts it under its route template (never the raw
/// path, which would carry ids).
pub async fn track(State(metrics): State<std::sync::Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.record(&route, &method, response.status().as_u16(), started.elapsed());
    response
}
