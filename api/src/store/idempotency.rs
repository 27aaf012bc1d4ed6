//! Idempotency records: one per (caller, Idempotency-Key), so a retried mutating request gets
//! the first attempt's response instead of running twice.

use std::collections::HashSet;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tokio::sync::oneshot;

use super::writer::{self, Job, ROWS_PER_STATEMENT, values_sql};
use super::{Backend, Store, StoreError};

/// A completed response is replayed for this long after it was stored (5 minutes).
pub const IDEMPOTENCY_REPLAY_MS: i64 = 5 * 60 * 1000;
/// Records are kept at least this long (24 hours), so a late reuse of a key with a different
/// request is still caught as a mismatch; older ones are purged and the key starts afresh.
pub const IDEMPOTENCY_RETAIN_MS: i64 = 24 * 60 * 60 * 1000;
/// A record still running after this long (5 minutes) belongs to an attempt that died (its
/// process crashed, or its completion was lost): the key is then reported [`Expired`], since
/// whether that attempt had its effect is unknown and running it again could do it twice.
///
/// [`Expired`]: IdempotencyBegin::Expired
pub const IDEMPOTENCY_RUNNING_LEASE_MS: i64 = 5 * 60 * 1000;
/// Purge records past retention on about one `idempotency_begin` in this many.
const PURGE_EVERY: u64 = 64;
/// Reads back the record a begin did not start.
const SELECT_RECORD: &str = "SELECT request_hash, state, status, body, created_at_ms, \
     completed_at_ms FROM idempotency WHERE caller = $1 AND idem_key = $2";

/// What `idempotency_begin` found for a caller's key.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdempotencyBegin {
    /// No live record: this request runs, and must later complete or release the key.
    Started,
    /// The same request already completed: send this response again.
    Replay {
        /// The HTTP status first returned.
        status: u16,
        /// The body first returned.
        body: Vec<u8>,
    },
    /// The same request is still running elsewhere (HTTP 409).
    InProgress,
    /// The key was used with a different request (HTTP 422).
    Mismatch,
    /// The same request completed more than [`IDEMPOTENCY_REPLAY_MS`] ago, or its attempt
    /// died while running (see [`IDEMPOTENCY_RUNNING_LEASE_MS`]): nothing is replayed and the
    /// caller must use a new key.
    Expired,
}

impl std::fmt::Debug for IdempotencyBegin {
    // The stored body may hold anything the route returned; show only its size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdempotencyBegin::Started => f.write_str("Started"),
            IdempotencyBegin::Replay { status, body } => f
                .debug_struct("Replay")
                .field("status", status)
                .field("body_len", &body.len())
                .finish(),
            IdempotencyBegin::InProgress => f.write_str("InProgress"),
            IdempotencyBegin::Mismatch => f.write_str("Mismatch"),
            IdempotencyBegin::Expired => f.write_str("Expired"),
        }
    }
}

