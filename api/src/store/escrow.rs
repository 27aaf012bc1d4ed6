//! Escrow records: rooms and their terms, milestones, payments, and the links that make a
//! room's audit trail. State changes are compare-and-set: a write names the state and version
//! it read, and loses (`Moved::LostRace`) when another writer got there first.
//!
//! What the database itself enforces (migration 0010 on both backends): every state change is
//! a pair in `escrow_transitions` (the policy crate's tables); terms, prices and deadlines never
//! change; acceptances, cancel flags and revision counts only move forward; new rows start at
//! the beginning of their machine. On PostgreSQL the app role may not UPDATE escrow tables at
//! all: the three `enclosure_escrow_move_*` SECURITY DEFINER functions are its only way to
//! change state, and row-level security shows a room's rows only to its client and freelancer
//! (and to the system, admins and reviewers; artifacts never to admins or reviewers).
//! On SQLite, which has no roles, each read also filters by membership in its SQL.

#[path = "escrow_artifacts.rs"]
mod artifacts;
#[path = "escrow_milestones.rs"]
mod milestones;
#[path = "escrow_notes.rs"]
mod notes;
#[path = "escrow_settlement.rs"]
mod settlement;

use enclosure_policy::escrow::{MilestoneState, PaymentState, RoomState};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, check_owner};

pub use artifacts::{ArtifactRecord, Registered};
pub use milestones::{MilestoneChange, PaymentEventWrite};
pub use notes::NoteRecord;
pub use settlement::{ProviderEventRecord, SettlementChange, SettlementRecord};

/// Who reads or writes: the caller's subject and role name (`client`, `freelancer`, `admin`,
/// `system`, `reviewer`), set for row-level security on PostgreSQL and used as the
/// membership filter on SQLite.
#[derive(Clone, Copy, Debug)]
pub struct Viewer<'a> {
    /// The JWT `sub`.
    pub sub: &'a str,
    /// The role name.
    pub role: &'a str,
}

/// The terms of one milestone, as proposed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MilestoneTerms {
    /// What is delivered.
    pub title: String,
    /// Price in the currency's minor unit.
    pub price_minor: i64,
    /// Funding must arrive by this time (unix ms).
    pub funding_deadline_ms: i64,
    /// Work must be submitted by this time (unix ms).
    pub delivery_deadline_ms: i64,
}

/// The terms of a room, as the client proposes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomTerms {
    /// A label.
    pub title: String,
    /// The client's subject.
    pub client: String,
    /// The freelancer's subject.
    pub freelancer: String,
    /// ISO 4217 code, three capital letters.
    pub currency: String,
    /// Platform fee in basis points, deducted on release.
    pub platform_fee_bps: i64,
    /// How long the client may inspect a validated submission.
    pub inspection_period_ms: i64,
    /// How many rejections the terms allow per milestone.
    pub max_revisions: i64,
    /// One or more milestones, in order.
    pub milestones: Vec<MilestoneTerms>,
}

/// A stored room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomRecord {
    /// Room id (UUIDv4).
    pub id: String,
    /// A label.
    pub title: String,
    /// The client's subject.
    pub client: String,
    /// The freelancer's subject.
    pub freelancer: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Platform fee in basis points.
    pub platform_fee_bps: i64,
    /// Inspection period.
    pub inspection_period_ms: i64,
    /// Rejections allowed per milestone.
    pub max_revisions: i64,
    /// Current state.
    pub state: RoomState,
    /// When the client accepted the terms.
    pub client_accepted_at_ms: Option<i64>,
    /// When the freelancer accepted the terms.
    pub freelancer_accepted_at_ms: Option<i64>,
    /// Creation time.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
    /// Bumped by every change; writes name the version they read.
    pub version: i64,
}

/// A stored milestone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MilestoneRecord {
    /// Milestone id (UUIDv4).
    pub id: String,
    /// Its room.
    pub room_id: String,
    /// Order within the room, from 0.
    pub position: i64,
    /// What is delivered.
    pub title: String,
    /// Price in minor units.
    pub price_minor: i64,
    /// Funding deadline.
    pub funding_deadline_ms: i64,
    /// Delivery deadline.
    pub delivery_deadline_ms: i64,
    /// Current state.
    pub state: MilestoneState,
    /// Rejections so far.
    pub revisions_used: i64,
    /// The client asked to cancel.
    pub client_cancelled: bool,
    /// The freelancer asked to cancel.
    pub freelancer_cancelled: bool,
    /// End of the client's inspection of the current validated submission.
    pub inspection_ends_ms: Option<i64>,
    /// Last change.
    pub updated_at_ms: i64,
    /// Bumped by every change.
    pub version: i64,
}

