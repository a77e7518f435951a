//! Gateway configuration: embedded defaults, an optional TOML file, then `ORGO_*` environment
//! overrides, validated once at start-up with a message that says what to fix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::store::{Computer, Resolution};

/// Limits of one plan. Only running desktops count against them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub max_desktops: u32,
    pub max_ram_gb: u32,
    pub max_cpu: u32,
    /// Desktops stop by themselves after this long without API activity; 0 never.
    #[serde(default = "default_idle")]
    pub idle_stop_seconds: u64,
    /// API requests per second per key (bursts up to twice as many pass).
    #[serde(default = "default_rate")]
    pub requests_per_second: u32,
    /// The largest home of one desktop, in GiB (`disk_size_gb` at create and resize), and of
    /// one file written into it.
    #[serde(default = "default_max_disk")]
    pub max_disk_gb: u32,
    /// The largest file one request writes into a desktop, in MiB.
    #[serde(default = "default_max_file")]
    pub max_file_mb: u64,
}

fn default_max_file() -> u64 {
    2048
}

fn default_idle() -> u64 {
    1800
}

fn default_max_disk() -> u32 {
    64
}

fn default_rate() -> u32 {
    50
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Local,
    Docker,
    Kubernetes,
}

/// The Kubernetes runtime's cluster (`[kubernetes]` in the config file).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Kubernetes {
    /// A kubeconfig file; in-cluster configuration, `$KUBECONFIG` or `~/.kube/config` when
    /// unset.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the desktops' Pods, claims and Secrets.
    pub namespace: String,
    /// Names this installation on every object it makes (the same for every replica).
    pub installation: String,
    /// The storage class of desktops' homes; the cluster's default when unset.
    pub storage_class: Option<String>,
    /// Addresses (CIDRs) of gateways outside the cluster, let through to the agents' port by
    /// the desktops' NetworkPolicy (gateway Pods always are).
    pub gateway_cidrs: Vec<String>,
}

impl Default for Kubernetes {
    fn default() -> Self {
        Kubernetes {
            kubeconfig: None,
            namespace: "orgo-desktops".into(),
            installation: "orgo".into(),
            storage_class: None,
            gateway_cidrs: Vec::new(),
        }
    }
}

/// How local desktops are contained.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LocalSandbox {
    /// A user namespace without capabilities, an allow-listed view of the system, its own
    /// network behind slirp4netns, a seccomp filter: or no local runtime at all.
    Strict,
    /// Root's privileges and the host's files and network, as asked for by name; every desktop
    /// start says so in the log.
    None,
}

/// Started, unassigned desktops of one size kept ready to hand out on create (`[[pool]]`).
/// Pools are per size: a create of another size starts a desktop of its own.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolSize {
    pub ram_gb: u32,
    pub cpu: f64,
    /// How many to keep ready; 0 keeps none.
    pub count: u32,
}

/// The size `POST /computers` gives when none is asked for (within the free plan).
pub const DEFAULT_RAM_GB: u32 = 4;
pub const DEFAULT_CPU: f64 = 1.0;

/// The size the orgo SDK's `Computer()` asks for, which the default pool keeps ready.
fn sdk_pool(count: u32) -> Vec<PoolSize> {
    vec![PoolSize {
        ram_gb: 2,
        cpu: 2.0,
        count,
    }]
}

