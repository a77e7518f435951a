//! The Kubernetes runtime against a real cluster (`cargo xtask k8s up`: a real API server,
//! scheduler, controller manager and two kubelet nodes on Docker engines), through the
//! gateway's REST API: a desktop's whole life as a Pod, its home kept by its claim across
//! stops, the hardening read back from the API server and from inside, a Pod deleted behind
//! the gateway's back, an OOM kill, and the refusals a user can act on (no room on any node,
//! a missing image). One test at a time: the two nodes share this machine's two cores.

mod common;

use std::time::{Duration, Instant};

use common::k8s::{self, Gateway};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams};
use serde_json::json;

/// The desktop id of a computer path.
fn id_of(computer: &str) -> &str {
    computer.rsplit('/').next().unwrap()
}

/// The objects of one desktop in `namespace`: (Pod, claim, Secret), each if it exists.
async fn objects_of(
    client: &kube::Client,
    namespace: &str,
    id: &str,
) -> (Option<Pod>, Option<PersistentVolumeClaim>, Option<Secret>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    (
        pods.get_opt(&format!("orgo-{id}")).await.unwrap(),
        claims.get_opt(&format!("orgo-{id}-home")).await.unwrap(),
        secrets.get_opt(&format!("orgo-{id}-token")).await.unwrap(),
    )
}

/// Polls `check` every half second until it holds, for at most `limit`.
fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_desktop_lives_as_a_pod_and_its_home_outlives_stops() {
    let _one = k8s::one_at_a_time();
    let rt = k8s::runtime();
    let client = rt.block_on(k8s::client());
    let ns = rt.block_on(k8s::scratch_namespace(&client, "life"));
    let gw = Gateway::start("k8s-life", &ns, "free", "");
    let c = gw.desktop("ws", "life");
    let id = id_of(&c).to_string();

    // The agent's every kind of work, through the pod network.
    let shot = gw.ok("GET", &format!("{c}/screenshot?format=png"), None);
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shot["image"].as_str().unwrap(),
    )
    .unwrap();
    let info = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
    assert_eq!((info.info().width, info.info().height), (1280, 800));
    let clicked = gw.ok("POST", &format!("{c}/click"), Some(json!({"x": 640, "y": 400})));
    assert_eq!(clicked["success"], true);
    let typed = gw.ok("POST", &format!("{c}/type"), Some(json!({"text": "héllo"})));
    assert_eq!(typed["success"], true);
    let out = gw.ok(
        "POST",
        &format!("{c}/exec"),
        Some(json!({"code": "print(6 * 7)"})),
    );
    assert_eq!(out["output"], "42\n", "{out}");

    // Hardening, from inside: uid 1000, no capability, no new privileges, seccomp filtering,
    // the memory limit, the token a file and in no variable.
    assert_eq!(gw.bash(&c, "id -u"), "1000\n");
    let status = gw.bash(&c, "tr -s '\\t ' ' ' < /proc/self/status");
    for want in [
        "CapEff: 0000000000000000",
        "CapPrm: 0000000000000000",
        "CapBnd: 0000000000000000",
        "NoNewPrivs: 1",
        "Seccomp: 2",
    ] {
        assert!(status.lines().any(|l| l == want), "{want} in {status}");
    }
    assert_eq!(
        gw.bash(
            &c,
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
        ),
        "1073741824\n"
    );
    assert_eq!(
        gw.bash(&c, "env | grep -ic token; ls /run/orgo-token"),
        "0\ntoken\n"
    );

    // Hardening, as the API server holds it.
    let (pod, claim, secret) = rt.block_on(objects_of(&client, &ns, &id));
    let pod = serde_json::to_value(pod.expect("the desktop's Pod")).unwrap();
    let spec = &pod["spec"];
    let container = &spec["containers"][0];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["enableServiceLinks"], false);
    assert_eq!(spec["shareProcessNamespace"], true);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["runAsUser"], 1000);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(
        container["resources"]["requests"],
        container["resources"]["limits"]
    );
    assert_eq!(
        container["resources"]["limits"],
        json!({"cpu": "500m", "memory": "1Gi"})
    );
    assert!(
        !pod.to_string().contains(&secret_token(secret.as_ref().unwrap())),
        "the token is in no field of the Pod"
    );
    assert_eq!(pod["metadata"]["labels"]["orgo.desktop"], id);
    let claim = claim.expect("the desktop's claim");
    assert_eq!(claim.spec.unwrap().storage_class_name.as_deref(), Some("local"));

    // Stop deletes the Pod and keeps the home; start brings it back with its files.
    assert_eq!(gw.bash(&c, "echo kept > ~/kept && cat ~/kept"), "kept\n");
    let stopped = gw.ok("POST", &format!("{c}/stop"), None);
    assert_eq!(stopped["status"], "stopped");
    let (pod, claim, secret) = rt.block_on(objects_of(&client, &ns, &id));
    assert!(pod.is_none(), "stop deletes the Pod");
    assert!(
        claim.is_some() && secret.is_some(),
        "stop keeps the claim and the Secret"
    );
    let (status, v) = gw.call("POST", &format!("{c}/click"), Some(json!({"x": 1, "y": 1})));
    assert_eq!(status, 409, "{v}");
    assert_eq!(gw.ok("POST", &format!("{c}/start"), None)["status"], "running");
    assert_eq!(gw.bash(&c, "cat ~/kept"), "kept\n");
    assert_eq!(gw.ok("POST", &format!("{c}/restart"), None)["status"], "running");
    assert_eq!(gw.bash(&c, "cat ~/kept"), "kept\n");

    // Delete leaves nothing of it.
    gw.ok("DELETE", &c, None);
    until(Duration::from_secs(60), "the desktop's objects gone", || {
        let (p, c, s) = rt.block_on(objects_of(&client, &ns, &id));
        p.is_none() && c.is_none() && s.is_none()
    });
    drop(gw);
    rt.block_on(k8s::delete_namespace(&client, &ns));
}

