//! What every request handler shares.

use std::sync::Arc;

use crate::config::Config;
use crate::desktops::Desktops;
use crate::live::Links;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub desktops: Arc<Desktops>,
    pub links: Arc<Links>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<RateLimiter>,
    /// The gRPC health service's statuses.
    pub health: tonic_health::server::HealthReporter,
}
