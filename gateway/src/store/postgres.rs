//! The PostgreSQL backend, for several gateways on one database: tokio-postgres through a
//! deadpool pool (reconnects by itself; a connection found closed is replaced). Lease expiry is
//! judged by the database's clock, so replicas with skewed clocks still agree. Migrations run
//! in one transaction under an advisory lock, so replicas starting together run each once.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::{NoTls, Row, types::ToSql};

use super::{
    Account, Computer, Kept, KeyRow, Lease, LiveKey, Project, Resolution, Status, Store, StoreError,
    StoredFile, mask_url,
};

/// Each is run once, in order; the number of those run is kept in `schema_migrations`.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        plan TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        key_hash BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE TABLE computers (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        project_id TEXT NOT NULL REFERENCES projects(id),
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        ram_gb BIGINT NOT NULL,
        cpu DOUBLE PRECISION NOT NULL,
        created_at BIGINT NOT NULL,
        last_active BIGINT NOT NULL,
        agent TEXT,
        generation BIGINT NOT NULL DEFAULT 0,
        UNIQUE (account_id, name)
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );
    CREATE TABLE screenshots (
        account_id TEXT NOT NULL,
        id TEXT NOT NULL,
        format TEXT NOT NULL,
        bytes BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (account_id, id)
    );
",
    "
    ALTER TABLE computers ADD COLUMN ended TEXT;
",
    "
    ALTER TABLE computers ADD COLUMN disk_gb BIGINT;
    ALTER TABLE computers ADD COLUMN resolution TEXT;
    ALTER TABLE computers ADD COLUMN auto_stop_minutes BIGINT;
    ALTER TABLE api_keys ADD COLUMN workspace_id TEXT;
    CREATE TABLE files (
        id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        project_id TEXT NOT NULL,
        desktop_id TEXT,
        filename TEXT NOT NULL,
        content_type TEXT NOT NULL,
        source TEXT NOT NULL,
        size BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        bytes BYTEA NOT NULL,
        PRIMARY KEY (account_id, id)
    );
    CREATE INDEX files_of_project ON files (account_id, project_id);
",
    "
    ALTER TABLE screenshots ADD COLUMN project_id TEXT;
",
];

/// The advisory lock migrations run under (any constant every replica agrees on).
const MIGRATION_LOCK: i64 = 0x6f72_676f;

/// SQLSTATEs that pass by themselves besides classes 08 (connection) and 57 (operator
/// intervention: shutdown, start-up, a cancelled statement): too many connections (replicas
/// reconnecting together), a read-only transaction (a failover under way), serialization
/// failure and deadlock.
const TRANSIENT: &[&str] = &["53300", "25006", "40001", "40P01"];
const FOREIGN_KEY_VIOLATION: &str = "23503";
/// The longest one statement may take, here and on the server, before the database counts as
/// unavailable (a network path that silently drops packets would otherwise hold a request
/// for minutes).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Unix milliseconds by the database's clock.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

