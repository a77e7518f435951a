//! The SQLite backend: one file in the data dir, one connection behind a mutex (calls are
//! short; SQLite serialises writers anyway). For one gateway: a second process on the same
//! file would agree on rows but its desktops are its own, so `shared()` is false.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Account, Computer, Kept, KeyRow, Lease, LiveKey, Project, Resolution, Status, Store, StoreError,
    StoredFile,
};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error() {
            Some(f) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                StoreError::Conflict("what this refers to was deleted meanwhile".into())
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        plan TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        key_hash BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE TABLE computers (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        project_id TEXT NOT NULL REFERENCES projects(id),
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        ram_gb INTEGER NOT NULL,
        cpu REAL NOT NULL,
        created_at INTEGER NOT NULL,
        last_active INTEGER NOT NULL,
        UNIQUE (account_id, name)
    );
",
    "
    ALTER TABLE computers ADD COLUMN agent TEXT;
    ALTER TABLE computers ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE screenshots (
        account_id TEXT NOT NULL,
        id TEXT NOT NULL,
        format TEXT NOT NULL,
        bytes BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (account_id, id)
    );
",
    "
    ALTER TABLE computers ADD COLUMN ended TEXT;
",
    "
    ALTER TABLE computers ADD COLUMN disk_gb INTEGER;
    ALTER TABLE computers ADD COLUMN resolution TEXT;
    ALTER TABLE computers ADD COLUMN auto_stop_minutes INTEGER;
    ALTER TABLE api_keys ADD COLUMN workspace_id TEXT;
    CREATE TABLE files (
        id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        project_id TEXT NOT NULL,
        desktop_id TEXT,
        filename TEXT NOT NULL,
        content_type TEXT NOT NULL,
        source TEXT NOT NULL,
        size INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        bytes BLOB NOT NULL,
        PRIMARY KEY (account_id, id)
    );
    CREATE INDEX files_of_project ON files (account_id, project_id);
",
    "
    ALTER TABLE screenshots ADD COLUMN project_id TEXT;
",
];

pub struct Sqlite {
    path: String,
    conn: Mutex<Connection>,
}

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        name: r.get(1)?,
        plan: r.get(2)?,
    })
}

fn computer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Computer> {
    Ok(Computer {
        id: r.get(0)?,
        account_id: r.get(1)?,
        project_id: r.get(2)?,
        name: r.get(3)?,
        status: Status::parse(&r.get::<_, String>(4)?),
        ram_gb: r.get(5)?,
        cpu: r.get(6)?,
        created_at: r.get(7)?,
        last_active: r.get(8)?,
        agent: r.get(9)?,
        generation: r.get(10)?,
        ended: r.get(11)?,
        disk_gb: r.get(12)?,
        resolution: r
            .get::<_, Option<String>>(13)?
            .and_then(|t| Resolution::parse(&t).ok()),
        auto_stop_minutes: r.get(14)?,
    })
}

fn project_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        account_id: r.get(1)?,
        name: r.get(2)?,
        created_at: r.get(3)?,
    })
}

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredFile> {
    Ok(StoredFile {
        id: r.get(0)?,
        account_id: r.get(1)?,
        project_id: r.get(2)?,
        desktop_id: r.get(3)?,
        filename: r.get(4)?,
        content_type: r.get(5)?,
        source: r.get(6)?,
        size: r.get(7)?,
        created_at: r.get(8)?,
    })
}

const FILE_COLUMNS: &str =
    "id, account_id, project_id, desktop_id, filename, content_type, source, size, created_at";

const COMPUTER_COLUMNS: &str = "id, account_id, project_id, name, status, ram_gb, cpu, created_at, last_active, agent, generation, ended, disk_gb, resolution, auto_stop_minutes";

/// Unix milliseconds now: lease expiry is kept finer than activity.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The connection as the queries use it: each statement is parsed once and kept in rusqlite's
/// statement cache, where `Connection::query_row` and `execute` parse the SQL on every call
/// (most of an authenticated action's store time).
struct Cached<'a>(&'a Connection);

impl Cached<'_> {
    fn query_row<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.0.prepare_cached(sql)?.query_row(params, f)
    }

    fn execute(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.0.prepare_cached(sql)?.execute(params)
    }

    fn prepare(&self, sql: &str) -> rusqlite::Result<rusqlite::CachedStatement<'_>> {
        self.0.prepare_cached(sql)
    }
}

/// Distinct statements the store keeps prepared: more than it has, so none is evicted.
const STATEMENT_CACHE: usize = 64;

