//! The api's storage: identities, key metadata, tickets, rate limits, idempotency records,
//! the hash-chained audit log and sealed backups, on SQLite (embedded default) or PostgreSQL.
//!
//! One SQL text serves both backends through sqlx's `Any` driver (`$1` placeholders work in
//! both); the few statements that cannot be shared (the audit head lock, session settings for
//! row-level security, `BEGIN IMMEDIATE`) branch on the backend. Each backend has its own
//! migrations (`api/migrations/{postgres,sqlite}`), embedded and applied by
//! [`Store::connect`]; on PostgreSQL they run as the owner role and set up the app role
//! `enclosure_app` with exactly the grants it needs.
//!
//! # What the database itself enforces
//!
//! - Audit rows are append-only: SQLite triggers abort UPDATE and DELETE; on PostgreSQL the
//!   app role holds only SELECT and INSERT on `audit`, RLS is enabled and forced on it, and
//!   BEFORE UPDATE/DELETE/TRUNCATE triggers refuse even the table owner.
//! - Each audit row must extend the chain (seq = head + 1, prev_hash = head hash), checked
//!   by an insert trigger on both backends.
//! - One-way state: a ticket's `used_at_ms` and a key's `destroyed_at_ms` go from NULL to a
//!   value once (a ticket's only before it expires), enforced by triggers; on PostgreSQL they
//!   are the only columns of `tickets` and `keys` the app role may update, and it may not
//!   update `identities`, `audit`, `audit_head` or `backups` at all.
//! - A key's owner is its identity's owner (a composite foreign key).
//! - On PostgreSQL, row-level security hides identities, keys and tickets from everyone but
//!   their owner, and audit rows from everyone but their actor and admins. Every owner-scoped
//!   call runs in a transaction that first sets `enclosure.user` and `enclosure.role` with
//!   `set_config(…, true)`. The app sets these itself, so RLS guards against a query that
//!   forgets its owner filter, not against a compromised api process; the privilege and
//!   trigger rules above hold even then.
//!
//! # Throughput
//!
//! The durable writes every key operation makes (what it takes from its rate-limit buckets
//! and its claimed ticket in one job, its audit rows in another) are group-committed by one
//! writer task per [`Store`]: concurrent requests share one transaction, one disk wait and,
//! for admissions, the same few statements. Writes whose loss in a crash is harmless (ticket
//! inserts, purges, idempotency records on PostgreSQL) go through a second pool whose commits
//! do not wait for the disk; see `Durability` in this module's source.

mod audit;
mod backups;
mod error;
pub mod escrow;
mod idempotency;
mod identities;
mod migrate;
mod tickets;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, ConnectOptions, Connection, Executor, Transaction};
use tokio::sync::mpsc;

pub use audit::{
    AuditEntry, AuditRow, ChainBreak, ChainBreakReason, ChainReport, GENESIS_HASH, audit_hash,
    canonical_audit_bytes,
};
pub use backups::BackupRecord;
pub use error::StoreError;
pub use idempotency::{
    IDEMPOTENCY_REPLAY_MS, IDEMPOTENCY_RETAIN_MS, IDEMPOTENCY_RUNNING_LEASE_MS, IdempotencyBegin,
};
pub use identities::{Identity, KeyRecord};
pub use tickets::{RateLimitHit, TicketAdmission, TicketRecord};

/// Where the api keeps its records.
#[derive(Clone)]
pub enum DatabaseConfig {
    /// A SQLite file (created with its directories if missing), in WAL mode.
    Sqlite {
        /// The database file, usually inside the data directory.
        path: PathBuf,
    },
    /// A PostgreSQL database.
    Postgres {
        /// The app role's URL (`postgres://enclosure_app@host/db`); used for every query.
        url: String,
        /// The owner role's URL, used only to run migrations at start; without it the app URL
        /// migrates (and its role then owns the tables, so only triggers and RLS bind it).
        owner_url: Option<String>,
    },
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseConfig::Sqlite { path } => {
                f.debug_struct("Sqlite").field("path", path).finish()
            }
            DatabaseConfig::Postgres { url, owner_url } => f
                .debug_struct("Postgres")
                .field("url", &redact_url(url))
                .field("owner_url", &owner_url.as_deref().map(redact_url))
                .finish(),
        }
    }
}