pub struct Postgres {
    url: String,
    pool: Pool,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // SQLSTATE class 08 is a connection exception; 57P01–57P03 a server shutting down or
        // starting: all pass once the database is back.
        // Without a code, an I/O error under it means the connection failed.
        use std::error::Error;
        let code = e.code().map(|c| c.code());
        let transient = e.is_closed()
            || code.map_or_else(
                || e.source().is_some_and(|s| s.is::<std::io::Error>()),
                |c| c.starts_with("08") || c.starts_with("57") || TRANSIENT.contains(&c),
            );
        if transient {
            // tokio-postgres' own sentence is terse ("error connecting to server"): the cause
            // (refused, timed out, a name that does not resolve) is its source.
            let detail = match e.source() {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            };
            StoreError::Unavailable(detail)
        } else if code == Some(FOREIGN_KEY_VIOLATION) {
            StoreError::Conflict("what this refers to was deleted meanwhile".into())
        } else {
            StoreError::Database(e.as_db_error().map_or_else(|| e.to_string(), |d| d.to_string()))
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

fn account_row(r: &Row) -> Account {
    Account {
        id: r.get(0),
        name: r.get(1),
        plan: r.get(2),
    }
}

fn project_row(r: &Row) -> Project {
    Project {
        id: r.get(0),
        account_id: r.get(1),
        name: r.get(2),
        created_at: r.get(3),
    }
}

fn computer_row(r: &Row) -> Computer {
    Computer {
        id: r.get(0),
        account_id: r.get(1),
        project_id: r.get(2),
        name: r.get(3),
        status: Status::parse(r.get(4)),
        ram_gb: clamp_u32(r.get(5)),
        cpu: r.get(6),
        created_at: r.get(7),
        last_active: r.get(8),
        agent: r.get(9),
        generation: r.get(10),
        ended: r.get(11),
        disk_gb: r.get::<_, Option<i64>>(12).map(clamp_u32),
        resolution: r
            .get::<_, Option<String>>(13)
            .and_then(|t| Resolution::parse(&t).ok()),
        auto_stop_minutes: r.get::<_, Option<i64>>(14).map(clamp_u32),
    }
}

/// A BIGINT column read back as the u32 it was written from.
fn clamp_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn file_row(r: &Row) -> StoredFile {
    StoredFile {
        id: r.get(0),
        account_id: r.get(1),
        project_id: r.get(2),
        desktop_id: r.get(3),
        filename: r.get(4),
        content_type: r.get(5),
        source: r.get(6),
        size: u64::try_from(r.get::<_, i64>(7)).unwrap_or(0),
        created_at: r.get(8),
    }
}

const FILE_COLUMNS: &str =
    "id, account_id, project_id, desktop_id, filename, content_type, source, size, created_at";

const COMPUTER_COLUMNS: &str = "id, account_id, project_id, name, status, ram_gb, cpu, created_at, last_active, agent, generation, ended, disk_gb, resolution, auto_stop_minutes";

impl Postgres {
    /// Connects (one round trip proves the database answers) and runs the migrations it
    /// lacks. Errors name the URL with its password masked.
    pub async fn open(url: &str) -> anyhow::Result<Postgres> {
        let masked = mask_url(url);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("database_url {masked} is not a PostgreSQL URL: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .options(format!("-c statement_timeout={}", STATEMENT_TIMEOUT.as_millis()));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = Some(Duration::from_secs(5));
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: timeout,
                create: timeout,
                recycle: timeout,
            })
            .build()
            .map_err(|e| anyhow::anyhow!("database {masked}: {e}"))?;
        let store = Postgres { url: masked, pool };
        store
            .migrate()
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", store.url))?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT NOT NULL)")
            .await?;
        let done: i64 = tx
            .query_one("SELECT count(*) FROM schema_migrations", &[])
            .await?
            .get(0);
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            tx.batch_execute(migration).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&(i as i64 + 1)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn query(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        within(async {
            let client = self.pool.get().await?;
            let statement = client.prepare_cached(sql).await?;
            Ok(client.query(&statement, args).await?)
        })
        .await
    }

    async fn query_opt(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, args).await?.into_iter().next())
    }

    async fn execute(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        within(async {
            let client = self.pool.get().await?;
            let statement = client.prepare_cached(sql).await?;
            Ok(client.execute(&statement, args).await?)
        })
        .await
    }

    async fn computers(
        &self,
        filter: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Computer>, StoreError> {
        let sql = format!("SELECT {COMPUTER_COLUMNS} FROM computers {filter} ORDER BY created_at, name");
        Ok(self.query(&sql, args).await?.iter().map(computer_row).collect())
    }
}

/// Whether text can be looked up at all: PostgreSQL's text holds no NUL, and a lookup by a
/// name that holds one finds nothing (as it does in SQLite) instead of failing.
fn storable(text: &str) -> bool {
    !text.contains('\0')
}

/// A round trip to the database, given up (as unavailable) after [`STATEMENT_TIMEOUT`] and a
/// little, in case the server never hears of it.
async fn within<T>(call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    let limit = STATEMENT_TIMEOUT + Duration::from_secs(2);
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("no answer within {limit:?}"))))
}

