//! JSON shapes of projects and computers: their creating bodies (serde, unknown fields
//! ignored the way the SDK expects) and their answers, built from domain values. Actions'
//! shapes are `action`'s and `actions`'.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Config;
use crate::json::object;
use crate::live::Links;
use crate::store::{Computer, Project};

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct CreateProject {
    pub name: Option<String>,
    #[serde(deserialize_with = "object")]
    pub config: Option<SizeConfig>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct SizeConfig {
    pub ram: Option<f64>,
    pub cpu: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct CreateComputer {
    pub workspace_id: Option<String>,
    pub project_id: Option<String>,
    pub name: Option<String>,
    pub os: Option<String>,
    pub ram: Option<f64>,
    pub cpu: Option<f64>,
    pub gpu: Option<String>,
    pub image: Option<String>,
    pub disk_size_gb: Option<f64>,
    pub resolution: Option<String>,
    pub auto_stop_minutes: Option<f64>,
}

/// What `GET /computers/{id}` and every other computer answer say: the seed's and the SDK's
/// fields and today's Orgo fields (`instance_id`, `connection_url`, `resolution`,
/// `auto_stop_minutes`, `instance_details`, …).
pub struct ComputerView<'a> {
    pub links: &'a Links,
    pub config: &'a Config,
    /// The plan of the account whose computers these are (their default idle time).
    pub plan: &'a str,
}

impl ComputerView<'_> {
    pub fn computer(&self, c: &Computer) -> Value {
        let config = self.config;
        let resolution = config.resolution_of(c).to_string();
        let public = config.public_url();
        let connection_url = self.links.page_url(c);
        let (host, port) = public_host_port(&public);
        json!({
            "id": c.id,
            "name": c.name,
            "status": c.status.as_str(),
            // Why it is in `error` (what ended it, or why its start failed); null otherwise.
            "status_reason": c.ended,
            "project_id": c.project_id,
            "workspace_id": c.project_id,
            "os": "linux",
            "ram": c.ram_gb,
            // Whole cores print as integers, as Orgo answers them.
            "cpu": if c.cpu.fract() == 0.0 { json!(c.cpu as u64) } else { json!(c.cpu) },
            "gpu": "none",
            "disk_size_gb": config.disk_gb_of(c),
            "url": self.links.url(c),
            "resolution": resolution,
            // What is in force, its own or its plan's; null: it never stops by itself.
            "auto_stop_minutes": config.auto_stop(c, self.plan).map(|d| d.as_secs() / 60),
            // The id is already short-lived-proof: stable across restarts, accepted in every path.
            "instance_id": c.id,
            "fly_instance_id": c.id,
            "hostname": host,
            "connection_url": connection_url,
            "instance_details": {
                "resolution": resolution,
                "os": "linux",
                "id": c.id,
                "name": c.name,
                "publicHost": host,
                "apiPort": port,
                "vncHost": host,
                "webUrl": connection_url,
            },
            "created_at": c.created_at,
        })
    }

    /// The seed's project shape (`desktop` = its first computer) plus the SDK's and today's
    /// workspace fields (`desktops`, `status`, `computer_count`).
    pub fn project(&self, p: &Project, computers: &[Computer]) -> Value {
        let desktops: Vec<Value> = computers.iter().map(|c| self.computer(c)).collect();
        json!({
            "id": p.id,
            "name": p.name,
            "user_id": p.account_id,
            "status": "active",
            "icon_url": null,
            "computer_count": desktops.len(),
            "desktop": desktops.first().cloned().unwrap_or(Value::Null),
            "desktops": desktops,
            "created_at": p.created_at,
            "updated_at": p.created_at,
        })
    }
}

/// The host and port clients reach the gateway at, from its public URL (the port its
/// scheme implies when none is written).
fn public_host_port(public_url: &str) -> (String, u16) {
    let uri: axum::http::Uri = public_url.parse().unwrap_or_default();
    let host = uri.host().unwrap_or("localhost").to_string();
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    });
    (host, port)
}
