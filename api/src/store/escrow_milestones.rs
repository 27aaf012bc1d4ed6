//! Milestone and payment writes (compare-and-set on state and version), and a room's audit
//! trail.

use enclosure_policy::escrow::{MilestoneState, PaymentState};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::super::audit::{SELECT_ROW, row_from};
use super::super::{AuditRow, Backend, Store, StoreError, role};
use super::{MILESTONE_COLUMNS, MilestoneRecord, Moved, PaymentRecord, Viewer, milestone_from};

/// What a milestone write sets besides its state; the service computes it from the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MilestoneChange {
    /// The new state (the same as the read one for a flag-only change).
    pub to: MilestoneState,
    /// Rejections so far.
    pub revisions_used: i64,
    /// End of the inspection period, when one runs.
    pub inspection_ends_ms: Option<i64>,
    /// The client asked to cancel.
    pub client_cancelled: bool,
    /// The freelancer asked to cancel.
    pub freelancer_cancelled: bool,
}

/// A verified provider event applied to a payment, and the milestone move it causes.
#[derive(Clone, Debug)]
pub struct PaymentEventWrite<'a> {
    /// The payment as read.
    pub payment: &'a PaymentRecord,
    /// Its new state.
    pub to: PaymentState,
    /// The milestone as read and its change, when the event moves it (funding).
    pub milestone: Option<(&'a MilestoneRecord, MilestoneChange)>,
}

pub(super) const PAYMENT_COLUMNS: &str = "id, milestone_id, room_id, provider, provider_payment_id, \
    amount_minor, currency, state, created_at_ms, updated_at_ms, version";

pub(super) fn payment_from(r: &AnyRow) -> Result<PaymentRecord, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(PaymentRecord {
        id: r.try_get("id")?,
        milestone_id: r.try_get("milestone_id")?,
        room_id: r.try_get("room_id")?,
        provider: r.try_get("provider")?,
        provider_payment_id: r.try_get("provider_payment_id")?,
        amount_minor: r.try_get("amount_minor")?,
        currency: r.try_get("currency")?,
        state: PaymentState::parse(&state).ok_or(StoreError::Corrupt("unknown payment state"))?,
        created_at_ms: r.try_get("created_at_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
        version: r.try_get("version")?,
    })
}

