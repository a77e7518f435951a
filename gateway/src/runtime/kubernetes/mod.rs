//! The Kubernetes runtime: each desktop a Pod from the desktop image (its agent on TCP behind a
//! per-desktop token from a Secret), its home a PersistentVolumeClaim, in one namespace, over
//! kube-rs. Objects are applied server-side under one field manager; Pod phases and IPs come
//! from a watch (a kube-runtime reflector), not polling. Stop deletes the Pod and keeps the
//! claim and the Secret (so `/home/user` survives; the rest of the Pod's filesystem does not);
//! start makes the Pod again; remove deletes all three. A clone's claim is filled by a
//! short-lived Pod that copies the source's home. Pods outlive the gateway and are found by
//! every replica through their labels.

pub mod objects;
mod state;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use orgo_proto::connect::Target;
use serde_json::json;

use super::{DesktopSpec, Found, Runtime, RuntimeError, agent_answers};
use objects::{AGENT_PORT, DESKTOP_LABEL, Desktop};
use state::PodState;

/// The one field manager of everything this runtime applies.
const FIELD_MANAGER: &str = "orgo-gateway";
/// How long a desktop has to become ready (the image may first have to reach its node).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a deleted Pod has to be gone: its grace period is 5 s, but a busy kubelet has been
/// seen to report a Pod whose containers it had removed at once gone only after more than 60 s
/// (the test cluster on a loaded 2-core machine).
const GONE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one request to the API server may wait for a connection, and then for each read:
/// an API server that stopped answering must not hold a call past the request budget.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What the runtime needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A kubeconfig file; in-cluster configuration (or `$KUBECONFIG`, `~/.kube/config`) when None.
    pub kubeconfig: Option<PathBuf>,
    pub namespace: String,
    pub image: String,
    /// Names this installation on every object (every replica the same).
    pub installation: String,
    pub storage_class: Option<String>,
    /// Addresses of gateways outside the cluster, let through to the agents' port.
    pub gateway_cidrs: Vec<String>,
}

pub struct KubernetesRuntime {
    settings: Settings,
    /// Requests: each bounded (see [`REQUEST_TIMEOUT`]).
    pods: Api<Pod>,
    /// Watches, which wait for events as long as the API server keeps them open.
    watched_pods: Api<Pod>,
    secrets: Api<Secret>,
    claims: Api<PersistentVolumeClaim>,
    /// This installation's desktop Pods, as the watch last saw them.
    watched: reflector::Store<Pod>,
}

/// What a user reads when the cluster's API server cannot serve a call now.
const API_SERVER_AWAY: &str = "the cluster's API server cannot be reached now; try again in a moment";

/// A kube-rs error as this runtime's: the API server out of reach, overloaded or failing
/// (429, 5xx, no connection, a timeout) is worth retrying; a refusal is not.
fn kube_error(e: kube::Error) -> RuntimeError {
    match e {
        kube::Error::Api(status) if status.code == 429 || status.code >= 500 => {
            tracing::warn!(error = %status.message, code = status.code, "the cluster's API server failed a call");
            RuntimeError::Unavailable(API_SERVER_AWAY.into())
        }
        kube::Error::Api(status) => RuntimeError::Failed(format!("kubernetes: {}", status.message)),
        other => {
            tracing::warn!(error = %other, "the cluster's API server is unreachable");
            RuntimeError::Unavailable(API_SERVER_AWAY.into())
        }
    }
}

/// An error applying a desktop's objects: the cluster's admission refusing them (a
/// ResourceQuota used up, a LimitRange's bounds, a policy) is a reason its user can act on.
fn refused(e: kube::Error) -> RuntimeError {
    match e {
        kube::Error::Api(status) if status.code == 403 || status.code == 422 => {
            RuntimeError::Unavailable(format!("the cluster refused this desktop: {}", status.message))
        }
        other => kube_error(other),
    }
}

