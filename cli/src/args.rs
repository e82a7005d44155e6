//! The command line: every command, its arguments and their help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The top-level help's closing text: environment and exit codes.
fn after_help() -> String {
    format!(
        "Environment:\n  TOKEN_STORE_URL   the store (as --store)\n  OAUTH_REDIS_URL   mcp-agent's switch to Redis, honoured when TOKEN_STORE_URL is unset\n  TOKEN_STORE_PASSPHRASE, TOKEN_STORE_KEY_FILE   the default file store's key\n\n{}\nEvery command takes --json (one JSON document on stdout; docs/cli.md has the schemas).",
        crate::exit::help_table()
    )
}

#[derive(Parser)]
#[command(
    name = "tokenstore",
    version,
    about = "Inspect and manage MCP OAuth token stores",
    long_about = "Inspect and manage MCP OAuth token stores: see what is stored and what needs a \
                  login, put and remove records, log out with revocation at the issuer, move \
                  tokens between stores and machines, and check a store.\n\nTokens are shown \
                  redacted (first and last four characters) unless --reveal is given.",
    after_help = after_help(),
)]
pub(crate) struct Cli {
    /// The store URL: memory:, file://DIR?key_file=K, sqlite://PATH, redis://HOST:PORT/,
    /// vault://HOST:PORT/MOUNT, keychain:, postgres://... Default: TOKEN_STORE_URL, else
    /// OAUTH_REDIS_URL, else the OS keychain, else the encrypted file store.
    #[arg(
        long,
        global = true,
        env = "TOKEN_STORE_URL",
        hide_env_values = true,
        value_name = "URL",
        help_heading = "Global options"
    )]
    pub(crate) store: Option<String>,

    /// Print one JSON document on stdout instead of text (schemas in docs/cli.md).
    #[arg(long, global = true, help_heading = "Global options")]
    pub(crate) json: bool,

    /// Log store calls to stderr (values are never logged).
    #[arg(long, global = true, help_heading = "Global options")]
    pub(crate) verbose: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// What is stored and what needs a login (never shows a token).
    ///
    /// Every token record with its state (valid, expiring within --within minutes, expired
    /// but refreshable, expired), issuer, scopes and time left, then the entries that cannot
    /// be read, each with the command that deletes it. Exits 10 when a record needs a new
    /// login (expired without a usable refresh token, or unreadable).
    Status {
        /// Count a token expiring within this many minutes as "expiring".
        #[arg(long, default_value_t = 5, value_name = "MINUTES")]
        within: u64,
        /// Only this user's records.
        #[arg(long)]
        user: Option<String>,
    },
    /// List token keys and client registrations, with their storage keys.
    ///
    /// The storage key is what --key takes: any listed record can be read and deleted by it,
    /// even one another program wrote with a non-canonical URL.
    List {
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
        /// Only tokens for this resource (canonicalised).
        #[arg(long, value_name = "URL")]
        resource: Option<String>,
    },
    /// Show one token record (or client registration, with --key).
    ///
    /// Tokens and secrets are shown redacted unless --reveal. A missing record exits 3.
    Get {
        /// Show tokens and secrets in full.
        #[arg(long)]
        reveal: bool,
        #[command(flatten, next_help_heading = "Record")]
        key: KeyArgs,
    },
    /// Store a token record read as JSON from stdin or --file.
    ///
    /// The JSON is a token record (mcp-agent's shape) or an OAuth token response (its
    /// expires_in becomes expires_at, its scope becomes scopes). It is checked strictly: every
    /// known field must have its type, tokens must be non-empty, URLs http(s), scopes RFC 6749
    /// scope tokens; unknown fields are kept as they are. Nothing is written when it is
    /// refused (exit 2). The record's resource and authorization_server are set from the key.
    Put {
        /// Read the JSON from this file instead of stdin.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Only create: fail (exit 4) if a record exists.
        #[arg(long)]
        create: bool,
        #[command(flatten, next_help_heading = "Record")]
        key: KeyArgs,
    },
    /// Delete one token record (or client registration, with --key).
    ///
    /// A missing record exits 3, as for get.
    Delete {
        #[command(flatten, next_help_heading = "Record")]
        key: KeyArgs,
    },
    /// Log out: delete a token record, revoking its tokens at the issuer first with --revoke.
    ///
    /// With --revoke, the refresh token and then the access token are revoked (RFC 7009) at
    /// the endpoint the issuer's RFC 8414 metadata advertises (or --revocation-endpoint). A
    /// failed revocation keeps the record unless --force. The record is deleted only if it is
    /// still the version whose tokens were revoked: if another process refreshed it
    /// meanwhile, it is kept (exit 4) and logout can be run again.
    Logout {
        #[command(flatten, next_help_heading = "Record")]
        key: KeyArgs,
        #[command(flatten, next_help_heading = "Revocation")]
        revoke: RevokeArgs,
    },
    /// Copy every token and client registration to another store.
    ///
    /// Each copy is read back and compared. Safe to re-run: records already identical are
    /// left alone.
    Migrate {
        /// The destination store URL.
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Write every token and client registration to one encrypted bundle.
    ///
    /// The bundle is sealed with XChaCha20-Poly1305 under a key from a passphrase (Argon2id)
    /// or a 32-byte key file; import reads it into any store, on any machine. Entries that
    /// cannot be read are left out and listed (exit 6; the bundle holds the rest).
    Export {
        /// The bundle to write (created 0600; never overwritten). `-` writes to stdout.
        #[arg(long, short, value_name = "PATH")]
        output: PathBuf,
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten, next_help_heading = "Bundle key (one of)")]
        key: BundleKeyArgs,
    },
    /// Read a bundle written by export into this store.
    ///
    /// Creates only: a record that exists with other content is skipped (exit 4) unless
    /// --overwrite; an identical one is "unchanged". Every record is read back and compared,
    /// and reported.
    Import {
        /// The bundle to read. `-` reads stdin.
        #[arg(long, short, value_name = "PATH")]
        input: PathBuf,
        /// Replace records that exist.
        #[arg(long)]
        overwrite: bool,
        #[command(flatten, next_help_heading = "Bundle key (one of)")]
        key: BundleKeyArgs,
    },
    /// Check the store: which one, why, its guarantees, and a timed round trip.
    ///
    /// Says which store auto-detection picks and why (TOKEN_STORE_URL, OAUTH_REDIS_URL, the
    /// OS keychain probe, the encrypted file), how far compare-and-swap reaches, whether
    /// refreshes are safe across the processes sharing the store, then times a
    /// put / get / compare-and-swap / delete round trip of a probe record.
    Doctor,
    /// Re-encrypt an encrypted file store under a new key.
    ///
    /// Crash-safe: a crash leaves the store under either the old key or the new one, complete.
    Rekey {
        /// The new key file (created 0600 with a random key if it does not exist).
        #[arg(long, value_name = "PATH", conflicts_with = "new_passphrase_env")]
        new_key_file: Option<PathBuf>,
        /// The environment variable holding the new passphrase.
        #[arg(long, value_name = "VAR")]
        new_passphrase_env: Option<String>,
    },
    /// Time the store's operations: median, p99 and ops/s.
    ///
    /// Times get (hit and miss), put, compare-and-swap put, delete and a list of 100 through
    /// the typed API. Writes only records of its own (users named `tsbench-<pid>-...`) and
    /// deletes them afterwards.
    Bench {
        /// Timed calls per operation (a tenth of it for the list).
        #[arg(long, default_value_t = 1000)]
        ops: usize,
    },
    /// Print a shell completion script.
    ///
    /// For example: `tokenstore completions bash > ~/.local/share/bash-completion/completions/tokenstore`,
    /// `tokenstore completions zsh > ~/.zfunc/_tokenstore`,
    /// `tokenstore completions fish > ~/.config/fish/completions/tokenstore.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// The command's name, as in `--json` documents.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Status { .. } => "status",
            Command::List { .. } => "list",
            Command::Get { .. } => "get",
            Command::Put { .. } => "put",
            Command::Delete { .. } => "delete",
            Command::Logout { .. } => "logout",
            Command::Migrate { .. } => "migrate",
            Command::Export { .. } => "export",
            Command::Import { .. } => "import",
            Command::Doctor => "doctor",
            Command::Rekey { .. } => "rekey",
            Command::Bench { .. } => "bench",
            Command::Completions { .. } => "completions",
        }
    }
}

