//! The audit log: an append-only, SHA-256 hash-chained table, written by one group-committing
//! writer task per [`Store`].
//!
//! # Canonical encoding (version 1)
//!
//! `hash(row) = SHA-256(prev_hash ‖ canonical_audit_bytes(row))`, with `prev_hash` the
//! previous row's hash, or 32 zero bytes ([`GENESIS_HASH`]) for seq 1. The canonical bytes are
//! the domain label `"enclosure/audit/v1\0"`, then in this order:
//! `seq` and `at_ms` as 8-byte big-endian two's complement; `actor`, `actor_role`, `action` as
//! strings; `identity_id`, `key_id`, `ticket_id` as optional strings; `outcome` as a string;
//! `detail` as an optional string. A string is its UTF-8 length as 4-byte big-endian followed
//! by its bytes; an optional string is `0x00` when absent, or `0x01` followed by the string.
//! Lengths before contents make the encoding injective, so no two rows share bytes.
//!
//! # Group commit
//!
//! `append_audit` queues the entry to the store's group-commit writer (`writer.rs`), which
//! appends everything queued in one transaction: it locks the chain head once, inserts the
//! batch with consecutive seqs, commits, and answers every caller, so concurrent requests
//! share one durable commit. On PostgreSQL the head is the one-row `audit_head` table, locked
//! through `enclosure_audit_lock_head()` (`SELECT … FOR UPDATE`), so writers in several
//! processes interleave whole batches; on SQLite `BEGIN IMMEDIATE` takes the write lock.

use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tokio::sync::oneshot;

use super::writer::{self, Job};
use super::{Backend, Store, StoreError, role};

/// The `prev_hash` of the first row.
pub const GENESIS_HASH: [u8; 32] = [0; 32];
/// Domain label that starts every row's canonical encoding.
const DOMAIN: &[u8] = b"enclosure/audit/v1\0";
/// Rows per INSERT statement (12 parameters each, well under both backends' limits).
const ROWS_PER_INSERT: usize = 64;
/// Rows read per query while verifying.
const VERIFY_PAGE: i64 = 2000;
/// Most rows `list_audit` returns at once.
const MAX_LIST: u32 = 10_000;

/// Something that happened, to be recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Who acted (JWT `sub`, or `system:…`).
    pub actor: String,
    /// Their role (`client`, `freelancer`, `admin`, `system`).
    pub actor_role: String,
    /// What they did (`identity.create`, `key.sign`, …).
    pub action: String,
    /// The identity concerned, if any.
    pub identity_id: Option<String>,
    /// The key concerned, if any.
    pub key_id: Option<String>,
    /// The ticket used, if any.
    pub ticket_id: Option<String>,
    /// `ok`, `refused` or `error`.
    pub outcome: String,
    /// A short reason (an error code), never a secret.
    pub detail: Option<String>,
    /// When, unix milliseconds.
    pub at_ms: i64,
}

/// A recorded audit row: the entry, its position and its chain hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the chain: 1, 2, 3… without gaps.
    pub seq: i64,
    /// Who acted.
    pub actor: String,
    /// Their role.
    pub actor_role: String,
    /// What they did.
    pub action: String,
    /// The identity concerned.
    pub identity_id: Option<String>,
    /// The key concerned.
    pub key_id: Option<String>,
    /// The ticket used.
    pub ticket_id: Option<String>,
    /// `ok`, `refused` or `error`.
    pub outcome: String,
    /// A short reason.
    pub detail: Option<String>,
    /// When, unix milliseconds.
    pub at_ms: i64,
    /// The previous row's hash ([`GENESIS_HASH`] for seq 1).
    pub prev_hash: [u8; 32],
    /// SHA-256(prev_hash ‖ canonical encoding of this row).
    pub hash: [u8; 32],
}

impl AuditRow {
    /// The entry this row records.
    pub fn entry(&self) -> AuditEntry {
        AuditEntry {
            actor: self.actor.clone(),
            actor_role: self.actor_role.clone(),
            action: self.action.clone(),
            identity_id: self.identity_id.clone(),
            key_id: self.key_id.clone(),
            ticket_id: self.ticket_id.clone(),
            outcome: self.outcome.clone(),
            detail: self.detail.clone(),
            at_ms: self.at_ms,
        }
    }
}

/// What `verify_audit_chain` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Rows read and checked, up to and including the first broken one.
    pub rows_checked: u64,
    /// The last seq checked (0 for an empty log).
    pub last_seq: i64,
    /// The first row that does not verify, if any.
    pub first_broken: Option<ChainBreak>,
}

