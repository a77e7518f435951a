//! The Kubernetes objects of one desktop, as the API server takes them (JSON, applied
//! server-side): its agent token (a Secret, mounted as a file), its home (a
//! PersistentVolumeClaim that outlives a stop), its Pod (the desktop image, hardened), and the
//! installation's one NetworkPolicy. Only Pod fields that were GA by Kubernetes 1.20 are used.
//! Pure functions of a [`Desktop`]: unit-tested against literal objects.

use serde_json::{Value, json};

use crate::runtime::DesktopSpec;

/// The agent's port in the Pod.
pub const AGENT_PORT: u16 = 7000;
/// Labels every object of a desktop carries.
pub const DESKTOP_LABEL: &str = "orgo.desktop";
pub const INSTALLATION_LABEL: &str = "orgo.installation";
/// The label desktop Pods carry (and the NetworkPolicy selects), and gateway Pods' value of it.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const DESKTOP_NAME: &str = "orgo-desktop";
pub const GATEWAY_NAME: &str = "orgo-gateway";
/// The desktop image's user.
const DESKTOP_UID: i64 = 1000;
/// How long a desktop's Pod stays bound to a node that stopped answering before the cluster
/// evicts it (the API server's default is 300 s): its user learns sooner that it is gone.
const NODE_LOST_SECONDS: i64 = 30;
/// The largest `/tmp` (a memory emptyDir, so it counts against the desktop's memory).
const TMP_SIZE: &str = "1Gi";
/// Where egress is refused: the private, carrier-grade NAT and link-local (cloud metadata)
/// ranges, so a desktop reaches the internet but not the cluster or the cloud's control plane.
const INTERNAL_RANGES: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
];

/// One desktop as the cluster sees it.
pub struct Desktop<'a> {
    pub spec: &'a DesktopSpec,
    pub image: &'a str,
    /// Names this gateway installation (every replica the same), on every object.
    pub installation: &'a str,
    /// The home's storage class; the cluster's default when None.
    pub storage_class: Option<&'a str>,
}

pub fn pod_name(id: &str) -> String {
    format!("orgo-{id}")
}

pub fn secret_name(id: &str) -> String {
    format!("orgo-{id}-token")
}

pub fn claim_name(id: &str) -> String {
    format!("orgo-{id}-home")
}

/// The Pod that copies another desktop's home into a clone's.
pub fn copy_pod_name(id: &str) -> String {
    format!("orgo-{id}-home-copy")
}

/// The label of a home-copy Pod (not a desktop: no [`DESKTOP_LABEL`]), naming its clone.
pub const COPY_LABEL: &str = "orgo.home-copy";

/// The label selector of every desktop object of an installation.
pub fn installation_selector(installation: &str) -> String {
    format!("{INSTALLATION_LABEL}={installation}")
}

