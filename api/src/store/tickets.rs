//! One-time tickets (stored when issued, claimed exactly once) and the shared rate-limit
//! buckets.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use enclosure_policy::rate::{RateDecision, RateLimit};
use sqlx::{Any, Row, Transaction};
use tokio::sync::oneshot;

use super::writer::{self, Job, ROWS_PER_STATEMENT, values_sql};
use super::{Backend, Durability, Store, StoreError, check_owner, role};

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

/// One rate-limit bucket a key operation takes from (see [`enclosure_policy::rate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitHit {
    /// The bucket's name, such as `user:alice` or `identity:…`.
    pub bucket: String,
    /// Operations a full bucket admits at once; it refills evenly over the window.
    pub limit: u64,
    /// The time, in milliseconds, in which the bucket refills completely (positive).
    pub window_ms: i64,
}

impl RateLimitHit {
    fn rate(&self) -> RateLimit {
        RateLimit {
            limit: self.limit,
            window_ms: self.window_ms,
        }
    }
}

/// What [`Store::admit_ticket`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TicketAdmission {
    /// Every bucket had an operation to give; the ticket is recorded, already claimed.
    Claimed,
    /// A bucket is empty; no ticket was recorded and no bucket was taken from.
    RateLimited {
        /// The first hit (in the order given) whose bucket is empty.
        index: usize,
        /// Milliseconds until every bucket of the request holds an operation again.
        retry_after_ms: i64,
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

/// Purge expired tickets and full rate-limit buckets on about one call in this many.
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

    /// Deletes the rate-limit buckets that are full again at `now_ms` (a missing bucket is a
    /// full one); [`Store::admit_ticket`] calls it on about one call in 256.
    pub async fn purge_full_buckets(&self, now_ms: i64) -> Result<(), StoreError> {
        let sql = match self.inner.backend {
            // Skips the buckets a batch holds: deleting them in TAT order while the batch
            // waits for one of them in name order could deadlock.
            Backend::Postgres => {
                "DELETE FROM rate_buckets WHERE bucket IN (SELECT bucket FROM rate_buckets \
                 WHERE tat_us < $1 FOR UPDATE SKIP LOCKED)"
            }
            // One writer at a time holds the whole database.
            Backend::Sqlite => "DELETE FROM rate_buckets WHERE tat_us < $1",
        };
        sqlx::query(sql)
            .bind(now_ms.saturating_mul(1000))
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

    /// Takes one operation from each bucket of `hits` and, if none is empty, records `ticket`
    /// already claimed (`used_at_ms = now_ms`): the rate limits, [`Store::insert_ticket`] and
    /// [`Store::claim_ticket`] in one step, for a ticket this process has just issued.
    ///
    /// A ticket born claimed can never be claimed by anyone else, in this process or another,
    /// so single use holds as it does for an insert followed by a claim; the enclave's replay
    /// cache still refuses a second use of the ticket itself. Everything is group-committed
    /// with other requests' durable writes and is durable when this returns. The buckets live
    /// in the database, so every api process sharing it shares the limits; a refused request
    /// takes from no bucket.
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
            self.purge_full_buckets(now_ms).await?;
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

/// Runs a batch's admissions inside the writer's transaction `tx` and answers each, in order.
///
/// The batch's buckets are read and locked in one statement per [`ROWS_PER_STATEMENT`]
/// buckets, sorted so every process locks them in the same order; each admission is then
/// decided against the buckets as the admissions before it in the batch left them (all its
/// buckets or none), and the buckets that changed are written back. The admitted tickets are
/// inserted, claimed, in one statement per [`ROWS_PER_STATEMENT`] rows; an id that already
/// exists is skipped (`ON CONFLICT DO NOTHING`) and answered [`TicketAdmission::NotClaimed`],
/// so no caller's data can abort the batch.
pub(super) async fn admit_in(
    tx: &mut Transaction<'static, Any>,
    admissions: &[Admission],
) -> Result<Vec<TicketAdmission>, StoreError> {
    let mut tats = lock_buckets(tx, admissions).await?;
    let mut changed = BTreeSet::new();
    let mut decisions = Vec::with_capacity(admissions.len());
    let mut fresh = HashSet::new();
    let mut to_insert = Vec::new();
    for a in admissions {
        let mut taken = Vec::with_capacity(a.hits.len());
        let mut refused: Option<(usize, i64)> = None;
        for (j, h) in a.hits.iter().enumerate() {
            let bucket = h.bucket.as_str();
            // A bucket named twice in one request takes twice.
            let tat = taken
                .iter()
                .rev()
                .find(|(b, _)| *b == bucket)
                .map(|(_, t)| *t)
                .or_else(|| tats.get(bucket).copied())
                .ok_or(StoreError::Corrupt("a rate-limit bucket was not read"))?;
            match h.rate().check(tat, a.now_ms) {
                RateDecision::Admit { tat_us } => taken.push((bucket, tat_us)),
                RateDecision::Refuse { retry_after_ms } => {
                    let (_, wait) = refused.get_or_insert((j, 0));
                    *wait = (*wait).max(retry_after_ms);
                }
            }
        }
        if let Some((index, retry_after_ms)) = refused {
            decisions.push(TicketAdmission::RateLimited {
                index,
                retry_after_ms,
            });
            continue;
        }
        for (bucket, tat) in taken {
            tats.insert(bucket, tat);
            changed.insert(bucket);
        }
        decisions.push(
            // The same id twice in one batch: only the first may be claimed.
            if fresh.insert(a.ticket.ticket_id.as_str()) {
                to_insert.push(a);
                TicketAdmission::Claimed
            } else {
                TicketAdmission::NotClaimed
            },
        );
    }
    let changed: Vec<(&str, i64)> = changed.into_iter().map(|b| (b, tats[b])).collect();
    write_buckets(tx, &changed).await?;
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

/// Reads the TAT of every bucket the batch takes from, creating the missing ones empty-handed
/// (TAT 0: full) and locking them all until the batch commits; sorted, so processes sharing a
/// database lock buckets in one order.
async fn lock_buckets<'a>(
    tx: &mut Transaction<'static, Any>,
    admissions: &'a [Admission],
) -> Result<BTreeMap<&'a str, i64>, StoreError> {
    let buckets: BTreeSet<&str> = admissions
        .iter()
        .flat_map(|a| &a.hits)
        .map(|h| h.bucket.as_str())
        .collect();
    let buckets: Vec<&str> = buckets.into_iter().collect();
    let mut tats = BTreeMap::new();
    for chunk in buckets.chunks(ROWS_PER_STATEMENT) {
        // The no-op update takes the row lock that a plain SELECT would not.
        let sql = values_sql(
            "INSERT INTO rate_buckets (bucket, tat_us) VALUES",
            2,
            chunk.len(),
        ) + " ON CONFLICT (bucket) DO UPDATE SET tat_us = rate_buckets.tat_us \
              RETURNING bucket, tat_us";
        let mut q = sqlx::query(&sql);
        for bucket in chunk {
            q = q.bind(*bucket).bind(0_i64);
        }
        for row in q.fetch_all(&mut **tx).await? {
            let bucket: String = row.try_get(0)?;
            let Some(b) = chunk.iter().find(|b| **b == bucket.as_str()) else {
                return Err(StoreError::Corrupt(
                    "a rate-limit bucket read answered another row",
                ));
            };
            tats.insert(*b, row.try_get::<i64, _>(1)?);
        }
    }
    Ok(tats)
}

/// Stores the new TAT of each bucket the batch took from.
async fn write_buckets(
    tx: &mut Transaction<'static, Any>,
    changed: &[(&str, i64)],
) -> Result<(), StoreError> {
    for chunk in changed.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            "INSERT INTO rate_buckets (bucket, tat_us) VALUES",
            2,
            chunk.len(),
        ) + " ON CONFLICT (bucket) DO UPDATE SET tat_us = excluded.tat_us";
        let mut q = sqlx::query(&sql);
        for (bucket, tat) in chunk {
            q = q.bind(*bucket).bind(*tat);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
