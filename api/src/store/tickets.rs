//! One-time tickets (stored when issued, claimed exactly once) and the shared rate-limit
//! counters.

use std::collections::{BTreeMap, HashSet};

use sqlx::{Any, Row, Transaction};
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

/// One fixed-window counter a key operation counts against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitHit {
    /// The counter's name, such as `user:alice` or `identity:…`.
    pub bucket: String,
    /// Start of the window, unix milliseconds.
    pub window_start_ms: i64,
    /// Length of the window, milliseconds (positive).
    pub window_ms: i64,
    /// Most hits the window admits; the hit that makes the count exceed it is refused.
    pub limit: u64,
}

/// What [`Store::admit_ticket`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TicketAdmission {
    /// Every count is within its limit; the ticket is recorded, already claimed by the caller.
    Claimed,
    /// The count of `hits[index]` is over its limit; no ticket was recorded.
    RateLimited {
        /// The first hit (in the order given) whose count exceeds its limit.
        index: usize,
    },
    /// A ticket with this id already exists, so nothing was claimed (a fresh random id
    /// never collides; this fails closed if one did).
    NotClaimed,
}

/// A queued admission: the writer runs it inside its batch (see [`admit_in`]).
pub(super) struct Admission {
    pub(super) hits: Vec<RateLimitHit>,
    pub(super) ticket: TicketRecord,
    pub(super) now_ms: i64,
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
            self.purge_rate_windows(window_start_ms.saturating_sub(window_ms))
                .await?;
        }
        u64::try_from(count).map_err(|_| StoreError::Corrupt("negative rate-limit count"))
    }

    /// Deletes rate-limit windows that ended before `before_ms`.
    async fn purge_rate_windows(&self, before_ms: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM rate_limits WHERE window_end_ms < $1")
            .bind(before_ms)
            .execute(self.relaxed_pool())
            .await?;
        Ok(())
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

/// Rows per multi-row statement in [`admit_in`] (at most 9 parameters each).
pub(super) const ROWS_PER_STATEMENT: usize = 64;

impl Store {
    /// Counts one hit on each of `hits` and, if every count stays within its limit, records
    /// `ticket` already claimed (`used_at_ms = now_ms`): the one-step form of
    /// [`Store::rate_limit_hit`], [`Store::insert_ticket`] and [`Store::claim_ticket`] for a
    /// ticket this process has just issued.
    ///
    /// A ticket born claimed can never be claimed by anyone else, in this process or another,
    /// so single use holds as it does for an insert followed by a claim; the enclave's replay
    /// cache still refuses a second use of the ticket itself. Everything is group-committed
    /// with other requests' durable writes and is durable when this returns. The counters
    /// are counted even when a limit refuses the request, as [`Store::rate_limit_hit`] does.
    pub async fn admit_ticket(
        &self,
        ticket: &TicketRecord,
        hits: &[RateLimitHit],
        now_ms: i64,
    ) -> Result<TicketAdmission, StoreError> {
        // The batch must not fail on one caller's data, so refuse here what the tables would.
        check_ticket(ticket)?;
        for h in hits {
            if h.window_ms <= 0 {
                return Err(StoreError::InvalidInput("window_ms must be positive"));
            }
            if h.bucket.contains('\0') {
                return Err(StoreError::InvalidInput(
                    "rate-limit buckets must not contain NUL",
                ));
            }
        }
        if now_ms >= ticket.expires_at_ms {
            // Claims are refused from expiry on; the table's guard says the same.
            return Ok(TicketAdmission::NotClaimed);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job::Admit {
            admission: Admission {
                hits: hits.to_vec(),
                ticket: ticket.clone(),
                now_ms,
            },
            reply,
        };
        let admitted = writer::submit(&self.inner.writer, job, answer).await?;
        if self.purge_due(PURGE_EVERY) {
            self.purge_tickets(now_ms).await?;
            if let Some(before) = hits
                .iter()
                .map(|h| h.window_start_ms.saturating_sub(h.window_ms))
                .min()
            {
                self.purge_rate_windows(before).await?;
            }
        }
        Ok(admitted)
    }
}

/// Refuses a ticket record the `tickets` table would refuse, before it joins a batch.
fn check_ticket(t: &TicketRecord) -> Result<(), StoreError> {
    check_owner(&t.owner)?;
    if t.payload_sha384.len() != 48 {
        return Err(StoreError::InvalidInput("payload_sha384 must be 48 bytes"));
    }
    if !matches!(
        t.operation.as_str(),
        "generate_key" | "sign" | "destroy_key"
    ) {
        return Err(StoreError::InvalidInput(
            "operation must be generate_key, sign or destroy_key",
        ));
    }
    if t.expires_at_ms <= t.issued_at_ms {
        return Err(StoreError::InvalidInput(
            "a ticket must expire after its issue",
        ));
    }
    // PostgreSQL TEXT cannot hold NUL.
    let texts = [
        &t.ticket_id,
        &t.operation,
        &t.identity_id,
        &t.key_id,
        &t.owner,
    ];
    if texts.iter().any(|s| s.contains('\0')) {
        return Err(StoreError::InvalidInput(
            "ticket fields must not contain NUL",
        ));
    }
    Ok(())
}

/// `PREFIX ($1, …, $columns), (…)` for `rows` rows.
pub(super) fn values_sql(prefix: &str, columns: usize, rows: usize) -> String {
    let mut sql = String::from(prefix);
    for r in 0..rows {
        sql.push_str(if r == 0 { " (" } else { ", (" });
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * columns + c + 1));
        }
        sql.push(')');
    }
    sql
}

