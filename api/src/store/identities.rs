//! Identities and the metadata of their enclave keys (never key material).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Store, StoreError, check_owner, role};

/// A named identity owned by one caller (the JWT `sub`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// UUIDv4, chosen by the store.
    pub id: String,
    /// The owner's JWT subject.
    pub owner: String,
    /// The owner's label for it.
    pub name: String,
    /// Creation time, unix milliseconds.
    pub created_at_ms: i64,
}

/// What the api knows about an enclave key: its public half and certificate, never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key id (UUIDv4, bound into the generation ticket).
    pub key_id: String,
    /// The identity the key belongs to.
    pub identity_id: String,
    /// The identity's owner; the database refuses a key whose owner differs.
    pub owner: String,
    /// SubjectPublicKeyInfo DER of the P-384 public key.
    pub public_key_der: Vec<u8>,
    /// The enclave's certificate over the key (opaque here).
    pub key_certificate: Vec<u8>,
    /// Creation time, unix milliseconds.
    pub created_at_ms: i64,
    /// When it was destroyed, if it was.
    pub destroyed_at_ms: Option<i64>,
}

fn identity_from(row: &AnyRow) -> Result<Identity, StoreError> {
    Ok(Identity {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        name: row.try_get("name")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn key_from(row: &AnyRow) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        key_id: row.try_get("key_id")?,
        identity_id: row.try_get("identity_id")?,
        owner: row.try_get("owner")?,
        public_key_der: row.try_get("public_key_der")?,
        key_certificate: row.try_get("key_certificate")?,
        created_at_ms: row.try_get("created_at_ms")?,
        destroyed_at_ms: row.try_get("destroyed_at_ms")?,
    })
}

impl Store {
    /// Creates an identity for `owner` with a fresh UUIDv4 id.
    pub async fn create_identity(
        &self,
        owner: &str,
        name: &str,
        now_ms: i64,
    ) -> Result<Identity, StoreError> {
        check_owner(owner)?;
        let identity = Identity {
            id: uuid::Uuid::new_v4().to_string(),
            owner: owner.to_string(),
            name: name.to_string(),
            created_at_ms: now_ms,
        };
        let mut tx = self.scoped(owner, role::USER).await?;
        sqlx::query(
            "INSERT INTO identities (id, owner, name, created_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(&identity.id)
        .bind(&identity.owner)
        .bind(&identity.name)
        .bind(identity.created_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(identity)
    }

    /// The owner's identities, oldest first.
    pub async fn list_identities(&self, owner: &str) -> Result<Vec<Identity>, StoreError> {
        let mut tx = self.scoped(owner, role::USER).await?;
        let rows = sqlx::query(
            "SELECT id, owner, name, created_at_ms FROM identities \
             WHERE owner = $1 ORDER BY created_at_ms, id",
        )
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(identity_from).collect()
    }

    /// One of the owner's identities; `None` when it does not exist or is someone else's.
    pub async fn get_identity(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<Identity>, StoreError> {
        let mut tx = self.scoped(owner, role::USER).await?;
        let row = sqlx::query(
            "SELECT id, owner, name, created_at_ms FROM identities WHERE owner = $1 AND id = $2",
        )
        .bind(owner)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(identity_from).transpose()
    }

    /// Records a new key. Fails if the identity does not exist or belongs to someone else.
    pub async fn insert_key(&self, k: &KeyRecord) -> Result<(), StoreError> {
        check_owner(&k.owner)?;
        let mut tx = self.scoped(&k.owner, role::USER).await?;
        sqlx::query(
            "INSERT INTO keys (key_id, identity_id, owner, public_key_der, key_certificate, \
             created_at_ms, destroyed_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&k.key_id)
        .bind(&k.identity_id)
        .bind(&k.owner)
        .bind(&k.public_key_der)
        .bind(&k.key_certificate)
        .bind(k.created_at_ms)
        .bind(k.destroyed_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One of the owner's keys that has not been destroyed.
    pub async fn get_key(
        &self,
        owner: &str,
        key_id: &str,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let query = sqlx::query(
            "SELECT key_id, identity_id, owner, public_key_der, key_certificate, created_at_ms, \
             destroyed_at_ms FROM keys WHERE owner = $1 AND key_id = $2 AND destroyed_at_ms IS NULL",
        )
        .bind(owner)
        .bind(key_id);
        let row = match self.inner.backend {
            // Every key operation reads its key first. SQLite has no row-level security to
            // scope, and a lone SELECT is its own transaction: one hand-off to SQLite's
            // worker thread instead of three.
            Backend::Sqlite => query.fetch_optional(self.pool()).await?,
            Backend::Postgres => {
                let mut tx = self.scoped(owner, role::USER).await?;
                let row = query.fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                row
            }
        };
        row.as_ref().map(key_from).transpose()
    }

    /// The owner's live keys under one identity, oldest first.
    pub async fn list_keys(
        &self,
        owner: &str,
        identity_id: &str,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut tx = self.scoped(owner, role::USER).await?;
        let rows = sqlx::query(
            "SELECT key_id, identity_id, owner, public_key_der, key_certificate, created_at_ms, \
             destroyed_at_ms FROM keys WHERE owner = $1 AND identity_id = $2 \
             AND destroyed_at_ms IS NULL ORDER BY created_at_ms, key_id",
        )
        .bind(owner)
        .bind(identity_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(key_from).collect()
    }

    /// Marks one of the owner's keys destroyed; false if it is unknown, not theirs, or
    /// already destroyed.
    pub async fn mark_key_destroyed(
        &self,
        owner: &str,
        key_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.scoped(owner, role::USER).await?;
        let done = sqlx::query(
            "UPDATE keys SET destroyed_at_ms = $3 \
             WHERE owner = $1 AND key_id = $2 AND destroyed_at_ms IS NULL",
        )
        .bind(owner)
        .bind(key_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}
