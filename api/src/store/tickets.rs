//! One-time tickets (stored when issued, claimed exactly once) and the shared rate-limit
//! counters.

use sqlx::Row;
use tokio::sync::oneshot;

use super::writer::{self, Job};
use super::{Durability, Store, StoreError, check_owner, role};

/// A ticket as the api records it when issuing it; the MAC and nonce stay with the ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketRecord {
    /// The ticket id (hex or UUID text), unique.
    pub ticket_id: String,
    /// `generate_key`, `sign` or `destroy_key` (`TicketOperation::as_str`).
    pub operation: String,
    /// The identity the ticket is bound to.
    pub identity_id: String,
    /// The key the ticket is bound to.
    pub key_id: String,
    /// The caller it was issued to (JWT `sub`).
    pub owner: String,
    /// SHA-384 of the payload, 48 bytes.
    pub payload_sha384: Vec<u8>,
    /// Issue time, unix milliseconds.
    pub issued_at_ms: i64,
    /// Expiry, unix milliseconds; a claim at or after it fails.
    pub expires_at_ms: i64,
}

/// Purge expired tickets and finished rate-limit windows on about one call in this many.
const PURGE_EVERY: u64 = 256;
/// Tickets are kept this long after expiry, for investigations, before being purged.
const TICKET_RETAIN_MS: i64 = 24 * 60 * 60 * 1000;

impl Store {
    /// Records an issued ticket, unused.
    ///
    /// Committed without waiting for the disk: if a crash loses the row, the claim fails and
    /// the key operation is refused, which is safe.
    pub async fn insert_ticket(&self, t: &TicketRecord) -> Result<(), StoreError> {
        check_owner(&t.owner)?;
        if t.payload_sha384.len() != 48 {
            return Err(StoreError::InvalidInput("payload_sha384 must be 48 bytes"));
        }
        let mut tx = self
            .scoped_with(&t.owner, role::USER, Durability::Relaxed)
            .await?;
        sqlx::query(
            "INSERT INTO tickets (ticket_id, operation, identity_id, key_id, owner, payload_sha384, \
             issued_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.ticket_id)
        .bind(&t.operation)
        .bind(&t.identity_id)
        .bind(&t.key_id)
        .bind(&t.owner)
        .bind(&t.payload_sha384)
        .bind(t.issued_at_ms)
        .bind(t.expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks the ticket used if it exists, is unused and has not expired; true for exactly
    /// one caller, however many processes race. One UPDATE decides (`… WHERE ticket_id = $1
    /// AND used_at_ms IS NULL AND expires_at_ms > $now`): the row lock makes every other
    /// claimant re-check `used_at_ms` after the winner commits. The claim is durable before
    /// this returns, group-committed with other requests' writes.
    pub async fn claim_ticket(&self, ticket_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Claim {
            ticket_id: ticket_id.to_string(),
            now_ms,
            reply,
        };
        let won = writer::submit(&self.inner.writer, job, answer).await?;
        if self.purge_due(PURGE_EVERY) {
            self.purge_tickets(now_ms).await?;
        }
        Ok(won)
    }

    /// Whether a ticket has been claimed (`Some(used_at_ms)`), for the ticket's owner.
    pub async fn ticket_used_at(
        &self,
        owner: &str,
        ticket_id: &str,
    ) -> Result<Option<Option<i64>>, StoreError> {
        let mut tx = self.scoped(owner, role::USER).await?;
        let row = sqlx::query("SELECT used_at_ms FROM tickets WHERE owner = $1 AND ticket_id = $2")
            .bind(owner)
            .bind(ticket_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<Option<i64>, _>(0)?),
            None => None,
        })
    }

    /// Counts one hit on `bucket` in the fixed window starting at `window_start_ms` and
    /// returns the count including it. The counter lives in the database, so every api
    /// process sharing it shares the limit. One statement on the relaxed pool: a count lost
    /// in a crash only lets a few more requests through after the restart.
    pub async fn rate_limit_hit(
        &self,
        bucket: &str,
        window_start_ms: i64,
        window_ms: i64,
    ) -> Result<u64, StoreError> {
        if window_ms <= 0 {
            return Err(StoreError::InvalidInput("window_ms must be positive"));
        }
        let window_end_ms = window_start_ms.saturating_add(window_ms);
        let row = sqlx::query(
            "INSERT INTO rate_limits (bucket, window_start_ms, window_end_ms, count) \
             VALUES ($1, $2, $3, 1) \
             ON CONFLICT (bucket, window_start_ms) DO UPDATE SET count = rate_limits.count + 1 \
             RETURNING count",
        )
        .bind(bucket)
        .bind(window_start_ms)
        .bind(window_end_ms)
        .fetch_one(self.relaxed_pool())
        .await?;
        let count: i64 = row.try_get(0)?;
        if count == 1 && self.purge_due(PURGE_EVERY / 16) {
            // A new window began: windows that ended before it are finished for good.
            sqlx::query("DELETE FROM rate_limits WHERE window_end_ms < $1")
                .bind(window_start_ms.saturating_sub(window_ms))
                .execute(self.relaxed_pool())
                .await?;
        }
        u64::try_from(count).map_err(|_| StoreError::Corrupt("negative rate-limit count"))
    }

    async fn purge_tickets(&self, now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self
            .scoped_with("", role::SYSTEM, Durability::Relaxed)
            .await?;
        sqlx::query("DELETE FROM tickets WHERE expires_at_ms < $1")
            .bind(now_ms.saturating_sub(TICKET_RETAIN_MS))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