impl Desktop<'_> {
    fn labels(&self) -> Value {
        json!({
            DESKTOP_LABEL: self.spec.id,
            INSTALLATION_LABEL: self.installation,
            NAME_LABEL: DESKTOP_NAME,
        })
    }

    fn metadata(&self, name: String) -> Value {
        json!({ "name": name, "labels": self.labels() })
    }

    /// The agent's bearer token, as the file `token`.
    pub fn secret(&self, token: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": self.metadata(secret_name(&self.spec.id)),
            "type": "Opaque",
            "stringData": { "token": token },
        })
    }

    /// The home, kept across stops.
    pub fn claim(&self) -> Value {
        let mut spec = json!({
            "accessModes": ["ReadWriteOnce"],
            "resources": { "requests": { "storage": format!("{}Gi", self.spec.disk_gb) } },
        });
        if let Some(class) = self.storage_class {
            spec["storageClassName"] = json!(class);
        }
        json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": self.metadata(claim_name(&self.spec.id)),
            "spec": spec,
        })
    }

    /// The desktop: the image's agent on TCP with the token file, requests equal to limits,
    /// no privilege, the home and a memory `/tmp` mounted.
    pub fn pod(&self) -> Value {
        let s = self.spec;
        let resources = json!({
            "memory": format!("{}Gi", s.ram_gb),
            "cpu": cpu_quantity(s.cpu),
        });
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self.metadata(pod_name(&s.id)),
            "spec": {
                // A desktop whose processes end is reported, not restarted behind the API.
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                // The pause process becomes PID 1 and reaps what the desktop orphans.
                "shareProcessNamespace": true,
                "terminationGracePeriodSeconds": 5,
                "tolerations": [
                    {
                        "key": "node.kubernetes.io/unreachable",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": NODE_LOST_SECONDS,
                    },
                    {
                        "key": "node.kubernetes.io/not-ready",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": NODE_LOST_SECONDS,
                    },
                ],
                "securityContext": pod_security(),
                "containers": [{
                    "name": "desktop",
                    "image": self.image,
                    // Appended to the image's entrypoint; the agent takes the last --listen.
                    "args": [
                        "--listen", format!("tcp://0.0.0.0:{AGENT_PORT}"),
                        "--token-file", "/run/orgo-token/token",
                    ],
                    "env": [{
                        "name": "ORGO_SPAWN_XVFB",
                        "value": format!("{}x{}x24", s.width, s.height),
                    }],
                    "ports": [{ "name": "agent", "containerPort": AGENT_PORT, "protocol": "TCP" }],
                    "readinessProbe": {
                        "tcpSocket": { "port": AGENT_PORT },
                        "periodSeconds": 1,
                        "failureThreshold": 3,
                    },
                    "resources": { "requests": resources.clone(), "limits": resources },
                    "securityContext": container_security(),
                    "volumeMounts": [
                        { "name": "home", "mountPath": "/home/user" },
                        { "name": "tmp", "mountPath": "/tmp" },
                        { "name": "token", "mountPath": "/run/orgo-token", "readOnly": true },
                    ],
                }],
                "volumes": [
                    { "name": "home", "persistentVolumeClaim": { "claimName": claim_name(&s.id) } },
                    { "name": "tmp", "emptyDir": { "medium": "Memory", "sizeLimit": TMP_SIZE } },
                    {
                        "name": "token",
                        "secret": { "secretName": secret_name(&s.id), "defaultMode": 0o400 },
                    },
                ],
            },
        })
    }
}

impl Desktop<'_> {
    /// The Pod that copies desktop `from`'s home, as it is now, into this desktop's (a
    /// clone's) claim, with owners and modes, as the desktop's user: on `node`, where `from`'s
    /// Pod runs (a ReadWriteOnce claim in use is mounted on its node only), else wherever its
    /// volume is. Small and short-lived; no network, no token, no privilege.
    pub fn home_copy_pod(&self, from: &str, node: Option<&str>) -> Value {
        let mut spec = json!({
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "activeDeadlineSeconds": COPY_DEADLINE_SECONDS,
            "securityContext": pod_security(),
            "containers": [{
                "name": "copy",
                "image": self.image,
                // Entry by entry: `cp -a /from/. /to` would also give the claim's root the
                // source's times and mode, which its owner (root, not the desktop's user) may.
                "command": ["sh", "-c", COPY_SCRIPT],
                // cp's complaint becomes the Pod's termination message.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "resources": {
                    "requests": { "cpu": "50m", "memory": "64Mi" },
                    "limits": { "cpu": "500m", "memory": "256Mi" },
                },
                "securityContext": container_security(),
                "volumeMounts": [
                    { "name": "from", "mountPath": "/from", "readOnly": true },
                    { "name": "to", "mountPath": "/to" },
                ],
            }],
            "volumes": [
                {
                    "name": "from",
                    "persistentVolumeClaim": { "claimName": claim_name(from), "readOnly": true },
                },
                { "name": "to", "persistentVolumeClaim": { "claimName": claim_name(&self.spec.id) } },
            ],
        });
        if let Some(node) = node {
            spec["nodeName"] = json!(node);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": copy_pod_name(&self.spec.id),
                "labels": { INSTALLATION_LABEL: self.installation, COPY_LABEL: self.spec.id },
            },
            "spec": spec,
        })
    }
}

/// What the home-copy Pod runs: every entry of the source's home, with its owners, modes,
/// times and links, into the clone's.
const COPY_SCRIPT: &str = "cd /from && find . -mindepth 1 -maxdepth 1 -exec cp -a -t /to -- {} +";