#[tonic::async_trait]
impl Store for Postgres {
    fn describe(&self) -> String {
        format!("PostgreSQL at {}", self.url)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query("SELECT 1", &[]).await.map(drop)
    }

    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        if !storable(name) {
            return Ok(None);
        }
        let row = self
            .query_opt("SELECT id, name, plan FROM accounts WHERE name = $1", &[&name])
            .await?;
        Ok(row.as_ref().map(account_row))
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        if !storable(id) {
            return Ok(None);
        }
        let row = self
            .query_opt("SELECT id, name, plan FROM accounts WHERE id = $1", &[&id])
            .await?;
        Ok(row.as_ref().map(account_row))
    }

    async fn ensure_account(&self, name: &str, plan: &str, id: &str) -> Result<Account, StoreError> {
        let rows = self
            .query(
                "INSERT INTO accounts (id, name, plan, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET plan = excluded.plan
                 RETURNING id, name, plan",
                &[&id, &name, &plan, &super::now()],
            )
            .await?;
        rows.first()
            .map(account_row)
            .ok_or_else(|| StoreError::Database("no account after upsert".into()))
    }

    async fn insert_key(
        &self,
        id: &str,
        account_id: &str,
        hash: &[u8],
        workspace: Option<&str>,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO api_keys (id, account_id, key_hash, created_at, workspace_id) VALUES ($1, $2, $3, $4, $5)",
            &[&id, &account_id, &hash, &super::now(), &workspace],
        )
        .await
        .map(drop)
    }

    async fn live_key(&self, id: &str) -> Result<Option<LiveKey>, StoreError> {
        if !storable(id) {
            return Ok(None);
        }
        let row = self
            .query_opt(
                "SELECT key_hash, account_id, workspace_id FROM api_keys WHERE id = $1 AND revoked_at IS NULL",
                &[&id],
            )
            .await?;
        Ok(row.map(|r| LiveKey {
            hash: r.get(0),
            account: r.get(1),
            workspace: r.get(2),
        }))
    }

    async fn list_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        let rows = self
            .query(
                "SELECT k.id, a.name, k.created_at, k.revoked_at IS NOT NULL, k.workspace_id
                 FROM api_keys k JOIN accounts a ON a.id = k.account_id ORDER BY k.created_at, k.id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| KeyRow {
                id: r.get(0),
                account: r.get(1),
                created_at: r.get(2),
                revoked: r.get(3),
                workspace: r.get(4),
            })
            .collect())
    }

    async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        self.execute(
            "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &super::now()],
        )
        .await
        .map(|n| n > 0)
    }

    async fn insert_project(&self, p: &Project) -> Result<(), StoreError> {
        let inserted = self
            .execute(
                "INSERT INTO projects (id, account_id, name, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&p.id, &p.account_id, &p.name, &p.created_at],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "a project named {:?} already exists",
                p.name
            )));
        }
        Ok(())
    }

    async fn projects(&self, account: &str) -> Result<Vec<Project>, StoreError> {
        let rows = self
            .query(
                "SELECT id, account_id, name, created_at FROM projects WHERE account_id = $1
                 ORDER BY created_at, name",
                &[&account],
            )
            .await?;
        Ok(rows.iter().map(project_row).collect())
    }

    async fn project(&self, account: &str, id_or_name: &str) -> Result<Option<Project>, StoreError> {
        if !storable(id_or_name) {
            return Ok(None);
        }
        let row = self
            .query_opt(
                "SELECT id, account_id, name, created_at FROM projects
                 WHERE account_id = $1 AND (id = $2 OR name = $2) ORDER BY id = $2 DESC LIMIT 1",
                &[&account, &id_or_name],
            )
            .await?;
        Ok(row.as_ref().map(project_row))
    }

    async fn delete_project(&self, account: &str, id: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM files WHERE account_id = $1 AND project_id = $2",
            &[&account, &id],
        )
        .await?;
        self.execute(
            "DELETE FROM projects WHERE account_id = $1 AND id = $2",
            &[&account, &id],
        )
        .await
        .map(drop)
    }

    async fn insert_computer(&self, m: &Computer) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO computers ({COMPUTER_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT DO NOTHING"
        );
        let inserted = self
            .execute(
                &sql,
                &[
                    &m.id,
                    &m.account_id,
                    &m.project_id,
                    &m.name,
                    &m.status.as_str(),
                    &i64::from(m.ram_gb),
                    &m.cpu,
                    &m.created_at,
                    &m.last_active,
                    &m.agent,
                    &m.generation,
                    &m.ended,
                    &m.disk_gb.map(i64::from),
                    &m.resolution.map(|r| r.to_string()),
                    &m.auto_stop_minutes.map(i64::from),
                ],
            )
            .await?;
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
        let claimed = self
            .execute(
                "UPDATE computers SET account_id = $3, project_id = $4, name = $5, created_at = $6, last_active = $6
                 WHERE id = $1 AND account_id = $2 AND status = 'running'
                   AND NOT EXISTS (SELECT 1 FROM computers WHERE account_id = $3 AND name = $5)",
                &[&id, &pool, &account, &project, &name, &at],
            )
            .await?;
        let named = "SELECT 1 FROM computers WHERE account_id = $1 AND name = $2";
        if claimed == 0 && self.query_opt(named, &[&account, &name]).await?.is_some() {
            return Err(StoreError::Conflict(format!(
                "a computer named {name:?} already exists"
            )));
        }
        Ok(claimed == 1)
    }

    async fn computer(&self, account: &str, id_or_name: &str) -> Result<Option<Computer>, StoreError> {
        if !storable(id_or_name) {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {COMPUTER_COLUMNS} FROM computers WHERE account_id = $1 AND (id = $2 OR name = $2)
             ORDER BY id = $2 DESC LIMIT 1"
        );
        let row = self.query_opt(&sql, &[&account, &id_or_name]).await?;
        Ok(row.as_ref().map(computer_row))
    }

    async fn computers_of_project(&self, account: &str, project: &str) -> Result<Vec<Computer>, StoreError> {
        self.computers("WHERE account_id = $1 AND project_id = $2", &[&account, &project])
            .await
    }

    async fn computers_of_account(&self, account: &str) -> Result<Vec<Computer>, StoreError> {
        self.computers("WHERE account_id = $1", &[&account]).await
    }

    async fn all_computers(&self) -> Result<Vec<Computer>, StoreError> {
        self.computers("", &[]).await
    }

    async fn set_status(&self, id: &str, status: Status) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET status = $2, ended = NULL WHERE id = $1",
            &[&id, &status.as_str()],
        )
        .await
        .map(drop)
    }

    async fn set_failed(&self, id: &str, why: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET status = 'error', agent = NULL, ended = $2 WHERE id = $1",
            &[&id, &why],
        )
        .await
        .map(drop)
    }

    async fn set_running(&self, id: &str, agent: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET status = 'running', agent = $2, ended = NULL, generation = generation + 1 WHERE id = $1",
            &[&id, &agent],
        )
        .await
        .map(drop)
    }

    async fn begin_stop(&self, id: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET status = 'stopping', agent = NULL, ended = NULL, generation = generation + 1 WHERE id = $1",
            &[&id],
        )
        .await
        .map(drop)
    }

    async fn mark_lost(&self, id: &str, generation: i64, agent: &str, why: &str) -> Result<bool, StoreError> {
        self.execute(
            "UPDATE computers SET status = 'error', agent = NULL, ended = $4
             WHERE id = $1 AND status = 'running' AND generation = $2 AND coalesce(agent, '') = $3",
            &[&id, &generation, &agent, &why],
        )
        .await
        .map(|n| n > 0)
    }

    async fn set_status_fenced(&self, id: &str, status: Status, lease: &Lease) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE computers SET status = $2, ended = NULL WHERE id = $1 AND EXISTS
             (SELECT 1 FROM leases WHERE name = $3 AND holder = $4 AND epoch = $5 AND expires_at > {NOW_MS})"
        );
        self.execute(
            &sql,
            &[&id, &status.as_str(), &lease.name, &lease.holder, &lease.epoch],
        )
        .await
        .map(|n| n > 0)
    }

    async fn set_auto_stop(&self, id: &str, minutes: Option<u32>) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET auto_stop_minutes = $2 WHERE id = $1",
            &[&id, &minutes.map(i64::from)],
        )
        .await
        .map(drop)
    }

    async fn set_size(&self, id: &str, ram_gb: u32, cpu: f64, disk_gb: u32) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET ram_gb = $2, cpu = $3, disk_gb = $4 WHERE id = $1",
            &[&id, &i64::from(ram_gb), &cpu, &i64::from(disk_gb)],
        )
        .await
        .map(drop)
    }

    async fn move_computer(&self, account: &str, id: &str, project: &str) -> Result<bool, StoreError> {
        if !storable(project) {
            return Ok(false);
        }
        self.execute(
            "UPDATE computers SET project_id = $3 WHERE id = $2 AND account_id = $1
             AND EXISTS (SELECT 1 FROM projects WHERE id = $3 AND account_id = $1)",
            &[&account, &id, &project],
        )
        .await
        .map(|n| n > 0)
    }

    async fn touch(&self, id: &str, at: i64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE computers SET last_active = GREATEST(last_active, $2) WHERE id = $1",
            &[&id, &at],
        )
        .await
        .map(drop)
    }

    async fn delete_computer(&self, id: &str) -> Result<(), StoreError> {
        self.execute("DELETE FROM computers WHERE id = $1", &[&id])
            .await
            .map(drop)
    }

    async fn take_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>, StoreError> {
        let sql = format!(
            "INSERT INTO leases AS l (name, holder, epoch, expires_at) VALUES ($1, $2, 1, {NOW_MS} + $3)
             ON CONFLICT (name) DO UPDATE SET
                 epoch = l.epoch + CASE WHEN l.holder <> excluded.holder OR l.expires_at <= {NOW_MS}
                                        THEN 1 ELSE 0 END,
                 holder = excluded.holder,
                 expires_at = excluded.expires_at
             WHERE l.holder = excluded.holder OR l.expires_at <= {NOW_MS}
             RETURNING epoch"
        );
        let row = self
            .query_opt(&sql, &[&name, &holder, &(ttl.as_millis() as i64)])
            .await?;
        Ok(row.map(|r| Lease {
            name: name.to_string(),
            holder: holder.to_string(),
            epoch: r.get(0),
        }))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE leases SET expires_at = {NOW_MS} + $4
             WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > {NOW_MS}"
        );
        self.execute(
            &sql,
            &[
                &lease.name,
                &lease.holder,
                &lease.epoch,
                &(ttl.as_millis() as i64),
            ],
        )
        .await
        .map(|n| n > 0)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2",
            &[&name, &holder],
        )
        .await
        .map(drop)
    }

    async fn forget_leases(&self) -> Result<(), StoreError> {
        self.execute("DELETE FROM leases", &[]).await.map(drop)
    }

    async fn secret(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
        // `DO UPDATE` rather than `DO NOTHING` so the row comes back either way.
        let rows = self
            .query(
                "INSERT INTO secrets AS s (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = s.value RETURNING value",
                &[&name, &fresh],
            )
            .await?;
        rows.first()
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::Database("no secret after upsert".into()))
    }

    async fn keep_screenshot(&self, account: &str, id: &str, kept: &Kept) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO screenshots (account_id, id, format, bytes, created_at, project_id) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&account, &id, &kept.format, &kept.bytes, &super::now(), &kept.project_id],
        )
        .await
        .map(drop)
    }

    async fn screenshot(&self, account: &str, id: &str) -> Result<Option<Kept>, StoreError> {
        if !storable(id) {
            return Ok(None);
        }
        let row = self
            .query_opt(
                "SELECT format, bytes, project_id FROM screenshots WHERE account_id = $1 AND id = $2",
                &[&account, &id],
            )
            .await?;
        Ok(row.map(|r| Kept {
            format: r.get(0),
            bytes: r.get(1),
            project_id: r.get(2),
        }))
    }

    async fn forget_screenshots(&self, before: i64) -> Result<u64, StoreError> {
        self.execute("DELETE FROM screenshots WHERE created_at < $1", &[&before])
            .await
    }

    async fn keep_file(&self, f: &StoredFile, bytes: &[u8]) -> Result<(), StoreError> {
        let size = i64::try_from(f.size).unwrap_or(i64::MAX);
        self.execute(
            &format!(
                "INSERT INTO files ({FILE_COLUMNS}, bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            &[
                &f.id,
                &f.account_id,
                &f.project_id,
                &f.desktop_id,
                &f.filename,
                &f.content_type,
                &f.source,
                &size,
                &f.created_at,
                &bytes,
            ],
        )
        .await
        .map(drop)
    }

    async fn files(
        &self,
        account: &str,
        project: &str,
        desktop: Option<&str>,
    ) -> Result<Vec<StoredFile>, StoreError> {
        if !storable(project) || desktop.is_some_and(|d| !storable(d)) {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE account_id = $1 AND project_id = $2
             AND ($3::text IS NULL OR desktop_id = $3) ORDER BY created_at, id"
        );
        let rows = self.query(&sql, &[&account, &project, &desktop]).await?;
        Ok(rows.iter().map(file_row).collect())
    }

    async fn file(&self, account: &str, id: &str) -> Result<Option<(StoredFile, Vec<u8>)>, StoreError> {
        if !storable(id) {
            return Ok(None);
        }
        let sql = format!("SELECT {FILE_COLUMNS}, bytes FROM files WHERE account_id = $1 AND id = $2");
        let row = self.query_opt(&sql, &[&account, &id]).await?;
        Ok(row.map(|r| (file_row(&r), r.get(9))))
    }

    async fn delete_file(&self, account: &str, id: &str) -> Result<bool, StoreError> {
        if !storable(id) {
            return Ok(false);
        }
        self.execute(
            "DELETE FROM files WHERE account_id = $1 AND id = $2",
            &[&account, &id],
        )
        .await
        .map(|n| n > 0)
    }
}