/// A stored escrowed payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRecord {
    /// Payment id (UUIDv4).
    pub id: String,
    /// The milestone it funds.
    pub milestone_id: String,
    /// The milestone's room.
    pub room_id: String,
    /// The provider's name.
    pub provider: String,
    /// The provider's id for the payment.
    pub provider_payment_id: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Current state.
    pub state: PaymentState,
    /// Creation time.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
    /// Bumped by every change.
    pub version: i64,
}

/// The outcome of a compare-and-set write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Moved<T> {
    /// The row moved; here it is as written.
    Done(T),
    /// The row was no longer in the state and version read: another writer won.
    LostRace,
}

const ROOM_COLUMNS: &str = "id, title, client, freelancer, currency, platform_fee_bps, \
    inspection_period_ms, max_revisions, state, client_accepted_at_ms, freelancer_accepted_at_ms, \
    created_at_ms, updated_at_ms, version";

pub(super) const MILESTONE_COLUMNS: &str = "id, room_id, position, title, price_minor, \
    funding_deadline_ms, delivery_deadline_ms, state, revisions_used, client_cancelled, \
    freelancer_cancelled, inspection_ends_ms, updated_at_ms, version";

fn corrupt_state(_: ()) -> StoreError {
    StoreError::Corrupt("unknown escrow state")
}

fn room_from(r: &AnyRow) -> Result<RoomRecord, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(RoomRecord {
        id: r.try_get("id")?,
        title: r.try_get("title")?,
        client: r.try_get("client")?,
        freelancer: r.try_get("freelancer")?,
        currency: r.try_get("currency")?,
        platform_fee_bps: r.try_get("platform_fee_bps")?,
        inspection_period_ms: r.try_get("inspection_period_ms")?,
        max_revisions: r.try_get("max_revisions")?,
        state: RoomState::parse(&state).ok_or(()).map_err(corrupt_state)?,
        client_accepted_at_ms: r.try_get("client_accepted_at_ms")?,
        freelancer_accepted_at_ms: r.try_get("freelancer_accepted_at_ms")?,
        created_at_ms: r.try_get("created_at_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
        version: r.try_get("version")?,
    })
}

pub(super) fn milestone_from(r: &AnyRow) -> Result<MilestoneRecord, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(MilestoneRecord {
        id: r.try_get("id")?,
        room_id: r.try_get("room_id")?,
        position: r.try_get("position")?,
        title: r.try_get("title")?,
        price_minor: r.try_get("price_minor")?,
        funding_deadline_ms: r.try_get("funding_deadline_ms")?,
        delivery_deadline_ms: r.try_get("delivery_deadline_ms")?,
        state: MilestoneState::parse(&state)
            .ok_or(())
            .map_err(corrupt_state)?,
        revisions_used: r.try_get("revisions_used")?,
        client_cancelled: r.try_get::<i64, _>("client_cancelled")? != 0,
        freelancer_cancelled: r.try_get::<i64, _>("freelancer_cancelled")? != 0,
        inspection_ends_ms: r.try_get("inspection_ends_ms")?,
        updated_at_ms: r.try_get("updated_at_ms")?,
        version: r.try_get("version")?,
    })
}

/// `WHERE` text that keeps only rooms `viewer` may see (`$n` is the sub, `$n+1` the role).
/// On PostgreSQL row-level security applies the same rule again.
fn room_visible(alias: &str, n: usize) -> String {
    format!(
        "(${n} IN ({alias}.client, {alias}.freelancer) OR ${} IN ('system', 'admin', 'reviewer'))",
        n + 1
    )
}

