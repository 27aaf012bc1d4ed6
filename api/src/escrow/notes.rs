//! Reviewer notes: a reviewer (for example an AI assistant) annotates a room; the notes are
//! informational metadata that no rule reads (threat T6: AI is read-only, its output is
//! stored as information and triggers nothing).

use serde::{Deserialize, Serialize};

use super::{Escrow, Subject, viewer};
use crate::ApiError;
use crate::auth::{Caller, Role};
use crate::store::escrow::NoteRecord;

/// Longest note, in characters.
pub const MAX_NOTE_LEN: usize = 4000;

/// Body of a new note.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNote {
    /// The milestone it is about, if one (of the same room).
    pub milestone_id: Option<String>,
    /// The text, 1 to 4000 characters.
    pub body: String,
}

/// A note as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NoteView {
    /// Note id.
    pub id: String,
    /// The room.
    pub room_id: String,
    /// The milestone, if one.
    pub milestone_id: Option<String>,
    /// The reviewer who wrote it.
    pub author: String,
    /// The text.
    pub body: String,
    /// When, unix ms.
    pub created_at_ms: i64,
}

impl From<&NoteRecord> for NoteView {
    fn from(n: &NoteRecord) -> Self {
        NoteView {
            id: n.id.clone(),
            room_id: n.room_id.clone(),
            milestone_id: n.milestone_id.clone(),
            author: n.author.clone(),
            body: n.body.clone(),
            created_at_ms: n.created_at_ms,
        }
    }
}

impl Escrow<'_> {
    /// A reviewer adds a note to a room they can read; everyone else gets 403.
    pub async fn add_note(
        &self,
        caller: &Caller,
        room_id: &str,
        new: NewNote,
    ) -> Result<NoteView, ApiError> {
        let mut subject = Subject {
            room_id: Some(room_id.to_string()),
            milestone_id: new.milestone_id.clone(),
            ..Subject::default()
        };
        let result = async {
            if caller.role != Role::Reviewer {
                return Err(ApiError::Forbidden);
            }
            let body = new.body.trim();
            if body.is_empty() || body.chars().count() > MAX_NOTE_LEN {
                return Err(ApiError::BadRequest(format!(
                    "a note is 1 to {MAX_NOTE_LEN} characters"
                )));
            }
            let (_, milestones) = self
                .store
                .room(viewer(caller), room_id)
                .await?
                .ok_or(ApiError::NotFound)?;
            subject.visible = true;
            if let Some(m) = &new.milestone_id
                && !milestones.iter().any(|x| &x.id == m)
            {
                return Err(ApiError::NotFound);
            }
            let note = self
                .store
                .add_note(
                    viewer(caller),
                    room_id,
                    new.milestone_id.as_deref(),
                    body,
                    self.now_ms,
                )
                .await?;
            Ok(NoteView::from(&note))
        }
        .await;
        self.audit_as(caller, "escrow.note.add", &subject, &result)
            .await;
        result
    }

    /// A room's notes, for whoever may read the room.
    pub async fn notes(&self, caller: &Caller, room_id: &str) -> Result<Vec<NoteView>, ApiError> {
        self.store
            .room(viewer(caller), room_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        Ok(self
            .store
            .notes(viewer(caller), room_id)
            .await?
            .iter()
            .map(NoteView::from)
            .collect())
    }
}