/// A URL with any password replaced, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    // A password may also come as a query parameter; then show no parameters at all.
    if let Some((base, query)) = url.split_once('?')
        && query.to_ascii_lowercase().contains("password")
    {
        return format!("{}?***", redact_url(base));
    }
    let Some(scheme_end) = url.find("://") else {
        return "<unparsable url>".into();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{}{}{}", &url[..scheme_end + 3], masked, &rest[at..])
        }
        None => url.to_string(),
    }
}

/// Which database a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// How long a SQLite connection waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pool size; the audit writer holds one connection while it commits a batch.
const MAX_CONNECTIONS: u32 = 8;
/// Session limits for the app's PostgreSQL connections.
const PG_TIMEOUTS: &str =
    "SET statement_timeout = '30s'; SET idle_in_transaction_session_timeout = '60s'";
/// Size of the pool for relaxed-durability writes.
const RELAXED_CONNECTIONS: u32 = 4;

/// The storage layer: cheap to clone, shared by every request handler.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    /// Same database, commits not waiting for the disk (see [`Durability::Relaxed`]).
    relaxed: AnyPool,
    backend: Backend,
    /// The group-commit writer (see `writer.rs`).
    writer: mpsc::Sender<writer::Job>,
    /// Counts calls that may purge stale rows, so purges run on a fraction of them.
    purge_tick: AtomicU64,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

/// Role names set in `enclosure.role` for row-level security.
pub(crate) mod role {
    /// An ordinary caller: sees only rows they own.
    pub const USER: &str = "user";
    /// An admin: additionally reads every audit row.
    pub const ADMIN: &str = "admin";
    /// The store's own bookkeeping: the audit writer and verifier, ticket claims, purges.
    pub const SYSTEM: &str = "system";
}