impl ChainReport {
    /// True when every row verified.
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// The first row at which the chain breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBreak {
    /// The row's seq.
    pub seq: i64,
    /// What is wrong with it.
    pub reason: ChainBreakReason,
}

/// Why a row does not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainBreakReason {
    /// The stored hash differs from the one recomputed from the row: the row was altered.
    HashMismatch,
    /// The row's prev_hash is not the previous row's hash: a row was replaced or reordered.
    PrevLinkMismatch,
    /// The seq is not the previous seq + 1 (`expected`): rows were deleted or inserted.
    Gap {
        /// The seq that should have come next.
        expected: i64,
    },
    /// Rows from this seq up to the chain head the database recorded (`audit_head`) are
    /// missing: the end of the log was deleted.
    MissingTail {
        /// The last seq the head says exists.
        head_seq: i64,
    },
    /// The last row's hash differs from the head the database recorded.
    HeadMismatch,
}

impl std::fmt::Display for ChainBreakReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBreakReason::HashMismatch => f.write_str("hash mismatch: the row was altered"),
            ChainBreakReason::PrevLinkMismatch => {
                f.write_str("prev_hash does not link to the previous row")
            }
            ChainBreakReason::Gap { expected } => write!(f, "gap: expected seq {expected}"),
            ChainBreakReason::MissingTail { head_seq } => {
                write!(f, "rows up to the chain head {head_seq} are missing")
            }
            ChainBreakReason::HeadMismatch => {
                f.write_str("the last row's hash differs from the recorded chain head")
            }
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Entries are at most a few kilobytes; a length over u32 cannot come from the api, and
    // saturating keeps the function total.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

/// The canonical encoding of row `seq` recording `e` (see the module docs).
pub fn canonical_audit_bytes(seq: i64, e: &AuditEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + 64 + e.actor.len() + e.action.len());
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&e.at_ms.to_be_bytes());
    put_str(&mut out, &e.actor);
    put_str(&mut out, &e.actor_role);
    put_str(&mut out, &e.action);
    put_opt(&mut out, e.identity_id.as_deref());
    put_opt(&mut out, e.key_id.as_deref());
    put_opt(&mut out, e.ticket_id.as_deref());
    put_str(&mut out, &e.outcome);
    put_opt(&mut out, e.detail.as_deref());
    out
}

/// SHA-256(prev_hash ‖ canonical encoding): the hash of row `seq` recording `e`.
pub fn audit_hash(prev_hash: &[u8; 32], seq: i64, e: &AuditEntry) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(canonical_audit_bytes(seq, e));
    h.finalize().into()
}

fn validate(e: &AuditEntry) -> Result<(), StoreError> {
    if !matches!(e.outcome.as_str(), "ok" | "refused" | "error") {
        return Err(StoreError::InvalidInput(
            "audit outcome must be ok, refused or error",
        ));
    }
    // PostgreSQL TEXT cannot hold NUL; refusing here keeps one bad entry from failing the
    // whole batch it would have joined.
    let texts = [&e.actor, &e.actor_role, &e.action, &e.outcome];
    let opts = [&e.identity_id, &e.key_id, &e.ticket_id, &e.detail];
    if texts.iter().any(|s| s.contains('\0'))
        || opts
            .iter()
            .any(|s| s.as_deref().is_some_and(|s| s.contains('\0')))
    {
        return Err(StoreError::InvalidInput(
            "audit fields must not contain NUL",
        ));
    }
    Ok(())
}

fn hash32(v: Vec<u8>) -> Result<[u8; 32], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt("audit hash is not 32 bytes"))
}