impl Store {
    /// Claims `key` for `caller`'s request with fingerprint `request_hash`, or reports what
    /// an earlier request with the same key left.
    pub async fn idempotency_begin(
        &self,
        caller: &str,
        key: &str,
        request_hash: &[u8],
        now_ms: i64,
    ) -> Result<IdempotencyBegin, StoreError> {
        let stale_before = now_ms.saturating_sub(IDEMPOTENCY_RETAIN_MS);
        if self.purge_due(PURGE_EVERY) {
            sqlx::query("DELETE FROM idempotency WHERE created_at_ms < $1")
                .bind(stale_before)
                .execute(self.relaxed_pool())
                .await?;
        }
        if self.inner.backend == Backend::Sqlite {
            let (reply, answer) = oneshot::channel();
            let job = Job::IdemBegin {
                begin: Begin {
                    caller: caller.to_string(),
                    key: key.to_string(),
                    request_hash: request_hash.to_vec(),
                    now_ms,
                },
                reply,
            };
            return writer::submit(&self.inner.writer, job, answer).await;
        }
        // A record can vanish between the insert and the read (released by the first
        // attempt), so try again; a second vanishing in a row is as good as in progress.
        for _ in 0..3 {
            // Inserts a running record, or restarts one past retention that the purge missed.
            let started = sqlx::query(
                "INSERT INTO idempotency (caller, idem_key, request_hash, state, created_at_ms) \
                 VALUES ($1, $2, $3, 'running', $4) \
                 ON CONFLICT (caller, idem_key) DO UPDATE SET \
                   request_hash = excluded.request_hash, state = 'running', status = NULL, \
                   body = NULL, created_at_ms = excluded.created_at_ms, completed_at_ms = NULL \
                 WHERE idempotency.created_at_ms < $5",
            )
            .bind(caller)
            .bind(key)
            .bind(request_hash)
            .bind(now_ms)
            .bind(stale_before)
            // Relaxed: a claim lost in a crash frees the key, and every route's first side
            // effect is a durable commit (a ticket claim or a record write) that flushes it.
            .execute(self.relaxed_pool())
            .await?;
            if started.rows_affected() == 1 {
                return Ok(IdempotencyBegin::Started);
            }
            let Some(row) = sqlx::query(SELECT_RECORD)
                .bind(caller)
                .bind(key)
                .fetch_optional(self.pool())
                .await?
            else {
                continue;
            };
            return found(&row, request_hash, now_ms);
        }
        Ok(IdempotencyBegin::InProgress)
    }

    /// Stores the response of the request that holds `key`, for replay.
    pub async fn idempotency_complete(
        &self,
        caller: &str,
        key: &str,
        status: u16,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if self.inner.backend == Backend::Sqlite {
            let (reply, answer) = oneshot::channel();
            let job = Job::IdemComplete {
                complete: Complete {
                    caller: caller.to_string(),
                    key: key.to_string(),
                    status,
                    body: body.to_vec(),
                    now_ms,
                },
                reply,
            };
            return match writer::submit(&self.inner.writer, job, answer).await? {
                true => Ok(()),
                false => Err(StoreError::IdempotencyNotRunning),
            };
        }
        // Relaxed: the request's durable writes (its ticket claim, its audit row) are already
        // committed, and a completion lost in a crash only turns a replay into `InProgress`
        // and then, after the running lease, `Expired`: never a second execution.
        let done = sqlx::query(
            "UPDATE idempotency SET state = 'done', status = $3, body = $4, completed_at_ms = $5 \
             WHERE caller = $1 AND idem_key = $2 AND state = 'running'",
        )
        .bind(caller)
        .bind(key)
        .bind(i64::from(status))
        .bind(body)
        .bind(now_ms)
        .execute(self.relaxed_pool())
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::IdempotencyNotRunning);
        }
        Ok(())
    }

    /// Forgets a running record: the first attempt failed before any side effect, so a retry
    /// with the same key may run. A completed record is left alone.
    pub async fn idempotency_release(&self, caller: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency WHERE caller = $1 AND idem_key = $2 AND state = 'running'",
        )
        .bind(caller)
        .bind(key)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

/// What an existing record means for a request with fingerprint `request_hash` at `now_ms`.
fn found(row: &AnyRow, request_hash: &[u8], now_ms: i64) -> Result<IdempotencyBegin, StoreError> {
    let stored_hash: Vec<u8> = row.try_get("request_hash")?;
    if stored_hash != request_hash {
        return Ok(IdempotencyBegin::Mismatch);
    }
    let state: String = row.try_get("state")?;
    if state == "running" {
        let created: i64 = row.try_get("created_at_ms")?;
        if now_ms.saturating_sub(created) > IDEMPOTENCY_RUNNING_LEASE_MS {
            return Ok(IdempotencyBegin::Expired);
        }
        return Ok(IdempotencyBegin::InProgress);
    }
    let completed_at: i64 =
        row.try_get::<Option<i64>, _>("completed_at_ms")?
            .ok_or(StoreError::Corrupt(
                "completed idempotency record without a time",
            ))?;
    if now_ms.saturating_sub(completed_at) > IDEMPOTENCY_REPLAY_MS {
        return Ok(IdempotencyBegin::Expired);
    }
    let status = row
        .try_get::<Option<i64>, _>("status")?
        .and_then(|s| u16::try_from(s).ok())
        .ok_or(StoreError::Corrupt(
            "completed idempotency record without a status",
        ))?;
    let body: Vec<u8> = row
        .try_get::<Option<Vec<u8>>, _>("body")?
        .unwrap_or_default();
    Ok(IdempotencyBegin::Replay { status, body })
}

