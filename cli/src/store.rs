//! Opening the store and naming records in it.

use token_store::{
    ClientKey, KeyKind, MCP_AGENT_REDIS_VAR, STORE_URL_VAR, StorageKey, StoreUrl, TokenKey,
    TokenStore,
};

use crate::args::KeyArgs;
use crate::exit::{CliResult, Failure};
use crate::input;
use crate::out::shell_quote;

/// Where the store URL came from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `--store`.
    Flag,
    /// `TOKEN_STORE_URL` (through `--store`'s environment fallback).
    Env,
    /// Auto-detection (`token_store::auto`): `OAUTH_REDIS_URL`, the keychain or the file.
    Auto,
}

/// An open store, with what to tell the user about it.
pub(crate) struct Opened {
    pub(crate) store: TokenStore,
    /// The URL, secrets hidden.
    pub(crate) url: String,
    /// Why this store, one line per candidate considered.
    pub(crate) reasons: Vec<String>,
    pub(crate) origin: Origin,
    /// Whether the URL holds a secret (so it cannot be printed as given).
    secret_in_url: bool,
    /// The file store's directory, to name unreadable files by path.
    pub(crate) file_dir: Option<std::path::PathBuf>,
}

impl Opened {
    /// Whether `OAUTH_REDIS_URL` (mcp-agent's switch) chose this store.
    pub(crate) fn via_mcp_agent_var(&self) -> bool {
        self.origin == Origin::Auto
            && self
                .reasons
                .iter()
                .any(|r| r.starts_with(&format!("{MCP_AGENT_REDIS_VAR} is set")))
    }

    /// The `tokenstore` invocation that reaches this same store again: `--store` with the
    /// URL when it came from the command line (a password in it stays hidden: the user puts
    /// it back), nothing when the environment or auto-detection will find it again.
    pub(crate) fn tokenstore(&self) -> String {
        match self.origin {
            Origin::Flag => format!("tokenstore --store {}", shell_quote(&self.url)),
            Origin::Env | Origin::Auto => "tokenstore".to_owned(),
        }
    }

    /// Whether [`Opened::tokenstore`] shows a hidden password that must be put back.
    pub(crate) fn command_hides_secret(&self) -> bool {
        self.origin == Origin::Flag && self.secret_in_url
    }

    /// The exact command that deletes the record at `key`.
    pub(crate) fn delete_command(&self, key: &StorageKey) -> String {
        format!(
            "{} delete --key {}",
            self.tokenstore(),
            shell_quote(&key.encode())
        )
    }
}

/// Opens the store `--store` (or `TOKEN_STORE_URL`) names, else the one auto-detection picks.
pub(crate) async fn open(store: Option<&str>) -> CliResult<Opened> {
    match store {
        Some(url) => {
            let parsed = StoreUrl::parse(url)?;
            let from_env = std::env::var(STORE_URL_VAR).is_ok_and(|v| v == url);
            let store = token_store::open(url).await?;
            let redacted = parsed.redacted();
            Ok(Opened {
                store,
                secret_in_url: redacted != parsed.as_str(),
                file_dir: file_dir(&parsed),
                url: redacted,
                reasons: vec![if from_env {
                    format!("{STORE_URL_VAR} is set")
                } else {
                    "--store was given".to_owned()
                }],
                origin: if from_env { Origin::Env } else { Origin::Flag },
            })
        }
        None => {
            let s = token_store::auto().await?;
            let parsed = StoreUrl::parse(&s.url).ok();
            Ok(Opened {
                store: s.store,
                secret_in_url: false,
                file_dir: parsed.as_ref().and_then(file_dir),
                url: s.url,
                reasons: s.reasons,
                origin: Origin::Auto,
            })
        }
    }
}

fn file_dir(url: &StoreUrl) -> Option<std::path::PathBuf> {
    (url.kind() == token_store::BackendKind::File)
        .then(|| url.path().ok())
        .flatten()
}

