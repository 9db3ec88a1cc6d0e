//! What a command can end with, and the exit code each maps to: 0 ok, 1 verification
//! failed or something found wrong, 2 bad arguments, 3 NATS unavailable or another
//! runtime error. Scripts rely on these codes; they are listed in `--help` and the README.

use std::fmt;

/// Exit code of a successful run.
pub const EXIT_OK: u8 = 0;
/// Exit code when verification failed or the command found something wrong (a
/// broken chain, a missing case, a refused replay).
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit code for bad arguments (clap uses it for its own errors too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when NATS is unavailable or another runtime error occurred.
pub const EXIT_RUNTIME: u8 = 3;

/// How a command that ran to its end came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything as it should be.
    Ok,
    /// The command ran but found problems (exit code 1).
    Problems,
}

impl Outcome {
    /// `Problems` when `found` is true.
    pub fn problems_if(found: bool) -> Self {
        if found { Self::Problems } else { Self::Ok }
    }

    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Ok => EXIT_OK,
            Self::Problems => EXIT_PROBLEMS,
        }
    }
}

/// The kinds of failure, each with its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad arguments: exit 2.
    Usage,
    /// The command refused to act on what it found (exit 1): e.g. a replay while the
    /// consumer is pulling.
    Refused,
    /// NATS unavailable, a file unreadable, the server refusing: exit 3.
    Runtime,
    /// Standard output was closed by the reader (`| head`): stop quietly, exit 0.
    BrokenPipe,
}

/// A command's failure: what happened, in words an operator can act on, and why.
#[derive(Debug)]
pub struct CliError {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl CliError {
    /// Bad arguments, named in `message`.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Usage,
            message: message.into(),
            source: None,
        }
    }

    /// The command refused to act.
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Refused,
            message: message.into(),
            source: None,
        }
    }

    /// A runtime failure without an underlying error.
    pub fn runtime(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Runtime,
            message: message.into(),
            source: None,
        }
    }

    /// A runtime failure caused by `source`.
    pub fn caused(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind: ErrorKind::Runtime,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A runtime failure described entirely by `source` and its causes.
    pub fn from_source(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            kind: ErrorKind::Runtime,
            message: String::new(),
            source: Some(Box::new(source)),
        }
    }

    /// Standard output is gone.
    pub fn broken_pipe() -> Self {
        Self {
            kind: ErrorKind::BrokenPipe,
            message: "standard output closed".into(),
            source: None,
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            ErrorKind::Usage => EXIT_USAGE,
            ErrorKind::Refused => EXIT_PROBLEMS,
            ErrorKind::Runtime => EXIT_RUNTIME,
            ErrorKind::BrokenPipe => EXIT_OK,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut first = self.message.is_empty();
        // The whole cause chain, so "connection refused" reaches the operator.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = self
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(err) = cause {
            if first {
                write!(f, "{err}")?;
                first = false;
            } else {
                write!(f, ": {err}")?;
            }
            cause = err.source();
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

impl From<std::io::Error> for CliError {
    fn from(err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            Self::broken_pipe()
        } else {
            Self::caused("writing output failed", err)
        }
    }
}

impl From<casebus_bus::ops::OpsError> for CliError {
    fn from(err: casebus_bus::ops::OpsError) -> Self {
        use casebus_bus::ops::OpsError;
        match err {
            OpsError::Invalid { .. } => Self::usage(err.to_string()),
            OpsError::ConsumerMissing { .. } | OpsError::NotResettable { .. } => {
                Self::refused(err.to_string())
            }
            other => Self::from_source(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_carries_the_whole_cause_chain() {
        let inner = std::io::Error::other("connection refused");
        let err = CliError::caused("cannot reach NATS at nats://x:1", inner);
        assert_eq!(
            err.to_string(),
            "cannot reach NATS at nats://x:1: connection refused"
        );
        assert_eq!(err.exit_code(), EXIT_RUNTIME);
    }

    #[test]
    fn each_kind_has_its_documented_exit_code() {
        assert_eq!(CliError::usage("x").exit_code(), 2);
        assert_eq!(CliError::refused("x").exit_code(), 1);
        assert_eq!(CliError::runtime("x").exit_code(), 3);
        assert_eq!(CliError::broken_pipe().exit_code(), 0);
        assert_eq!(Outcome::problems_if(true).exit_code(), 1);
        assert_eq!(Outcome::problems_if(false).exit_code(), 0);
    }
}