/// Appends `entries` after the current chain head inside `tx` and returns their rows. On
/// PostgreSQL this locks the head row until `tx` ends; on SQLite `tx` must hold the write
/// lock already (`BEGIN IMMEDIATE`).
pub(super) async fn append_in(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    entries: &[AuditEntry],
) -> Result<Vec<AuditRow>, StoreError> {
    let head = match backend {
        Backend::Postgres => {
            sqlx::query("SELECT seq, hash FROM enclosure_audit_lock_head()")
                .fetch_optional(&mut **tx)
                .await?
        }
        Backend::Sqlite => {
            sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut **tx)
                .await?
        }
    };
    let (mut seq, mut prev) = match head {
        Some(r) => (r.try_get::<i64, _>(0)?, hash32(r.try_get(1)?)?),
        None if backend == Backend::Sqlite => (0, GENESIS_HASH),
        None => return Err(StoreError::Corrupt("the audit_head row is missing")),
    };
    let mut rows = Vec::with_capacity(entries.len());
    for e in entries {
        seq += 1;
        let hash = audit_hash(&prev, seq, e);
        rows.push(AuditRow {
            seq,
            actor: e.actor.clone(),
            actor_role: e.actor_role.clone(),
            action: e.action.clone(),
            identity_id: e.identity_id.clone(),
            key_id: e.key_id.clone(),
            ticket_id: e.ticket_id.clone(),
            outcome: e.outcome.clone(),
            detail: e.detail.clone(),
            at_ms: e.at_ms,
            prev_hash: prev,
            hash,
        });
        prev = hash;
    }
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = insert_sql(chunk.len());
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
                .bind(r.seq)
                .bind(r.at_ms)
                .bind(r.actor.as_str())
                .bind(r.actor_role.as_str())
                .bind(r.action.as_str())
                .bind(r.identity_id.as_deref())
                .bind(r.key_id.as_deref())
                .bind(r.ticket_id.as_deref())
                .bind(r.outcome.as_str())
                .bind(r.detail.as_deref())
                .bind(r.prev_hash.to_vec())
                .bind(r.hash.to_vec());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(rows)
}

/// `INSERT INTO audit (…) VALUES ($1, …, $12), ($13, …)` for `n` rows.
fn insert_sql(n: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO audit (seq, at_ms, actor, actor_role, action, identity_id, key_id, ticket_id, \
         outcome, detail, prev_hash, hash) VALUES ",
    );
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..12 {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", i * 12 + c + 1));
        }
        sql.push(')');
    }
    sql
}

pub(super) const SELECT_ROW: &str = "SELECT seq, at_ms, actor, actor_role, action, identity_id, key_id, ticket_id, \
                          outcome, detail, prev_hash, hash FROM audit";

pub(super) fn row_from(r: &AnyRow) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        seq: r.try_get("seq")?,
        at_ms: r.try_get("at_ms")?,
        actor: r.try_get("actor")?,
        actor_role: r.try_get("actor_role")?,
        action: r.try_get("action")?,
        identity_id: r.try_get("identity_id")?,
        key_id: r.try_get("key_id")?,
        ticket_id: r.try_get("ticket_id")?,
        outcome: r.try_get("outcome")?,
        detail: r.try_get("detail")?,
        prev_hash: hash32(r.try_get("prev_hash")?)?,
        hash: hash32(r.try_get("hash")?)?,
    })
}

impl Store {
    /// Records `e` at the end of the chain and returns its row, once committed. Concurrent
    /// callers share a transaction (see the module docs).
    pub async fn append_audit(&self, e: AuditEntry) -> Result<AuditRow, StoreError> {
        validate(&e)?;
        let (reply, answer) = oneshot::channel();
        writer::submit(&self.inner.writer, Job::Audit { entry: e, reply }, answer).await
    }

