//! State every replica of the gateway agrees on, behind one interface with two backends:
//! SQLite in the data dir (the embedded default, one gateway) and PostgreSQL (`database_url`,
//! several gateways). It holds accounts, API keys (SHA-256 hashes only), projects, computers
//! (with where their agent listens), leases (a desktop's lifecycle turn, the singletons'
//! leadership), secrets and kept screenshots. Every lookup of a project, computer or screenshot
//! takes the caller's account, so a foreign one is simply not found. Each backend runs its
//! migrations at open, each once, in order, under a lock.

mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

pub use postgres::Postgres;
pub use sqlite::Sqlite;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error (the detail is for the log).
    #[error("database: {0}")]
    Database(String),
    /// The database cannot be reached right now; the same call works once it is back.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A name that must be unique is taken; the sentence names it.
    #[error("{0}")]
    Conflict(String),
}

/// Where a desktop is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Running,
    Stopping,
    Stopped,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Running => "running",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Error => "error",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "creating" => Status::Creating,
            "running" => Status::Running,
            "stopping" => Status::Stopping,
            "stopped" => Status::Stopped,
            _ => Status::Error,
        }
    }

    /// Whether the desktop holds resources that count against the plan.
    pub fn is_live(self) -> bool {
        matches!(self, Status::Creating | Status::Running | Status::Stopping)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub plan: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Computer {
    pub id: String,
    pub account_id: String,
    pub project_id: String,
    pub name: String,
    pub status: Status,
    pub ram_gb: u32,
    /// Cores; fractions such as 0.5 are allowed.
    pub cpu: f64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last API activity, for idle auto-stop.
    pub last_active: i64,
    /// Where the agent of the running desktop listens, as the runtime said (see
    /// `desktops::agent` for the form); none while it is not running.
    pub agent: Option<String>,
    /// Grows by one at every start and every stop: a call that fails while it changes was cut
    /// short by a stop or restart, and a run found dead is only recorded so if it is still the
    /// run that was read.
    pub generation: i64,
    /// Why the desktop is in `error`: what ended its processes (its runtime's words: out of
    /// memory, evicted, its node lost, an exit status) or why its start failed; none in any
    /// other status.
    pub ended: Option<String>,
    /// The home's size limit in GiB; none for a desktop recorded before sizes were (the
    /// gateway's `disk_size_gb` holds for it).
    pub disk_gb: Option<u32>,
    /// The screen; none for a desktop recorded before screens were (the gateway's configured
    /// screen holds for it).
    pub resolution: Option<Resolution>,
    /// Minutes without API activity before it is stopped: 0 never; none: its plan's idle time.
    pub auto_stop_minutes: Option<u32>,
}

/// A desktop's screen, `WxHxD` in its JSON and its row (Orgo's `resolution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    pub width: u32,
    pub height: u32,
    /// Bits per pixel; only 24 (what the agent captures).
    pub depth: u32,
}

impl Resolution {
    /// The sizes an X server here is started with: 320×240 to 7680×4320.
    pub const WIDTHS: std::ops::RangeInclusive<u32> = 320..=7680;
    pub const HEIGHTS: std::ops::RangeInclusive<u32> = 240..=4320;

    /// A screen of that size, depth 24, if it is within [`Self::WIDTHS`] and
    /// [`Self::HEIGHTS`]; else the sentence saying so.
    pub fn new(width: u32, height: u32) -> Result<Resolution, String> {
        if !Self::WIDTHS.contains(&width) || !Self::HEIGHTS.contains(&height) {
            return Err(format!(
                "a screen is 320x240 to 7680x4320 pixels, not {width}x{height}"
            ));
        }
        Ok(Resolution {
            width,
            height,
            depth: 24,
        })
    }

    /// Parses `WxHxD` (or `WxH`, depth 24): errors are the sentence a client reads.
    pub fn parse(text: &str) -> Result<Resolution, String> {
        let bad = || format!("resolution must be WIDTHxHEIGHTxDEPTH such as 1280x720x24, not {text:?}");
        let parts: Vec<&str> = text.split('x').collect();
        let number = |s: &str| {
            (!s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
        };
        let (width, height, depth) = match parts[..] {
            [w, h] => (number(w), number(h), Some(24)),
            [w, h, d] => (number(w), number(h), number(d)),
            _ => return Err(bad()),
        };
        let (Some(width), Some(height), Some(depth)) = (width, height, depth) else {
            return Err(bad());
        };
        if depth != 24 {
            return Err(format!(
                "only depth 24 is available, not {depth} (resolution {text:?})"
            ));
        }
        Resolution::new(width, height)
    }
}

impl std::fmt::Display for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.width, self.height, self.depth)
    }
}

