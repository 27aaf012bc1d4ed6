//! Reviewer notes on a room: informational, append-only, never a state change (threat T6).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::super::{Store, StoreError};
use super::Viewer;

/// A stored note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteRecord {
    /// Note id (UUIDv4).
    pub id: String,
    /// The room it is about.
    pub room_id: String,
    /// The milestone it is about, if one.
    pub milestone_id: Option<String>,
    /// Who wrote it (a reviewer's subject).
    pub author: String,
    /// The text.
    pub body: String,
    /// When, unix ms.
    pub created_at_ms: i64,
}

fn note_from(r: &AnyRow) -> Result<NoteRecord, StoreError> {
    Ok(NoteRecord {
        id: r.try_get("id")?,
        room_id: r.try_get("room_id")?,
        milestone_id: r.try_get("milestone_id")?,
        author: r.try_get("author")?,
        body: r.try_get("body")?,
        created_at_ms: r.try_get("created_at_ms")?,
    })
}

impl Store {
    /// Appends a note by `viewer` (on PostgreSQL row-level security admits reviewers only).
    pub async fn add_note(
        &self,
        viewer: Viewer<'_>,
        room_id: &str,
        milestone_id: Option<&str>,
        body: &str,
        now_ms: i64,
    ) -> Result<NoteRecord, StoreError> {
        let note = NoteRecord {
            id: uuid::Uuid::new_v4().to_string(),
            room_id: room_id.to_string(),
            milestone_id: milestone_id.map(str::to_string),
            author: viewer.sub.to_string(),
            body: body.to_string(),
            created_at_ms: now_ms,
        };
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        sqlx::query(
            "INSERT INTO escrow_notes (id, room_id, milestone_id, author, body, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&note.id)
        .bind(&note.room_id)
        .bind(note.milestone_id.as_deref())
        .bind(&note.author)
        .bind(&note.body)
        .bind(note.created_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(note)
    }

    /// A room's notes, oldest first (the caller checked that `viewer` sees the room).
    pub async fn notes(
        &self,
        viewer: Viewer<'_>,
        room_id: &str,
    ) -> Result<Vec<NoteRecord>, StoreError> {
        let mut tx = self.scoped(viewer.sub, viewer.role).await?;
        let rows = sqlx::query(
            "SELECT id, room_id, milestone_id, author, body, created_at_ms FROM escrow_notes \
             WHERE room_id = $1 ORDER BY created_at_ms, id",
        )
        .bind(room_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(note_from).collect()
    }
}