/// How long a home copy may take before the cluster ends it.
pub const COPY_DEADLINE_SECONDS: i64 = 600;

/// The installation's NetworkPolicy over its desktop Pods: the agent port reachable only from
/// the gateway's Pods (and `gateway_cidrs`, for gateways outside the cluster), egress to the
/// internet and DNS but not to the cluster's internal ranges or cloud metadata.
pub fn network_policy(installation: &str, gateway_cidrs: &[String]) -> Value {
    let mut from = vec![json!({ "podSelector": { "matchLabels": { NAME_LABEL: GATEWAY_NAME } } })];
    from.extend(
        gateway_cidrs
            .iter()
            .map(|cidr| json!({ "ipBlock": { "cidr": cidr } })),
    );
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": format!("orgo-desktops-{installation}"),
            "labels": { INSTALLATION_LABEL: installation },
        },
        "spec": {
            "podSelector": {
                "matchLabels": { NAME_LABEL: DESKTOP_NAME, INSTALLATION_LABEL: installation },
            },
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": from,
                "ports": [{ "protocol": "TCP", "port": AGENT_PORT }],
            }],
            "egress": [
                { "to": [{ "ipBlock": { "cidr": "0.0.0.0/0", "except": INTERNAL_RANGES } }] },
                {
                    "ports": [
                        { "protocol": "UDP", "port": 53 },
                        { "protocol": "TCP", "port": 53 },
                    ],
                },
            ],
        },
    })
}

/// Every Pod of a desktop (its own, a home copy's) runs as the desktop's user, unprivileged.
fn pod_security() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": DESKTOP_UID,
        "runAsGroup": DESKTOP_UID,
        "fsGroup": DESKTOP_UID,
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// And each of its containers without any capability or a way to gain one.
fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": { "drop": ["ALL"] },
        "runAsNonRoot": true,
    })
}