impl Store {
    /// Creates a draft room and its open milestones for the terms' client, who must be the
    /// caller (`viewer`).
    pub async fn create_room(
        &self,
        viewer: Viewer<'_>,
        terms: &RoomTerms,
        now_ms: i64,
    ) -> Result<(RoomRecord, Vec<MilestoneRecord>), StoreError> {
        check_owner(&terms.client)?;
        if viewer.sub != terms.client {
            return Err(StoreError::InvalidInput("only the client creates a room"));
        }
        let room = RoomRecord {
            id: uuid::Uuid::new_v4().to_string(),
            title: terms.title.clone(),
            client: terms.client.clone(),
            freelancer: terms.freelancer.clone(),
            currency: terms.currency.clone(),
            platform_fee_bps: terms.platform_fee_bps,
            inspection_period_ms: terms.inspection_period_ms,
            max_revisions: terms.max_revisions,
            state: RoomState::Draft,
            client_accepted_at_ms: None,
            freelancer_accepted_at_ms: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            version: 0,
        };
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        sqlx::query(&format!(
            "INSERT INTO escrow_rooms ({ROOM_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&room.id)
        .bind(&room.title)
        .bind(&room.client)
        .bind(&room.freelancer)
        .bind(&room.currency)
        .bind(room.platform_fee_bps)
        .bind(room.inspection_period_ms)
        .bind(room.max_revisions)
        .bind(room.state.as_str())
        .bind(room.client_accepted_at_ms)
        .bind(room.freelancer_accepted_at_ms)
        .bind(room.created_at_ms)
        .bind(room.updated_at_ms)
        .bind(room.version)
        .execute(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(terms.milestones.len());
        for (position, m) in terms.milestones.iter().enumerate() {
            let record = MilestoneRecord {
                id: uuid::Uuid::new_v4().to_string(),
                room_id: room.id.clone(),
                position: position as i64,
                title: m.title.clone(),
                price_minor: m.price_minor,
                funding_deadline_ms: m.funding_deadline_ms,
                delivery_deadline_ms: m.delivery_deadline_ms,
                state: MilestoneState::Open,
                revisions_used: 0,
                client_cancelled: false,
                freelancer_cancelled: false,
                inspection_ends_ms: None,
                updated_at_ms: now_ms,
                version: 0,
            };
            sqlx::query(&format!(
                "INSERT INTO escrow_milestones ({MILESTONE_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, 0, NULL, $9, 0)"
            ))
            .bind(&record.id)
            .bind(&record.room_id)
            .bind(record.position)
            .bind(&record.title)
            .bind(record.price_minor)
            .bind(record.funding_deadline_ms)
            .bind(record.delivery_deadline_ms)
            .bind(record.state.as_str())
            .bind(record.updated_at_ms)
            .execute(&mut *tx)
            .await?;
            out.push(record);
        }
        tx.commit().await?;
        Ok((room, out))
    }

    /// A room and its milestones, if `viewer` may see it.
    pub async fn room(
        &self,
        viewer: Viewer<'_>,
        room_id: &str,
    ) -> Result<Option<(RoomRecord, Vec<MilestoneRecord>)>, StoreError> {
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        let row = sqlx::query(&format!(
            "SELECT {ROOM_COLUMNS} FROM escrow_rooms r WHERE r.id = $1 AND {}",
            room_visible("r", 2)
        ))
        .bind(room_id)
        .bind(viewer.sub)
        .bind(viewer.role)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(None);
        };
        let milestones = sqlx::query(&format!(
            "SELECT {MILESTONE_COLUMNS} FROM escrow_milestones WHERE room_id = $1 ORDER BY position"
        ))
        .bind(room_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((
            room_from(&row)?,
            milestones
                .iter()
                .map(milestone_from)
                .collect::<Result<_, _>>()?,
        )))
    }

    /// The rooms `viewer` is a member of, newest first, at most `limit`.
    pub async fn list_rooms(
        &self,
        viewer: Viewer<'_>,
        limit: u32,
    ) -> Result<Vec<RoomRecord>, StoreError> {
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        let rows = sqlx::query(&format!(
            "SELECT {ROOM_COLUMNS} FROM escrow_rooms WHERE $1 IN (client, freelancer) \
             ORDER BY created_at_ms DESC, id LIMIT $2"
        ))
        .bind(viewer.sub)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(room_from).collect()
    }

    /// A milestone and its room, if `viewer` may see the room.
    pub async fn milestone(
        &self,
        viewer: Viewer<'_>,
        milestone_id: &str,
    ) -> Result<Option<(RoomRecord, MilestoneRecord)>, StoreError> {
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        let m = sqlx::query(&format!(
            "SELECT {MILESTONE_COLUMNS} FROM escrow_milestones WHERE id = $1"
        ))
        .bind(milestone_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(m) = m else {
            tx.commit().await?;
            return Ok(None);
        };
        let m = milestone_from(&m)?;
        let room = sqlx::query(&format!(
            "SELECT {ROOM_COLUMNS} FROM escrow_rooms r WHERE r.id = $1 AND {}",
            room_visible("r", 2)
        ))
        .bind(&m.room_id)
        .bind(viewer.sub)
        .bind(viewer.role)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        match room {
            Some(r) => Ok(Some((room_from(&r)?, m))),
            None => Ok(None),
        }
    }

    /// Writes a room's new state and acceptances if it is still at `read.version`.
    pub async fn move_room(
        &self,
        viewer: Viewer<'_>,
        read: &RoomRecord,
        to: RoomState,
        client_accepted_at_ms: Option<i64>,
        freelancer_accepted_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Moved<RoomRecord>, StoreError> {
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        let moved = match self.inner.backend {
            super::Backend::Postgres => {
                sqlx::query("SELECT enclosure_escrow_move_room($1, $2, $3, $4, $5, $6, $7)")
                    .bind(&read.id)
                    .bind(read.state.as_str())
                    .bind(read.version)
                    .bind(to.as_str())
                    .bind(client_accepted_at_ms)
                    .bind(freelancer_accepted_at_ms)
                    .bind(now_ms)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get::<i64, _>(0)?
            }
            super::Backend::Sqlite => {
                let done = sqlx::query(&format!(
                    "UPDATE escrow_rooms SET state = $4, client_accepted_at_ms = $5, \
                     freelancer_accepted_at_ms = $6, updated_at_ms = $7, version = version + 1 \
                     WHERE id = $1 AND state = $2 AND version = $3 AND {}",
                    room_visible("escrow_rooms", 8)
                ))
                .bind(&read.id)
                .bind(read.state.as_str())
                .bind(read.version)
                .bind(to.as_str())
                .bind(client_accepted_at_ms)
                .bind(freelancer_accepted_at_ms)
                .bind(now_ms)
                .bind(viewer.sub)
                .bind(viewer.role)
                .execute(&mut *tx)
                .await?;
                done.rows_affected() as i64
            }
        };
        tx.commit().await?;
        if moved != 1 {
            return Ok(Moved::LostRace);
        }
        Ok(Moved::Done(RoomRecord {
            state: to,
            client_accepted_at_ms,
            freelancer_accepted_at_ms,
            updated_at_ms: now_ms,
            version: read.version + 1,
            ..read.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use enclosure_policy::escrow::{milestone_pairs, payment_pairs, room_pairs};

    /// The `('machine', 'from', 'to')` lines of a migration's escrow_transitions insert.
    fn pairs_in(sql: &str, machine: &str) -> Vec<(String, String)> {
        let prefix = format!("('{machine}', '");
        let mut out: Vec<(String, String)> = sql
            .lines()
            .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
            .filter_map(|rest| {
                let rest = rest.trim_end_matches([',', ';']).trim_end_matches(')');
                let (from, to) = rest.split_once("', '")?;
                Some((from.to_string(), to.trim_end_matches('\'').to_string()))
            })
            .collect();
        out.sort();
        out
    }

    fn owned(v: Vec<(&'static str, &'static str)>) -> Vec<(String, String)> {
        v.into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn escrow_migration_pairs_match_the_policy_tables() {
        for sql in [
            include_str!("../../migrations/postgres/0010_escrow.sql"),
            include_str!("../../migrations/sqlite/0010_escrow.sql"),
        ] {
            assert_eq!(pairs_in(sql, "milestone"), owned(milestone_pairs()));
            assert_eq!(pairs_in(sql, "room"), owned(room_pairs()));
            assert_eq!(pairs_in(sql, "payment"), owned(payment_pairs()));
        }
    }
}
