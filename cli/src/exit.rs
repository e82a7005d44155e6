//! Exit codes by error kind, the same for every command (the table in `docs/cli.md` and in
//! `tokenstore --help`), and the one failure type commands return.

use token_store::Error;

use crate::out::one_line;

/// What went wrong, as a script sees it: the process exit code and the `kind` of a `--json`
/// error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Code {
    /// Success.
    Ok,
    /// A failure no other code covers (a backend error of no known kind).
    Failure,
    /// Bad arguments or bad input; nothing was written.
    Usage,
    /// No such record.
    NotFound,
    /// The record exists already, or changed since it was read.
    Conflict,
    /// The store or the issuer is down, unreachable or timed out: retrying may work.
    Unavailable,
    /// Stored bytes (or a bundle) are damaged, tampered with or not ours.
    Corrupt,
    /// Access refused: file permissions, a locked keyring, a wrong key or passphrase, the
    /// issuer refusing our client credentials.
    Permission,
    /// The store or tool is misconfigured: a bad store URL, a missing variable or file.
    Config,
    /// The issuer answered a revocation with an OAuth error.
    Refused,
    /// `status` only: at least one record needs a new login.
    NeedsLogin,
}

impl Code {
    /// Every code, in table order.
    pub(crate) const ALL: [Code; 11] = [
        Code::Ok,
        Code::Failure,
        Code::Usage,
        Code::NotFound,
        Code::Conflict,
        Code::Unavailable,
        Code::Corrupt,
        Code::Permission,
        Code::Config,
        Code::Refused,
        Code::NeedsLogin,
    ];

    /// The process exit code.
    pub(crate) fn number(self) -> u8 {
        match self {
            Code::Ok => 0,
            Code::Failure => 1,
            Code::Usage => 2,
            Code::NotFound => 3,
            Code::Conflict => 4,
            Code::Unavailable => 5,
            Code::Corrupt => 6,
            Code::Permission => 7,
            Code::Config => 8,
            Code::Refused => 9,
            Code::NeedsLogin => 10,
        }
    }

    /// The `kind` of a `--json` error.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Failure => "failure",
            Code::Usage => "usage",
            Code::NotFound => "not_found",
            Code::Conflict => "conflict",
            Code::Unavailable => "unavailable",
            Code::Corrupt => "corrupt",
            Code::Permission => "permission",
            Code::Config => "config",
            Code::Refused => "refused",
            Code::NeedsLogin => "needs_login",
        }
    }

    /// What the code means, for the help text.
    pub(crate) fn meaning(self) -> &'static str {
        match self {
            Code::Ok => "success",
            Code::Failure => "a failure of no other kind",
            Code::Usage => "bad arguments or input (nothing was written)",
            Code::NotFound => "no such record",
            Code::Conflict => "the record exists, or changed since it was read",
            Code::Unavailable => "store or issuer down, unreachable or timed out",
            Code::Corrupt => "damaged, tampered or foreign data (record or bundle)",
            Code::Permission => "access refused: file modes, locked keyring, wrong key",
            Code::Config => "misconfiguration: store URL, variable, missing file",
            Code::Refused => "the issuer refused the revocation",
            Code::NeedsLogin => "status: a record needs a new login",
        }
    }

    /// The exit code of a store error.
    pub(crate) fn of(e: &Error) -> Code {
        match e {
            Error::NotFound { .. } => Code::NotFound,
            Error::Conflict { .. } => Code::Conflict,
            Error::Unavailable { .. } => Code::Unavailable,
            Error::PermissionDenied { .. } | Error::Locked { .. } | Error::WrongKey { .. } => {
                Code::Permission
            }
            Error::Integrity { .. } | Error::Corrupt { .. } => Code::Corrupt,
            Error::InvalidKey { .. } | Error::InvalidInput { .. } | Error::TooLarge { .. } => {
                Code::Usage
            }
            Error::Config { .. } => Code::Config,
            _ => Code::Failure,
        }
    }
}

/// The exit-code table as `tokenstore --help` shows it.
pub(crate) fn help_table() -> String {
    let mut out = String::from("Exit codes (the same for every command):\n");
    for code in Code::ALL {
        out.push_str(&format!(
            "  {:>2}  {:<12} {}\n",
            code.number(),
            code.kind(),
            code.meaning()
        ));
    }
    out
}

/// A failed command: its exit code and one line saying what went wrong (no secret).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(Code::Usage, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            code: Code::of(&e),
            message: one_line(&e),
        }
    }
}

pub(crate) type CliResult<T> = Result<T, Failure>;