/// A CPU count as a Kubernetes quantity: whole cores as they are, fractions in millicores.
fn cpu_quantity(cpu: f64) -> String {
    let milli = (cpu * 1000.0).round() as i64;
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ram_gb: u32, cpu: f64) -> DesktopSpec {
        DesktopSpec {
            id: "c0ffee".into(),
            ram_gb,
            cpu,
            width: 1280,
            height: 800,
            disk_gb: 10,
        }
    }

    fn desktop<'a>(spec: &'a DesktopSpec, storage_class: Option<&'a str>) -> Desktop<'a> {
        Desktop {
            spec,
            image: "orgo/desktop-minimal:0.1.0",
            installation: "prod",
            storage_class,
        }
    }

    #[test]
    fn a_two_core_four_gib_desktop_pod() {
        let s = spec(4, 2.0);
        let labels = json!({
            "orgo.desktop": "c0ffee",
            "orgo.installation": "prod",
            "app.kubernetes.io/name": "orgo-desktop",
        });
        let size = json!({ "memory": "4Gi", "cpu": "2" });
        assert_eq!(
            desktop(&s, None).pod(),
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "name": "orgo-c0ffee", "labels": labels },
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "shareProcessNamespace": true,
                    "terminationGracePeriodSeconds": 5,
                    "tolerations": [
                        { "key": "node.kubernetes.io/unreachable", "operator": "Exists",
                          "effect": "NoExecute", "tolerationSeconds": 30 },
                        { "key": "node.kubernetes.io/not-ready", "operator": "Exists",
                          "effect": "NoExecute", "tolerationSeconds": 30 },
                    ],
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "desktop",
                        "image": "orgo/desktop-minimal:0.1.0",
                        "args": ["--listen", "tcp://0.0.0.0:7000", "--token-file", "/run/orgo-token/token"],
                        "env": [{ "name": "ORGO_SPAWN_XVFB", "value": "1280x800x24" }],
                        "ports": [{ "name": "agent", "containerPort": 7000, "protocol": "TCP" }],
                        "readinessProbe": {
                            "tcpSocket": { "port": 7000 },
                            "periodSeconds": 1,
                            "failureThreshold": 3,
                        },
                        "resources": { "requests": size, "limits": size },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "capabilities": { "drop": ["ALL"] },
                            "runAsNonRoot": true,
                        },
                        "volumeMounts": [
                            { "name": "home", "mountPath": "/home/user" },
                            { "name": "tmp", "mountPath": "/tmp" },
                            { "name": "token", "mountPath": "/run/orgo-token", "readOnly": true },
                        ],
                    }],
                    "volumes": [
                        { "name": "home", "persistentVolumeClaim": { "claimName": "orgo-c0ffee-home" } },
                        { "name": "tmp", "emptyDir": { "medium": "Memory", "sizeLimit": "1Gi" } },
                        { "name": "token", "secret": { "secretName": "orgo-c0ffee-token", "defaultMode": 256 } },
                    ],
                },
            })
        );
    }

    #[test]
    fn sizes_become_quantities_and_the_pod_parses_as_one() {
        for (ram, cpu, memory, cores) in [
            (1, 0.5, "1Gi", "500m"),
            (8, 1.25, "8Gi", "1250m"),
            (16, 4.0, "16Gi", "4"),
        ] {
            let s = spec(ram, cpu);
            let pod = desktop(&s, None).pod();
            let limits = &pod["spec"]["containers"][0]["resources"]["limits"];
            assert_eq!(
                (limits["memory"].as_str(), limits["cpu"].as_str()),
                (Some(memory), Some(cores))
            );
            let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).unwrap();
            assert_eq!(typed.spec.unwrap().containers.len(), 1);
        }
    }

    #[test]
    fn a_home_copy_pod_mounts_the_source_read_only_beside_the_clones_claim() {
        let spec = spec(2, 1.0);
        let pod = desktop(&spec, None).home_copy_pod("5eed", Some("node-a"));
        assert_eq!(pod["metadata"]["name"], "orgo-c0ffee-home-copy");
        assert_eq!(pod["metadata"]["labels"][COPY_LABEL], "c0ffee");
        assert!(
            pod["metadata"]["labels"].get(DESKTOP_LABEL).is_none(),
            "not a desktop"
        );
        assert_eq!(pod["spec"]["nodeName"], "node-a");
        assert_eq!(
            pod["spec"]["volumes"],
            json!([
                { "name": "from", "persistentVolumeClaim": { "claimName": "orgo-5eed-home", "readOnly": true } },
                { "name": "to", "persistentVolumeClaim": { "claimName": "orgo-c0ffee-home" } },
            ])
        );
        assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 1000);
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["command"], json!(["sh", "-c", COPY_SCRIPT]));
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        let parsed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).unwrap();
        assert_eq!(parsed.spec.unwrap().active_deadline_seconds, Some(600));
        let anywhere = desktop(&spec, None).home_copy_pod("5eed", None);
        assert!(anywhere["spec"].get("nodeName").is_none());
    }

    #[test]
    fn the_secret_claim_and_policy() {
        let s = spec(2, 1.0);
        let d = desktop(&s, Some("fast"));
        let secret = d.secret("00ff");
        assert_eq!(secret["metadata"]["name"], "orgo-c0ffee-token");
        assert_eq!(secret["stringData"], json!({ "token": "00ff" }));
        assert_eq!(
            d.claim()["spec"],
            json!({
                "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": "10Gi" } },
                "storageClassName": "fast",
            })
        );
        assert!(
            desktop(&s, None).claim()["spec"]
                .get("storageClassName")
                .is_none()
        );
        let policy = network_policy("prod", &["192.0.2.10/32".to_string()]);
        assert_eq!(
            policy["spec"]["ingress"][0]["from"],
            json!([
                { "podSelector": { "matchLabels": { "app.kubernetes.io/name": "orgo-gateway" } } },
                { "ipBlock": { "cidr": "192.0.2.10/32" } },
            ])
        );
        let except = &policy["spec"]["egress"][0]["to"][0]["ipBlock"]["except"];
        assert!(
            except.as_array().unwrap().contains(&json!("169.254.0.0/16")),
            "{except}"
        );
        for object in [secret, d.claim(), policy] {
            assert!(
                object["metadata"]["labels"]["orgo.installation"] == "prod",
                "{object}"
            );
        }
    }
}
