//! The library's error: one sentence of what failed, the fix where cns
//! knows it, and the exit status a command line should use. Every
//! operation returns it; nothing in the library prints it.
//!
//! [`ErrorKind`] says what sort of failure it was (bad input, a missing or
//! busy workload, CRIU, ...), so callers can match on it; the message is
//! for people.

use std::fmt;

/// Exit status for failures of cns itself (as `env`, `podman run`).
pub const EXIT_CNS: i32 = 125;
/// The command was found but could not be executed.
pub const EXIT_CANNOT_EXEC: i32 = 126;
/// The command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// What sort of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: a flag, a name, a path, a file's contents.
    Invalid,
    /// No such workload, checkpoint or process.
    NotFound,
    /// The name or object already exists.
    Exists,
    /// Another command holds the workload.
    Busy,
    /// The workload is in the wrong state for the operation.
    State,
    /// Pre-flight found something that would make CRIU fail.
    Blocked,
    /// CRIU failed.
    Criu,
    /// The workload could not be started.
    Start,
    /// An archive was refused.
    Archive,
    /// A system call or the machine failed.
    System,
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure of a cns operation.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
    status: Option<i32>,
    #[source]
    source: Option<Source>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The library's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), hint: None, status: None, source: None }
    }

    /// A system failure with a message.
    pub fn msg(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::System, message)
    }

    /// Bad input, with the fix.
    pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, message).with_hint(hint)
    }

    /// Sets the fix shown to the user.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        let h = hint.into();
        self.hint = (!h.is_empty()).then_some(h);
        self
    }

    /// Sets the kind.
    pub fn with_kind(mut self, kind: ErrorKind) -> Error {
        self.kind = kind;
        self
    }

    /// Sets the exit status (126/127 when the workload's exec failed).
    pub fn with_status(mut self, status: i32) -> Error {
        self.status = Some(status);
        self
    }

    /// Wraps `source` under a message of what was being done.
    pub fn wrap(message: impl Into<String>, source: impl Into<Source>) -> Error {
        let source = source.into();
        let kind = source.downcast_ref::<Error>().map_or(ErrorKind::System, |e| e.kind);
        Error { kind, message: message.into(), hint: None, status: None, source: Some(source) }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The exit status a command line should use.
    pub fn status(&self) -> i32 {
        self.chain_errors().find_map(|e| e.status).unwrap_or(EXIT_CNS)
    }

    fn chain_errors(&self) -> impl Iterator<Item = &Error> {
        std::iter::successors(Some(self as &(dyn std::error::Error + 'static)), |e| e.source()).filter_map(|e| e.downcast_ref::<Error>())
    }

    /// The fix: this error's own, or the first one of its causes.
    pub fn hint(&self) -> Option<String> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(h) = e.downcast_ref::<Error>().and_then(|x| x.hint.clone()) {
                return Some(h);
            }
            if let Some(c) = e.downcast_ref::<cns_engine::CriuError>() {
                return Some(c.hint().to_string());
            }
            if let Some(m) = e.downcast_ref::<cns_mounts::MountError>() {
                return Some(m.hint().to_string());
            }
            cur = e.source();
        }
        None
    }

    /// The whole chain as one line: each cause once.
    pub fn one_line(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            let s = e.to_string();
            if !parts.last().is_some_and(|p| p.contains(&s)) && !s.is_empty() {
                parts.push(s);
            }
            cur = e.source();
        }
        parts.join(": ")
    }
}

macro_rules! from_system {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error { kind: ErrorKind::System, message: String::new(), hint: None, status: None, source: Some(Box::new(e)) }
                    .named()
            }
        }
    )*};
}

impl Error {
    /// A wrapped source whose message is its own.
    fn named(mut self) -> Error {
        if let Some(s) = &self.source {
            self.message = s.to_string();
        }
        self
    }
}

from_system!(
    std::io::Error,
    nix::Error,
    serde_json::Error,
    cns_engine::CriuError,
    cns_engine::RpcError,
    cns_engine::ImageError,
    cns_netns::NetError,
    cns_netns::LeaseError,
    cns_mounts::MountError,
    caps::errors::CapsError
);

/// `.context("what was being done")` on any result.
pub trait Context<T> {
    fn context(self, message: impl Into<String>) -> Result<T>;
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<Source>> Context<T> for std::result::Result<T, E> {
    fn context(self, message: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::wrap(message, e))
    }
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::wrap(f(), e))
    }
}

/// Returns an [`ErrorKind::Invalid`]-style error with a hint:
/// `bail_hint!(hint, "format", args)`; `bail_hint!(kind: K, hint, ...)`.
#[macro_export]
macro_rules! bail_hint {
    (kind: $kind:expr, $hint:expr, $($arg:tt)*) => {
        return Err($crate::error::Error::new($kind, format!($($arg)*)).with_hint($hint))
    };
    ($hint:expr, $($arg:tt)*) => {
        return Err($crate::error::Error::invalid(format!($($arg)*), $hint))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_renders_each_cause_once_and_keeps_the_first_hint() {
        let inner = Error::invalid("bad thing", "do this").with_status(127);
        let outer: Result<()> = Err(inner).context("cannot start");
        let e = outer.expect_err("err");
        assert_eq!(e.one_line(), "cannot start: bad thing");
        assert_eq!(e.hint().as_deref(), Some("do this"));
        assert_eq!(e.status(), 127);
        assert_eq!(e.kind(), ErrorKind::Invalid);
        let io: Result<()> = Err(std::io::Error::other("disk on fire")).context("cannot write x");
        assert_eq!(io.expect_err("err").one_line(), "cannot write x: disk on fire");
    }
}