impl Store {
    /// Connects, creating the SQLite file and its directories if needed, and runs the
    /// migrations (on PostgreSQL as `owner_url` when given), then serves as the app URL.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Store, StoreError> {
        // Installing twice reports an error we do not care about: the drivers are the same.
        let _ =
            sqlx::any::install_drivers(&[sqlx::postgres::any::DRIVER, sqlx::sqlite::any::DRIVER]);
        let (backend, url, owner_url) = match cfg {
            DatabaseConfig::Sqlite { path } => {
                let path = std::path::absolute(path)?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let text = path
                    .to_str()
                    .ok_or(StoreError::Config("the SQLite path is not UTF-8".into()))?;
                (
                    Backend::Sqlite,
                    format!("sqlite://{}?mode=rwc", percent_encode_path(text)),
                    None,
                )
            }
            DatabaseConfig::Postgres { url, owner_url } => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(StoreError::Config(
                        "the PostgreSQL URL must start with postgres://".into(),
                    ));
                }
                (Backend::Postgres, url.clone(), owner_url.clone())
            }
        };
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|_| StoreError::Config("the database URL cannot be parsed".into()))?;
        {
            let mut conn = match &owner_url {
                Some(owner) => {
                    let owner: AnyConnectOptions = owner
                        .parse()
                        .map_err(|_| StoreError::Config("the owner URL cannot be parsed".into()))?;
                    owner.connect().await.map_err(StoreError::Connect)?
                }
                None => options.connect().await.map_err(StoreError::Connect)?,
            };
            if backend == Backend::Sqlite {
                // WAL lets readers run beside the one writer; the setting persists in the file.
                conn.execute("PRAGMA journal_mode = WAL").await?;
            }
            migrate::run(&mut conn, backend).await?;
            conn.close().await?;
        }
        let (pool, relaxed) = match backend {
            Backend::Postgres => (
                open_pool(&options, backend, Durability::Durable, MAX_CONNECTIONS).await?,
                open_pool(&options, backend, Durability::Relaxed, RELAXED_CONNECTIONS).await?,
            ),
            // SQLite has one write lock per file. Several connections contending for it wait
            // in SQLite's busy handler, which sleeps in steps of milliseconds; one connection
            // makes every statement queue in the pool instead, in microseconds. WAL with
            // synchronous = NORMAL survives a crash of the process (not a power cut), which is
            // the embedded default's promise; PostgreSQL is the durable production store.
            Backend::Sqlite => {
                let one = open_pool(&options, backend, Durability::Relaxed, 1).await?;
                (one.clone(), one)
            }
        };
        if backend == Backend::Postgres {
            if owner_url.is_none() {
                tracing::warn!(
                    "no PostgreSQL owner URL: the app role ran the migrations and owns the \
                     tables, so privileges do not restrict it (triggers and forced RLS still do)"
                );
            }
            warn_if_privileged(&pool).await?;
        }
        let writer = writer::spawn(pool.clone(), backend);
        Ok(Store {
            inner: Arc::new(Inner {
                pool,
                relaxed,
                backend,
                writer,
                purge_tick: AtomicU64::new(0),
            }),
        })
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.inner.pool).await?;
        Ok(())
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.inner.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    /// True on roughly one call in `every`, for opportunistic purges.
    pub(crate) fn purge_due(&self, every: u64) -> bool {
        let n = self
            .inner
            .purge_tick
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        n.is_multiple_of(every)
    }

    /// The pool whose commits do not wait for the disk (see [`Durability::Relaxed`]).
    pub(crate) fn relaxed_pool(&self) -> &AnyPool {
        &self.inner.relaxed
    }

    /// Begins a transaction in which row-level security sees `user` acting as `role`.
    pub(crate) async fn scoped(
        &self,
        user: &str,
        role: &str,
    ) -> Result<Transaction<'static, Any>, StoreError> {
        self.scoped_with(user, role, Durability::Durable).await
    }

    /// Like [`Store::scoped`], on the pool that `durability` selects.
    pub(crate) async fn scoped_with(
        &self,
        user: &str,
        role: &str,
        durability: Durability,
    ) -> Result<Transaction<'static, Any>, StoreError> {
        let pool = match durability {
            Durability::Durable => &self.inner.pool,
            Durability::Relaxed => &self.inner.relaxed,
        };
        Ok(match self.inner.backend {
            Backend::Postgres => pool.begin_with(pg_begin_scoped(user, role)).await?,
            Backend::Sqlite => pool.begin().await?,
        })
    }
}

/// Refuses an empty owner: row-level security keys on it, and `""` is what an unset
/// `enclosure.user` reads as.
pub(crate) fn check_owner(owner: &str) -> Result<(), StoreError> {
    if owner.is_empty() {
        return Err(StoreError::InvalidInput("the owner must not be empty"));
    }
    Ok(())
}

/// `BEGIN` plus the row-level-security settings, sent as one simple query so a scoped call
/// costs one round trip more than its statement, not two. The simple protocol takes no
/// parameters, so the values travel hex-encoded: only `[0-9a-f]` ever reaches the SQL text.
fn pg_begin_scoped(user: &str, role: &str) -> String {
    format!(
        "BEGIN; SELECT set_config('enclosure.user', convert_from(decode('{}', 'hex'), 'UTF8'), true), \
         set_config('enclosure.role', convert_from(decode('{}', 'hex'), 'UTF8'), true)",
        hex::encode(user.as_bytes()),
        hex::encode(role.as_bytes())
    )
}

