//! The storage layer's one error type.

/// Everything a [`Store`](super::Store) call can fail with.
///
/// Messages never carry connection URLs, passwords, backup contents or request bodies: they
/// name what failed and, for database errors, carry the driver's message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database configuration cannot be used (for example a SQLite path that is not
    /// UTF-8, or a URL that is not `postgres://`).
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// Creating the SQLite file's directory failed.
    #[error("preparing the database directory: {0}")]
    Io(#[from] std::io::Error),
    /// The database could not be reached, or refused the credentials.
    #[error("connecting to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed; the database keeps every migration before it.
    #[error("applying migration {version}: {source}")]
    Migrate {
        /// The migration that failed.
        version: i64,
        /// What the database said.
        #[source]
        source: sqlx::Error,
    },
    /// A migration already applied to this database differs from the one this build carries:
    /// the schema was changed behind the application's back, or a migration file was edited.
    #[error("migration {version} was changed after it was applied")]
    MigrationChanged {
        /// The migration whose checksum differs.
        version: i64,
    },
    /// A query failed (including the database refusing a write that breaks one of its rules:
    /// an append-only audit row, a one-way state column, a row-level security policy).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A caller passed a value the schema cannot hold (for example an unknown audit outcome).
    #[error("invalid value: {0}")]
    InvalidInput(&'static str),
    /// A stored value breaks the schema's promises (for example a hash of the wrong length):
    /// the database was modified outside the application.
    #[error("corrupt stored value: {0}")]
    Corrupt(&'static str),
    /// `idempotency_complete` found no running record for this caller and key: it was
    /// released, completed already, or purged.
    #[error("no running idempotency record for this key")]
    IdempotencyNotRunning,
    /// The group-commit writer task has stopped (the runtime is shutting down), so the write
    /// (an audit entry or a ticket claim) was not made.
    #[error("the storage writer has stopped")]
    WriterStopped,
    /// The group-commit transaction that carried this write failed and was rolled back;
    /// nothing of that batch was recorded (no audit row, no ticket claim).
    #[error("the group commit failed: {0}")]
    GroupCommit(String),
}