/// Whether a kube-rs error is the API server's 404.
fn is_missing(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

impl KubernetesRuntime {
    /// Connects, checks that this gateway may do everything the runtime does (naming the verb
    /// and resource it may not), applies the installation's NetworkPolicy and starts watching
    /// its Pods.
    pub async fn connect(settings: Settings) -> anyhow::Result<Self> {
        let config = match &settings.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {}: {e}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &Default::default())
                    .await
                    .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| anyhow::anyhow!("no Kubernetes configuration found: {e}"))?,
        };
        // Two clients: requests bounded in time; watches, whose reads wait for events, not.
        let watch_client = kube::Client::try_from(config.clone())?;
        let mut bounded = config;
        bounded.connect_timeout = Some(CONNECT_TIMEOUT);
        bounded.read_timeout = Some(REQUEST_TIMEOUT);
        bounded.write_timeout = Some(REQUEST_TIMEOUT);
        // Otherwise a pooled connection's idle time counts against the next request's reads.
        bounded.reset_reader_on_write = true;
        let client = kube::Client::try_from(bounded)?;
        let ns = settings.namespace.as_str();
        check_access(&client, ns).await?;
        let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
        let policy = objects::network_policy(&settings.installation, &settings.gateway_cidrs);
        let name = policy["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        policies
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&policy),
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot apply the desktops' NetworkPolicy: {e}"))?;
        let watched_pods: Api<Pod> = Api::namespaced(watch_client, ns);
        let (watched, writer) = reflector::store();
        let selector = objects::installation_selector(&settings.installation);
        let stream = watcher(watched_pods.clone(), watcher::Config::default().labels(&selector))
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        tokio::spawn(stream.for_each(|_| futures::future::ready(())));
        tokio::time::timeout(Duration::from_secs(30), watched.wait_until_ready())
            .await
            .map_err(|_| anyhow::anyhow!("no answer from the cluster's API server watching Pods in {ns}"))?
            .map_err(|e| anyhow::anyhow!("watching Pods in {ns}: {e}"))?;
        Ok(KubernetesRuntime {
            pods: Api::namespaced(client.clone(), ns),
            watched_pods,
            secrets: Api::namespaced(client.clone(), ns),
            claims: Api::namespaced(client, ns),
            watched,
            settings,
        })
    }

    fn desktop<'a>(&'a self, spec: &'a DesktopSpec) -> Desktop<'a> {
        Desktop {
            spec,
            image: &self.settings.image,
            installation: &self.settings.installation,
            storage_class: self.settings.storage_class.as_deref(),
        }
    }

    async fn apply<K>(&self, api: &Api<K>, name: &str, object: &serde_json::Value) -> Result<(), RuntimeError>
    where
        K: Clone + serde::de::DeserializeOwned + std::fmt::Debug + kube::Resource,
    {
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map(drop)
        .map_err(refused)
    }

    /// The desktop's agent token: its Secret's, made once with a new random token.
    async fn token(&self, desktop: &Desktop<'_>) -> Result<String, RuntimeError> {
        use rand::Rng;
        let name = objects::secret_name(&desktop.spec.id);
        if let Some(token) = self.read_token(&name).await? {
            return Ok(token);
        }
        let fresh = hex::encode(rand::rng().random::<[u8; 32]>());
        let secret: Secret = serde_json::from_value(desktop.secret(&fresh))
            .map_err(|e| RuntimeError::Failed(format!("the desktop's Secret: {e}")))?;
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(fresh),
            // Made meanwhile (by another replica): that one holds.
            Err(kube::Error::Api(s)) if s.code == 409 => self
                .read_token(&name)
                .await?
                .ok_or_else(|| RuntimeError::Failed("the desktop's Secret has no token".into())),
            Err(e) => Err(kube_error(e)),
        }
    }

    async fn read_token(&self, name: &str) -> Result<Option<String>, RuntimeError> {
        let Some(secret) = self.secrets.get_opt(name).await.map_err(kube_error)? else {
            return Ok(None);
        };
        let token = secret
            .data
            .and_then(|d| d.get("token").cloned())
            .and_then(|b| String::from_utf8(b.0).ok());
        Ok(token)
    }

    /// Deletes a desktop's Pod and waits until it is gone (its processes ended): at most
    /// [`GONE_TIMEOUT`] after its deletion, whichever call asked for that.
    async fn delete_pod(&self, id: &str) -> Result<(), RuntimeError> {
        let name = objects::pod_name(id);
        let (uid, deleting_since) = match self.pods.get_opt(&name).await.map_err(kube_error)? {
            Some(pod) => (
                pod.metadata.uid.unwrap_or_default(),
                pod.metadata.deletion_timestamp.map(|t| t.0),
            ),
            None => return Ok(()),
        };
        if deleting_since.is_none() {
            match self.pods.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_missing(&e) => return Ok(()),
                Err(e) => return Err(kube_error(e)),
            }
        }
        // A Pod whose node stopped answering is never confirmed gone: the wait is spent once,
        // not again by every call that finds it still there.
        let waited = deleting_since.map_or(0, |since| {
            k8s_openapi::jiff::Timestamp::now()
                .duration_since(since)
                .as_secs()
                .max(0)
                .unsigned_abs()
        });
        let budget = GONE_TIMEOUT.saturating_sub(Duration::from_secs(waited));
        let gone = await_condition(self.watched_pods.clone(), &name, conditions::is_deleted(&uid));
        match tokio::time::timeout(budget, gone).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(RuntimeError::Busy(format!("waiting for Pod {name} to go: {e}"))),
            // Its node's kubelet confirms a deletion: a node that stopped answering never does.
            Err(_) => Err(RuntimeError::Unavailable(format!(
                "the desktop's Pod was not gone {} s after its deletion (its node may have stopped answering); try again later",
                GONE_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Deletes a home-copy Pod, if there is one, without waiting for it to go (it holds no
    /// desktop: a new one has another uid).
    async fn delete_copy(&self, name: &str) -> Result<(), RuntimeError> {
        match self.pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(kube_error(e)),
        }
    }

    /// The watched state of a desktop's Pod.
    fn watched_state(&self, id: &str) -> Option<PodState> {
        let pod = self.watched.get(&ObjectRef::new(&objects::pod_name(id)))?;
        Some(state::of(&pod))
    }
}

/// Refuses to start, naming the verb and resource, unless this gateway may do all it does.
async fn check_access(client: &kube::Client, namespace: &str) -> anyhow::Result<()> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    // A server-side apply that makes an object is authorized as its `create` too: claims and
    // the NetworkPolicy, only ever applied, need it.
    let needs: &[(&str, &[&str])] = &[
        ("pods", &["get", "list", "watch", "create", "patch", "delete"]),
        ("secrets", &["get", "create", "delete"]),
        (
            "persistentvolumeclaims",
            &["get", "list", "create", "patch", "delete"],
        ),
        ("networkpolicies", &["get", "create", "patch"]),
    ];
    for (resource, verbs) in needs {
        let group = if *resource == "networkpolicies" {
            "networking.k8s.io"
        } else {
            ""
        };
        for verb in *verbs {
            let review: SelfSubjectAccessReview = serde_json::from_value(json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": { "resourceAttributes": {
                    "namespace": namespace, "verb": verb, "group": group, "resource": resource,
                }},
            }))?;
            let answer = reviews
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach the cluster's API server: {e}"))?;
            if !answer.status.is_some_and(|s| s.allowed) {
                anyhow::bail!(
                    "this gateway may not {verb} {resource} in namespace {namespace}: grant it (see deploy/kubernetes/)"
                );
            }
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl Runtime for KubernetesRuntime {
    async fn start(&self, spec: &DesktopSpec) -> Result<Target, RuntimeError> {
        let desktop = self.desktop(spec);
        let token = self.token(&desktop).await?;
        let name = objects::pod_name(&spec.id);
        if let Some(PodState::Ready { ip }) = self.watched_state(&spec.id) {
            let target = Target::Tcp {
                addr: format!("{ip}:{AGENT_PORT}"),
                token: token.clone(),
            };
            if agent_answers(&target).await {
                return Ok(target);
            }
        }
        // A Pod left from a run that ended (or one that does not answer) is made afresh.
        self.delete_pod(&spec.id).await?;
        self.apply(&self.claims, &objects::claim_name(&spec.id), &desktop.claim())
            .await?;
        self.apply(&self.pods, &name, &desktop.pod()).await?;
        let settled = await_condition(self.watched_pods.clone(), &name, |pod: Option<&Pod>| {
            pod.is_some_and(|p| state::of(p).is_settled())
        });
        let outcome = match tokio::time::timeout(READY_TIMEOUT, settled).await {
            Ok(Ok(Some(pod))) => state::of(&pod),
            Ok(Ok(None)) => PodState::Ended("the Pod was deleted while it started".into()),
            Ok(Err(e)) => return Err(RuntimeError::Busy(format!("watching Pod {name}: {e}"))),
            Err(_) => PodState::Ended(format!("not ready within {} s", READY_TIMEOUT.as_secs())),
        };
        let failed = match outcome {
            PodState::Ready { ip } => {
                let target = Target::Tcp {
                    addr: format!("{ip}:{AGENT_PORT}"),
                    token,
                };
                if agent_answers(&target).await {
                    return Ok(target);
                }
                RuntimeError::Failed(format!("the agent of Pod {name} does not answer"))
            }
            PodState::Unschedulable(why) => {
                RuntimeError::Unavailable(format!("the cluster has no room for this desktop now: {why}"))
            }
            PodState::ImageMissing(why) => RuntimeError::Unavailable(format!(
                "the desktop image {} cannot be pulled: {why}",
                self.settings.image
            )),
            PodState::Ended(why) | PodState::Pending(why) => {
                RuntimeError::Failed(format!("Pod {name} did not start: {why}"))
            }
        };
        // Nothing of a failed start stays scheduled.
        if let Err(e) = self.delete_pod(&spec.id).await {
            tracing::warn!(pod = %name, error = %e, "cannot delete a Pod that failed to start");
        }
        Err(failed)
    }

    async fn copy_home(&self, from: &str, to: &DesktopSpec) -> Result<(), RuntimeError> {
        // A claim's `dataSource` clone needs a CSI driver that can clone (the test cluster's
        // local volumes cannot): a short-lived Pod copies the files instead, on any cluster.
        let source = objects::claim_name(from);
        if self.claims.get_opt(&source).await.map_err(kube_error)?.is_none() {
            return Err(RuntimeError::Failed(format!(
                "desktop {from} has no home claim to copy"
            )));
        }
        let desktop = self.desktop(to);
        self.apply(&self.claims, &objects::claim_name(&to.id), &desktop.claim())
            .await?;
        let node = self
            .watched
            .get(&ObjectRef::new(&objects::pod_name(from)))
            .and_then(|pod| pod.spec.as_ref()?.node_name.clone());
        let name = objects::copy_pod_name(&to.id);
        // One left from a copy that was cut short is made afresh.
        self.delete_copy(&name).await?;
        let pod = desktop.home_copy_pod(from, node.as_deref());
        self.apply(&self.pods, &name, &pod).await?;
        let ended = await_condition(self.watched_pods.clone(), &name, |pod: Option<&Pod>| {
            pod.is_some_and(|p| matches!(state::phase(p), "Succeeded" | "Failed"))
        });
        let deadline = Duration::from_secs(objects::COPY_DEADLINE_SECONDS as u64 + 30);
        let outcome = tokio::time::timeout(deadline, ended).await;
        if let Err(e) = self.delete_copy(&name).await {
            tracing::warn!(pod = %name, error = %e, "cannot delete a home-copy Pod");
        }
        match outcome {
            Ok(Ok(Some(pod))) if state::phase(&pod) == "Succeeded" => Ok(()),
            Ok(Ok(Some(pod))) => Err(RuntimeError::Failed(format!(
                "copying the home failed: {}",
                state::failure(&pod)
            ))),
            Ok(Ok(None)) => Err(RuntimeError::Failed(
                "the home-copy Pod was deleted while it ran".into(),
            )),
            Ok(Err(e)) => Err(RuntimeError::Busy(format!("watching Pod {name}: {e}"))),
            Err(_) => Err(RuntimeError::Failed(format!(
                "copying the home took more than {} s",
                deadline.as_secs()
            ))),
        }
    }

    async fn resize(&self, _spec: &DesktopSpec) -> Result<(), RuntimeError> {
        // In-place Pod resize is beta from Kubernetes 1.33; the Pods here keep to 1.20's fields.
        Err(RuntimeError::Unsupported(
            "the Kubernetes runtime cannot resize a running desktop: a Pod's resources are fixed while it runs".into(),
        ))
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        self.delete_pod(id).await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.delete_pod(id).await?;
        // A home-copy Pod too: one a gateway that died mid-clone left behind.
        self.delete_copy(&objects::copy_pod_name(id)).await?;
        for result in [
            self.claims
                .delete(&objects::claim_name(id), &DeleteParams::default())
                .await
                .map(drop),
            self.secrets
                .delete(&objects::secret_name(id), &DeleteParams::default())
                .await
                .map(drop),
        ] {
            match result {
                Ok(()) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(kube_error(e)),
            }
        }
        Ok(())
    }

    fn outlives_gateway(&self) -> bool {
        true
    }

    async fn ended(&self, id: &str) -> Option<String> {
        let state = match self.watched_state(id) {
            Some(state @ (PodState::Ready { .. } | PodState::Pending(_))) => state,
            // Not in the watch's cache (not yet synced, or gone), or ended there (perhaps a
            // previous run's Pod the watch has not yet seen replaced): only the API server's
            // own answer tells.
            _ => match self.pods.get_opt(&objects::pod_name(id)).await {
                Ok(Some(pod)) => state::of(&pod),
                Ok(None) => return Some("its Pod was deleted outside the gateway".into()),
                Err(e) => {
                    tracing::debug!(desktop = id, error = %e, "cannot ask the cluster whether a desktop runs");
                    return None;
                }
            },
        };
        match state {
            PodState::Ready { .. } | PodState::Pending(_) => None,
            PodState::Ended(why) => Some(why),
            PodState::ImageMissing(why) => Some(format!("its image cannot be pulled: {why}")),
            PodState::Unschedulable(why) => Some(format!("no node has room for it: {why}")),
        }
    }

    async fn found(&self) -> Result<Vec<Found>, RuntimeError> {
        let selector = objects::installation_selector(&self.settings.installation);
        // A stopped desktop has a claim and a Secret but no Pod: all count.
        let mut ids = BTreeSet::new();
        let params = ListParams::default().labels(&selector);
        let claims = self.claims.list(&params).await.map_err(kube_error)?;
        ids.extend(claims.items.into_iter().filter_map(|c| desktop_id(&c.metadata)));
        ids.extend(
            self.watched
                .state()
                .iter()
                .filter_map(|p| desktop_id(&p.metadata)),
        );
        let mut found = Vec::new();
        for id in ids {
            let mut agent = None;
            if let Some(PodState::Ready { ip }) = self.watched_state(&id)
                && let Ok(Some(token)) = self.read_token(&objects::secret_name(&id)).await
            {
                let target = Target::Tcp {
                    addr: format!("{ip}:{AGENT_PORT}"),
                    token,
                };
                if agent_answers(&target).await {
                    agent = Some(target);
                }
            }
            found.push(Found { id, agent });
        }
        Ok(found)
    }
}

fn desktop_id(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<String> {
    meta.labels.as_ref()?.get(DESKTOP_LABEL).cloned()
}
