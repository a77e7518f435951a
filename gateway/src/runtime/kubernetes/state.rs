//! What a desktop Pod's status says, read once, in the terms the runtime acts on: ready (and
//! where), still starting, or a reason a user can act on — no room on any node, an image that
//! cannot be pulled, or ended (OOM-killed, evicted, its node lost, being deleted).

use k8s_openapi::api::core::v1::Pod;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Ready, at this Pod IP.
    Ready { ip: String },
    /// Not ready yet; what it waits for.
    Pending(String),
    /// The scheduler found no node; its message.
    Unschedulable(String),
    /// The image cannot be pulled; the kubelet's message.
    ImageMissing(String),
    /// Its processes ended or are ending; why.
    Ended(String),
}

impl PodState {
    /// Whether waiting longer changes nothing: ready, or a reason to give up.
    pub fn is_settled(&self) -> bool {
        !matches!(self, PodState::Pending(_))
    }
}

/// Waiting reasons of a container whose image will not come.
const IMAGE_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
];

/// A terminated container's reason in a user's words (the kubelet's term first).
fn ended_because(reason: &str) -> String {
    match reason {
        "OOMKilled" => crate::runtime::OOM_KILLED.into(),
        other => format!("its container ended: {other}"),
    }
}

/// The phase of a Pod's status (`Pending` until it has one).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Why a one-off Pod (a home copy) failed: its container's termination message (its last
/// output, under `FallbackToLogsOnError`) when it has one, else what [`of`] says.
pub fn failure(pod: &Pod) -> String {
    let message = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
        .map(|m| m.trim().to_string())
        .find(|m| !m.is_empty());
    match (message, of(pod)) {
        (Some(message), _) => message,
        (None, PodState::Ended(why) | PodState::Pending(why)) => why,
        (None, other) => format!("{other:?}"),
    }
}

pub fn of(pod: &Pod) -> PodState {
    if pod.metadata.deletion_timestamp.is_some() {
        // The gateway's own deletions happen while the desktop is stopping; one that finds a
        // running desktop was the cluster's (an eviction, its node lost) or someone else's.
        return PodState::Ended(
            "its Pod is being deleted (evicted, its node lost, or deleted outside the gateway)".into(),
        );
    }
    let Some(status) = &pod.status else {
        return PodState::Pending("no status yet".into());
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    if matches!(phase, "Failed" | "Succeeded" | "Unknown") {
        let terminated = containers
            .iter()
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
            .find_map(|t| t.reason.clone());
        let why = match (terminated, &status.reason, &status.message) {
            (Some(reason), _, _) => ended_because(&reason),
            (None, Some(reason), Some(message)) => format!("{reason}: {message}"),
            (None, Some(reason), None) => reason.clone(),
            (None, None, _) if phase == "Unknown" => "its node stopped answering".into(),
            (None, None, Some(message)) => message.clone(),
            (None, None, None) => format!("its Pod's phase is {phase}"),
        };
        return PodState::Ended(why);
    }
    for c in containers {
        let Some(state) = &c.state else { continue };
        if let Some(waiting) = &state.waiting
            && IMAGE_REASONS.contains(&waiting.reason.as_deref().unwrap_or_default())
        {
            return PodState::ImageMissing(
                waiting
                    .message
                    .clone()
                    .unwrap_or_else(|| waiting.reason.clone().unwrap_or_default()),
            );
        }
        if let Some(terminated) = &state.terminated {
            return PodState::Ended(ended_because(terminated.reason.as_deref().unwrap_or("exited")));
        }
    }
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let condition = |kind: &str| conditions.iter().find(|c| c.type_ == kind);
    if let Some(scheduled) = condition("PodScheduled")
        && scheduled.status == "False"
        && scheduled.reason.as_deref() == Some("Unschedulable")
    {
        return PodState::Unschedulable(scheduled.message.clone().unwrap_or_default());
    }
    match (condition("Ready"), &status.pod_ip) {
        (Some(ready), Some(ip)) if ready.status == "True" => PodState::Ready { ip: ip.clone() },
        _ => PodState::Pending(format!("phase {phase}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({ "metadata": { "name": "orgo-c0ffee" }, "status": status })).unwrap()
    }

    #[test]
    fn statuses_read_as_what_to_do() {
        let cases = [
            (
                json!({ "phase": "Pending" }),
                PodState::Pending("phase Pending".into()),
            ),
            (
                json!({ "phase": "Running", "podIP": "10.1.0.7",
                        "conditions": [{ "type": "Ready", "status": "True" }] }),
                PodState::Ready {
                    ip: "10.1.0.7".into(),
                },
            ),
            (
                json!({ "phase": "Running", "podIP": "10.1.0.7",
                        "conditions": [{ "type": "Ready", "status": "False" }] }),
                PodState::Pending("phase Running".into()),
            ),
            (
                json!({ "phase": "Pending", "conditions": [{ "type": "PodScheduled", "status": "False",
                        "reason": "Unschedulable", "message": "0/2 nodes are available: 2 Insufficient memory." }] }),
                PodState::Unschedulable("0/2 nodes are available: 2 Insufficient memory.".into()),
            ),
            (
                json!({ "phase": "Pending", "containerStatuses": [{ "name": "desktop", "image": "x", "imageID": "",
                        "ready": false, "restartCount": 0,
                        "state": { "waiting": { "reason": "ErrImageNeverPull", "message": "image x is not present" } } }] }),
                PodState::ImageMissing("image x is not present".into()),
            ),
            (
                json!({ "phase": "Failed", "containerStatuses": [{ "name": "desktop", "image": "x", "imageID": "",
                        "ready": false, "restartCount": 0,
                        "state": { "terminated": { "exitCode": 137, "reason": "OOMKilled" } } }] }),
                PodState::Ended(crate::runtime::OOM_KILLED.into()),
            ),
            (
                json!({ "phase": "Failed", "reason": "Evicted", "message": "low on memory" }),
                PodState::Ended("Evicted: low on memory".into()),
            ),
            (
                json!({ "phase": "Unknown" }),
                PodState::Ended("its node stopped answering".into()),
            ),
        ];
        for (status, want) in cases {
            assert_eq!(of(&pod(status.clone())), want, "{status}");
        }
        let mut deleting = pod(json!({ "phase": "Running" }));
        deleting.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2026-11-30T12:00:00Z")).unwrap());
        assert_eq!(
            of(&deleting),
            PodState::Ended(
                "its Pod is being deleted (evicted, its node lost, or deleted outside the gateway)".into()
            )
        );
        assert!(!PodState::Pending(String::new()).is_settled());
        assert!(PodState::Ended(String::new()).is_settled());
    }
}
