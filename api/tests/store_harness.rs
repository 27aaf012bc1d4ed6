//! Test harness for `enclosure_api::store`, shared by the `store_*` test files: a fresh
//! database per test on SQLite (a temporary directory) or PostgreSQL (a database with a
//! random name, created as the superuser and dropped at the end, even when the test fails).
//!
//! PostgreSQL must be reachable: a PostgreSQL test fails loudly, never skips, when it is not.
//! `ENCLOSURE_TEST_PG_ADMIN` (default `postgres://postgres@127.0.0.1:5432`) is a superuser
//! base URL; `ENCLOSURE_TEST_PG_APP` (default `postgres://enclosure_app@127.0.0.1:5432`) is
//! the app role's, which the migrations create.
#![allow(dead_code, unused_macros)]

use std::path::PathBuf;

use enclosure_api::store::{AuditEntry, DatabaseConfig, Store, TicketRecord};
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};

/// Which backend a test body runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

fn pg_admin_base() -> String {
    std::env::var("ENCLOSURE_TEST_PG_ADMIN")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn pg_app_base() -> String {
    std::env::var("ENCLOSURE_TEST_PG_APP")
        .unwrap_or_else(|_| "postgres://enclosure_app@127.0.0.1:5432".into())
}

/// One fresh database, removed when dropped.
pub struct TestDb {
    pub kind: Kind,
    dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    /// Creates the database (PostgreSQL: as the superuser; panics with how to fix it when
    /// PostgreSQL cannot be reached).
    pub async fn new(kind: Kind) -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pg_name = match kind {
            Kind::Sqlite => None,
            Kind::Postgres => {
                let name = format!("enclosure_test_{}", uuid::Uuid::new_v4().simple());
                let admin = format!("{}/postgres", pg_admin_base());
                let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is required for this test and is not reachable at {admin} ({e}). \
                         Start it (pg_ctlcluster --skip-systemctl-redirect <version> main start) or \
                         set ENCLOSURE_TEST_PG_ADMIN to a superuser URL."
                    )
                });
                conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
                    .await
                    .expect("CREATE DATABASE");
                conn.close().await.ok();
                Some(name)
            }
        };
        TestDb { kind, dir, pg_name }
    }

    /// The SQLite file (inside a directory the store must create).
    pub fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("data").join("enclosure.db")
    }

    /// The configuration a `Store` connects with: for PostgreSQL, migrations as the
    /// superuser, queries as `enclosure_app`.
    pub fn config(&self) -> DatabaseConfig {
        match (&self.kind, &self.pg_name) {
            (Kind::Postgres, Some(name)) => DatabaseConfig::Postgres {
                url: format!("{}/{name}", pg_app_base()),
                owner_url: Some(format!("{}/{name}", pg_admin_base())),
            },
            _ => DatabaseConfig::Sqlite {
                path: self.sqlite_path(),
            },
        }
    }

    /// A connected, migrated store (a second call is a second "process": its own pool and
    /// its own audit writer).
    pub async fn store(&self) -> Store {
        Store::connect(&self.config())
            .await
            .expect("Store::connect")
    }

    /// A PostgreSQL connection as the superuser (bypasses RLS and privileges, not triggers).
    pub async fn pg_superuser(&self) -> PgConnection {
        let name = self.pg_name.as_ref().expect("a PostgreSQL test");
        PgConnection::connect(&format!("{}/{name}", pg_admin_base()))
            .await
            .expect("superuser connection")
    }

    /// A PostgreSQL connection as the app role, outside the store.
    pub async fn pg_app(&self) -> PgConnection {
        let name = self.pg_name.as_ref().expect("a PostgreSQL test");
        PgConnection::connect(&format!("{}/{name}", pg_app_base()))
            .await
            .expect("app role connection")
    }

    /// A direct connection to the SQLite file, outside the store.
    pub async fn sqlite_raw(&self) -> SqliteConnection {
        let url = format!("sqlite://{}", self.sqlite_path().display());
        SqliteConnection::connect(&url)
            .await
            .expect("sqlite connection")
    }

    /// Runs one statement outside the store with the strongest access the backend offers to
    /// an application (PostgreSQL: the app role; SQLite: the file itself).
    pub async fn exec_as_app(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match self.kind {
            Kind::Postgres => {
                // Acting as the rows' owner with the store's own role: everything RLS would
                // let the api do, so only privileges and triggers stand in the way.
                let mut c = self.pg_app().await;
                c.execute("SELECT set_config('enclosure.user', 'alice', false), set_config('enclosure.role', 'system', false)")
                    .await?;
                c.execute(sql).await.map(|r| r.rows_affected())
            }
            Kind::Sqlite => {
                let mut c = self.sqlite_raw().await;
                c.execute(sql).await.map(|r| r.rows_affected())
            }
        }
    }

    /// Changes the database behind the store's back: PostgreSQL as the superuser with
    /// triggers off (`session_replication_role = replica`); SQLite with the audit triggers
    /// dropped. For tamper-detection tests.
    pub async fn tamper(&self, sql: &str) {
        match self.kind {
            Kind::Postgres => {
                let mut c = self.pg_superuser().await;
                c.execute("SET session_replication_role = replica")
                    .await
                    .expect("replica mode");
                c.execute(sql).await.expect("tampering statement");
            }
            Kind::Sqlite => {
                let mut c = self.sqlite_raw().await;
                c.execute("DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;")
                    .await
                    .expect("drop triggers");
                c.execute(sql).await.expect("tampering statement");
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime (or while unwinding), so a fresh runtime on its
        // own thread does the async clean-up.
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let admin = format!("{}/postgres", pg_admin_base());
                let drop_sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let dropped = match PgConnection::connect(&admin).await {
                    Ok(mut c) => c.execute(drop_sql.as_str()).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = dropped {
                    eprintln!("could not drop test database {name}: {e}");
                }
            });
        });
        let _ = handle.join();
    }
}

