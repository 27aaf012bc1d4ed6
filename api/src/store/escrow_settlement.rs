//! The system's settlement bookkeeping (migration 0011): verified provider events kept as
//! evidence, settlement sagas with their leases, and the sweeps the scheduler runs.
//!
//! Everything here runs as the system role; on PostgreSQL row-level security shows these
//! tables to no one else.

use std::collections::HashMap;

use enclosure_policy::settlement::{SettlementKind, SettlementStep};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::super::{Backend, Store, StoreError, role};
use super::milestones::{PAYMENT_COLUMNS, payment_from};
use super::{MILESTONE_COLUMNS, MilestoneRecord, Moved, PaymentRecord, milestone_from};

/// A verified provider event, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderEventRecord {
    /// The provider's name.
    pub provider: String,
    /// The provider's event id.
    pub event_id: String,
    /// Its type, as the provider names it.
    pub event_type: String,
    /// The payment it concerned, in the provider's ids.
    pub provider_payment_id: String,
    /// SHA-256 of the raw body, as evidence of exactly what was received.
    pub body_sha256: [u8; 32],
    /// `applied` (it moved a payment) or `ignored` (it needed nothing).
    pub outcome: String,
    /// Why, in a few words.
    pub detail: String,
    /// When it was recorded.
    pub received_at_ms: i64,
}

/// One settlement saga.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementRecord {
    /// The milestone settled.
    pub milestone_id: String,
    /// Release (payout) or refund.
    pub kind: SettlementKind,
    /// The milestone's room.
    pub room_id: String,
    /// The escrowed payment.
    pub payment_id: String,
    /// Bumped when an admin sends a stalled saga round again; part of the provider key.
    pub round: i64,
    /// Where it stands.
    pub step: SettlementStep,
    /// Paid out (release, after the fee) or returned (refund), in minor units.
    pub amount_minor: i64,
    /// The platform's fee (release only).
    pub fee_minor: i64,
    /// The provider's transfer or refund id, once it accepted.
    pub provider_object_id: Option<String>,
    /// Provider calls tried so far in this round.
    pub attempts: i64,
    /// The last failure, for an admin.
    pub last_error: Option<String>,
    /// Not to be tried before this time.
    pub next_at_ms: i64,
    /// The scheduler that holds it.
    pub lease_owner: Option<String>,
    /// Until when it holds it.
    pub lease_until_ms: i64,
    /// Creation time.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
    /// Bumped by every change.
    pub version: i64,
}

/// What a saga step writes besides the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementChange {
    /// The new step.
    pub step: SettlementStep,
    /// The round (bumped only when an admin restarts a stalled saga).
    pub round: i64,
    /// The provider's object id.
    pub provider_object_id: Option<String>,
    /// Attempts so far.
    pub attempts: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Next try.
    pub next_at_ms: i64,
}

impl SettlementRecord {
    /// The change that keeps everything as it is (to be edited).
    pub fn unchanged(&self) -> SettlementChange {
        SettlementChange {
            step: self.step,
            round: self.round,
            provider_object_id: self.provider_object_id.clone(),
            attempts: self.attempts,
            last_error: self.last_error.clone(),
            next_at_ms: self.next_at_ms,
        }
    }
}

const SETTLEMENT_COLUMNS: &str = "milestone_id, kind, room_id, payment_id, round, step, \
    amount_minor, fee_minor, provider_object_id, attempts, last_error, next_at_ms, lease_owner, \
    lease_until_ms, created_at_ms, updated_at_ms, version";

