//! The group-commit writer: one task per [`Store`](super::Store) that commits the durable
//! writes of concurrent requests together.
//!
//! A durable commit waits for the disk (about a millisecond here, several under I/O load), so
//! one commit per write caps a process at roughly a thousand writes a second. Instead, the
//! writes every request must make durably — ticket admissions and claims, audit appends — are
//! queued to this task. It takes everything queued (up to [`MAX_BATCH`] jobs), runs them in
//! ONE transaction and answers each caller after the commit. Under load, batches grow and the
//! disk waits are shared, and so are the statements: a batch's admissions cost one read of
//! their rate-limit buckets, one write-back and one ticket insert between them, whatever their
//! number (see `tickets::admit_in`). With no load, a job costs one short transaction as before.
//!
//! Every job is a statement that cannot fail on its data (an UPDATE whose WHERE clause already
//! excludes what the table's guards refuse, an insert the store validated and that skips a
//! conflicting id, or an audit row the store builds itself), so one caller's input cannot
//! abort the batch of others. If the transaction fails anyway (the database is gone), every
//! job in it gets [`StoreError::GroupCommit`] and nothing of it is recorded.
//!
//! Lock order, identical in every process so batches cannot deadlock: rate-limit buckets by
//! name, then ticket rows by id, then the audit chain head. On SQLite (one write
//! lock per file, so no order to keep) idempotency records join the batch too, before the
//! rest: a request's claim of its Idempotency-Key and the storing of its response are then
//! statements in a shared transaction instead of a commit each.

use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::audit::{self, AuditEntry, AuditRow};
use super::idempotency::{self, Begin, Complete, IdempotencyBegin};
use super::tickets::{self, Admission, TicketAdmission};
use super::{Backend, StoreError, pg_begin_scoped, role};

/// Most jobs committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer before callers wait for room.
const QUEUE: usize = 8192;

/// A durable write and where its answer goes.
pub(super) enum Job {
    /// Append an audit entry at the end of the chain.
    Audit {
        entry: AuditEntry,
        reply: oneshot::Sender<Result<AuditRow, StoreError>>,
    },
    /// Mark a ticket used if it is unused and unexpired; answers whether this job won.
    Claim {
        ticket_id: String,
        now_ms: i64,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Count a key operation's rate-limit hits and, within every limit, record its fresh
    /// ticket already claimed.
    Admit {
        admission: Admission,
        reply: oneshot::Sender<Result<TicketAdmission, StoreError>>,
    },
    /// Claim an Idempotency-Key for a request, or report its record (SQLite only: these rows
    /// are not locked in a fixed order, which PostgreSQL's row locks would need).
    IdemBegin {
        begin: Begin,
        reply: oneshot::Sender<Result<IdempotencyBegin, StoreError>>,
    },
    /// Store a finished request's response under its key (SQLite only, as above); answers
    /// whether the record was still running.
    IdemComplete {
        complete: Complete,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
}

/// Rows per multi-row statement of a batch step (at most 9 parameters each).
pub(super) const ROWS_PER_STATEMENT: usize = 64;

/// `PREFIX ($1, …, $columns), (…)` for `rows` rows: a batch step's multi-row VALUES list.
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

/// Starts the writer; it ends when every sender (every `Store` clone) is gone.
pub(super) fn spawn(pool: AnyPool, backend: Backend) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(pool, backend, rx));
    tx
}

/// Queues `job` and waits for its answer.
pub(super) async fn submit<T>(
    writer: &mpsc::Sender<Job>,
    job: Job,
    answer: oneshot::Receiver<Result<T, StoreError>>,
) -> Result<T, StoreError> {
    writer
        .send(job)
        .await
        .map_err(|_| StoreError::WriterStopped)?;
    answer.await.map_err(|_| StoreError::WriterStopped)?
}

struct ClaimJob {
    ticket_id: String,
    now_ms: i64,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// One batch's jobs, sorted by kind.
#[derive(Default)]
struct Batch {
    claims: Vec<ClaimJob>,
    admissions: Vec<Admission>,
    admit_replies: Vec<oneshot::Sender<Result<TicketAdmission, StoreError>>>,
    entries: Vec<AuditEntry>,
    audit_replies: Vec<oneshot::Sender<Result<AuditRow, StoreError>>>,
    begins: Vec<Begin>,
    begin_replies: Vec<oneshot::Sender<Result<IdempotencyBegin, StoreError>>>,
    completes: Vec<Complete>,
    complete_replies: Vec<oneshot::Sender<Result<bool, StoreError>>>,
}

impl Batch {
    fn add(&mut self, job: Job) {
        match job {
            Job::Audit { entry, reply } => {
                self.entries.push(entry);
                self.audit_replies.push(reply);
            }
            Job::Claim {
                ticket_id,
                now_ms,
                reply,
            } => self.claims.push(ClaimJob {
                ticket_id,
                now_ms,
                reply,
            }),
            Job::Admit { admission, reply } => {
                self.admissions.push(admission);
                self.admit_replies.push(reply);
            }
            Job::IdemBegin { begin, reply } => {
                self.begins.push(begin);
                self.begin_replies.push(reply);
            }
            Job::IdemComplete { complete, reply } => {
                self.completes.push(complete);
                self.complete_replies.push(reply);
            }
        }
    }

