//! The parts of a configuration: hosts, the password's source, `sslmode`,
//! `target_session_attrs`.

use std::fmt;
use std::path::PathBuf;

use token_store_core::Secret;

/// One server to try, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Host {
    /// A host name or IP address, and a TCP port.
    Tcp {
        /// The host name (also the name a certificate is checked against) or address.
        name: String,
        /// The TCP port.
        port: u16,
    },
    /// A Unix-domain socket: the directory holding `.s.PGSQL.<port>`. Never TLS (the
    /// connection does not leave the machine, as with libpq).
    Unix {
        /// The socket directory.
        dir: PathBuf,
        /// The port in the socket's file name.
        port: u16,
    },
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp { name, port } if name.contains(':') => write!(f, "[{name}]:{port}"),
            Host::Tcp { name, port } => write!(f, "{name}:{port}"),
            Host::Unix { dir, port } => write!(f, "{}:{port}", dir.display()),
        }
    }
}

/// Where the password comes from. `Debug` never shows a password.
#[derive(Clone)]
#[non_exhaustive]
pub enum Password {
    /// Given (in code, or in the URL's user info).
    Given(Secret),
    /// The environment variable of this name, read when the store is opened.
    Env(String),
    /// This file, read when the store is opened with the checks of a private key (not a
    /// symbolic link, a regular file of ours, mode 0600 or stricter, at most 4 KiB); a
    /// trailing newline is not part of the password.
    File(PathBuf),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Given(_) => f.write_str("Given([REDACTED])"),
            Password::Env(var) => write!(f, "Env({var})"),
            Password::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

/// `sslmode`, as libpq names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, plain otherwise; the certificate is not checked
    /// (libpq's default, so a `DATABASE_URL` behaves as with `psql`). Protects against
    /// eavesdropping only where no one can tamper with the network.
    #[default]
    Prefer,
    /// TLS or nothing. The certificate chain is checked when a CA file is given
    /// (`sslrootcert`), as libpq does; otherwise it is not.
    Require,
    /// TLS, the chain checked against the CA certificates, the host name not.
    VerifyCa,
    /// TLS, the chain and the host name checked: the only mode that authenticates the
    /// server. Use it wherever the network is not yours.
    VerifyFull,
}

impl SslMode {
    pub(crate) const NAMES: [&'static str; 5] =
        ["disable", "prefer", "require", "verify-ca", "verify-full"];

    pub(crate) fn from_name(name: &str) -> SslMode {
        match name {
            "disable" => SslMode::Disable,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => SslMode::Prefer,
        }
    }

    /// The libpq name.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// What a session must allow, when several hosts are given (libpq's `target_session_attrs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetSession {
    /// The first host that accepts the connection.
    Any,
    /// The first host that accepts writes (`transaction_read_only` is off): after a
    /// failover, the new primary. The default, since every store call may write: a session
    /// on a standby would fail every write.
    #[default]
    ReadWrite,
}