/// The agent token a desktop's Secret holds.
fn secret_token(secret: &Secret) -> String {
    let data = secret.data.as_ref().expect("the Secret's data");
    String::from_utf8(data["token"].0.clone()).unwrap()
}

#[test]
fn a_pod_deleted_behind_the_gateways_back_is_noticed_and_start_brings_it_back() {
    let _one = k8s::one_at_a_time();
    let rt = k8s::runtime();
    let client = rt.block_on(k8s::client());
    let ns = rt.block_on(k8s::scratch_namespace(&client, "gone"));
    let gw = Gateway::start("k8s-gone", &ns, "free", "");
    let c = gw.desktop("ws", "gone");
    assert_eq!(gw.bash(&c, "echo kept > ~/kept && cat ~/kept"), "kept\n");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    rt.block_on(pods.delete(&format!("orgo-{}", id_of(&c)), &DeleteParams::default()))
        .unwrap();
    until(Duration::from_secs(60), "the lost desktop noticed", || {
        let (status, v) = gw.call("GET", &format!("{c}/screenshot"), None);
        assert!(status == 200 || status == 409 || status >= 500, "{status} {v}");
        status == 409
    });
    let lost = gw.ok("GET", &c, None);
    assert_eq!(lost["status"], "error", "{lost}");
    assert!(
        lost["status_reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{lost}"
    );
    assert_eq!(gw.ok("POST", &format!("{c}/start"), None)["status"], "running");
    assert_eq!(gw.bash(&c, "cat ~/kept"), "kept\n");
    gw.ok("DELETE", &c, None);
    drop(gw);
    rt.block_on(k8s::delete_namespace(&client, &ns));
}

/// A clone's home is a claim of its own, filled by a short-lived Pod with the source's files
/// (owners and modes kept) while the source runs; the copy's Pod does not stay.
#[test]
fn a_clone_gets_a_copy_of_its_sources_home_in_a_claim_of_its_own() {
    let _one = k8s::one_at_a_time();
    let rt = k8s::runtime();
    let client = rt.block_on(k8s::client());
    let ns = rt.block_on(k8s::scratch_namespace(&client, "clone"));
    let gw = Gateway::start("k8s-clone", &ns, "free", "");
    let c = gw.desktop("ws", "source");
    let made = "mkdir -p keep && echo carried > keep/f && chmod 640 keep/f && echo dot > .dot && echo made";
    assert_eq!(gw.bash(&c, made), "made\n");
    let clone = gw.ok("POST", &format!("{c}/clone"), None);
    assert_eq!(clone["name"], "source (clone)");
    assert_eq!(clone["status"], "running", "{clone}");
    let cc = format!("/computers/{}", clone["id"].as_str().unwrap());
    // Owner and modes kept, but for the group's bits: the kubelet makes a volume's files
    // group-writable for the Pod's fsGroup at every mount, the source's own as well.
    let copied = gw.bash(&cc, "cat keep/f .dot; stat -c '%U %a' keep/f");
    assert!(
        copied.starts_with("carried\ndot\nuser 6") && copied.ends_with("0\n"),
        "{copied}"
    );
    // Two homes: a change to one is not in the other.
    assert_eq!(gw.bash(&cc, "echo changed > keep/f && echo ok"), "ok\n");
    assert_eq!(gw.bash(&c, "cat keep/f"), "carried\n");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let copies = kube::api::ListParams::default().labels("orgo.home-copy");
    until(Duration::from_secs(60), "the copy's Pod gone", || {
        rt.block_on(pods.list(&copies)).unwrap().items.is_empty()
    });
    gw.ok("DELETE", &cc, None);
    gw.ok("DELETE", &c, None);
    drop(gw);
    rt.block_on(k8s::delete_namespace(&client, &ns));
}

#[test]
fn a_desktop_killed_for_its_memory_reads_oomkilled_and_starts_again() {
    let _one = k8s::one_at_a_time();
    let rt = k8s::runtime();
    let client = rt.block_on(k8s::client());
    let ns = rt.block_on(k8s::scratch_namespace(&client, "oom"));
    let gw = Gateway::start("k8s-oom", &ns, "free", "");
    let c = gw.desktop("ws", "oom");
    // The agent offers itself to the OOM killer (raising one's own score needs no privilege),
    // then the desktop goes over its 1 GB: the kernel kills the agent, and the container ends.
    let (status, v) = gw.call(
        "POST",
        &format!("{c}/bash"),
        Some(json!({
            "command": "echo 1000 > /proc/$(pgrep -x orgo-agent)/oom_score_adj && \
                        python3 -c 'x = bytearray(3 << 30)'",
            "timeout": 60,
        })),
    );
    assert!(status != 200 || v["exit_code"] != 0, "{status} {v}");
    until(Duration::from_secs(60), "the OOM kill noticed", || {
        gw.call("GET", &format!("{c}/cursor"), None).0 == 409
    });
    let lost = gw.ok("GET", &c, None);
    assert_eq!(lost["status"], "error", "{lost}");
    assert!(
        lost["status_reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("OOMKilled"),
        "{lost}"
    );
    assert_eq!(gw.ok("POST", &format!("{c}/start"), None)["status"], "running");
    assert_eq!(gw.bash(&c, "echo back"), "back\n");
    gw.ok("DELETE", &c, None);
    drop(gw);
    rt.block_on(k8s::delete_namespace(&client, &ns));
}

#[test]
fn a_desktop_no_node_has_room_for_or_whose_image_is_missing_is_refused_saying_why() {
    let _one = k8s::one_at_a_time();
    let rt = k8s::runtime();
    let client = rt.block_on(k8s::client());
    let ns = rt.block_on(k8s::scratch_namespace(&client, "refused"));
    let gw = Gateway::start("k8s-big", &ns, "big", "");
    let ws = gw.ok("POST", "/projects", Some(json!({"name": "ws"})));
    let (status, v) = gw.call(
        "POST",
        "/computers",
        Some(json!({"workspace_id": ws["id"], "name": "huge", "ram": 64, "cpu": 0.5})),
    );
    assert_eq!(status, 503, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("no room") && error.contains("Insufficient memory"),
        "{error}"
    );
    let huge = gw.ok("GET", "/computers/huge", None);
    assert_eq!(huge["status"], "error");
    assert!(
        huge["status_reason"]
            .as_str()
            .unwrap()
            .contains("Insufficient memory"),
        "{huge}"
    );
    let (pod, _, _) = rt.block_on(objects_of(&client, &ns, huge["id"].as_str().unwrap()));
    assert!(pod.is_none(), "nothing of a refused start stays scheduled");
    drop(gw);

    // An image no node has and no registry serves.
    let missing = "orgo/no-such-desktop:0.0.0";
    let gw = Gateway::start("k8s-noimage", &ns, "free", &format!("image = \"{missing}\""));
    let ws = gw.ok("POST", "/projects", Some(json!({"name": "ws"})));
    let (status, v) = gw.call(
        "POST",
        "/computers",
        Some(json!({"workspace_id": ws["id"], "name": "imageless", "ram": 1, "cpu": 0.5})),
    );
    assert_eq!(status, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains(missing), "{v}");
    drop(gw);
    rt.block_on(k8s::delete_namespace(&client, &ns));
}