pub struct KeyRow {
    pub id: String,
    pub account: String,
    /// The workspace (project id) the key is limited to, if it is.
    pub workspace: Option<String>,
    pub created_at: i64,
    pub revoked: bool,
}

/// A key that is not revoked, as authentication reads it.
pub struct LiveKey {
    /// SHA-256 of the secret.
    pub hash: Vec<u8>,
    pub account: String,
    /// The workspace (project id) it is limited to; none: the whole account.
    pub workspace: Option<String>,
}

/// A lease held: `name` by `holder` until it expires, in its `epoch`, which grows by one each
/// time the lease changes hands (or is taken again after it expired), so a write made under an
/// older epoch can be refused (fencing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
}

/// A screenshot kept for a `response_format=url` link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The file extension it is served with: `jpg` or `png`.
    pub format: String,
    pub bytes: Vec<u8>,
    /// The workspace of the desktop it was taken on (unknown for those kept before it was
    /// recorded).
    pub project_id: Option<String>,
}

/// A file kept in a workspace (Orgo's files: uploaded, or exported from a desktop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub id: String,
    pub account_id: String,
    pub project_id: String,
    /// The desktop it was uploaded to or exported from, if any.
    pub desktop_id: Option<String>,
    pub filename: String,
    pub content_type: String,
    /// `upload` or `export`.
    pub source: String,
    /// Bytes.
    pub size: u64,
    /// Unix seconds.
    pub created_at: i64,
}

/// Unix seconds now, by this machine's clock.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The store: what the gateway reads and writes, whichever database holds it. Every method
/// answers [`StoreError::Unavailable`] while the database cannot be reached.
#[tonic::async_trait]
pub trait Store: Send + Sync {
    /// Which database this is, for logs and errors (a URL's password is masked).
    fn describe(&self) -> String;
    /// Whether several gateways can share this store (PostgreSQL) or only one (SQLite).
    fn shared(&self) -> bool;
    /// One round trip: whether the database answers now.
    async fn ping(&self) -> Result<(), StoreError>;

    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError>;
    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError>;
    /// The account of that name, made with `plan` and `id` if it does not exist (an existing
    /// account's plan is updated to `plan`).
    async fn ensure_account(&self, name: &str, plan: &str, id: &str) -> Result<Account, StoreError>;

    /// A key of the account, limited to the project `workspace` if given.
    async fn insert_key(
        &self,
        id: &str,
        account_id: &str,
        hash: &[u8],
        workspace: Option<&str>,
    ) -> Result<(), StoreError>;
    /// A live (not revoked) key.
    async fn live_key(&self, id: &str) -> Result<Option<LiveKey>, StoreError>;
    async fn list_keys(&self) -> Result<Vec<KeyRow>, StoreError>;
    /// Whether a live key was revoked.
    async fn revoke_key(&self, id: &str) -> Result<bool, StoreError>;

    /// Errors with [`StoreError::Conflict`] when the account has a project of that name.
    async fn insert_project(&self, p: &Project) -> Result<(), StoreError>;
    async fn projects(&self, account: &str) -> Result<Vec<Project>, StoreError>;
    /// A project of the account, by id or by name (an id wins).
    async fn project(&self, account: &str, id_or_name: &str) -> Result<Option<Project>, StoreError>;
    /// Deletes a project and the files kept in it.
    async fn delete_project(&self, account: &str, id: &str) -> Result<(), StoreError>;