impl Sqlite {
    /// Opens (creating) the database file and runs the migrations it lacks, in one transaction
    /// under SQLite's write lock, so two processes opening it together run each once.
    pub fn open(path: &Path) -> anyhow::Result<Sqlite> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // In WAL mode NORMAL is durable across a crash of the process (only a power loss may
        // undo the last commits) and saves an fsync per write: a create makes about ten.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()?;
        Ok(Sqlite {
            path: path.display().to_string(),
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Cached<'_>) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&Cached(&conn))?)
    }

    fn computers(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<Computer>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COMPUTER_COLUMNS} FROM computers {filter} ORDER BY created_at, name"
            ))?;
            stmt.query_map(args, computer_row)?.collect()
        })
    }

    fn execute(&self, sql: &str, args: impl rusqlite::Params) -> Result<usize, StoreError> {
        self.with(|c| c.execute(sql, args))
    }
}

#[tonic::async_trait]
impl Store for Sqlite {
    fn describe(&self) -> String {
        format!("SQLite at {}", self.path)
    }

    fn shared(&self) -> bool {
        false
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }

    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT id, name, plan FROM accounts WHERE name = ?1",
                [name],
                account_row,
            )
            .optional()
        })
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT id, name, plan FROM accounts WHERE id = ?1",
                [id],
                account_row,
            )
            .optional()
        })
    }

    async fn ensure_account(&self, name: &str, plan: &str, id: &str) -> Result<Account, StoreError> {
        self.with(|c| {
            c.query_row(
                "INSERT INTO accounts (id, name, plan, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET plan = excluded.plan
                 RETURNING id, name, plan",
                params![id, name, plan, super::now()],
                account_row,
            )
        })
    }

    async fn insert_key(
        &self,
        id: &str,
        account_id: &str,
        hash: &[u8],
        workspace: Option<&str>,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO api_keys (id, account_id, key_hash, created_at, workspace_id) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, account_id, hash, super::now(), workspace],
        )
        .map(drop)
    }

    async fn live_key(&self, id: &str) -> Result<Option<LiveKey>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT key_hash, account_id, workspace_id FROM api_keys WHERE id = ?1 AND revoked_at IS NULL",
                [id],
                |r| {
                    Ok(LiveKey {
                        hash: r.get(0)?,
                        account: r.get(1)?,
                        workspace: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    async fn list_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT k.id, a.name, k.created_at, k.revoked_at IS NOT NULL, k.workspace_id
                 FROM api_keys k JOIN accounts a ON a.id = k.account_id ORDER BY k.created_at, k.id",
            )?;
            stmt.query_map([], |r| {
                Ok(KeyRow {
                    id: r.get(0)?,
                    account: r.get(1)?,
                    created_at: r.get(2)?,
                    revoked: r.get(3)?,
                    workspace: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        self.execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, super::now()],
        )
        .map(|n| n > 0)
    }

    async fn insert_project(&self, p: &Project) -> Result<(), StoreError> {
        let inserted = self.execute(
            "INSERT INTO projects (id, account_id, name, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            params![p.id, p.account_id, p.name, p.created_at],
        )?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "a project named {:?} already exists",
                p.name
            )));
        }
        Ok(())
    }

    async fn projects(&self, account: &str) -> Result<Vec<Project>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, account_id, name, created_at FROM projects WHERE account_id = ?1
                 ORDER BY created_at, name",
            )?;
            stmt.query_map([account], project_row)?.collect()
        })
    }

    async fn project(&self, account: &str, id_or_name: &str) -> Result<Option<Project>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT id, account_id, name, created_at FROM projects
                 WHERE account_id = ?1 AND (id = ?2 OR name = ?2) ORDER BY id = ?2 DESC LIMIT 1",
                [account, id_or_name],
                project_row,
            )
            .optional()
        })
    }

    async fn delete_project(&self, account: &str, id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM files WHERE account_id = ?1 AND project_id = ?2",
                [account, id],
            )?;
            c.execute(
                "DELETE FROM projects WHERE account_id = ?1 AND id = ?2",
                [account, id],
            )
        })
        .map(drop)
    }

    async fn insert_computer(&self, m: &Computer) -> Result<(), StoreError> {
        let inserted = self.execute(
            &format!(
                "INSERT INTO computers ({COMPUTER_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) ON CONFLICT DO NOTHING"
            ),
            params![
                m.id,
                m.account_id,
                m.project_id,
                m.name,
                m.status.as_str(),
                m.ram_gb,
                m.cpu,
                m.created_at,
                m.last_active,
                m.agent,
                m.generation,
                m.ended,
                m.disk_gb,
                m.resolution.map(|r| r.to_string()),
                m.auto_stop_minutes
            ],
        )?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "a computer named {:?} already exists",
                m.name
            )));
        }
        Ok(())
    }

    async fn claim_pooled(
        &self,
        pool: &str,
        id: &str,
        account: &str,
        project: &str,
        name: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        self.with(|c| {
            let claimed = c.execute(
                "UPDATE computers SET account_id = ?3, project_id = ?4, name = ?5, created_at = ?6, last_active = ?6
                 WHERE id = ?1 AND account_id = ?2 AND status = 'running'
                   AND NOT EXISTS (SELECT 1 FROM computers WHERE account_id = ?3 AND name = ?5)",
                params![id, pool, account, project, name, at],
            )?;
            let named = "SELECT 1 FROM computers WHERE account_id = ?1 AND name = ?2";
            if claimed == 0 && c.query_row(named, params![account, name], |_| Ok(())).optional()?.is_some() {
                return Ok(None);
            }
            Ok(Some(claimed == 1))
        })?
        .ok_or_else(|| StoreError::Conflict(format!("a computer named {name:?} already exists")))
    }

    async fn computer(&self, account: &str, id_or_name: &str) -> Result<Option<Computer>, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {COMPUTER_COLUMNS} FROM computers WHERE account_id = ?1 AND (id = ?2 OR name = ?2)
                     ORDER BY id = ?2 DESC LIMIT 1"
                ),
                [account, id_or_name],
                computer_row,
            )
            .optional()
        })
    }

    async fn computers_of_project(&self, account: &str, project: &str) -> Result<Vec<Computer>, StoreError> {
        self.computers("WHERE account_id = ?1 AND project_id = ?2", [account, project])
    }

    async fn computers_of_account(&self, account: &str) -> Result<Vec<Computer>, StoreError> {
        self.computers("WHERE account_id = ?1", [account])
    }

    async fn all_computers(&self) -> Result<Vec<Computer>, StoreError> {
        self.computers("", [])
    }

    async fn set_status(&self, id: &str, status: Status) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET status = ?2, ended = NULL WHERE id = ?1",
            params![id, status.as_str()],
        )
        .map(drop)
    }

    async fn set_failed(&self, id: &str, why: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET status = 'error', agent = NULL, ended = ?2 WHERE id = ?1",
            params![id, why],
        )
        .map(drop)
    }

    async fn set_running(&self, id: &str, agent: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET status = 'running', agent = ?2, ended = NULL, generation = generation + 1 WHERE id = ?1",
            params![id, agent],
        )
        .map(drop)
    }

    async fn begin_stop(&self, id: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET status = 'stopping', agent = NULL, ended = NULL, generation = generation + 1 WHERE id = ?1",
            [id],
        )
        .map(drop)
    }

    async fn mark_lost(&self, id: &str, generation: i64, agent: &str, why: &str) -> Result<bool, StoreError> {
        self.execute(
            "UPDATE computers SET status = 'error', agent = NULL, ended = ?4
             WHERE id = ?1 AND status = 'running' AND generation = ?2 AND coalesce(agent, '') = ?3",
            params![id, generation, agent, why],
        )
        .map(|n| n > 0)
    }

    async fn set_status_fenced(&self, id: &str, status: Status, lease: &Lease) -> Result<bool, StoreError> {
        self.execute(
            "UPDATE computers SET status = ?2, ended = NULL WHERE id = ?1 AND EXISTS
             (SELECT 1 FROM leases WHERE name = ?3 AND holder = ?4 AND epoch = ?5 AND expires_at > ?6)",
            params![
                id,
                status.as_str(),
                lease.name,
                lease.holder,
                lease.epoch,
                now_ms()
            ],
        )
        .map(|n| n > 0)
    }

    async fn set_auto_stop(&self, id: &str, minutes: Option<u32>) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET auto_stop_minutes = ?2 WHERE id = ?1",
            params![id, minutes],
        )
        .map(drop)
    }

    async fn set_size(&self, id: &str, ram_gb: u32, cpu: f64, disk_gb: u32) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET ram_gb = ?2, cpu = ?3, disk_gb = ?4 WHERE id = ?1",
            params![id, ram_gb, cpu, disk_gb],
        )
        .map(drop)
    }

    async fn move_computer(&self, account: &str, id: &str, project: &str) -> Result<bool, StoreError> {
        self.execute(
            "UPDATE computers SET project_id = ?3 WHERE id = ?2 AND account_id = ?1
             AND EXISTS (SELECT 1 FROM projects WHERE id = ?3 AND account_id = ?1)",
            params![account, id, project],
        )
        .map(|n| n > 0)
    }

    async fn touch(&self, id: &str, at: i64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET last_active = max(last_active, ?2) WHERE id = ?1",
            params![id, at],
        )
        .map(drop)
    }

    async fn delete_computer(&self, id: &str) -> Result<(), StoreError> {
        self.execute("DELETE FROM computers WHERE id = ?1", [id])
            .map(drop)
    }

    async fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        let now = now_ms();
        self.with(|c| {
            c.query_row(
                "INSERT INTO leases (name, holder, epoch, expires_at) VALUES (?1, ?2, 1, ?3 + ?4)
                 ON CONFLICT (name) DO UPDATE SET
                     epoch = epoch + (holder <> excluded.holder OR expires_at <= ?3),
                     holder = excluded.holder,
                     expires_at = excluded.expires_at
                 WHERE holder = excluded.holder OR expires_at <= ?3
                 RETURNING epoch",
                params![name, holder, now, ttl.as_millis() as i64],
                |r| r.get(0),
            )
            .optional()
        })
        .map(|epoch| {
            epoch.map(|epoch| Lease {
                name: name.to_string(),
                holder: holder.to_string(),
                epoch,
            })
        })
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let now = now_ms();
        self.execute(
            "UPDATE leases SET expires_at = ?4 + ?5
             WHERE name = ?1 AND holder = ?2 AND epoch = ?3 AND expires_at > ?4",
            params![lease.name, lease.holder, lease.epoch, now, ttl.as_millis() as i64],
        )
        .map(|n| n > 0)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE leases SET expires_at = 0 WHERE name = ?1 AND holder = ?2",
            [name, holder],
        )
        .map(drop)
    }

    async fn forget_leases(&self) -> Result<(), StoreError> {
        self.execute("DELETE FROM leases", []).map(drop)
    }

    async fn secret(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.with(|c| {
            c.query_row(
                "INSERT INTO secrets (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = value RETURNING value",
                params![name, fresh],
                |r| r.get(0),
            )
        })
    }

    async fn keep_screenshot(&self, account: &str, id: &str, kept: &Kept) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO screenshots (account_id, id, format, bytes, created_at, project_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![account, id, kept.format, kept.bytes, super::now(), kept.project_id],
        )
        .map(drop)
    }

    async fn screenshot(&self, account: &str, id: &str) -> Result<Option<Kept>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT format, bytes, project_id FROM screenshots WHERE account_id = ?1 AND id = ?2",
                [account, id],
                |r| {
                    Ok(Kept {
                        format: r.get(0)?,
                        bytes: r.get(1)?,
                        project_id: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    async fn forget_screenshots(&self, before: i64) -> Result<u64, StoreError> {
        self.execute("DELETE FROM screenshots WHERE created_at < ?1", [before])
            .map(|n| n as u64)
    }

    async fn keep_file(&self, f: &StoredFile, bytes: &[u8]) -> Result<(), StoreError> {
        self.execute(
            &format!(
                "INSERT INTO files ({FILE_COLUMNS}, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ),
            params![
                f.id,
                f.account_id,
                f.project_id,
                f.desktop_id,
                f.filename,
                f.content_type,
                f.source,
                f.size,
                f.created_at,
                bytes
            ],
        )
        .map(drop)
    }

    async fn files(
        &self,
        account: &str,
        project: &str,
        desktop: Option<&str>,
    ) -> Result<Vec<StoredFile>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {FILE_COLUMNS} FROM files WHERE account_id = ?1 AND project_id = ?2
                 AND (?3 IS NULL OR desktop_id = ?3) ORDER BY created_at, id"
            ))?;
            stmt.query_map(params![account, project, desktop], file_row)?
                .collect()
        })
    }

    async fn file(&self, account: &str, id: &str) -> Result<Option<(StoredFile, Vec<u8>)>, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {FILE_COLUMNS}, bytes FROM files WHERE account_id = ?1 AND id = ?2"),
                [account, id],
                |r| Ok((file_row(r)?, r.get(9)?)),
            )
            .optional()
        })
    }

    async fn delete_file(&self, account: &str, id: &str) -> Result<bool, StoreError> {
        self.execute(
            "DELETE FROM files WHERE account_id = ?1 AND id = ?2",
            [account, id],
        )
        .map(|n| n > 0)
    }
}
