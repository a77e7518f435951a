//! A mixed load on a served gateway: client threads, each bound to one desktop, cycling through
//! screenshots, clicks, keys, typing and bash; latencies per route and answers by status.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::Served;

/// What a load run saw.
#[derive(Default)]
pub struct Report {
    pub seconds: f64,
    pub latencies: BTreeMap<&'static str, Vec<Duration>>,
    pub statuses: BTreeMap<u16, u64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `q` quantile of sorted latencies, in ms.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    ms(sorted[((sorted.len() - 1) as f64 * q).round() as usize])
}

impl Report {
    pub fn total(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn failed(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| **s != 200)
            .map(|(_, n)| n)
            .sum()
    }

    fn all_sorted(&self) -> Vec<Duration> {
        let mut all: Vec<Duration> = self.latencies.values().flatten().copied().collect();
        all.sort();
        all
    }

    /// One line: throughput, overall p50/p99 and errors.
    pub fn summary(&self) -> String {
        let all = self.all_sorted();
        format!(
            "{:.0} actions/s, p50 {:.1} ms, p99 {:.1} ms, {} errors of {}",
            (self.total() - self.failed()) as f64 / self.seconds,
            quantile(&all, 0.5),
            quantile(&all, 0.99),
            self.failed(),
            self.total()
        )
    }

    /// Per route p50/p99 and counts, then answers by status.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<12} {:>8} {:>10} {:>10}\n",
            "route", "calls", "p50 ms", "p99 ms"
        );
        for (route, lat) in &self.latencies {
            let mut lat = lat.clone();
            lat.sort();
            out += &format!(
                "{route:<12} {:>8} {:>10.1} {:>10.1}\n",
                lat.len(),
                quantile(&lat, 0.5),
                quantile(&lat, 0.99)
            );
        }
        let statuses: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        out + &format!("answers by status: {}\n", statuses.join(", "))
    }
}

/// Runs `clients` client threads for `window`, client i on `desktops[i % len]` with
/// `keys[i % len]`.
pub fn run(
    served: &Served,
    keys: &[String],
    desktops: &[String],
    clients: usize,
    window: Duration,
) -> Report {
    let stop = AtomicBool::new(false);
    let report = Mutex::new(Report::default());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..clients {
            let (stop, report) = (&stop, &report);
            let key = &keys[i % keys.len()];
            let c = format!("/computers/{}", desktops[i % desktops.len()]);
            scope.spawn(move || {
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let (route, (status, _)) = match k % 5 {
                        0 => (
                            "screenshot",
                            served.call(key, "GET", &format!("{c}/screenshot"), None),
                        ),
                        1 => (
                            "click",
                            served.call(
                                key,
                                "POST",
                                &format!("{c}/click"),
                                // Spots apart per client and call: clicks at one spot
                                // closer than the double-click interval are spaced by it.
                                Some(json!({"x": 100 + (k % 7) * 150, "y": 100 + (i / desktops.len() % 6) * 120})),
                            ),
                        ),
                        2 => (
                            "key",
                            served.call(key, "POST", &format!("{c}/key"), Some(json!({"key": "shift"}))),
                        ),
                        3 => (
                            "type",
                            served.call(key, "POST", &format!("{c}/type"), Some(json!({"text": "load"}))),
                        ),
                        _ => (
                            "bash",
                            served.call(
                                key,
                                "POST",
                                &format!("{c}/bash"),
                                Some(json!({"command": "true"})),
                            ),
                        ),
                    };
                    let took = t.elapsed();
                    let mut r = report.lock().unwrap();
                    r.latencies.entry(route).or_default().push(took);
                    *r.statuses.entry(status).or_default() += 1;
                    k += 1;
                }
            });
        }
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
    });
    let mut report = report.into_inner().unwrap();
    report.seconds = started.elapsed().as_secs_f64();
    report
}