/// Runs a test body on SQLite and on PostgreSQL, as `<name>::sqlite` and `<name>::postgres`.
macro_rules! on_both {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($db: TestDb) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                body(TestDb::new(Kind::Sqlite).await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                body(TestDb::new(Kind::Postgres).await).await
            }
        }
    };
}

/// An audit entry by `actor`.
pub fn entry(actor: &str, action: &str, at_ms: i64) -> AuditEntry {
    AuditEntry {
        actor: actor.into(),
        actor_role: "client".into(),
        action: action.into(),
        identity_id: Some("identity-1".into()),
        key_id: None,
        ticket_id: None,
        outcome: "ok".into(),
        detail: None,
        at_ms,
    }
}

/// A ticket for `owner`, valid from `issued` for 60 s.
pub fn ticket(id: &str, owner: &str, issued: i64) -> TicketRecord {
    TicketRecord {
        ticket_id: id.into(),
        operation: "sign".into(),
        identity_id: "identity-1".into(),
        key_id: "key-1".into(),
        owner: owner.into(),
        payload_sha384: vec![7; 48],
        issued_at_ms: issued,
        expires_at_ms: issued + 60_000,
    }
}

/// Counts rows of `table` the app role sees when acting as `user` with `role` (row-level
/// security settings as the store sets them), in a transaction that is rolled back.
pub async fn visible(conn: &mut PgConnection, user: Option<&str>, role: &str, table: &str) -> i64 {
    use sqlx::Row;
    let mut tx = conn.begin().await.expect("begin");
    if let Some(user) = user {
        sqlx::query(
            "SELECT set_config('enclosure.user', $1, true), set_config('enclosure.role', $2, true)",
        )
        .bind(user)
        .bind(role)
        .execute(&mut *tx)
        .await
        .expect("set_config");
    }
    let n: i64 = sqlx::query(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&mut *tx)
        .await
        .expect("count")
        .get(0);
    tx.rollback().await.expect("rollback");
    n
}