    /// Answers every job with `Err(GroupCommit)`.
    fn fail(self, reason: &str) {
        let err = || StoreError::GroupCommit(reason.to_string());
        for job in self.claims {
            let _ = job.reply.send(Err(err()));
        }
        for reply in self.admit_replies {
            let _ = reply.send(Err(err()));
        }
        for reply in self.audit_replies {
            let _ = reply.send(Err(err()));
        }
        for reply in self.begin_replies {
            let _ = reply.send(Err(err()));
        }
        for reply in self.complete_replies {
            let _ = reply.send(Err(err()));
        }
    }
}

async fn run(pool: AnyPool, backend: Backend, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        // Jobs whose caller gave up still run: the event happened whether or not anyone
        // waits for the answer.
        let mut batch = Batch::default();
        for job in jobs.drain(..) {
            batch.add(job);
        }
        batch.claims.sort_by(|a, b| a.ticket_id.cmp(&b.ticket_id));
        match commit_batch(&pool, backend, &batch).await {
            Ok(BatchResult {
                won,
                admitted,
                rows,
                begun,
                completed,
            }) => {
                for (job, ok) in batch.claims.into_iter().zip(won) {
                    let _ = job.reply.send(Ok(ok));
                }
                for (reply, a) in batch.admit_replies.into_iter().zip(admitted) {
                    let _ = reply.send(Ok(a));
                }
                for (reply, row) in batch.audit_replies.into_iter().zip(rows) {
                    let _ = reply.send(Ok(row));
                }
                for (reply, b) in batch.begin_replies.into_iter().zip(begun) {
                    let _ = reply.send(b);
                }
                for (reply, done) in batch.complete_replies.into_iter().zip(completed) {
                    let _ = reply.send(Ok(done));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::error!(error = %reason, "group commit failed");
                batch.fail(&reason);
            }
        }
    }
}

/// What a committed batch answers, in the order of its jobs of each kind.
struct BatchResult {
    won: Vec<bool>,
    admitted: Vec<TicketAdmission>,
    rows: Vec<AuditRow>,
    begun: Vec<Result<IdempotencyBegin, StoreError>>,
    completed: Vec<bool>,
}

async fn commit_batch(
    pool: &AnyPool,
    backend: Backend,
    batch: &Batch,
) -> Result<BatchResult, StoreError> {
    let mut tx: Transaction<'static, Any> = match backend {
        // The store's own role: ticket claims are not owner-bound (the ticket id decides).
        Backend::Postgres => pool.begin_with(pg_begin_scoped("", role::SYSTEM)).await?,
        // IMMEDIATE takes the write lock first, so reading the chain head and writing after
        // it cannot fail on a lock upgrade when another process wrote in between.
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
    };
    // These run no statement for an empty list; the audit append below would read the head.
    let completed = idempotency::complete_in(&mut tx, &batch.completes).await?;
    let begun = idempotency::begin_in(&mut tx, &batch.begins).await?;
    let admitted = tickets::admit_in(&mut tx, &batch.admissions).await?;
    let mut won = Vec::with_capacity(batch.claims.len());
    for c in &batch.claims {
        // One statement decides: the row lock makes a concurrent claimant in another
        // process wait for this commit, then re-check `used_at_ms IS NULL` and lose.
        let done = sqlx::query(
            "UPDATE tickets SET used_at_ms = $2 \
             WHERE ticket_id = $1 AND used_at_ms IS NULL AND expires_at_ms > $2",
        )
        .bind(c.ticket_id.as_str())
        .bind(c.now_ms)
        .execute(&mut *tx)
        .await?;
        won.push(done.rows_affected() == 1);
    }
    let rows = if batch.entries.is_empty() {
        Vec::new()
    } else {
        audit::append_in(&mut tx, backend, &batch.entries).await?
    };
    tx.commit().await?;
    Ok(BatchResult {
        won,
        admitted,
        rows,
        begun,
        completed,
    })
}
