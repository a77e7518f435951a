//! Helpers shared by the gateway's integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

/// The orgo-agent binary of this build, built first if needed.
pub fn agent_bin() -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let bin = dir.join("orgo-agent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["build", "-q", "-p", "orgo-agent", "--bin", "orgo-agent"];
    if dir.ends_with("release") {
        args.push("--release");
    }
    let status = std::process::Command::new(cargo).args(args).status().unwrap();
    assert!(status.success() && bin.exists(), "orgo-agent must build");
    bin
}

/// A fresh scratch directory for one test.
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orgo-gw-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The committed OpenAPI document, used to check that real answers match what it promises.
pub struct ApiDoc {
    doc: serde_json::Value,
}

/// A JSON pointer segment, also fit for a URI fragment.
fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

impl ApiDoc {
    pub fn load() -> ApiDoc {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
        ApiDoc {
            doc: serde_json::from_str(&text).unwrap(),
        }
    }

    /// The document's path template for a request path under `/api`: the one whose segments
    /// match, preferring literal segments over `{params}`.
    fn template(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap().strip_prefix("/api")?;
        let segs: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|t| {
                let tsegs: Vec<&str> = t.split('/').collect();
                let fits = tsegs.len() == segs.len()
                    && tsegs.iter().zip(&segs).all(|(t, s)| t.starts_with('{') || t == s);
                fits.then(|| (tsegs.iter().filter(|t| !t.starts_with('{')).count(), t.clone()))
            })
            .max()
            .map(|(_, t)| t)
    }

    /// Panics unless the document has this operation and status and `body` fits its schema.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &serde_json::Value) {
        let raw_op = self
            .template(path)
            .map(|t| {
                format!(
                    "/paths/{}/{}",
                    t.replace('~', "~0").replace('/', "~1"),
                    method.to_lowercase()
                )
            })
            .filter(|op| self.doc.pointer(op).is_some());
        let Some(raw_op) = raw_op else {
            // Routes and methods the API does not have answer the common error shape.
            assert!(
                status == 404 || status == 405,
                "{method} {path}: undocumented, yet answered {status}"
            );
            return self.validate("#/components/schemas/Error", method, path, status, body);
        };
        let op = raw_op.replace('{', "%7B").replace('}', "%7D");
        let mut response = format!("{op}/responses/{status}");
        let resolved = self
            .doc
            .pointer(&format!("{raw_op}/responses/{status}"))
            .unwrap_or_else(|| {
                panic!("{method} {raw_op}: status {status} is not documented (answer {body})")
            });
        if let Some(r) = resolved["$ref"].as_str() {
            response = r.trim_start_matches('#').to_string();
        }
        let schema_at = format!(
            "#{response}/content/{}/schema",
            pointer_escape("application/json")
        );
        self.validate(&schema_at, method, path, status, body);
    }

    fn validate(&self, schema_at: &str, method: &str, path: &str, status: u16, body: &serde_json::Value) {
        let mut schema = self.doc.clone();
        schema["$ref"] = serde_json::Value::String(schema_at.to_string());
        let validator = jsonschema::draft202012::new(&schema).expect("openapi.json schemas compile");
        let problems: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            problems.is_empty(),
            "{method} {path} → {status}: answer does not match openapi.json: {problems:?}\n{body}"
        );
    }
}