/// Opens one pool. Relaxed pools acknowledge commits before they reach disk: PostgreSQL with
/// `synchronous_commit = off`, SQLite with `synchronous = NORMAL` (WAL). The log is one
/// sequence, so the next durable commit on any connection makes every earlier relaxed one
/// durable too.
async fn open_pool(
    options: &AnyConnectOptions,
    backend: Backend,
    durability: Durability,
    max: u32,
) -> Result<AnyPool, StoreError> {
    AnyPoolOptions::new()
        .max_connections(max)
        // A pool check is one more hand-off to SQLite's worker thread per statement, and an
        // embedded file does not go stale the way a network connection does.
        .test_before_acquire(backend == Backend::Postgres)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                let setup = match (backend, durability) {
                    // A lock held elsewhere (an operator's open transaction on the chain
                    // head, say) must fail requests, not hang them and the writer forever.
                    (Backend::Postgres, Durability::Durable) => PG_TIMEOUTS.to_string(),
                    (Backend::Postgres, Durability::Relaxed) => {
                        format!("{PG_TIMEOUTS}; SET synchronous_commit = off")
                    }
                    (Backend::Sqlite, _) => format!(
                        "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; PRAGMA synchronous = {};",
                        SQLITE_BUSY_TIMEOUT.as_millis(),
                        if durability == Durability::Durable { "FULL" } else { "NORMAL" }
                    ),
                };
                conn.execute(setup.as_str()).await?;
                Ok(())
            })
        })
        .connect_with(options.clone())
        .await
        .map_err(StoreError::Connect)
}

/// Whether a commit must reach disk before it is acknowledged.
///
/// Relaxed is for writes whose loss in a crash is harmless: a lost ticket cannot be claimed (fails
/// closed); a lost purge of full rate-limit buckets changes nothing; a lost idempotency claim is
/// only possible if the request never reached its first durable commit (its ticket claim or record
/// write), so it had no effect; a lost completion leaves the record running, which retries see as
/// in progress and then expired, never as a licence to run again. PostgreSQL flushes asynchronous
/// commits within a few hundred milliseconds anyway; SQLite in WAL mode with `synchronous = NORMAL`
/// loses them only to an OS crash or power cut, not a process crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Wait for the log flush: the default.
    Durable,
    /// Do not wait.
    Relaxed,
}

/// Warns loudly when the app URL's role would bypass the rules the schema sets up.
async fn warn_if_privileged(pool: &AnyPool) -> Result<(), StoreError> {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT CAST(rolsuper AS INT) + CAST(rolbypassrls AS INT) FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_optional(pool)
    .await?;
    let privileged = match row {
        Some(r) => r.try_get::<i32, _>(0)? > 0,
        None => false,
    };
    if privileged {
        tracing::warn!(
            "the PostgreSQL app role is a superuser or bypasses RLS: row-level security and \
             audit privileges do not bind it; connect as enclosure_app in production"
        );
    }
    Ok(())
}

/// Percent-encodes a filesystem path for a `sqlite://` URL (sqlx decodes it again).
fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_redacts_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(
            redact_url("postgres://db/x?user=a"),
            "postgres://db/x?user=a"
        );
        assert_eq!(
            redact_url("postgres://u:p@db/x?password=z"),
            "postgres://u:***@db/x?***"
        );
        let cfg = DatabaseConfig::Postgres {
            url: "postgres://a:pw1@h/d".into(),
            owner_url: Some("postgres://o:pw2@h/d".into()),
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
    }

    #[test]
    fn store_scoped_begin_carries_only_hex() {
        let sql = pg_begin_scoped("o'hara'); DROP TABLE audit; --", role::USER);
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(sql.contains(&hex::encode(b"o'hara'); DROP TABLE audit; --")));
    }

    #[test]
    fn store_encodes_sqlite_paths() {
        assert_eq!(percent_encode_path("/tmp/a b/x?.db"), "/tmp/a%20b/x%3F.db");
    }
}