/// Runs a batch's admissions inside the writer's transaction `tx` and answers each, in order.
///
/// The hits of the whole batch are summed per counter and upserted in one statement per
/// [`ROWS_PER_STATEMENT`] counters, sorted so every process locks counters in the same order;
/// each admission then gets the counts it would have got one by one, in batch order. The
/// admitted tickets are inserted, claimed, in one statement per [`ROWS_PER_STATEMENT`] rows;
/// an id that already exists is skipped (`ON CONFLICT DO NOTHING`) and answered
/// [`TicketAdmission::NotClaimed`], so no caller's data can abort the batch.
pub(super) async fn admit_in(
    tx: &mut Transaction<'static, Any>,
    admissions: &[Admission],
) -> Result<Vec<TicketAdmission>, StoreError> {
    // (bucket, window start) → (window end, hits in this batch).
    let mut counters: BTreeMap<(&str, i64), (i64, i64)> = BTreeMap::new();
    for h in admissions.iter().flat_map(|a| &a.hits) {
        let end = h.window_start_ms.saturating_add(h.window_ms);
        counters
            .entry((h.bucket.as_str(), h.window_start_ms))
            .or_insert((end, 0))
            .1 += 1;
    }
    // The count each counter stood at before this batch, advanced hit by hit below.
    let mut counts: BTreeMap<(&str, i64), i64> = BTreeMap::new();
    let counters: Vec<_> = counters.into_iter().collect();
    for chunk in counters.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            "INSERT INTO rate_limits (bucket, window_start_ms, window_end_ms, count) VALUES",
            4,
            chunk.len(),
        ) + " ON CONFLICT (bucket, window_start_ms) DO UPDATE SET \
              count = rate_limits.count + excluded.count \
              RETURNING bucket, window_start_ms, count";
        let mut q = sqlx::query(&sql);
        for ((bucket, start), (end, n)) in chunk {
            q = q.bind(*bucket).bind(*start).bind(*end).bind(*n);
        }
        let returned = q.fetch_all(&mut **tx).await?;
        for row in &returned {
            let bucket: String = row.try_get(0)?;
            let start: i64 = row.try_get(1)?;
            let total: i64 = row.try_get(2)?;
            let Some(((b, s), (_, n))) = chunk
                .iter()
                .find(|((b, s), _)| *b == bucket.as_str() && *s == start)
            else {
                return Err(StoreError::Corrupt(
                    "a rate-limit upsert answered another row",
                ));
            };
            counts.insert((b, *s), total - n);
        }
    }
    let mut decisions = Vec::with_capacity(admissions.len());
    let mut fresh = HashSet::new();
    let mut to_insert = Vec::new();
    for a in admissions {
        let mut over = None;
        for (j, h) in a.hits.iter().enumerate() {
            let count = counts
                .get_mut(&(h.bucket.as_str(), h.window_start_ms))
                .ok_or(StoreError::Corrupt("a rate-limit upsert returned no count"))?;
            *count += 1;
            let count = u64::try_from(*count)
                .map_err(|_| StoreError::Corrupt("negative rate-limit count"))?;
            if over.is_none() && count > h.limit {
                over = Some(j);
            }
        }
        decisions.push(match over {
            Some(index) => TicketAdmission::RateLimited { index },
            // The same id twice in one batch: only the first may be claimed.
            None if fresh.insert(a.ticket.ticket_id.as_str()) => {
                to_insert.push(a);
                TicketAdmission::Claimed
            }
            None => TicketAdmission::NotClaimed,
        });
    }
    let mut inserted = HashSet::new();
    for chunk in to_insert.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            "INSERT INTO tickets (ticket_id, operation, identity_id, key_id, owner, \
             payload_sha384, issued_at_ms, expires_at_ms, used_at_ms) VALUES",
            9,
            chunk.len(),
        ) + " ON CONFLICT (ticket_id) DO NOTHING RETURNING ticket_id";
        let mut q = sqlx::query(&sql);
        for a in chunk {
            let t = &a.ticket;
            q = q
                .bind(t.ticket_id.as_str())
                .bind(t.operation.as_str())
                .bind(t.identity_id.as_str())
                .bind(t.key_id.as_str())
                .bind(t.owner.as_str())
                .bind(t.payload_sha384.as_slice())
                .bind(t.issued_at_ms)
                .bind(t.expires_at_ms)
                .bind(a.now_ms);
        }
        for row in q.fetch_all(&mut **tx).await? {
            inserted.insert(row.try_get::<String, _>(0)?);
        }
    }
    for (a, d) in admissions.iter().zip(decisions.iter_mut()) {
        if *d == TicketAdmission::Claimed && !inserted.contains(&a.ticket.ticket_id) {
            *d = TicketAdmission::NotClaimed;
        }
    }
    Ok(decisions)
}