/// A column list with every column qualified by a table alias, for joins.
fn qualified(columns: &str, alias: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn settlement_from(r: &AnyRow) -> Result<SettlementRecord, StoreError> {
    let kind: String = r.try_get("kind")?;
    let step: String = r.try_get("step")?;
    Ok(SettlementRecord {
        milestone_id: r.try_get("milestone_id")?,
        kind: SettlementKind::parse(&kind).ok_or(StoreError::Corrupt("unknown settlement kind"))?,
        room_id: r.try_get("room_id")?,
        payment_id: r.try_get("payment_id")?,
        round: r.try_get("round")?,
        step: SettlementStep::parse(&step).ok_or(StoreError::Corrupt("unknown settlement step"))?,
        amount_minor: r.try_get("amount_minor")?,
        fee_minor: r.try_get("fee_minor")?,
        provider_object_id: r.try_get("provider_object_id")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        next_at_ms: r.try_get("next_at_ms")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_until_ms: r.try_get("lease_until_ms")?,
        created_at_ms: r.try_get("created_at_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
        version: r.try_get("version")?,
    })
}

impl Store {
    /// Records a verified provider event; `false` when its id was already recorded (a
    /// redelivery), in which case nothing is written.
    pub async fn record_provider_event(&self, e: &ProviderEventRecord) -> Result<bool, StoreError> {
        let mut tx = self.scoped("", role::SYSTEM).await?;
        let done = sqlx::query(
            "INSERT INTO escrow_provider_events (provider, event_id, event_type, \
             provider_payment_id, body_sha256, outcome, detail, received_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&e.provider)
        .bind(&e.event_id)
        .bind(&e.event_type)
        .bind(&e.provider_payment_id)
        .bind(e.body_sha256.to_vec())
        .bind(&e.outcome)
        .bind(&e.detail)
        .bind(e.received_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The recorded event `event_id` of `provider`, if any.
    pub async fn provider_event(
        &self,
        provider: &str,
        event_id: &str,
    ) -> Result<Option<ProviderEventRecord>, StoreError> {
        let mut tx = self.scoped("", role::SYSTEM).await?;
        let row = sqlx::query(
            "SELECT provider, event_id, event_type, provider_payment_id, body_sha256, outcome, \
             detail, received_at_ms FROM escrow_provider_events \
             WHERE provider = $1 AND event_id = $2",
        )
        .bind(provider)
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|r| {
            let digest: Vec<u8> = r.try_get("body_sha256")?;
            Ok(ProviderEventRecord {
                provider: r.try_get("provider")?,
                event_id: r.try_get("event_id")?,
                event_type: r.try_get("event_type")?,
                provider_payment_id: r.try_get("provider_payment_id")?,
                body_sha256: digest
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("event digest length"))?,
                outcome: r.try_get("outcome")?,
                detail: r.try_get("detail")?,
                received_at_ms: r.try_get("received_at_ms")?,
            })
        })
        .transpose()
    }

    /// The payment of a milestone (read as the system).
    pub async fn payment_of_milestone(
        &self,
        milestone_id: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let mut tx = self.scoped("", role::SYSTEM).await?;
        let row = sqlx::query(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM escrow_payments WHERE milestone_id = $1"
        ))
        .bind(milestone_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(payment_from).transpose()
    }

    /// Creates a settlement saga at `start`, unless one of that kind exists for the milestone
    /// (another scheduler got there first); answers the stored one, and whether it is new.
    pub async fn open_settlement(
        &self,
        s: &SettlementRecord,
    ) -> Result<(SettlementRecord, bool), StoreError> {
        let mut tx = self.scoped("", role::SYSTEM).await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO escrow_settlements ({SETTLEMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, \
             $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) ON CONFLICT DO NOTHING"
        ))
        .bind(&s.milestone_id)
        .bind(s.kind.as_str())
        .bind(&s.room_id)
        .bind(&s.payment_id)
        .bind(s.round)
        .bind(s.step.as_str())
        .bind(s.amount_minor)
        .bind(s.fee_minor)
        .bind(&s.provider_object_id)
        .bind(s.attempts)
        .bind(&s.last_error)
        .bind(s.next_at_ms)
        .bind(&s.lease_owner)
        .bind(s.lease_until_ms)
        .bind(s.created_at_ms)
        .bind(s.updated_at_ms)
        .bind(s.version)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let row = sqlx::query(&format!(
            "SELECT {SETTLEMENT_COLUMNS} FROM escrow_settlements WHERE milestone_id = $1 AND kind = $2"
        ))
        .bind(&s.milestone_id)
        .bind(s.kind.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((settlement_from(&row)?, inserted))
    }

    /// Stalled releases whose milestone an admin sent back to accepted, money still escrowed.
    pub async fn stalled_releases_accepted_again(
        &self,
        limit: u32,
    ) -> Result<Vec<SettlementRecord>, StoreError> {
        let mut tx = self.scoped("", role::SYSTEM).await?;
        let cols = qualified(SETTLEMENT_COLUMNS, "s");
        let rows = sqlx::query(&format!(
            "SELECT {} FROM escrow_settlements s \
             JOIN escrow_milestones m ON m.id = s.milestone_id \
             JOIN escrow_payments p ON p.id = s.payment_id \
             WHERE s.kind = 'release' AND s.step = 'stalled' AND m.state = 'accepted' \
             AND p.state = 'escrowed' LIMIT $1",
            cols
        ))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(settlement_from).collect()
    }

    /// The settlements of a milestone (at most one per kind).
    pub async fn settlements_of(
        &self,
        milestone_id: &str,
    ) -> Result<Vec<SettlementRecord>, StoreError> {
        let mut tx = self.scoped("", role::SYSTEM).await?;
        let rows = sqlx::query(&format!(
            "SELECT {SETTLEMENT_COLUMNS} FROM escrow_settlements WHERE milestone_id = $1 ORDER BY kind"
        ))
        .bind(milestone_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(settlement_from).collect()
    }

    /// Claims up to `limit` due settlements (at `start` or `requested`, due by `now_ms`, not
    /// leased) for `owner` until `lease_until_ms`. On PostgreSQL the candidates are locked
    /// with `FOR UPDATE SKIP LOCKED`, so several api processes claim disjoint sets; on both
    /// backends the lease itself is what excludes other schedulers until it runs out.
    pub async fn claim_settlements(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<SettlementRecord>, StoreError> {
        let lock = match self.inner.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let mut tx = self.scoped("", role::SYSTEM).await?;
        let rows = sqlx::query(&format!(
            "UPDATE escrow_settlements SET lease_owner = $1, lease_until_ms = $2, \
             version = version + 1 \
             WHERE (milestone_id, kind) IN (SELECT milestone_id, kind FROM escrow_settlements \
             WHERE step IN ('start', 'requested') AND next_at_ms <= $3 AND lease_until_ms < $3 \
             ORDER BY next_at_ms LIMIT $4{lock}) \
             RETURNING {SETTLEMENT_COLUMNS}"
        ))
        .bind(owner)
        .bind(lease_until_ms)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(settlement_from).collect()
    }

    /// Writes a saga step if the settlement is still at the version `read` holds; the lease
    /// is kept until `lease_until_ms` (0 releases it).
    pub async fn update_settlement(
        &self,
        read: &SettlementRecord,
        c: &SettlementChange,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> Result<Moved<SettlementRecord>, StoreError> {
        let mut tx = self.scoped("", role::SYSTEM).await?;
        let row = sqlx::query(&format!(
            "UPDATE escrow_settlements SET step = $3, round = $4, provider_object_id = $5, \
             attempts = $6, last_error = $7, next_at_ms = $8, lease_until_ms = $9, \
             updated_at_ms = $10, version = version + 1 \
             WHERE milestone_id = $1 AND kind = $2 AND version = $11 \
             RETURNING {SETTLEMENT_COLUMNS}"
        ))
        .bind(&read.milestone_id)
        .bind(read.kind.as_str())
        .bind(c.step.as_str())
        .bind(c.round)
        .bind(&c.provider_object_id)
        .bind(c.attempts)
        .bind(&c.last_error)
        .bind(c.next_at_ms)
        .bind(lease_until_ms)
        .bind(now_ms)
        .bind(read.version)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(match row {
            Some(r) => Moved::Done(settlement_from(&r)?),
            None => Moved::LostRace,
        })
    }

    /// Milestones whose deadlines or inspection periods ran out by `now_ms`, in active rooms:
    /// open past the funding deadline, validated past the inspection period.
    pub async fn milestones_past_deadline(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<MilestoneRecord>, StoreError> {
        self.system_milestones(
            "((m.state = 'open' AND m.funding_deadline_ms < $1) \
              OR (m.state = 'validated' AND m.inspection_ends_ms < $1))",
            now_ms,
            limit,
        )
        .await
    }

    /// Submitted milestones of active rooms, waiting for the system's validation.
    pub async fn milestones_submitted(
        &self,
        limit: u32,
    ) -> Result<Vec<MilestoneRecord>, StoreError> {
        self.system_milestones("(m.state = 'submitted' AND $1 = $1)", 0, limit)
            .await
    }

    /// Milestones whose money must leave escrow (accepted: release, even when the payment is
    /// no longer escrowed, so the saga can stall it for an admin; refunded or expired with
    /// money escrowed: refund) and have no settlement of that kind yet, with their payments.
    pub async fn milestones_to_settle(
        &self,
        limit: u32,
    ) -> Result<Vec<(MilestoneRecord, PaymentRecord)>, StoreError> {
        let mut tx = self.scoped("", role::SYSTEM).await?;
        let cols = qualified(MILESTONE_COLUMNS, "m");
        let rows = sqlx::query(&format!(
            "SELECT {}, p.id AS p_id FROM escrow_milestones m \
             JOIN escrow_payments p ON p.milestone_id = m.id \
             WHERE (m.state = 'accepted' \
             OR (p.state = 'escrowed' AND m.state IN ('refunded', 'expired'))) \
             AND NOT EXISTS (SELECT 1 FROM escrow_settlements s WHERE s.milestone_id = m.id \
             AND s.kind = CASE m.state WHEN 'accepted' THEN 'release' ELSE 'refund' END) \
             ORDER BY m.updated_at_ms LIMIT $1",
            cols
        ))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        // The payments of the whole page in one more query (their columns share names with
        // the milestones', so they are not selected in the join).
        let placeholders: Vec<String> = (1..=rows.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM escrow_payments WHERE id IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for r in &rows {
            q = q.bind(r.try_get::<String, _>("p_id")?);
        }
        let mut payments: HashMap<String, PaymentRecord> = HashMap::new();
        for p in q.fetch_all(&mut *tx).await? {
            let p = payment_from(&p)?;
            payments.insert(p.id.clone(), p);
        }
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let pid: String = r.try_get("p_id")?;
            let p = payments
                .remove(&pid)
                .ok_or(StoreError::Corrupt("a joined payment vanished"))?;
            out.push((milestone_from(r)?, p));
        }
        Ok(out)
    }

    async fn system_milestones(
        &self,
        condition: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<MilestoneRecord>, StoreError> {
        let mut tx = self.scoped("", role::SYSTEM).await?;
        let cols = qualified(MILESTONE_COLUMNS, "m");
        let rows = sqlx::query(&format!(
            "SELECT {} FROM escrow_milestones m JOIN escrow_rooms r ON r.id = m.room_id \
             WHERE r.state = 'active' AND {condition} ORDER BY m.updated_at_ms LIMIT $2",
            cols
        ))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(milestone_from).collect()
    }
}