/// How the gateway reaches the agents of Docker desktops.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DockerTransport {
    /// A Unix socket in a run directory bind-mounted from the data dir.
    Unix,
    /// TCP on a port published on loopback, with a per-desktop token: for engines that cannot
    /// share the host's filesystem.
    Tcp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub runtime: RuntimeKind,
    /// Base URL clients reach the gateway at, for `desktop.url`; defaults to `http://{listen}`.
    pub public_url: Option<String>,
    /// The `orgo-agent` binary the local runtime starts; defaults to the one beside the gateway.
    pub agent_bin: Option<PathBuf>,
    pub screen_width: u32,
    pub screen_height: u32,
    pub default_plan: String,
    pub plans: BTreeMap<String, Plan>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// The desktop image of the Docker runtime.
    pub image: String,
    pub docker_transport: DockerTransport,
    /// How often the Docker runtime measures what each running desktop wrote against its
    /// `disk_size_gb`, stopping one that went over (the engine cannot cap it here), in seconds.
    pub disk_check_seconds: u64,
    /// How the local runtime contains its desktops.
    pub local_sandbox: LocalSandbox,
    /// The home size of a desktop whose create names none (`disk_size_gb`), in GiB.
    pub disk_size_gb: u32,
    /// How long the viewer token inside each answer's `url` lasts, in seconds.
    pub viewer_link_seconds: i64,
    /// How long a desktop's agent has to answer a call (beyond what the action itself takes,
    /// such as an exec's timeout) before the API answers 504.
    pub agent_deadline_seconds: u64,
    /// PostgreSQL shared by several gateways (`postgres://user:password@host:port/db`); the
    /// embedded SQLite file in the data dir when unset.
    pub database_url: Option<String>,
    pub kubernetes: Kubernetes,
    /// Warm pools, one per size (`ORGO_POOL`: `none`, or how many of the SDK's size, 2 GB and
    /// 2 CPUs).
    pub pool: Vec<PoolSize>,
}

impl Default for Config {
    fn default() -> Self {
        let free = Plan {
            max_desktops: 2,
            max_ram_gb: 4,
            max_cpu: 4,
            idle_stop_seconds: default_idle(),
            requests_per_second: default_rate(),
            max_disk_gb: 20,
            max_file_mb: default_max_file(),
        };
        let pro = Plan {
            max_desktops: 10,
            max_ram_gb: 64,
            max_cpu: 32,
            idle_stop_seconds: 3600,
            requests_per_second: 500,
            max_disk_gb: default_max_disk(),
            max_file_mb: 8192,
        };
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            data_dir: PathBuf::from(".orgo"),
            runtime: RuntimeKind::Local,
            public_url: None,
            agent_bin: None,
            screen_width: 1280,
            screen_height: 800,
            default_plan: "free".into(),
            plans: BTreeMap::from([("free".into(), free), ("pro".into(), pro)]),
            max_body_bytes: 2 << 20,
            viewer_link_seconds: 3600,
            agent_deadline_seconds: 55,
            database_url: None,
            kubernetes: Kubernetes::default(),
            docker_transport: DockerTransport::Unix,
            disk_check_seconds: 30,
            local_sandbox: LocalSandbox::Strict,
            disk_size_gb: 10,
            image: format!("orgo/desktop-minimal:{}", env!("CARGO_PKG_VERSION")),
            pool: sdk_pool(1),
        }
    }
}