    /// Errors with [`StoreError::Conflict`] when the account has a computer of that name.
    async fn insert_computer(&self, c: &Computer) -> Result<(), StoreError>;
    /// A computer of the account, by id or by name (an id wins).
    async fn computer(&self, account: &str, id_or_name: &str) -> Result<Option<Computer>, StoreError>;
    async fn computers_of_project(&self, account: &str, project: &str) -> Result<Vec<Computer>, StoreError>;
    async fn computers_of_account(&self, account: &str) -> Result<Vec<Computer>, StoreError>;
    /// Every computer, for reconciliation and idle checks.
    async fn all_computers(&self) -> Result<Vec<Computer>, StoreError>;
    /// Sets the status (and forgets why it last ended).
    async fn set_status(&self, id: &str, status: Status) -> Result<(), StoreError>;
    /// Records a start that failed: status `error`, no agent, and `why` (the user's words).
    async fn set_failed(&self, id: &str, why: &str) -> Result<(), StoreError>;
    /// Records a running desktop and where its agent listens, a new generation.
    async fn set_running(&self, id: &str, agent: &str) -> Result<(), StoreError>;
    /// Records that a stop begins: status `stopping`, no agent, a new generation.
    async fn begin_stop(&self, id: &str) -> Result<(), StoreError>;
    /// Records that a running desktop's processes are gone (status `error`, no agent), only if
    /// it is still the run that was read (`generation`, `agent`), with `why` (the runtime's
    /// words); answers whether it was.
    async fn mark_lost(&self, id: &str, generation: i64, agent: &str, why: &str) -> Result<bool, StoreError>;
    /// Sets the status only while `lease` is still held in its epoch; answers whether it was
    /// (a deposed leader's late write is refused).
    async fn set_status_fenced(&self, id: &str, status: Status, lease: &Lease) -> Result<bool, StoreError>;
    /// Hands the pooled desktop `id` (a running computer of the pool's account `pool`) to
    /// `account` as `name` in `project`, created and active `at`. False when it is no longer
    /// pooled and running (another create took it, or it ended); Conflict when the account
    /// already has a computer of that name.
    async fn claim_pooled(
        &self,
        pool: &str,
        id: &str,
        account: &str,
        project: &str,
        name: &str,
        at: i64,
    ) -> Result<bool, StoreError>;
    /// Sets a computer's idle time (see [`Computer::auto_stop_minutes`]).
    async fn set_auto_stop(&self, id: &str, minutes: Option<u32>) -> Result<(), StoreError>;
    /// Records a computer's new size (a resize applied to its running desktop).
    async fn set_size(&self, id: &str, ram_gb: u32, cpu: f64, disk_gb: u32) -> Result<(), StoreError>;
    /// Moves a computer of `account` into its project `project`; false when either is gone.
    async fn move_computer(&self, account: &str, id: &str, project: &str) -> Result<bool, StoreError>;
    /// Records activity at `at` (Unix seconds), keeping the latest of what replicas write.
    async fn touch(&self, id: &str, at: i64) -> Result<(), StoreError>;
    async fn delete_computer(&self, id: &str) -> Result<(), StoreError>;

    /// Takes or renews the lease `name` for `holder` for `ttl`: answers it when `holder`
    /// holds it now (it was free, expired, or already its), None when another holds it.
    async fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError>;
    /// Extends a lease still held in its epoch; answers whether it was (a lease that expired
    /// is never taken back this way: it may have been someone else's meanwhile).
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError>;
    /// Lets the lease go at once if `holder` holds it (its epoch stays, for fencing).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Drops every lease. Only for a store one gateway alone uses, at its start: the turns a
    /// crashed predecessor held would otherwise hold until they expire.
    async fn forget_leases(&self) -> Result<(), StoreError>;

    /// The secret `name`: made from `fresh` by whichever replica asks first, the same bytes for
    /// every replica after.
    async fn secret(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// Keeps a screenshot of `account` under `id`.
    async fn keep_screenshot(&self, account: &str, id: &str, kept: &Kept) -> Result<(), StoreError>;
    /// A kept screenshot of `account`.
    async fn screenshot(&self, account: &str, id: &str) -> Result<Option<Kept>, StoreError>;
    /// Drops screenshots kept before `before` (Unix seconds); answers how many.
    async fn forget_screenshots(&self, before: i64) -> Result<u64, StoreError>;

    /// Keeps a workspace file and its bytes.
    async fn keep_file(&self, file: &StoredFile, bytes: &[u8]) -> Result<(), StoreError>;
    /// The files of a workspace of `account` (of one of its desktops if given), oldest first
    /// (by the second they were kept, then by id).
    async fn files(
        &self,
        account: &str,
        project: &str,
        desktop: Option<&str>,
    ) -> Result<Vec<StoredFile>, StoreError>;
    /// A file of `account` and its bytes.
    async fn file(&self, account: &str, id: &str) -> Result<Option<(StoredFile, Vec<u8>)>, StoreError>;
    /// Drops a file of `account`; answers whether there was one.
    async fn delete_file(&self, account: &str, id: &str) -> Result<bool, StoreError>;
}

/// Opens the store a config names: PostgreSQL when `database_url` is set, else SQLite at
/// `sqlite_path`. Errors say which database and why (a URL's password masked).
pub async fn open(
    database_url: Option<&str>,
    sqlite_path: &std::path::Path,
) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match database_url {
        Some(url) => Arc::new(Postgres::open(url).await?),
        None => Arc::new(Sqlite::open(sqlite_path)?),
    })
}

/// `url` with its password, if any, replaced by `***`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // The key=value form.
        return url
            .split(' ')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***",
                _ => pair,
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::mask_url;

    #[test]
    fn passwords_are_masked_in_urls() {
        assert_eq!(
            mask_url("postgres://orgo:s3cr:et@db:5432/orgo"),
            "postgres://orgo:***@db:5432/orgo"
        );
        assert_eq!(mask_url("postgres://orgo@db/orgo"), "postgres://orgo@db/orgo");
        assert_eq!(mask_url("postgres://db/orgo?x=1"), "postgres://db/orgo?x=1");
        assert_eq!(
            mask_url("host=db password=x user=orgo"),
            "host=db password=*** user=orgo"
        );
    }
}