/// A queued `idempotency_begin` (SQLite: the writer runs it inside its batch).
pub(super) struct Begin {
    pub(super) caller: String,
    pub(super) key: String,
    pub(super) request_hash: Vec<u8>,
    pub(super) now_ms: i64,
}

/// A queued `idempotency_complete` (SQLite: the writer runs it inside its batch).
pub(super) struct Complete {
    pub(super) caller: String,
    pub(super) key: String,
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
    pub(super) now_ms: i64,
}

/// The (caller, key) pairs a statement's `RETURNING caller, idem_key` names.
async fn returned_keys<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    tx: &mut Transaction<'static, Any>,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut keys = Vec::new();
    for row in q.fetch_all(&mut **tx).await? {
        keys.push((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?));
    }
    Ok(keys)
}

/// Runs a batch's completions inside the writer's transaction, one statement per
/// [`ROWS_PER_STATEMENT`] rows; answers, in order, whether each record was still running.
///
/// Completions go before the batch's begins, so a retry queued beside its first attempt's
/// completion is answered with the stored response.
pub(super) async fn complete_in(
    tx: &mut Transaction<'static, Any>,
    completes: &[Complete],
) -> Result<Vec<bool>, StoreError> {
    let mut done = HashSet::new();
    for chunk in completes.chunks(ROWS_PER_STATEMENT) {
        // SQLite names a VALUES list's columns column1, column2, ….
        let sql = values_sql(
            "UPDATE idempotency SET state = 'done', status = v.column3, body = v.column4, \
             completed_at_ms = v.column5 FROM (VALUES",
            5,
            chunk.len(),
        ) + ") AS v WHERE idempotency.caller = v.column1 AND idempotency.idem_key = v.column2 \
              AND idempotency.state = 'running' \
              RETURNING idempotency.caller, idempotency.idem_key";
        let mut q = sqlx::query(&sql);
        for c in chunk {
            q = q
                .bind(c.caller.as_str())
                .bind(c.key.as_str())
                .bind(i64::from(c.status))
                .bind(c.body.as_slice())
                .bind(c.now_ms);
        }
        done.extend(returned_keys(q, tx).await?);
    }
    Ok(completes
        .iter()
        .map(|c| done.contains(&(c.caller.clone(), c.key.clone())))
        .collect())
}