impl Config {
    /// Loads the file (if any), applies the environment, validates.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = var("ORGO_LISTEN") {
            self.listen = v
                .parse()
                .map_err(|e| anyhow::anyhow!("ORGO_LISTEN={v:?} is not host:port ({e})"))?;
        }
        if let Some(v) = var("ORGO_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("ORGO_RUNTIME") {
            self.runtime = match v.as_str() {
                "local" => RuntimeKind::Local,
                "docker" => RuntimeKind::Docker,
                "kubernetes" => RuntimeKind::Kubernetes,
                other => {
                    anyhow::bail!("ORGO_RUNTIME={other:?} must be \"local\", \"docker\" or \"kubernetes\"")
                }
            };
        }
        if let Some(v) = var("ORGO_DOCKER_TRANSPORT") {
            self.docker_transport = match v.as_str() {
                "unix" => DockerTransport::Unix,
                "tcp" => DockerTransport::Tcp,
                other => anyhow::bail!("ORGO_DOCKER_TRANSPORT={other:?} must be \"unix\" or \"tcp\""),
            };
        }
        if let Some(v) = var("ORGO_LOCAL_SANDBOX") {
            self.local_sandbox = match v.as_str() {
                "strict" => LocalSandbox::Strict,
                "none" => LocalSandbox::None,
                other => anyhow::bail!("ORGO_LOCAL_SANDBOX={other:?} must be \"strict\" or \"none\""),
            };
        }
        if let Some(v) = var("ORGO_DISK_SIZE_GB") {
            self.disk_size_gb = v
                .parse()
                .map_err(|_| anyhow::anyhow!("ORGO_DISK_SIZE_GB={v:?} must be a whole number of GiB"))?;
        }
        if let Some(v) = var("ORGO_DISK_CHECK_SECONDS") {
            self.disk_check_seconds = v.parse().map_err(|_| {
                anyhow::anyhow!("ORGO_DISK_CHECK_SECONDS={v:?} must be a whole number of seconds")
            })?;
        }
        if let Some(v) = var("ORGO_PUBLIC_URL") {
            self.public_url = Some(v);
        }
        if let Some(v) = var("ORGO_IMAGE") {
            self.image = v;
        }
        if let Some(v) = var("ORGO_DATABASE_URL") {
            self.database_url = Some(v);
        }
        if let Some(v) = var("ORGO_AGENT_BIN") {
            self.agent_bin = Some(PathBuf::from(v));
        }
        if let Some(v) = var("ORGO_POOL") {
            let count = match v.as_str() {
                "none" => 0,
                n => n.parse().map_err(|_| {
                    anyhow::anyhow!("ORGO_POOL={v:?} must be \"none\" or how many desktops of 2 GB and 2 CPUs to keep ready")
                })?,
            };
            self.pool = sdk_pool(count);
        }
        Ok(())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                anyhow::bail!(
                    "database_url {} must be a postgres:// URL",
                    crate::store::mask_url(url)
                );
            }
            if self.runtime == RuntimeKind::Local {
                anyhow::bail!(
                    "database_url is for several gateways sharing their desktops, and the local \
                     runtime's desktops are child processes of one gateway: use runtime = \"docker\" \
                     with a database_url, or leave database_url unset"
                );
            }
        }
        if !(1..=300).contains(&self.agent_deadline_seconds) {
            anyhow::bail!(
                "agent_deadline_seconds must be from 1 to 300, not {}",
                self.agent_deadline_seconds
            );
        }
        if !(60..=7 * 86_400).contains(&self.viewer_link_seconds) {
            anyhow::bail!(
                "viewer_link_seconds must be from 60 to 604800, not {}",
                self.viewer_link_seconds
            );
        }
        if !(1..=86_400).contains(&self.disk_check_seconds) {
            anyhow::bail!(
                "disk_check_seconds must be from 1 to 86400, not {}",
                self.disk_check_seconds
            );
        }
        if !(1..=65_536).contains(&self.disk_size_gb) {
            anyhow::bail!("disk_size_gb must be from 1 to 65536, not {}", self.disk_size_gb);
        }
        if !self.plans.contains_key(&self.default_plan) {
            anyhow::bail!(
                "default_plan {:?} is not among the plans {:?}",
                self.default_plan,
                self.plans.keys()
            );
        }
        for (name, plan) in &self.plans {
            if plan.max_desktops == 0 || plan.max_ram_gb == 0 || plan.max_cpu == 0 {
                anyhow::bail!("plan {name:?} must allow at least one desktop, 1 GB and 1 CPU");
            }
            if plan.requests_per_second == 0 {
                anyhow::bail!("plan {name:?} must allow at least 1 request per second");
            }
        }
        for (i, size) in self.pool.iter().enumerate() {
            let cpu_ok = size.cpu == 0.5 || (size.cpu.fract() == 0.0 && (1.0..=64.0).contains(&size.cpu));
            if !(1..=64).contains(&size.ram_gb) || !cpu_ok || size.count > 64 {
                anyhow::bail!(
                    "pool {i}: ram_gb must be 1 to 64, cpu 0.5 or a whole number from 1 to 64, count at most 64 \
                     (not {} GB, {} CPU, {})",
                    size.ram_gb,
                    size.cpu,
                    size.count
                );
            }
            if self.pool[..i]
                .iter()
                .any(|p| p.ram_gb == size.ram_gb && p.cpu == size.cpu)
            {
                anyhow::bail!(
                    "pool {i}: a pool of {} GB and {} CPU is configured twice",
                    size.ram_gb,
                    size.cpu
                );
            }
        }
        Resolution::new(self.screen_width, self.screen_height)
            .map_err(|e| anyhow::anyhow!("screen_width/screen_height: {e}"))?;
        if !(1..=1024).contains(&self.disk_size_gb) {
            anyhow::bail!("disk_size_gb must be 1 to 1024, not {}", self.disk_size_gb);
        }
        Ok(())
    }

    /// The screen a desktop gets when its create names none (`screen_width`×`screen_height`).
    pub fn screen(&self) -> Resolution {
        Resolution {
            width: self.screen_width,
            height: self.screen_height,
            depth: 24,
        }
    }

    /// A computer's screen: its own, or the configured one for a computer recorded before
    /// screens were.
    pub fn resolution_of(&self, c: &Computer) -> Resolution {
        c.resolution.unwrap_or_else(|| self.screen())
    }

    /// A computer's home size in GiB: its own, or the configured one.
    pub fn disk_gb_of(&self, c: &Computer) -> u32 {
        c.disk_gb.unwrap_or(self.disk_size_gb)
    }

    /// How long a computer may go without API activity before it is stopped: its own
    /// `auto_stop_minutes` (0 never), else its plan's idle time; None never.
    pub fn auto_stop(&self, c: &Computer, plan: &str) -> Option<Duration> {
        match c.auto_stop_minutes {
            Some(0) => None,
            Some(minutes) => Some(Duration::from_secs(u64::from(minutes) * 60)),
            None => self.idle_stop(plan),
        }
    }

    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.get(name)
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .into()
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("orgo.db")
    }

    /// The agent binary: configured, else beside this executable, else on PATH.
    pub fn agent_bin(&self) -> PathBuf {
        if let Some(bin) = &self.agent_bin {
            return bin.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("orgo-agent")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("orgo-agent"))
    }

    pub fn idle_stop(&self, plan: &str) -> Option<Duration> {
        self.plan(plan)
            .map(|p| p.idle_stop_seconds)
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_validation() {
        let mut c = Config::default();
        let env = |k: &str| match k {
            "ORGO_LISTEN" => Some("0.0.0.0:9000".to_string()),
            "ORGO_DATA_DIR" => Some("/var/lib/orgo".to_string()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/orgo"));
        assert!(c.validate().is_ok());

        let mut bad = Config::default();
        let err = bad
            .apply_env(|k| (k == "ORGO_RUNTIME").then(|| "k8s".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("ORGO_RUNTIME"));
        let err = Config::default()
            .apply_env(|k| (k == "ORGO_LOCAL_SANDBOX").then(|| "off".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("\"strict\" or \"none\""), "{err}");
        let mut shared = Config {
            database_url: Some("postgres://orgo:pw@db/orgo".into()),
            ..Config::default()
        };
        let err = shared.validate().unwrap_err().to_string();
        assert!(err.contains("local runtime"), "{err}");
        shared.runtime = RuntimeKind::Docker;
        assert!(shared.validate().is_ok());
        shared.database_url = Some("mysql://orgo:pw@db/orgo".into());
        let err = shared.validate().unwrap_err().to_string();
        assert!(err.contains("mysql://orgo:***@db/orgo"), "{err}");
        bad.default_plan = "gold".into();
        assert!(bad.validate().unwrap_err().to_string().contains("gold"));
    }

    #[test]
    fn file_with_unknown_keys_is_refused() {
        let err = toml::from_str::<Config>("listen = \"127.0.0.1:1\"\nlisten_port = 3").unwrap_err();
        assert!(err.to_string().contains("listen_port"));
        let ok: Config =
            toml::from_str("[plans.team]\nmax_desktops = 5\nmax_ram_gb = 20\nmax_cpu = 10").unwrap();
        assert_eq!(ok.plans["team"].idle_stop_seconds, 1800);
        assert_eq!(ok.local_sandbox, LocalSandbox::Strict);
        let open: Config = toml::from_str("local_sandbox = \"none\"").unwrap();
        assert_eq!(open.local_sandbox, LocalSandbox::None);
        let k: Config = toml::from_str(
            "runtime = \"kubernetes\"\n[kubernetes]\nnamespace = \"desk\"\nstorage_class = \"fast\"",
        )
        .unwrap();
        assert_eq!(k.runtime, RuntimeKind::Kubernetes);
        assert_eq!(
            (
                k.kubernetes.namespace.as_str(),
                k.kubernetes.installation.as_str()
            ),
            ("desk", "orgo")
        );
        let err = toml::from_str::<Config>("[kubernetes]\nnamspace = \"x\"").unwrap_err();
        assert!(err.to_string().contains("namspace"), "{err}");
    }
}