/// A record named on the command line.
pub(crate) enum Target {
    /// A token record: the canonical key, and the key exactly as typed when that differs
    /// (a record another program wrote with a non-canonical URL is found by it).
    Token {
        key: TokenKey,
        as_typed: Option<TokenKey>,
    },
    /// A client registration (only through `--key`).
    Client(ClientKey),
}

/// Decodes a storage key as `list` and `status` print it.
pub(crate) fn decode_key(encoded: &str) -> CliResult<StorageKey> {
    StorageKey::decode(encoded.trim()).ok_or_else(|| {
        Failure::usage(format!(
            "--key \"{}\" is not a storage key as `tokenstore list` prints it",
            crate::out::clean(encoded)
        ))
    })
}

/// The record `args` name. Parts are checked: the server and issuer must be http(s) URLs,
/// scopes RFC 6749 scope tokens.
pub(crate) fn target(args: &KeyArgs) -> CliResult<Target> {
    if let Some(encoded) = &args.key {
        let key = decode_key(encoded)?;
        return match key.kind() {
            KeyKind::Token => Ok(Target::Token {
                key: TokenKey::from_storage_key(&key)
                    .ok_or_else(|| Failure::usage("--key is not a token key"))?,
                as_typed: None,
            }),
            KeyKind::Client => Ok(Target::Client(
                ClientKey::from_storage_key(&key)
                    .ok_or_else(|| Failure::usage("--key is not a client key"))?,
            )),
            other => Err(Failure::usage(format!(
                "--key names a {} entry; only token records and client registrations are addressed here",
                other.as_str()
            ))),
        };
    }
    let Some(server) = &args.server else {
        return Err(Failure::usage("give --server URL or --key STORAGE_KEY"));
    };
    input::http_url("--server", server)?;
    if let Some(issuer) = &args.issuer {
        input::http_url("--issuer", issuer)?;
    }
    let scopes = input::scopes(&args.scopes)?;
    let user = args
        .user
        .as_deref()
        .unwrap_or(token_store::DEFAULT_USER_KEY);
    if user.is_empty() {
        return Err(Failure::usage("--user is empty"));
    }
    let key = TokenKey::new(user, server, args.issuer.as_deref(), &scopes);
    let typed = StorageKey::new(
        KeyKind::Token,
        vec![
            user.to_owned(),
            server.clone(),
            args.issuer.clone().unwrap_or_default(),
            key.scope_fingerprint().to_owned(),
        ],
    )
    .ok()
    .and_then(|k| TokenKey::from_storage_key(&k))
    .filter(|k| *k != key);
    Ok(Target::Token {
        key,
        as_typed: typed,
    })
}

/// The token key `args` name, for commands that work on token records only.
pub(crate) fn token_target(args: &KeyArgs) -> CliResult<(TokenKey, Option<TokenKey>)> {
    match target(args)? {
        Target::Token { key, as_typed } => Ok((key, as_typed)),
        Target::Client(_) => Err(Failure::usage(
            "--key names a client registration; this command works on token records",
        )),
    }
}

/// Reads the token record at `key`, else at the key as typed; `NotFound` names the key.
pub(crate) async fn find_token(
    store: &TokenStore,
    key: TokenKey,
    as_typed: Option<TokenKey>,
) -> CliResult<(TokenKey, token_store::Versioned<token_store::TokenRecord>)> {
    if let Some(found) = store.get(&key).await? {
        return Ok((key, found));
    }
    if let Some(typed) = as_typed
        && let Some(found) = store.get(&typed).await?
    {
        return Ok((typed, found));
    }
    Err(not_found(store, &key.storage_key()))
}

/// "no record" for `key`, with where to look.
pub(crate) fn not_found(store: &TokenStore, key: &StorageKey) -> Failure {
    Failure::new(
        crate::exit::Code::NotFound,
        format!(
            "{}: no record at {} (`tokenstore list` shows the stored keys; --key addresses one exactly)",
            store.backend(),
            crate::out::clean(&key.encode())
        ),
    )
}
