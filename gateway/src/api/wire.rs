//! JSON shapes of the API: request bodies (serde, unknown fields ignored the way the SDK
//! expects) and the answers, built from domain values.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::desktops::Desktops;
use crate::store::{Computer, Project};

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct CreateProject {
    pub name: Option<String>,
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

#[derive(Debug, Deserialize)]
pub struct Click {
    pub x: i64,
    pub y: i64,
    #[serde(default)]
    pub button: Option<String>,
    #[serde(default)]
    pub double: bool,
    #[serde(default)]
    pub count: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct Point {
    pub x: i64,
    pub y: i64,
}

#[derive(Debug, Deserialize)]
pub struct Button {
    #[serde(default)]
    pub x: Option<i64>,
    #[serde(default)]
    pub y: Option<i64>,
    #[serde(default)]
    pub button: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Drag {
    pub start_x: i64,
    pub start_y: i64,
    pub end_x: i64,
    pub end_y: i64,
    #[serde(default)]
    pub button: Option<String>,
    #[serde(default)]
    pub duration: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Scroll {
    #[serde(default)]
    pub x: Option<i64>,
    #[serde(default)]
    pub y: Option<i64>,
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default)]
    pub amount: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct TypeText {
    pub text: String,
}

#[derive(Debug, Deserialize)]
pub struct Key {
    pub key: String,
}

#[derive(Debug, Deserialize)]
pub struct Bash {
    pub command: String,
    #[serde(default)]
    pub timeout: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Exec {
    pub code: String,
    #[serde(default)]
    pub timeout: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Wait {
    pub duration: f64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ScreenshotQuery {
    pub response_format: Option<String>,
    pub format: Option<String>,
    pub quality: Option<u32>,
    pub max_width: Option<u32>,
    pub max_height: Option<u32>,
    pub x: Option<u32>,
    pub y: Option<u32>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

pub fn computer_json(d: &Desktops, c: &Computer, width: u32, height: u32) -> Value {
    let resolution = format!("{width}x{height}x24");
    json!({
        "id": c.id,
        "name": c.name,
        "status": c.status.as_str(),
        "project_id": c.project_id,
        "workspace_id": c.project_id,
        "os": "linux",
        "ram": c.ram_gb,
        // Whole cores print as integers, as Orgo answers them.
        "cpu": if c.cpu.fract() == 0.0 { json!(c.cpu as u64) } else { json!(c.cpu) },
        "gpu": "none",
        "url": d.url(c),
        "resolution": resolution,
        "instance_details": { "resolution": resolution },
        "created_at": c.created_at,
    })
}

/// The seed's project shape (`desktop` = its first computer) plus the SDK's `desktops` list.
pub fn project_json(d: &Desktops, p: &Project, computers: &[Computer], width: u32, height: u32) -> Value {
    let desktops: Vec<Value> = computers
        .iter()
        .map(|c| computer_json(d, c, width, height))
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
