//! Prometheus metrics, kept in-process with [`prometheus_client`] and served in the Prometheus
//! text format (0.0.4): requests by route template, method and status, latency histograms by
//! route, desktop action latency by action and outcome, and desktops by state (read from the
//! store at scrape time).

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::store::{Computer, Status};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// Every desktop state, each exported even at 0.
const STATES: [Status; 5] = [
    Status::Creating,
    Status::Running,
    Status::Stopping,
    Status::Stopped,
    Status::Error,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms<RouteLabels>,
    actions: Histograms<ActionLabels>,
    idle_stops: Counter,
    leading: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Histograms::<RouteLabels>::new_with_constructor(latency_histogram);
        let actions = Histograms::<ActionLabels>::new_with_constructor(latency_histogram);
        let mut registry = Registry::default();
        // The library adds `_total` to counters and the unit to the name, and ends help with '.'.
        registry.register(
            "orgo_http_requests",
            "API requests by route, method and status",
            requests.clone(),
        );
        registry.register_with_unit(
            "orgo_http_request_duration",
            "API request latency by route",
            Unit::Seconds,
            latency.clone(),
        );
        registry.register_with_unit(
            "orgo_action_duration",
            "Desktop action latency by action and outcome",
            Unit::Seconds,
            actions.clone(),
        );
        let idle_stops = Counter::default();
        registry.register(
            "orgo_idle_stops",
            "Desktops this replica stopped for idleness",
            idle_stops.clone(),
        );
        let leading = Gauge::default();
        registry.register(
            "orgo_singletons_lease_epoch",
            "The epoch of the singletons' lease while this replica holds it, else 0",
            leading.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            actions,
            idle_stops,
            leading,
        }
    }
}

