//! Sealed enclave backups: opaque bytes the api stores and hands back, and cannot decrypt.

use sqlx::Row;

use super::{Store, StoreError};

/// One stored sealed backup.
#[derive(Clone, PartialEq, Eq)]
pub struct BackupRecord {
    /// Increasing id; the highest is the latest.
    pub id: i64,
    /// The sealed blob exactly as the enclave exported it.
    pub blob: Vec<u8>,
    /// How many keys the enclave said it holds.
    pub key_count: i64,
    /// The enclave's backup generation counter.
    pub generation: i64,
    /// When it was stored, unix milliseconds.
    pub created_at_ms: i64,
}

impl std::fmt::Debug for BackupRecord {
    // Sealed, but still key material in transit: show its size, not its bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupRecord")
            .field("id", &self.id)
            .field("blob_len", &self.blob.len())
            .field("key_count", &self.key_count)
            .field("generation", &self.generation)
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

impl Store {
    /// Stores a sealed backup and returns its id. Backups are append-only (the app role may
    /// not change or delete them on PostgreSQL; a trigger refuses updates on SQLite).
    pub async fn store_backup(
        &self,
        blob: &[u8],
        key_count: i64,
        generation: i64,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO backups (blob, key_count, generation, created_at_ms) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(blob)
        .bind(key_count)
        .bind(generation)
        .bind(now_ms)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get(0)?)
    }

    /// The most recently stored backup, if any.
    pub async fn latest_backup(&self) -> Result<Option<BackupRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, blob, key_count, generation, created_at_ms FROM backups \
             ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(BackupRecord {
            id: row.try_get("id")?,
            blob: row.try_get("blob")?,
            key_count: row.try_get("key_count")?,
            generation: row.try_get("generation")?,
            created_at_ms: row.try_get("created_at_ms")?,
        }))
    }
}