/// The compare-and-set milestone write inside `tx`; answers whether the row moved.
async fn move_milestone_in(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    viewer: Viewer<'_>,
    read: &MilestoneRecord,
    c: MilestoneChange,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let moved = match backend {
        Backend::Postgres => sqlx::query(
            "SELECT enclosure_escrow_move_milestone($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&read.id)
        .bind(read.state.as_str())
        .bind(read.version)
        .bind(c.to.as_str())
        .bind(c.revisions_used)
        .bind(c.inspection_ends_ms)
        .bind(i64::from(c.client_cancelled))
        .bind(i64::from(c.freelancer_cancelled))
        .bind(now_ms)
        .fetch_one(&mut **tx)
        .await?
        .try_get::<i64, _>(0)?,
        Backend::Sqlite => {
            // The membership test the PostgreSQL function makes, in the statement itself.
            let done = sqlx::query(
                "UPDATE escrow_milestones SET state = $4, revisions_used = $5, \
                 inspection_ends_ms = $6, client_cancelled = $7, freelancer_cancelled = $8, \
                 updated_at_ms = $9, version = version + 1 \
                 WHERE id = $1 AND state = $2 AND version = $3 AND ($11 IN ('admin', 'system') \
                 OR EXISTS (SELECT 1 FROM escrow_rooms r WHERE r.id = room_id \
                 AND (($11 = 'client' AND $10 = r.client) \
                 OR ($11 = 'freelancer' AND $10 = r.freelancer))))",
            )
            .bind(&read.id)
            .bind(read.state.as_str())
            .bind(read.version)
            .bind(c.to.as_str())
            .bind(c.revisions_used)
            .bind(c.inspection_ends_ms)
            .bind(i64::from(c.client_cancelled))
            .bind(i64::from(c.freelancer_cancelled))
            .bind(now_ms)
            .bind(viewer.sub)
            .bind(viewer.role)
            .execute(&mut **tx)
            .await?;
            let moved = done.rows_affected() as i64;
            if moved == 1 && c.to == MilestoneState::Submitted && read.state != c.to {
                // What is validated is what was submitted.
                sqlx::query(
                    "UPDATE escrow_artifacts SET frozen_at_ms = $2 \
                     WHERE milestone_id = $1 AND frozen_at_ms IS NULL",
                )
                .bind(&read.id)
                .bind(now_ms)
                .execute(&mut **tx)
                .await?;
            }
            moved
        }
    };
    Ok(moved == 1)
}

fn moved_milestone(read: &MilestoneRecord, c: MilestoneChange, now_ms: i64) -> MilestoneRecord {
    MilestoneRecord {
        state: c.to,
        revisions_used: c.revisions_used,
        inspection_ends_ms: c.inspection_ends_ms,
        client_cancelled: c.client_cancelled,
        freelancer_cancelled: c.freelancer_cancelled,
        updated_at_ms: now_ms,
        version: read.version + 1,
        ..read.clone()
    }
}

impl Store {
    /// Writes a milestone's change if it is still in the state and version `read` holds.
    pub async fn move_milestone(
        &self,
        viewer: Viewer<'_>,
        read: &MilestoneRecord,
        change: MilestoneChange,
        now_ms: i64,
    ) -> Result<Moved<MilestoneRecord>, StoreError> {
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        let moved =
            move_milestone_in(&mut tx, self.inner.backend, viewer, read, change, now_ms).await?;
        tx.commit().await?;
        Ok(if moved {
            Moved::Done(moved_milestone(read, change, now_ms))
        } else {
            Moved::LostRace
        })
    }

    /// Records a pending payment for a milestone (the system, once the provider created it).
    pub async fn insert_payment(&self, p: &PaymentRecord) -> Result<(), StoreError> {
        let mut tx = self.scoped("", role::SYSTEM).await?;
        sqlx::query(&format!(
            "INSERT INTO escrow_payments ({PAYMENT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&p.id)
        .bind(&p.milestone_id)
        .bind(&p.room_id)
        .bind(&p.provider)
        .bind(&p.provider_payment_id)
        .bind(p.amount_minor)
        .bind(&p.currency)
        .bind(p.state.as_str())
        .bind(p.created_at_ms)
        .bind(p.updated_at_ms)
        .bind(p.version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The payment the provider knows as `provider_payment_id` (read as the system).
    pub async fn payment_by_provider_id(
        &self,
        provider: &str,
        provider_payment_id: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let mut tx = self.scoped("", role::SYSTEM).await?;
        let row = sqlx::query(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM escrow_payments \
             WHERE provider = $1 AND provider_payment_id = $2"
        ))
        .bind(provider)
        .bind(provider_payment_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(payment_from).transpose()
    }

    /// Applies a verified provider event as the system: the payment and (for funding) its
    /// milestone move together or not at all.
    pub async fn apply_payment_event(
        &self,
        w: &PaymentEventWrite<'_>,
        now_ms: i64,
    ) -> Result<Moved<(PaymentRecord, Option<MilestoneRecord>)>, StoreError> {
        let viewer = Viewer {
            sub: "",
            role: role::SYSTEM,
        };
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        let p = w.payment;
        let moved = match self.inner.backend {
            Backend::Postgres => {
                sqlx::query("SELECT enclosure_escrow_move_payment($1, $2, $3, $4, $5)")
                    .bind(&p.id)
                    .bind(p.state.as_str())
                    .bind(p.version)
                    .bind(w.to.as_str())
                    .bind(now_ms)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get::<i64, _>(0)?
            }
            Backend::Sqlite => sqlx::query(
                "UPDATE escrow_payments SET state = $4, updated_at_ms = $5, version = version + 1 \
                 WHERE id = $1 AND state = $2 AND version = $3",
            )
            .bind(&p.id)
            .bind(p.state.as_str())
            .bind(p.version)
            .bind(w.to.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64,
        };
        if moved != 1 {
            tx.rollback().await?;
            return Ok(Moved::LostRace);
        }
        let mut milestone = None;
        if let Some((read, change)) = w.milestone {
            if !move_milestone_in(&mut tx, self.inner.backend, viewer, read, change, now_ms).await?
            {
                tx.rollback().await?;
                return Ok(Moved::LostRace);
            }
            milestone = Some(moved_milestone(read, change, now_ms));
        }
        tx.commit().await?;
        let payment = PaymentRecord {
            state: w.to,
            updated_at_ms: now_ms,
            version: p.version + 1,
            ..p.clone()
        };
        Ok(Moved::Done((payment, milestone)))
    }

    /// Links audit row `seq` to a room (and milestone), so the room's members see it in the
    /// room's trail. `viewer` must see the room.
    pub async fn link_audit(
        &self,
        viewer: Viewer<'_>,
        seq: i64,
        room_id: &str,
        milestone_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        sqlx::query(
            "INSERT INTO escrow_audit_links (audit_seq, room_id, milestone_id) VALUES ($1, $2, $3)",
        )
        .bind(seq)
        .bind(room_id)
        .bind(milestone_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The audit rows linked to a room, after `after_seq`, at most `limit`; `None` when
    /// `viewer` is not one of its members (or an admin).
    pub async fn room_audit(
        &self,
        viewer: Viewer<'_>,
        room_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Option<Vec<AuditRow>>, StoreError> {
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        let member = sqlx::query(
            "SELECT 1 FROM escrow_rooms r WHERE r.id = $1 \
             AND ($2 IN (r.client, r.freelancer) OR $3 = 'admin')",
        )
        .bind(room_id)
        .bind(viewer.sub)
        .bind(viewer.role)
        .fetch_optional(&mut *tx)
        .await?;
        if member.is_none() {
            tx.commit().await?;
            return Ok(None);
        }
        let rows = sqlx::query(&format!(
            "{SELECT_ROW} WHERE seq IN (SELECT l.audit_seq FROM escrow_audit_links l \
             WHERE l.room_id = $1 AND l.audit_seq > $2) ORDER BY seq LIMIT $3"
        ))
        .bind(room_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(rows.iter().map(row_from).collect::<Result<_, _>>()?))
    }

    /// The milestones of one room as the system sees them (for deadline sweeps and tests).
    pub async fn room_milestones_as_system(
        &self,
        room_id: &str,
    ) -> Result<Vec<MilestoneRecord>, StoreError> {
        let mut tx = self.scoped("", role::SYSTEM).await?;
        let rows = sqlx::query(&format!(
            "SELECT {MILESTONE_COLUMNS} FROM escrow_milestones WHERE room_id = $1 ORDER BY position"
        ))
        .bind(room_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(milestone_from).collect()
    }
}