impl Metrics {
    pub fn record(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one desktop action (`click`, `type`, …) that ended in `outcome` (`ok`, an error
    /// kind, …) after `took`.
    pub fn record_action(&self, action: &'static str, outcome: &'static str, took: Duration) {
        self.actions
            .get_or_create(&ActionLabels { action, outcome })
            .observe(took.as_secs_f64());
    }

    /// Counts a desktop this replica stopped for idleness.
    pub fn record_idle_stop(&self) {
        self.idle_stops.inc();
    }

    /// The singletons' lease epoch while this replica holds it, else 0.
    pub fn set_leading(&self, epoch: i64) {
        self.leading.set(epoch);
    }

    /// The Prometheus text exposition and its content type, with the count of `computers`
    /// (the store's, read for this scrape) in each state; without that family when the store
    /// could not be read (zeros would read as every desktop gone).
    pub fn render(&self, computers: Option<&[Computer]>) -> (&'static str, String) {
        let mut out = String::new();
        // Writing to a String cannot fail; the encoders only pass on the writer's errors.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        if let Some(computers) = computers {
            let _ = prometheus_text::encode(&mut out, &desktops_by_state(computers));
        }
        (prometheus_text::CONTENT_TYPE, out)
    }
}

/// A registry made for one scrape, holding the store's count of desktops in each state.
fn desktops_by_state(computers: &[Computer]) -> Registry {
    let desktops = Family::<StateLabels, Gauge>::default();
    for status in STATES {
        desktops
            .get_or_create(&StateLabels {
                state: status.as_str(),
            })
            .set(0);
    }
    for c in computers {
        desktops
            .get_or_create(&StateLabels {
                state: c.status.as_str(),
            })
            .inc();
    }
    let mut registry = Registry::default();
    registry.register("orgo_desktops", "Desktops by state", desktops);
    registry
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let metrics = Metrics::default();
        let route = "/api/computers/{id}/{action}";
        metrics.record(route, "POST", 409, Duration::from_millis(3));
        metrics.record(route, "POST", 409, Duration::from_millis(3));
        metrics.record(route, "POST", 200, Duration::from_millis(3));
        let (_, text) = metrics.render(Some(&[]));
        assert!(
            text.contains("# TYPE orgo_http_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "orgo_http_requests_total{route=\"/api/computers/{id}/{action}\",method=\"POST\",\
                 status=\"409\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "orgo_http_requests_total{route=\"/api/computers/{id}/{action}\",method=\"POST\",\
                 status=\"200\"} 1\n"
            ),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "the 0.0.4 text format has no EOF marker");
    }

    #[test]
    fn latency_lands_in_the_right_buckets() {
        let metrics = Metrics::default();
        let route = "/api/computers/{id}/screenshot";
        metrics.record(route, "GET", 200, Duration::from_micros(400));
        metrics.record(route, "GET", 200, Duration::from_millis(20));
        metrics.record(route, "GET", 200, Duration::from_secs(60));
        let (_, text) = metrics.render(Some(&[]));
        assert!(
            text.contains("# TYPE orgo_http_request_duration_seconds histogram\n"),
            "{text}"
        );
        let buckets = lines(&text, "orgo_http_request_duration_seconds_bucket{");
        let expected: Vec<String> = [
            ("0.0005", 1),
            ("0.001", 1),
            ("0.0025", 1),
            ("0.005", 1),
            ("0.01", 1),
            ("0.025", 2),
            ("0.05", 2),
            ("0.1", 2),
            ("0.25", 2),
            ("0.5", 2),
            ("1", 2),
            ("5", 2),
            ("30", 2),
            ("+Inf", 3),
        ]
        .into_iter()
        .map(|(le, n)| {
            format!("orgo_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {n}")
        })
        .collect();
        assert_eq!(buckets, expected);
        assert!(
            text.contains(&format!(
                "orgo_http_request_duration_seconds_count{{route=\"{route}\"}} 3\n"
            )),
            "{text}"
        );
        let sum = lines(&text, "orgo_http_request_duration_seconds_sum{");
        assert_eq!(sum.len(), 1, "{text}");
        let sum: f64 = sum[0].rsplit(' ').next().unwrap().parse().unwrap();
        assert!((sum - 60.0204).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn actions_are_timed_by_action_and_outcome() {
        let metrics = Metrics::default();
        metrics.record_action("click", "ok", Duration::from_millis(2));
        metrics.record_action("click", "ok", Duration::from_millis(200));
        metrics.record_action("type", "unavailable", Duration::from_secs(10));
        let (_, text) = metrics.render(Some(&[]));
        assert!(
            text.contains("# TYPE orgo_action_duration_seconds histogram\n"),
            "{text}"
        );
        for line in [
            "orgo_action_duration_seconds_bucket{action=\"click\",outcome=\"ok\",le=\"0.001\"} 0\n",
            "orgo_action_duration_seconds_bucket{action=\"click\",outcome=\"ok\",le=\"0.0025\"} 1\n",
            "orgo_action_duration_seconds_bucket{action=\"click\",outcome=\"ok\",le=\"0.25\"} 2\n",
            "orgo_action_duration_seconds_count{action=\"click\",outcome=\"ok\"} 2\n",
            "orgo_action_duration_seconds_bucket{action=\"type\",outcome=\"unavailable\",le=\"5\"} 0\n",
            "orgo_action_duration_seconds_bucket{action=\"type\",outcome=\"unavailable\",le=\"30\"} 1\n",
            "orgo_action_duration_seconds_count{action=\"type\",outcome=\"unavailable\"} 1\n",
        ] {
            assert!(text.contains(line), "lacks {line}{text}");
        }
        assert_eq!(
            lines(&text, "orgo_action_duration_seconds_bucket{action=\"click\"").len(),
            BUCKETS.len() + 1
        );
    }

    #[test]
    fn every_desktop_state_is_exported_even_at_zero() {
        let metrics = Metrics::default();
        let stopped = Computer {
            id: "c0ffee".into(),
            account_id: "acct".into(),
            project_id: "proj".into(),
            name: "idle-one".into(),
            status: Status::Stopped,
            ram_gb: 2,
            cpu: 2.0,
            created_at: 0,
            last_active: 0,
            agent: None,
            generation: 1,
            ended: None,
            disk_gb: None,
            resolution: None,
            auto_stop_minutes: None,
        };
        let (_, text) = metrics.render(Some(&[stopped]));
        assert!(text.contains("# TYPE orgo_desktops gauge\n"), "{text}");
        let mut states = lines(&text, "orgo_desktops{");
        states.sort();
        assert_eq!(
            states,
            [
                "orgo_desktops{state=\"creating\"} 0",
                "orgo_desktops{state=\"error\"} 0",
                "orgo_desktops{state=\"running\"} 0",
                "orgo_desktops{state=\"stopped\"} 1",
                "orgo_desktops{state=\"stopping\"} 0",
            ]
        );
        let (_, unread) = metrics.render(None);
        assert!(!unread.contains("orgo_desktops"), "{unread}");
    }
}
