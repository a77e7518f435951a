//! JSON shapes of projects and computers: their creating bodies (serde, unknown fields
//! ignored the way the SDK expects) and their answers, built from domain values. Actions'
//! shapes are `action`'s and `actions`'.

use serde::Deserialize;
use serde_json::{Value, json};

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
}

pub fn computer_json(links: &Links, c: &Computer, width: u32, height: u32) -> Value {
    let resolution = format!("{width}x{height}x24");
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
        "url": links.url(c),
        "resolution": resolution,
        "instance_details": { "resolution": resolution },
        "created_at": c.created_at,
    })
}

/// The seed's project shape (`desktop` = its first computer) plus the SDK's `desktops` list.
pub fn project_json(links: &Links, p: &Project, computers: &[Computer], width: u32, height: u32) -> Value {
    let desktops: Vec<Value> = computers
        .iter()
        .map(|c| computer_json(links, c, width, height))
        .collect();
    json!({
        "id": p.id,
        "name": p.name,
        "status": "active",
        "desktop": desktops.first().cloned().unwrap_or(Value::Null),
        "desktops": desktops,
        "created_at": p.created_at,
    })
}