/// Runs a batch's begins inside the writer's transaction: one upsert per
/// [`ROWS_PER_STATEMENT`] rows starts every key that is free (or past retention), then each
/// begin that did not start reads the record it met. Within a batch, the first begin of a key
/// is the one that can start it; a second sees it running. The outer error fails the batch,
/// an inner one only its begin.
pub(super) async fn begin_in(
    tx: &mut Transaction<'static, Any>,
    begins: &[Begin],
) -> Result<Vec<Result<IdempotencyBegin, StoreError>>, StoreError> {
    let mut started = HashSet::new();
    for chunk in begins.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            "INSERT INTO idempotency (caller, idem_key, request_hash, state, created_at_ms) VALUES",
            5,
            chunk.len(),
        ) + &format!(
            " ON CONFLICT (caller, idem_key) DO UPDATE SET \
               request_hash = excluded.request_hash, state = 'running', status = NULL, \
               body = NULL, created_at_ms = excluded.created_at_ms, completed_at_ms = NULL \
             WHERE idempotency.created_at_ms < excluded.created_at_ms - {IDEMPOTENCY_RETAIN_MS} \
             RETURNING caller, idem_key"
        );
        let mut q = sqlx::query(&sql);
        for b in chunk {
            q = q
                .bind(b.caller.as_str())
                .bind(b.key.as_str())
                .bind(b.request_hash.as_slice())
                .bind("running")
                .bind(b.now_ms);
        }
        started.extend(returned_keys(q, tx).await?);
    }
    let mut out = Vec::with_capacity(begins.len());
    for b in begins {
        // `remove`: only the first begin of a key in the batch is the one that started it.
        if started.remove(&(b.caller.clone(), b.key.clone())) {
            out.push(Ok(IdempotencyBegin::Started));
            continue;
        }
        let row = sqlx::query(SELECT_RECORD)
            .bind(b.caller.as_str())
            .bind(b.key.as_str())
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::Corrupt("an idempotency upsert left no record"))?;
        // A record that cannot be read fails its own request, not the batch.
        out.push(found(&row, &b.request_hash, b.now_ms));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DatabaseConfig;

    fn begin(key: &str, hash: u8, now_ms: i64) -> Begin {
        Begin {
            caller: "alice".into(),
            key: key.into(),
            request_hash: vec![hash; 32],
            now_ms,
        }
    }

    /// What `begin_in` answered each of `begins`, every record readable.
    async fn begun(tx: &mut Transaction<'static, Any>, begins: &[Begin]) -> Vec<IdempotencyBegin> {
        begin_in(tx, begins)
            .await
            .expect("begins")
            .into_iter()
            .map(|b| b.expect("a readable record"))
            .collect()
    }

    /// One batch as the writer runs it: the first begin of a key starts it, a later begin of
    /// that key in the same batch meets it running (or mismatched), and a completion queued
    /// before a retry lets the retry replay.
    #[tokio::test]
    async fn one_batch_starts_each_key_once_and_completions_come_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::connect(&DatabaseConfig::Sqlite {
            path: dir.path().join("db.sqlite"),
        })
        .await
        .expect("store");
        let mut tx = store.pool().begin().await.expect("tx");
        let got = begun(
            &mut tx,
            &[
                begin("a", 1, 10),
                begin("a", 1, 10),
                begin("a", 2, 10),
                begin("b", 1, 10),
            ],
        )
        .await;
        assert_eq!(
            got,
            vec![
                IdempotencyBegin::Started,
                IdempotencyBegin::InProgress,
                IdempotencyBegin::Mismatch,
                IdempotencyBegin::Started,
            ]
        );
        let complete = |key: &str| Complete {
            caller: "alice".into(),
            key: key.into(),
            status: 201,
            body: b"{}".to_vec(),
            now_ms: 20,
        };
        // "a" completes; "nope" was never begun.
        let done = complete_in(&mut tx, &[complete("a"), complete("nope")])
            .await
            .expect("completes");
        assert_eq!(done, vec![true, false]);
        let got = begun(&mut tx, &[begin("a", 1, 30), begin("b", 1, 30)]).await;
        assert_eq!(
            got,
            vec![
                IdempotencyBegin::Replay {
                    status: 201,
                    body: b"{}".to_vec()
                },
                IdempotencyBegin::InProgress,
            ]
        );
        // A record that cannot be read (done, without a completion time) fails its own begin
        // and leaves the others in the batch alone.
        sqlx::query(
            "INSERT INTO idempotency (caller, idem_key, request_hash, state, created_at_ms) \
             VALUES ('alice', 'broken', $1, 'done', 30)",
        )
        .bind(vec![1u8; 32])
        .execute(&mut *tx)
        .await
        .expect("a broken record");
        let got = begin_in(&mut tx, &[begin("broken", 1, 40), begin("c", 1, 40)])
            .await
            .expect("the batch goes on");
        assert!(
            matches!(got[0], Err(StoreError::Corrupt(_))),
            "{:?}",
            got[0]
        );
        assert_eq!(got[1].as_ref().ok(), Some(&IdempotencyBegin::Started));
        tx.commit().await.expect("commit");
    }
}
