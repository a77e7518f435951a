//! State in SQLite: accounts, API keys (SHA-256 hashes only), projects and computers. Every
//! lookup of a project or computer takes the caller's account, so a foreign one is simply not
//! found. Migrations run at open, each once, in order.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (the detail is for the log).
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    /// A name that must be unique is taken; the sentence names it.
    #[error("{0}")]
    Conflict(String),
}

const MIGRATIONS: &[&str] = &["
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
"];

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
    pub created_at: i64,
    pub last_active: i64,
}

pub struct KeyRow {
    pub id: String,
    pub account: String,
    pub created_at: i64,
    pub revoked: bool,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub struct Store {
    conn: Mutex<Connection>,
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

const COMPUTER_COLUMNS: &str =
    "id, account_id, project_id, name, status, ram_gb, cpu, created_at, last_active";

impl Store {
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            conn.execute_batch(migration)?;
            conn.pragma_update(None, "user_version", i + 1)?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }

    pub fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT id, name, plan FROM accounts WHERE name = ?1",
                [name],
                |r| {
                    Ok(Account {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        plan: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }

    pub fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.with(|c| {
            c.query_row("SELECT id, name, plan FROM accounts WHERE id = ?1", [id], |r| {
                Ok(Account {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    plan: r.get(2)?,
                })
            })
            .optional()
        })
    }

    /// The account of that name, made with `plan` if it does not exist (an existing account's
    /// plan is updated to `plan`).
    pub fn ensure_account(&self, name: &str, plan: &str, id: &str) -> Result<Account, StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO accounts (id, name, plan, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET plan = excluded.plan",
                params![id, name, plan, now()],
            )
        })?;
        self.account_by_name(name)?
            .ok_or(StoreError::Database(rusqlite::Error::QueryReturnedNoRows))
    }

    pub fn insert_key(&self, id: &str, account_id: &str, hash: &[u8]) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO api_keys (id, account_id, key_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, account_id, hash, now()],
            )
            .map(drop)
        })
    }

    /// The hash and account of a live (not revoked) key.
    pub fn live_key(&self, id: &str) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT key_hash, account_id FROM api_keys WHERE id = ?1 AND revoked_at IS NULL",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
    }

    pub fn list_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT k.id, a.name, k.created_at, k.revoked_at IS NOT NULL
                 FROM api_keys k JOIN accounts a ON a.id = k.account_id ORDER BY k.created_at",
            )?;
            stmt.query_map([], |r| {
                Ok(KeyRow {
                    id: r.get(0)?,
                    account: r.get(1)?,
                    created_at: r.get(2)?,
                    revoked: r.get(3)?,
                })
            })?
            .collect()
        })
    }

    pub fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now()],
            )
            .map(|n| n > 0)
        })
    }

    pub fn insert_project(&self, p: &Project) -> Result<(), StoreError> {
        let inserted = self.with(|c| {
            c.execute(
                "INSERT INTO projects (id, account_id, name, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                params![p.id, p.account_id, p.name, p.created_at],
            )
        })?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "a project named {:?} already exists",
                p.name
            )));
        }
        Ok(())
    }

    pub fn projects(&self, account: &str) -> Result<Vec<Project>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, account_id, name, created_at FROM projects WHERE account_id = ?1 ORDER BY created_at, name",
            )?;
            stmt.query_map([account], project_row)?.collect()
        })
    }

    /// A project of the account, by id or by name.
    pub fn project(&self, account: &str, id_or_name: &str) -> Result<Option<Project>, StoreError> {
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

    pub fn delete_project(&self, account: &str, id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM projects WHERE account_id = ?1 AND id = ?2",
                [account, id],
            )
            .map(drop)
        })
    }

    pub fn insert_computer(&self, m: &Computer) -> Result<(), StoreError> {
        let inserted = self.with(|c| {
            c.execute(
                &format!("INSERT INTO computers ({COMPUTER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING"),
                params![m.id, m.account_id, m.project_id, m.name, m.status.as_str(), m.ram_gb, m.cpu, m.created_at, m.last_active],
            )
        })?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "a computer named {:?} already exists",
                m.name
            )));
        }
        Ok(())
    }

    /// A computer of the account, by id or by name.
    pub fn computer(&self, account: &str, id_or_name: &str) -> Result<Option<Computer>, StoreError> {
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

    pub fn computers_of_project(&self, account: &str, project: &str) -> Result<Vec<Computer>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COMPUTER_COLUMNS} FROM computers WHERE account_id = ?1 AND project_id = ?2 ORDER BY created_at, name"
            ))?;
            stmt.query_map([account, project], computer_row)?.collect()
        })
    }

    pub fn computers_of_account(&self, account: &str) -> Result<Vec<Computer>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COMPUTER_COLUMNS} FROM computers WHERE account_id = ?1"
            ))?;
            stmt.query_map([account], computer_row)?.collect()
        })
    }

    /// Every computer, for start-up reconciliation and idle checks.
    pub fn all_computers(&self) -> Result<Vec<Computer>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("SELECT {COMPUTER_COLUMNS} FROM computers"))?;
            stmt.query_map([], computer_row)?.collect()
        })
    }

    pub fn set_status(&self, id: &str, status: Status) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE computers SET status = ?2 WHERE id = ?1",
                params![id, status.as_str()],
            )
            .map(drop)
        })
    }

    pub fn touch(&self, id: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE computers SET last_active = ?2 WHERE id = ?1",
                params![id, now()],
            )
            .map(drop)
        })
    }

    pub fn delete_computer(&self, id: &str) -> Result<(), StoreError> {
        self.with(|c| c.execute("DELETE FROM computers WHERE id = ?1", [id]).map(drop))
    }
}
