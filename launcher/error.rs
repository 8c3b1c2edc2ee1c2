//! User-facing errors: one sentence of what failed and, where known, a hint.
//!
//! Library errors are typed (thiserror); the binary wraps them with context
//! (anyhow). A [`Hinted`] anywhere in the chain supplies the `hint:` line.

use std::fmt;

/// An error with a fix to show the user.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
    /// Exit status to use instead of 125 (126/127 when exec failed).
    pub status: Option<i32>,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// Builds a hinted error.
pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted { message: message.into(), hint: hint.into(), status: None })
}

/// Builds a hinted error with its own exit status.
pub fn hinted_status(message: impl Into<String>, hint: impl Into<String>, status: i32) -> anyhow::Error {
    anyhow::Error::new(Hinted { message: message.into(), hint: hint.into(), status: Some(status) })
}

/// The exit status an error asks for.
pub fn status_of(err: &anyhow::Error) -> i32 {
    err.chain().find_map(|c| c.downcast_ref::<Hinted>().and_then(|h| h.status)).unwrap_or(EXIT_CNS)
}

/// Bails out with a hinted error.
#[macro_export]
macro_rules! bail_hint {
    ($hint:expr, $($arg:tt)*) => {
        return Err($crate::error::hinted(format!($($arg)*), $hint))
    };
}

/// Exit status for failures of cns itself (as `env`, `podman run`).
pub const EXIT_CNS: i32 = 125;
/// The command was found but could not be executed.
pub const EXIT_CANNOT_EXEC: i32 = 126;
/// The command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Renders an error chain as one line, and its hint.
pub fn render(err: &anyhow::Error) -> (String, Option<String>) {
    let mut parts: Vec<String> = Vec::new();
    let mut hint = None;
    for cause in err.chain() {
        if let Some(h) = cause.downcast_ref::<Hinted>() {
            hint.get_or_insert_with(|| h.hint.clone());
        }
        if let Some(h) = cause.downcast_ref::<cns_engine::CriuError>() {
            hint.get_or_insert_with(|| h.hint().to_string());
        }
        if let Some(h) = cause.downcast_ref::<cns_mounts::MountError>() {
            hint.get_or_insert_with(|| h.hint().to_string());
        }
        let s = cause.to_string();
        // Skip a cause already contained in the previous text.
        if parts.last().is_some_and(|p| p.contains(&s)) {
            continue;
        }
        parts.push(s);
    }
    (parts.join(": "), hint)
}
