//! JSON shapes of the API: request bodies (serde, unknown fields ignored the way the SDK
//! expects) and the answers, built from domain values.

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::desktops::Desktops;
use crate::store::{Computer, Project};

/// An integer field: JSON integers, and numbers with no fraction (`153.0`), which JSON Schema
/// also counts as integers; anything else is refused with the field named.
fn int<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    let whole = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Some(i),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
        _ => None,
    };
    whole
        .and_then(|i| T::try_from(i).ok())
        .ok_or_else(|| D::Error::custom(format!("expected an integer in range, not {n}")))
}

/// `int` for optional fields; `null` counts as absent.
fn opt_int<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<Option<T>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap<T: TryFrom<i64>>(#[serde(deserialize_with = "int")] T);
    Ok(Option::<Wrap<T>>::deserialize(d)?.map(|Wrap(v)| v))
}

/// A nested object (or null): serde would also read a struct from an array of its fields.
fn object<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Map<String, Value>>::deserialize(d)? {
        None => Ok(None),
        Some(map) => serde_path_to_error::deserialize(Value::Object(map))
            .map(Some)
            .map_err(|e| D::Error::custom(format!("{}: {}", e.path(), e.inner()))),
    }
}

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

#[derive(Debug, Deserialize)]
pub struct Click {
    #[serde(deserialize_with = "int")]
    pub x: i64,
    #[serde(deserialize_with = "int")]
    pub y: i64,
    #[serde(default)]
    pub button: Option<String>,
    #[serde(default)]
    pub double: Option<bool>,
    #[serde(default, deserialize_with = "opt_int")]
    pub count: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct Point {
    #[serde(deserialize_with = "int")]
    pub x: i64,
    #[serde(deserialize_with = "int")]
    pub y: i64,
}

#[derive(Debug, Deserialize)]
pub struct Button {
    #[serde(default, deserialize_with = "opt_int")]
    pub x: Option<i64>,
    #[serde(default, deserialize_with = "opt_int")]
    pub y: Option<i64>,
    #[serde(default)]
    pub button: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Drag {
    #[serde(deserialize_with = "int")]
    pub start_x: i64,
    #[serde(deserialize_with = "int")]
    pub start_y: i64,
    #[serde(deserialize_with = "int")]
    pub end_x: i64,
    #[serde(deserialize_with = "int")]
    pub end_y: i64,
    #[serde(default)]
    pub button: Option<String>,
    #[serde(default)]
    pub duration: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Scroll {
    #[serde(default, deserialize_with = "opt_int")]
    pub x: Option<i64>,
    #[serde(default, deserialize_with = "opt_int")]
    pub y: Option<i64>,
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default, deserialize_with = "opt_int")]
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