/// Which record: built from its parts (canonicalised, as applications build keys) or given
/// exactly as `list` and `status` print it.
#[derive(Args, Clone)]
pub(crate) struct KeyArgs {
    /// The MCP server (resource) URL, http or https.
    #[arg(long, value_name = "URL", required_unless_present = "key")]
    pub(crate) server: Option<String>,
    /// The user key (default: the single-user key mcp-agent uses).
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// The authorization server (issuer) URL, http or https.
    #[arg(long, value_name = "URL")]
    pub(crate) issuer: Option<String>,
    /// Scopes of the key (repeat or space-separate).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub(crate) scopes: Vec<String>,
    /// The storage key exactly as `list` or `status` prints it (addresses records whose
    /// parts are not canonical, and client registrations).
    #[arg(long, value_name = "STORAGE_KEY", conflicts_with_all = ["server", "user", "issuer", "scopes"])]
    pub(crate) key: Option<String>,
}

/// Where a bundle's key comes from: exactly one of a passphrase (in a variable or a file)
/// or a key file.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct BundleKeyArgs {
    /// The environment variable holding the bundle's passphrase (Argon2id).
    #[arg(long, value_name = "VAR")]
    pub(crate) passphrase_env: Option<String>,
    /// A file (mode 0600) holding the bundle's passphrase (Argon2id).
    #[arg(long, value_name = "PATH")]
    pub(crate) passphrase_file: Option<PathBuf>,
    /// A 32-byte key file (mode 0600). Export creates it with a random key if missing.
    #[arg(long, value_name = "PATH")]
    pub(crate) key_file: Option<PathBuf>,
}

/// How `logout` revokes.
#[derive(Args)]
pub(crate) struct RevokeArgs {
    /// Revoke the refresh and access tokens at the issuer before deleting the record. The
    /// revocation endpoint comes from the issuer's RFC 8414 metadata unless given.
    #[arg(long)]
    pub(crate) revoke: bool,
    /// The revocation endpoint (skips discovery).
    #[arg(long, value_name = "URL", requires = "revoke")]
    pub(crate) revocation_endpoint: Option<String>,
    /// The issuer, when the record does not name one.
    #[arg(long, value_name = "URL", requires = "revoke")]
    pub(crate) revoke_issuer: Option<String>,
    /// The client id to authenticate with (default: the record's, with the secret of the
    /// matching client registration in the store).
    #[arg(long, value_name = "ID", requires = "revoke")]
    pub(crate) client_id: Option<String>,
    /// The environment variable holding the client secret.
    #[arg(long, value_name = "VAR", requires = "revoke")]
    pub(crate) client_secret_env: Option<String>,
    /// Delete the record even if revocation fails.
    #[arg(long, requires = "revoke")]
    pub(crate) force: bool,
    /// Seconds to wait for each HTTP request to the issuer.
    #[arg(long, value_name = "SECS", default_value_t = 10, requires = "revoke")]
    pub(crate) timeout: u64,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