    /// Rows after `after_seq`, in order, at most `limit` (capped at 10,000): every row for
    /// admins, otherwise only rows whose actor is `viewer`.
    pub async fn list_audit(
        &self,
        viewer: &str,
        is_admin: bool,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let limit = i64::from(limit.min(MAX_LIST));
        let mut tx = self
            .scoped(viewer, if is_admin { role::ADMIN } else { role::USER })
            .await?;
        let rows = if is_admin {
            sqlx::query(&format!(
                "{SELECT_ROW} WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))
            .bind(after_seq)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?
        } else {
            sqlx::query(&format!(
                "{SELECT_ROW} WHERE actor = $3 AND seq > $1 ORDER BY seq LIMIT $2"
            ))
            .bind(after_seq)
            .bind(limit)
            .bind(viewer)
            .fetch_all(&mut *tx)
            .await?
        };
        tx.commit().await?;
        rows.iter().map(row_from).collect()
    }

    /// The last row's seq and hash (0 and [`GENESIS_HASH`] for an empty log): what a signed
    /// checkpoint of the log commits to.
    pub async fn audit_head(&self) -> Result<(i64, [u8; 32]), StoreError> {
        let mut tx = self.scoped("", role::SYSTEM).await?;
        let row = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        match row {
            Some(r) => Ok((r.try_get(0)?, hash32(r.try_get(1)?)?)),
            None => Ok((0, GENESIS_HASH)),
        }
    }

    /// Recomputes every row's hash in seq order and reports the first row that breaks the
    /// chain: an altered row, a broken link, or a gap.
    pub async fn verify_audit_chain(&self) -> Result<ChainReport, StoreError> {
        let mut report = ChainReport {
            rows_checked: 0,
            last_seq: 0,
            first_broken: None,
        };
        // Read the head first and check rows up to it: rows appended after this point are
        // left for the next run, and a deleted tail cannot hide.
        let (head_seq, head_hash) = {
            let sql = match self.inner.backend {
                Backend::Postgres => "SELECT seq, hash FROM enclosure_audit_head()",
                Backend::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
            };
            let mut tx = self.scoped("", role::SYSTEM).await?;
            let r = sqlx::query(sql)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::Corrupt("the audit_head row is missing"))?;
            tx.commit().await?;
            (r.try_get::<i64, _>(0)?, hash32(r.try_get(1)?)?)
        };
        let mut prev = GENESIS_HASH;
        loop {
            let mut tx = self.scoped("", role::SYSTEM).await?;
            let page = sqlx::query(&format!(
                "{SELECT_ROW} WHERE seq > $1 AND seq <= $3 ORDER BY seq LIMIT $2"
            ))
            .bind(report.last_seq)
            .bind(VERIFY_PAGE)
            .bind(head_seq)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            if page.is_empty() {
                break;
            }
            for r in &page {
                let row = row_from(r)?;
                report.rows_checked += 1;
                let expected = report.last_seq + 1;
                report.last_seq = row.seq;
                let reason = if row.seq != expected {
                    Some(ChainBreakReason::Gap { expected })
                } else if row.prev_hash != prev {
                    Some(ChainBreakReason::PrevLinkMismatch)
                } else if audit_hash(&prev, row.seq, &row.entry()) != row.hash {
                    Some(ChainBreakReason::HashMismatch)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    report.first_broken = Some(ChainBreak {
                        seq: row.seq,
                        reason,
                    });
                    return Ok(report);
                }
                prev = row.hash;
            }
        }
        if report.last_seq < head_seq {
            report.first_broken = Some(ChainBreak {
                seq: report.last_seq + 1,
                reason: ChainBreakReason::MissingTail { head_seq },
            });
        } else if prev != head_hash {
            report.first_broken = Some(ChainBreak {
                seq: head_seq,
                reason: ChainBreakReason::HeadMismatch,
            });
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AuditEntry {
        AuditEntry {
            actor: "alice".into(),
            actor_role: "client".into(),
            action: "key.sign".into(),
            identity_id: Some("i".into()),
            key_id: None,
            ticket_id: Some("t".into()),
            outcome: "ok".into(),
            detail: None,
            at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn store_audit_encoding_is_fixed() {
        let bytes = canonical_audit_bytes(1, &entry());
        let mut want = b"enclosure/audit/v1\0".to_vec();
        want.extend_from_slice(&1i64.to_be_bytes());
        want.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        for s in ["alice", "client", "key.sign"] {
            want.extend_from_slice(&(s.len() as u32).to_be_bytes());
            want.extend_from_slice(s.as_bytes());
        }
        want.extend_from_slice(&[1, 0, 0, 0, 1, b'i', 0, 1, 0, 0, 0, 1, b't']);
        want.extend_from_slice(&[0, 0, 0, 2, b'o', b'k', 0]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn store_audit_hash_covers_every_field() {
        let base = audit_hash(&GENESIS_HASH, 1, &entry());
        assert_ne!(base, audit_hash(&GENESIS_HASH, 2, &entry()));
        assert_ne!(base, audit_hash(&[1; 32], 1, &entry()));
        let variants: [fn(&mut AuditEntry); 9] = [
            (|e| e.actor.push('x')),
            (|e| e.actor_role.push('x')),
            (|e| e.action.push('x')),
            (|e| e.identity_id = None),
            (|e| e.key_id = Some(String::new())),
            (|e| e.ticket_id = Some("u".into())),
            (|e| e.outcome = "error".into()),
            (|e| e.detail = Some(String::new())),
            (|e| e.at_ms += 1),
        ];
        for change in variants {
            let mut e = entry();
            change(&mut e);
            assert_ne!(base, audit_hash(&GENESIS_HASH, 1, &e));
        }
        // Moving bytes between adjacent fields changes the hash: lengths come first.
        let mut a = entry();
        a.actor = "alicec".into();
        a.actor_role = "lient".into();
        assert_ne!(base, audit_hash(&GENESIS_HASH, 1, &a));
    }
}
