//! Command-line flags of `orgo-agent`, validated before anything starts.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::server::Listen;

#[derive(Debug, Parser)]
#[command(
    name = "orgo-agent",
    version,
    about = "The daemon inside an orgo desktop: screen, input and processes over gRPC"
)]
pub struct Cli {
    /// Start and supervise an Xvfb with this screen (WIDTHxHEIGHTxDEPTH, e.g. 1280x800x24).
    #[arg(long, env = "ORGO_SPAWN_XVFB", value_name = "GEOMETRY", value_parser = parse_geometry)]
    pub spawn_xvfb: Option<String>,

    /// The X display: the one to start with --spawn-xvfb (default: the first free one), or the
    /// one to attach to (default: $DISPLAY).
    #[arg(long)]
    pub display: Option<String>,

    /// Window manager to start with --spawn-xvfb, or `none`.
    #[arg(long, default_value = "openbox")]
    pub wm: String,

    /// Where to serve: unix:///path/agent.sock or tcp://host:port. Given twice, the last wins, so
    /// arguments after an image's entrypoint can change it.
    #[arg(
        long,
        default_value = "unix:///tmp/orgo-agent.sock",
        overrides_with = "listen"
    )]
    pub listen: Listen,

    /// File holding the bearer token TCP clients must send (without it, the token comes from
    /// ORGO_AGENT_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Working directory and $HOME of commands, and the one directory the Files service reaches
    /// (default: $HOME). It must exist.
    #[arg(long)]
    pub home: Option<PathBuf>,

    /// Clicks at one spot closer than this would merge into a double click.
    #[arg(long, default_value_t = 400)]
    pub double_click_ms: u64,

    /// How long keycodes borrowed for typing stay bound after their last use. Generous on
    /// purpose: a client that reads its key events after the restore would see nothing.
    #[arg(long, default_value_t = 2000)]
    pub keymap_restore_ms: u64,

    /// Start a fresh `python3` for every Python run instead of forking it from the warm
    /// interpreter (see `warm`): slower, for programs that must not share its preloaded modules.
    #[arg(long, env = "ORGO_COLD_PYTHON")]
    pub cold_python: bool,

    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

fn parse_geometry(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('x').collect();
    let nums: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
    match nums.as_deref() {
        Some([w, h, d]) if (16..=8192).contains(w) && (16..=8192).contains(h) && matches!(d, 24 | 32) => {
            Ok(s.into())
        }
        Some([w, h]) if (16..=8192).contains(w) && (16..=8192).contains(h) => Ok(format!("{w}x{h}x24")),
        _ => Err(format!("{s:?} is not WIDTHxHEIGHT[x24]")),
    }
}

impl Cli {
    pub fn double_click(&self) -> Duration {
        Duration::from_millis(self.double_click_ms)
    }

    pub fn keymap_restore(&self) -> Duration {
        Duration::from_millis(self.keymap_restore_ms)
    }

    /// The token from --token-file or ORGO_AGENT_TOKEN.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read token file {}: {e}", path.display()))?;
            return Ok(Some(token.trim().to_string()));
        }
        Ok(std::env::var("ORGO_AGENT_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_geometry;
    use clap::Parser;

    #[test]
    fn geometries() {
        assert_eq!(parse_geometry("1280x800x24").as_deref(), Ok("1280x800x24"));
        assert_eq!(parse_geometry("1024x768").as_deref(), Ok("1024x768x24"));
        assert!(parse_geometry("1280x800x16").is_err());
        assert!(parse_geometry("0x0").is_err());
        assert!(parse_geometry("big").is_err());
    }

    #[test]
    fn the_last_listen_wins() {
        let cli = super::Cli::try_parse_from([
            "orgo-agent",
            "--listen",
            "unix:///run/orgo/agent.sock",
            "--listen",
            "tcp://0.0.0.0:7000",
        ])
        .unwrap();
        assert!(matches!(cli.listen, super::Listen::Tcp(_)), "{:?}", cli.listen);
    }
}
