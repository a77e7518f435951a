//! What every display the agent serves is set to before anything else runs on it: the screen
//! saver and DPMS off, because a desktop driven by an agent must never blank, and X resources
//! that make xterm draw with a TrueType face, so that fontconfig's fallback fonts show CJK and
//! emoji (the core bitmap fonts have neither). Done here rather than in an image's files so it
//! holds on every runtime (local desktops use the host's xterm) and in `--display` attach mode:
//! after every Xvfb start, before the window manager (whose session tools merge their own
//! resources into ours), and once when attaching. Resources the display already sets are kept.

use x11rb::connection::RequestConnection as _;
use x11rb::protocol::dpms::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{AtomEnum, Blanking, ConnectionExt as _, Exposures, PropMode};
use x11rb::wrapper::ConnectionExt as _;

use crate::error::Result;
use crate::x11::XConn;

/// The X resources every desktop gets. `VT100` is the terminal widget of xterm, uxterm and
/// their kin; `Monospace` is whatever fontconfig calls the machine's monospace face.
pub const RESOURCES: &[&str] = &["*VT100.faceName: Monospace", "*VT100.faceSize: 11"];

/// Sets the display's defaults; see the module documentation.
pub fn apply(display: &str) -> Result<()> {
    let x = XConn::open(display)?;
    x.conn
        .set_screen_saver(0, 0, Blanking::DEFAULT, Exposures::DEFAULT)?;
    // Xvfb has no DPMS extension; a real server attached to with `--display` may.
    if x.conn.extension_information(dpms::X11_EXTENSION_NAME)?.is_some() {
        x.conn.dpms_disable()?;
    }
    let existing = x
        .conn
        .get_property(
            false,
            x.root,
            AtomEnum::RESOURCE_MANAGER,
            AtomEnum::STRING,
            0,
            u32::MAX,
        )?
        .reply()?;
    if let Some(merged) = merge_resources(&String::from_utf8_lossy(&existing.value), RESOURCES) {
        x.conn.change_property8(
            PropMode::REPLACE,
            x.root,
            AtomEnum::RESOURCE_MANAGER,
            AtomEnum::STRING,
            merged.as_bytes(),
        )?;
    }
    x.sync()
}

/// `apply` on the blocking pool. A failure is logged, not fatal: the desktop works without it.
pub async fn prepare(display: &str) {
    let owned = display.to_string();
    let result = tokio::task::spawn_blocking(move || apply(&owned)).await;
    if let Ok(Err(e)) = result {
        let name = display;
        tracing::warn!(display = name, error = %e, "cannot set the display's defaults");
    }
}

/// The resource database `existing` with those lines of `ours` added whose resource it does not
/// set yet (as `xrdb -merge` would, but never replacing); `None` when nothing is missing.
fn merge_resources(existing: &str, ours: &[&str]) -> Option<String> {
    let name = |line: &str| line.split_once(':').map(|(n, _)| n.trim().to_string());
    let set: Vec<String> = existing.lines().filter_map(name).collect();
    let missing: Vec<&str> = ours
        .iter()
        .copied()
        .filter(|line| name(line).is_some_and(|n| !set.contains(&n)))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut merged = existing.to_string();
    if !merged.is_empty() && !merged.ends_with('\n') {
        merged.push('\n');
    }
    for line in missing {
        merged.push_str(line);
        merged.push('\n');
    }
    Some(merged)
}

#[cfg(test)]
mod tests {
    use super::merge_resources;

    #[test]
    fn resources_are_added_once_and_never_replace_the_displays_own() {
        let ours = ["*VT100.faceName: Monospace", "*VT100.faceSize: 11"];
        assert_eq!(
            merge_resources("", &ours).as_deref(),
            Some("*VT100.faceName: Monospace\n*VT100.faceSize: 11\n")
        );
        assert_eq!(
            merge_resources("Xft.dpi:\t96\n*VT100.faceSize :\t20", &ours).as_deref(),
            Some("Xft.dpi:\t96\n*VT100.faceSize :\t20\n*VT100.faceName: Monospace\n")
        );
        let done = merge_resources("", &ours).unwrap();
        assert_eq!(merge_resources(&done, &ours), None, "applying twice adds nothing");
    }
}
