//! The escrow scheduler: a background task in every api process that expires unfunded
//! milestones, validates submissions (reading every artifact back from the store), accepts
//! validated ones whose inspection period ran out, and drives the settlement sagas.
//!
//! Several api processes may run it against one database. Milestone moves are
//! compare-and-set, so when two schedulers try the same move one wins and the other is
//! refused (and audited as such); settlements are claimed with a lease (`FOR UPDATE SKIP
//! LOCKED` on PostgreSQL), so one saga step runs in one process at a time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use enclosure_policy::escrow::MilestoneState;

use crate::escrow::{Escrow, SettlementPass, Settler, system_caller};
use crate::server::AppState;
use crate::store::escrow::MilestoneRecord;

/// The subject the scheduler's moves are audited as.
pub const SCHEDULER_ACTOR: &str = "system:scheduler";
/// How many records one pass takes of each kind.
const BATCH: u32 = 100;
/// How long a move that failed is left alone before it is tried again.
const FAILED_MOVE_RETRY_MS: i64 = 60_000;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    /// Milestones expired.
    pub expired: usize,
    /// Milestones accepted automatically.
    pub auto_accepted: usize,
    /// Submissions the system validated (every artifact read back and matched).
    pub validated: usize,
    /// What the settlement sagas did.
    pub settlements: SettlementPass,
}

/// One scheduler: its lease identity and the moves it saw fail (so a move that cannot
/// succeed is not retried, and audited, every second).
pub struct Scheduler {
    owner: String,
    failed: HashMap<(String, i64), i64>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            owner: format!("scheduler-{}", uuid::Uuid::new_v4()),
            failed: HashMap::new(),
        }
    }
}

impl Scheduler {
    /// One pass over everything due at `now_ms`.
    pub async fn tick(&mut self, state: &AppState, now_ms: i64) -> TickReport {
        let mut report = TickReport::default();
        let escrow = Escrow {
            store: &state.store,
            now_ms,
        };
        let system = system_caller(SCHEDULER_ACTOR);
        self.failed.retain(|_, retry_at| *retry_at > now_ms);
        match state.store.milestones_past_deadline(now_ms, BATCH).await {
            Ok(due) => {
                for m in due {
                    if self.failed.contains_key(&(m.id.clone(), m.version)) {
                        continue;
                    }
                    let result = match m.state {
                        MilestoneState::Open => escrow.expire(&system, &m.id).await,
                        MilestoneState::Validated => escrow.auto_accept(&system, &m.id).await,
                        _ => continue,
                    };
                    match result {
                        Ok(_) if m.state == MilestoneState::Open => report.expired += 1,
                        Ok(_) => report.auto_accepted += 1,
                        Err(e) => self.remember_failure(&m, now_ms, &e),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "scheduler: reading due milestones failed"),
        }
        if let Some(artifacts) = &state.artifacts {
            match state.store.milestones_submitted(BATCH).await {
                Ok(due) => {
                    for m in due {
                        if self.failed.contains_key(&(m.id.clone(), m.version)) {
                            continue;
                        }
                        match escrow.validate(&system, &m.id, None, Some(artifacts)).await {
                            Ok(_) => report.validated += 1,
                            Err(e) => self.remember_failure(&m, now_ms, &e),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduler: reading submissions failed"),
            }
        }
        if let Some(payments) = &state.payments {
            let settler = Settler {
                escrow,
                provider: payments.provider.as_ref(),
                owner: &self.owner,
                lease_ms: lease_ms(state),
            };
            match settler.run_once(BATCH).await {
                Ok(pass) => report.settlements = pass,
                Err(e) => tracing::warn!(error = %e, "scheduler: settlement pass failed"),
            }
        }
        report
    }

    fn remember_failure(&mut self, m: &MilestoneRecord, now_ms: i64, e: &crate::ApiError) {
        tracing::warn!(milestone = %m.id, state = %m.state, error = %e, "scheduler: move refused; retrying later");
        self.failed
            .insert((m.id.clone(), m.version), now_ms + FAILED_MOVE_RETRY_MS);
    }
}

/// The configured settlement lease, at least one second.
pub fn lease_ms(state: &AppState) -> i64 {
    i64::try_from(state.config.settlement_lease_ms.max(1_000)).unwrap_or(i64::MAX)
}

/// Runs the scheduler every `scheduler_interval_ms` until the process ends (0: never).
pub async fn run(state: Arc<AppState>) {
    let every = state.config.scheduler_interval_ms;
    if every == 0 {
        tracing::info!("escrow scheduler off in this process");
        return;
    }
    let mut scheduler = Scheduler::default();
    tracing::info!(every_ms = every, owner = %scheduler.owner, "escrow scheduler running");
    let mut ticker = tokio::time::interval(Duration::from_millis(every));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let report = scheduler.tick(&state, state.now_ms()).await;
        if report != TickReport::default() {
            tracing::info!(?report, "escrow scheduler pass");
        }
    }
}
