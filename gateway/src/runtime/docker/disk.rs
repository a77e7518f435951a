//! The Docker runtime's disk limit, a checked one: the engine cannot cap a container's
//! writable layer here (`--storage-opt size=` needs overlay2 on XFS with project quotas), so
//! every `disk_check_seconds` the gateway asks the engine how much each running desktop has
//! written (`SizeRw`: its home, packages it installed, anything outside `/tmp`, which is a
//! tmpfs) and stops one that went over its `disk_size_gb`. Why it stopped is kept beside the
//! desktop's files, so any gateway sharing the data dir reports it (`ended`), also after a
//! restart, until the desktop starts again.
//!
//! A desktop can write more than its limit between two checks: the limit bounds what it keeps,
//! not how fast it writes. After each start or resize it has [`GRACE_CHECKS`] checks' time to
//! get under its limit (to delete files after it was stopped for them). Files: `<desktop dir>/disk-gb` (the limit in GiB, written at each
//! start and resize) and `<desktop dir>/over-disk` (the reason, while stopped for it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::container::{ListContainersOptions, StopContainerOptions};

use super::{LABEL, OWNER, container_name};
use crate::runtime::RuntimeError;

const LIMIT_FILE: &str = "disk-gb";
const OVER_FILE: &str = "over-disk";
/// How many checks' time a desktop over its limit has after a start or resize.
const GRACE_CHECKS: u32 = 3;

/// Records `gb` as the limit of the desktop whose files are in `dir`.
pub(super) fn set_limit(dir: &Path, gb: u32) -> Result<(), RuntimeError> {
    let temp = dir.join(format!("{LIMIT_FILE}.new"));
    std::fs::write(&temp, gb.to_string())
        .and_then(|()| std::fs::rename(&temp, dir.join(LIMIT_FILE)))
        .map_err(|e| RuntimeError::Failed(format!("cannot record the disk limit: {e}")))
}

/// The desktop's limit in bytes, and how long ago it was set (at its last start or resize).
fn limit(dir: &Path) -> Option<(u64, Duration)> {
    let file = dir.join(LIMIT_FILE);
    let gb: u64 = std::fs::read_to_string(&file).ok()?.trim().parse().ok()?;
    let age = std::fs::metadata(&file)
        .ok()?
        .modified()
        .ok()?
        .elapsed()
        .unwrap_or_default();
    Some((gb << 30, age))
}

/// Why the desktop was stopped for its files' size, if it was and has not started since.
pub(super) fn stopped_for(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(OVER_FILE)).ok()
}

/// Forgets that the desktop was stopped for its files' size (it is starting again).
pub(super) fn clear(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(OVER_FILE));
}

/// The sentence a desktop stopped for its size is reported with.
fn reason(id: &str, used: u64, limit: u64) -> String {
    format!(
        "its files took {:.1} GB, over its disk limit of {} GB; start it and delete files, or grow it with PATCH /api/computers/{id}/resize {{\"disk_size_gb\": …}}",
        used as f64 / f64::from(1u32 << 30),
        limit >> 30
    )
}

/// Checks the running desktops of `owner` every `every`, for as long as the gateway runs;
/// `desktops` is where their directories are (`<data dir>/desktops`).
pub(super) async fn watch(docker: Docker, owner: String, desktops: PathBuf, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = check(&docker, &owner, &desktops, every * GRACE_CHECKS).await {
            tracing::warn!(error = %e, "cannot measure the desktops' files; their disk limits go unchecked until the next try");
        }
    }
}

async fn check(
    docker: &Docker,
    owner: &str,
    desktops: &Path,
    grace: Duration,
) -> Result<(), bollard::errors::Error> {
    let options = ListContainersOptions {
        all: false,
        size: true,
        filters: HashMap::from([("label".to_string(), vec![format!("{OWNER}={owner}")])]),
        ..Default::default()
    };
    for container in docker.list_containers(Some(options)).await? {
        let labels = container.labels.unwrap_or_default();
        // A label is anything anyone with the engine wrote: only a plain name is a directory.
        let Some(id) = labels
            .get(LABEL)
            .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
        else {
            continue;
        };
        let dir = desktops.join(id);
        let (Some(used), Some((limit, age))) =
            (container.size_rw.and_then(|n| u64::try_from(n).ok()), limit(&dir))
        else {
            continue;
        };
        if used <= limit || age < grace {
            continue;
        }
        let why = reason(id, used, limit);
        tracing::warn!(
            desktop = id.as_str(),
            used,
            limit,
            "stopping a desktop over its disk limit"
        );
        if let Err(e) = std::fs::write(dir.join(OVER_FILE), &why) {
            tracing::warn!(desktop = id.as_str(), error = %e, "cannot record why the desktop stops");
        }
        match docker
            .stop_container(&container_name(id), Some(StopContainerOptions { t: 5 }))
            .await
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => {}
            Err(e) => {
                tracing::warn!(desktop = id.as_str(), error = %e, "cannot stop a desktop over its disk limit")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_read_back_in_bytes_and_a_stop_is_forgotten_at_start() {
        let dir = std::env::temp_dir().join(format!("orgo-disk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(limit(&dir), None);
        set_limit(&dir, 3).unwrap();
        assert_eq!(limit(&dir).map(|(bytes, _)| bytes), Some(3 << 30));
        set_limit(&dir, 5).unwrap();
        let (bytes, age) = limit(&dir).unwrap();
        assert_eq!(bytes, 5 << 30);
        assert!(age < Duration::from_secs(60), "{age:?}");
        std::fs::write(dir.join(OVER_FILE), reason("abc", 6 << 30, 5 << 30)).unwrap();
        let why = stopped_for(&dir).unwrap();
        assert!(why.contains("6.0 GB") && why.contains("limit of 5 GB"), "{why}");
        clear(&dir);
        assert_eq!(stopped_for(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
