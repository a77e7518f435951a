//! The cluster's storage: the `local` StorageClass, its PersistentVolumes (directories under
//! `volumes/`, 16 per node), and the recycler that `up` runs in the background (`cargo xtask k8s
//! recycle`), which wipes the volumes a deleted claim released and makes them Available again,
//! as the missing provisioner would: a deleted desktop's home is gone, its volume reused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::build::{self, Binaries, path};
use super::nodes::NODES;
use super::{CLUSTER, kubectl};

const VOLUMES_PER_NODE: usize = 16;
/// The label on the PersistentVolumes `up` makes, which the recycler looks after.
const VOLUME_LABEL: &str = "orgo-k8s/volume=local";

/// The `local` StorageClass and its PersistentVolumes: directories on each node, bound where the
/// first Pod using the claim is scheduled. The 10Gi is nominal: nothing enforces a size on a
/// directory, it only lets claims of up to that size match. Released volumes are left to the
/// recycler (`Recycle` is for NFS and hostPath, and `Delete` needs a provisioner).
pub fn apply(binaries: &Binaries) -> Result<()> {
    let mut manifest = String::from(
        "apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
",
    );
    let (label, value) = VOLUME_LABEL.split_once('=').context("label")?;
    for node in &NODES {
        for i in 1..=VOLUMES_PER_NODE {
            let dir = volumes().join(node.name).join(format!("{i:02}"));
            empty_volume(&dir)?;
            manifest.push_str(&format!(
                "---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: local-{node}-{i:02}
  labels:
    {label}: {value}
spec:
  capacity:
    storage: 10Gi
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  volumeMode: Filesystem
  local:
    path: {dir}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - key: kubernetes.io/hostname
          operator: In
          values: [{node}]
",
                node = node.name,
                dir = dir.display(),
            ));
        }
    }
    let file = Path::new(CLUSTER).join("storage.yaml");
    std::fs::write(&file, manifest)?;
    kubectl(binaries, &["apply", "-f", path(&file)?])?;
    eprintln!(
        "xtask: StorageClass local with {} PersistentVolumes",
        VOLUMES_PER_NODE * NODES.len()
    );
    Ok(())
}

pub fn volumes() -> PathBuf {
    Path::new(CLUSTER).join("volumes")
}

/// An empty volume directory owned by the desktop image's user (uid 1000), whose home it is.
fn empty_volume(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::os::unix::fs::chown(dir, Some(1000), Some(1000))?;
    Ok(())
}

/// `cargo xtask k8s recycle`: every 2 s, empties the directory of each of our Released volumes
/// and drops its claim reference, which makes it Available for the next claim.
pub fn recycle() -> Result<()> {
    let binaries = build::cached().context("the cluster's binaries are not built")?;
    loop {
        if let Err(e) = recycle_released(&binaries) {
            eprintln!("xtask: recycler: {e:#}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn recycle_released(binaries: &Binaries) -> Result<()> {
    let released = kubectl(
        binaries,
        &[
            "get",
            "pv",
            "-l",
            VOLUME_LABEL,
            "-o",
            "jsonpath={range .items[?(@.status.phase==\"Released\")]}\
             {.metadata.name} {.spec.local.path}{\"\\n\"}{end}",
        ],
    )?;
    for line in released.lines() {
        let Some((name, dir)) = line.split_once(' ') else {
            continue;
        };
        let dir = Path::new(dir);
        // Only directories `up` made, whatever a volume object says.
        if !dir.starts_with(volumes()) || dir.components().any(|c| c.as_os_str() == "..") {
            eprintln!(
                "xtask: recycler: not recycling {name}: {} is not ours",
                dir.display()
            );
            continue;
        }
        empty_volume(dir)?;
        kubectl(
            binaries,
            &[
                "patch",
                "pv",
                name,
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/spec/claimRef"}]"#,
            ],
        )?;
        eprintln!(
            "xtask: recycler: emptied {} and made {name} Available",
            dir.display()
        );
    }
    Ok(())
}
