//! Schema migrations for both backends, embedded in the binary and applied at start.
//!
//! Each backend has its own numbered SQL files (`api/migrations/{postgres,sqlite}/`), because
//! the rules the database enforces (roles, grants, row-level security, trigger syntax) differ.
//! Applied migrations are recorded with a SHA-256 of their text in `enclosure_migrations`; a
//! changed text is refused rather than silently skipped. On PostgreSQL one advisory lock held
//! for the whole run lets several api processes start at once against one database.

use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Connection, Row};

use super::{Backend, StoreError};

/// One migration: its number and its SQL text (several statements).
struct Migration {
    version: i64,
    sql: &'static str,
}

const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 10,
        sql: include_str!("../../migrations/postgres/0010_escrow.sql"),
    },
    Migration {
        version: 11,
        sql: include_str!("../../migrations/postgres/0011_settlement.sql"),
    },
    Migration {
        version: 12,
        sql: include_str!("../../migrations/postgres/0012_rate_buckets.sql"),
    },
];

const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../../migrations/sqlite/0002_audit_head.sql"),
    },
    Migration {
        version: 10,
        sql: include_str!("../../migrations/sqlite/0010_escrow.sql"),
    },
    Migration {
        version: 11,
        sql: include_str!("../../migrations/sqlite/0011_settlement.sql"),
    },
    Migration {
        version: 12,
        sql: include_str!("../../migrations/sqlite/0012_rate_buckets.sql"),
    },
];

/// An arbitrary constant naming the migration advisory lock on PostgreSQL.
const PG_MIGRATION_LOCK: i64 = 0x656e_636c_6f73_7572; // "enclosur"

/// Applies every migration this build carries that the database lacks.
pub(super) async fn run(conn: &mut AnyConnection, backend: Backend) -> Result<(), StoreError> {
    let (migrations, begin) = match backend {
        Backend::Postgres => (POSTGRES, "BEGIN"),
        // IMMEDIATE takes the write lock up front, so two processes migrating one file wait
        // for each other instead of failing on a lock upgrade.
        Backend::Sqlite => (SQLITE, "BEGIN IMMEDIATE"),
    };
    let mut tx = conn.begin_with(begin).await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS enclosure_migrations (
            version BIGINT PRIMARY KEY,
            checksum BYTEA NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await?;
    let applied = sqlx::query("SELECT version, checksum FROM enclosure_migrations")
        .fetch_all(&mut *tx)
        .await?;
    for m in migrations {
        let checksum = Sha256::digest(m.sql.as_bytes()).to_vec();
        let mut seen = None;
        for row in &applied {
            if row.try_get::<i64, _>(0)? == m.version {
                seen = Some(row.try_get::<Vec<u8>, _>(1)?);
            }
        }
        match seen {
            Some(c) if c == checksum => continue,
            Some(_) => return Err(StoreError::MigrationChanged { version: m.version }),
            None => {}
        }
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|source| StoreError::Migrate {
                version: m.version,
                source,
            })?;
        sqlx::query("INSERT INTO enclosure_migrations (version, checksum) VALUES ($1, $2)")
            .bind(m.version)
            .bind(checksum)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
