//! Crash points for the saga tests: a dev-mode api started with `ENCLOSURE_CRASH_AT=<point>`
//! aborts the whole process the first time it reaches that point, exactly as a power cut
//! would, so the tests can prove a saga resumes from what it persisted.
//!
//! Armed only in dev mode ([`arm`] is called with the mode at start); a production api
//! ignores the variable and says so in its log.

use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const CRASH_AT_ENV: &str = "ENCLOSURE_CRASH_AT";

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Reads the crash point from the environment if `dev` is true; call once at start.
pub fn arm(dev: bool) {
    let point = std::env::var(CRASH_AT_ENV).ok().filter(|p| !p.is_empty());
    let point = match (point, dev) {
        (Some(p), true) => {
            tracing::warn!(point = %p, "DEV MODE: this process will abort at a crash point");
            Some(p)
        }
        (Some(_), false) => {
            tracing::warn!("{CRASH_AT_ENV} is ignored outside dev mode");
            None
        }
        (None, _) => None,
    };
    let _ = ARMED.set(point);
}

/// Aborts the process if it was armed with `point`.
pub fn crash_point(point: &str) {
    if let Some(Some(armed)) = ARMED.get()
        && armed == point
    {
        eprintln!("crash point {point} reached: aborting");
        std::process::abort();
    }
}
