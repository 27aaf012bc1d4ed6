//! Object keys: the one place that turns escrow ids into a path inside the bucket.
//!
//! Keys have exactly the form `rooms/{room_id}/milestones/{milestone_id}/{artifact_id}`, and
//! each id is 1–64 characters from `[A-Za-z0-9_-]`. No id can hold `/`, `.`, `%` or `\`, so
//! no key can climb out of its milestone (`..`), name another room, or smuggle an escaped
//! separator past a server that decodes paths. The local store checks the same form on every
//! request, so a signature over some other path is refused even if the secret leaked.

use std::fmt;

use super::error::{ArtifactError, Result};

/// The longest id accepted in one key segment.
const MAX_ID_LEN: usize = 64;

/// A validated object key for one artifact of one milestone of one room.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// The key for `artifact_id` of `milestone_id` in `room_id`; each id is checked.
    pub fn for_artifact(room_id: &str, milestone_id: &str, artifact_id: &str) -> Result<Self> {
        check_id(room_id, "room id")?;
        check_id(milestone_id, "milestone id")?;
        check_id(artifact_id, "artifact id")?;
        Ok(ObjectKey(format!(
            "rooms/{room_id}/milestones/{milestone_id}/{artifact_id}"
        )))
    }

    /// Parses a key read back from storage or from a request path, in the one accepted form.
    pub fn parse(key: &str) -> Result<Self> {
        let mut parts = key.split('/');
        let (Some("rooms"), Some(room), Some("milestones"), Some(milestone), Some(artifact), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ArtifactError::InvalidKey(
                "expected rooms/{room}/milestones/{milestone}/{artifact}",
            ));
        };
        Self::for_artifact(room, milestone, artifact)
    }

    /// The key as the store sees it (no leading slash).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix every artifact of one milestone shares, for listing or cleanup by callers.
    pub fn milestone_prefix(room_id: &str, milestone_id: &str) -> Result<String> {
        check_id(room_id, "room id")?;
        check_id(milestone_id, "milestone id")?;
        Ok(format!("rooms/{room_id}/milestones/{milestone_id}/"))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ObjectKey").field(&self.0).finish()
    }
}

/// Accepts only ids that cannot change the shape of a path once joined with `/`.
fn check_id(id: &str, what: &'static str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ArtifactError::InvalidKey(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_documented_form() {
        let k = ObjectKey::for_artifact("r-1", "m_2", "A3").unwrap();
        assert_eq!(k.as_str(), "rooms/r-1/milestones/m_2/A3");
        assert_eq!(ObjectKey::parse(k.as_str()).unwrap(), k);
    }

    #[test]
    fn refuses_traversal_and_separators() {
        for bad in [
            "..", ".", "", "a/b", "a\\b", "a%2fb", "a.b", "a b", "é", "a\0", "a?x", "a#x",
        ] {
            assert!(ObjectKey::for_artifact(bad, "m", "a").is_err(), "{bad:?}");
            assert!(ObjectKey::for_artifact("r", bad, "a").is_err(), "{bad:?}");
            assert!(ObjectKey::for_artifact("r", "m", bad).is_err(), "{bad:?}");
        }
        assert!(ObjectKey::for_artifact(&"x".repeat(65), "m", "a").is_err());
        assert!(ObjectKey::for_artifact(&"x".repeat(64), "m", "a").is_ok());
    }

    #[test]
    fn parse_accepts_only_the_exact_shape() {
        for bad in [
            "rooms/r/milestones/m",
            "rooms/r/milestones/m/a/b",
            "/rooms/r/milestones/m/a",
            "rooms/r/milestones/m/a/",
            "rooms/r/other/m/a",
            "rooms/../milestones/m/a",
            "rooms/r/milestones/m/..",
            "x/r/milestones/m/a",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
