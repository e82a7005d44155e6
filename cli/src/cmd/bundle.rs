//! `export` / `import`: tokens and client registrations moved between machines and stores as
//! one encrypted bundle.
//!
//! A bundle is a JSON document (format `tokenstore-bundle`, version 1) holding core's
//! [`KeyHeader`] (how the key is derived: Argon2id with its parameters and salt for a
//! passphrase, or a raw 32-byte key file, plus a key check that makes a wrong key a clear
//! error) and, base64, one XChaCha20-Poly1305 sealed payload: every record with its storage
//! key, and every client registration. The payload's associated data binds it to the format
//! and version, and the header's random id binds it to this bundle.

use std::io::{Read, Write};
use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use token_store::backend::{KeyHeader, read_or_create_key_file, unix_now};
use token_store::{
    ClientKey, ClientRegistration, Error, KdfParams, KeySource, ListFilter, Precondition, Query,
    StorageKey, TokenKey, TokenRecord, TokenStore,
};
use zeroize::Zeroizing;

use super::{Unreadable, dedup_unreadable};
use crate::args::BundleKeyArgs;
use crate::exit::{CliResult, Code, Failure};
use crate::out::{Report, clean, progress};
use crate::store::Opened;

const FORMAT: &str = "tokenstore-bundle";
const VERSION: u32 = 1;
/// The sealed payload's associated data: a payload moved into another format or version
/// fails to open.
const AAD: &[u8] = b"tokenstore-bundle/v1";
/// Far more than any token store holds; a bigger input is not a bundle of ours.
const MAX_BUNDLE: u64 = 256 * 1024 * 1024;
/// The name errors give the bundle in place of a backend.
const BUNDLE: &str = "bundle";

/// The bundle file.
#[derive(Serialize, Deserialize)]
struct Outer {
    format: String,
    version: u32,
    key: KeyHeader,
    /// Base64 (standard, padded) of the sealed [`Contents`].
    sealed: String,
}

/// What is sealed.
#[derive(Serialize, Deserialize)]
struct Contents {
    /// When the bundle was written, Unix seconds.
    created_at: f64,
    /// The backend it was exported from.
    source_backend: String,
    tokens: Vec<TokenEntry>,
    clients: Vec<ClientEntry>,
}

#[derive(Serialize, Deserialize)]
struct TokenEntry {
    /// The storage key, encoded as `list` prints it.
    key: String,
    record: TokenRecord,
}

#[derive(Serialize, Deserialize)]
struct ClientEntry {
    key: String,
    registration: ClientRegistration,
}

/// The bundle's key source, and a note for the user (a key file just created).
fn key_source(args: &BundleKeyArgs, exporting: bool) -> CliResult<(KeySource, Option<String>)> {
    if let Some(var) = &args.passphrase_env {
        return match std::env::var(var) {
            Ok(p) if !p.trim().is_empty() => Ok((KeySource::passphrase(p), None)),
            _ => Err(Error::config(format!("{} is unset or empty", clean(var))).into()),
        };
    }
    if let Some(path) = &args.passphrase_file {
        return Ok((KeySource::passphrase_file(path)?, None));
    }
    let Some(path) = &args.key_file else {
        return Err(Failure::usage(
            "give --passphrase-env, --passphrase-file or --key-file",
        ));
    };
    let exists = std::fs::symlink_metadata(path).is_ok();
    if !exists && !exporting {
        return Err(Error::config(format!("key file {} does not exist", path.display())).into());
    }
    // Read once, with core's checks (0600, owned by us, not a link, 32 bytes).
    let key = read_or_create_key_file(path)?;
    let note = (!exists).then(|| {
        format!(
            "created key file {} (0600): keep it to import the bundle",
            path.display()
        )
    });
    Ok((KeySource::Raw(key), note))
}

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

pub(crate) async fn export(
    opened: &Opened,
    output: &Path,
    user: Option<String>,
    key_args: &BundleKeyArgs,
    json_mode: bool,
) -> CliResult<Report> {
    let to_stdout = is_stdio(output);
    if to_stdout && json_mode {
        return Err(Failure::usage(
            "--json and `--output -` would both write to stdout; write the bundle to a file",
        ));
    }
    if !to_stdout && std::fs::symlink_metadata(output).is_ok() {
        return Err(Failure::new(
            Code::Conflict,
            format!(
                "{} exists; bundles are never overwritten (remove it or choose another path)",
                output.display()
            ),
        ));
    }
    let (source, note) = key_source(key_args, true)?;
    let store = &opened.store;
    let mut filter = ListFilter::all();
    filter.user_key = user;
    let tokens = store.list(&Query::new(filter)).await?;
    let clients = store.list_clients().await?;
    let mut skipped = dedup_unreadable(opened, tokens.unreadable.iter().chain(&clients.unreadable));
    let bar = progress((tokens.keys.len() + clients.keys.len()) as u64, "export");
    let mut contents = Contents {
        created_at: unix_now(),
        source_backend: store.backend().to_owned(),
        tokens: Vec::new(),
        clients: Vec::new(),
    };
    for key in &tokens.keys {
        bar.inc(1);
        match store.get(key).await {
            Ok(Some(found)) => contents.tokens.push(TokenEntry {
                key: key.storage_key().encode(),
                record: found.value,
            }),
            Ok(None) => {}
            Err(e @ (Error::Corrupt { .. } | Error::Integrity { .. })) => skipped.push(
                Unreadable::at_key(opened, &key.storage_key(), crate::out::one_line(&e)),
            ),
            Err(e) => return Err(e.into()),
        }
    }
    for key in &clients.keys {
        bar.inc(1);
        match store.get_client(key).await {
            Ok(Some(found)) => contents.clients.push(ClientEntry {
                key: key.storage_key().encode(),
                registration: found.value,
            }),
            Ok(None) => {}
            Err(e @ (Error::Corrupt { .. } | Error::Integrity { .. })) => skipped.push(
                Unreadable::at_key(opened, &key.storage_key(), crate::out::one_line(&e)),
            ),
            Err(e) => return Err(e.into()),
        }
    }
    bar.finish_and_clear();
    let plaintext = Zeroizing::new(
        serde_json::to_vec(&contents)
            .map_err(|e| Error::invalid_input(format!("cannot encode the bundle: {e}")))?,
    );
    let (header, cipher) = KeyHeader::create(&source, KdfParams::DEFAULT)?;
    let sealed = cipher.seal(AAD, &plaintext)?;
    let outer = Outer {
        format: FORMAT.to_owned(),
        version: VERSION,
        key: header,
        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
    };
    let mut bytes = serde_json::to_vec_pretty(&outer)
        .map_err(|e| Error::invalid_input(format!("cannot encode the bundle: {e}")))?;
    bytes.push(b'\n');
    write_bundle(output, &bytes)?;

    let shown = if to_stdout {
        "stdout".to_owned()
    } else {
        output.display().to_string()
    };
    let mut warnings: Vec<String> = note.into_iter().collect();
    warnings.extend(skipped.iter().map(|u| {
        format!(
            "skipped unreadable entry {}: {}",
            clean(&u.location),
            clean(&u.reason)
        )
    }));
    let report = Report::new(
        format!(
            "exported {} tokens and {} client registrations to {}\n",
            contents.tokens.len(),
            contents.clients.len(),
            clean(&shown)
        ),
        json!({
            "output": shown,
            "tokens": contents.tokens.len(),
            "clients": contents.clients.len(),
            "skipped": skipped.iter().map(Unreadable::json).collect::<Vec<_>>(),
        }),
    )
    .with_warnings(warnings);
    let report = if to_stdout {
        report.on_stderr()
    } else {
        report
    };
    // The bundle is written; what could not be read is said by the exit code.
    Ok(if skipped.is_empty() {
        report
    } else {
        report.with_code(Code::Corrupt)
    })
}

fn write_bundle(output: &Path, bytes: &[u8]) -> CliResult<()> {
    let io = |e: std::io::Error| {
        Failure::from(Error::Config {
            message: format!("cannot write {}", output.display()),
            source: Some(Box::new(e)),
        })
    };
    if is_stdio(output) {
        let mut out = std::io::stdout().lock();
        return out.write_all(bytes).and_then(|()| out.flush()).map_err(io);
    }
    let mut file = token_store::backend::fs::create_private_file(output).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::new(Code::Conflict, format!("{} exists", output.display()))
        } else {
            io(e)
        }
    })?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(output);
        return Err(io(e));
    }
    Ok(())
}

fn read_bundle(input: &Path) -> CliResult<Vec<u8>> {
    let mut bytes = Vec::new();
    let read = if is_stdio(input) {
        std::io::stdin()
            .take(MAX_BUNDLE + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(input).and_then(|f| f.take(MAX_BUNDLE + 1).read_to_end(&mut bytes))
    };
    read.map_err(|e| {
        Failure::from(Error::Config {
            message: format!("cannot read {}", input.display()),
            source: Some(Box::new(e)),
        })
    })?;
    if bytes.len() as u64 > MAX_BUNDLE {
        return Err(corrupt("larger than any bundle").into());
    }
    Ok(bytes)
}

fn corrupt(message: &str) -> Error {
    Error::Corrupt {
        backend: BUNDLE,
        key: "bundle".to_owned(),
        message: message.to_owned(),
        source: None,
    }
}

/// Opens a bundle: its format checked, its key derived and checked, its payload
/// authenticated and decoded.
fn open_bundle(bytes: &[u8], key_args: &BundleKeyArgs) -> CliResult<Contents> {
    let outer: Outer = serde_json::from_slice(bytes).map_err(|e| {
        corrupt(&format!(
            "not a tokenstore bundle ({})",
            token_store::backend::json_error_summary(&e)
        ))
    })?;
    if outer.format != FORMAT {
        return Err(corrupt("not a tokenstore bundle (wrong format name)").into());
    }
    if outer.version > VERSION {
        return Err(Error::config(format!(
            "the bundle has format version {}; this tokenstore reads version {VERSION} (upgrade tokenstore)",
            outer.version
        ))
        .into());
    }
    if outer.version != VERSION {
        return Err(corrupt(&format!("unknown bundle version {}", outer.version)).into());
    }
    let wants_passphrase = outer.key.kdf != "raw";
    let has_passphrase = key_args.key_file.is_none();
    if wants_passphrase != has_passphrase {
        return Err(Failure::usage(if wants_passphrase {
            "this bundle is sealed with a passphrase: give --passphrase-env or --passphrase-file"
        } else {
            "this bundle is sealed with a key file: give --key-file"
        }));
    }
    let (source, _) = key_source(key_args, false)?;
    let cipher = outer.key.unlock(BUNDLE, &source)?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(outer.sealed.trim())
        .map_err(|_| corrupt("the sealed payload is not base64"))?;
    let plaintext = cipher
        .open(AAD, &sealed)
        .map_err(|e| e.into_error(BUNDLE, "bundle".to_owned()))?;
    serde_json::from_slice(&plaintext).map_err(|e| {
        corrupt(&format!(
            "the payload is not a bundle's ({})",
            token_store::backend::json_error_summary(&e)
        ))
        .into()
    })
}

/// What happened to one record of an import.
enum Outcome {
    Created,
    Replaced,
    /// The same record was there already.
    Unchanged,
    /// Another record was there; kept (no `--overwrite`).
    Exists,
    Failed(Failure),
}

impl Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Replaced => "replaced",
            Outcome::Unchanged => "unchanged",
            Outcome::Exists => "exists",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// A token record or a client registration, imported alike.
trait Item: PartialEq + Sized {
    async fn read(store: &TokenStore, key: &StorageKey) -> token_store::Result<Option<Self>>;
    async fn write(
        &self,
        store: &TokenStore,
        key: &StorageKey,
        precondition: Precondition,
    ) -> token_store::Result<()>;
}

fn bad_key(key: &StorageKey) -> Error {
    corrupt(&format!("entry key {} is of the wrong kind", key.encode()))
}

impl Item for TokenRecord {
    async fn read(store: &TokenStore, key: &StorageKey) -> token_store::Result<Option<Self>> {
        let key = TokenKey::from_storage_key(key).ok_or_else(|| bad_key(key))?;
        Ok(store.get(&key).await?.map(|v| v.value))
    }

    async fn write(
        &self,
        store: &TokenStore,
        key: &StorageKey,
        precondition: Precondition,
    ) -> token_store::Result<()> {
        let key = TokenKey::from_storage_key(key).ok_or_else(|| bad_key(key))?;
        store.put(&key, self, precondition).await.map(drop)
    }
}

impl Item for ClientRegistration {
    async fn read(store: &TokenStore, key: &StorageKey) -> token_store::Result<Option<Self>> {
        let key = ClientKey::from_storage_key(key).ok_or_else(|| bad_key(key))?;
        Ok(store.get_client(&key).await?.map(|v| v.value))
    }

    async fn write(
        &self,
        store: &TokenStore,
        key: &StorageKey,
        precondition: Precondition,
    ) -> token_store::Result<()> {
        let key = ClientKey::from_storage_key(key).ok_or_else(|| bad_key(key))?;
        store.put_client(&key, self, precondition).await.map(drop)
    }
}

async fn import_one<T: Item>(
    store: &TokenStore,
    encoded: &str,
    item: &T,
    overwrite: bool,
) -> Outcome {
    let attempt = async {
        let key =
            StorageKey::decode(encoded).ok_or_else(|| corrupt("an entry's key does not decode"))?;
        let outcome = if overwrite {
            match T::read(store, &key).await {
                Ok(Some(existing)) if existing == *item => return Ok(Outcome::Unchanged),
                Ok(Some(_)) => Outcome::Replaced,
                Ok(None) => Outcome::Created,
                // A damaged record is exactly what an overwrite may replace.
                Err(Error::Corrupt { .. } | Error::Integrity { .. }) => Outcome::Replaced,
                Err(e) => return Err(e),
            }
        } else {
            Outcome::Created
        };
        let precondition = if overwrite {
            Precondition::Any
        } else {
            Precondition::IfAbsent
        };
        match item.write(store, &key, precondition).await {
            Ok(()) => {}
            Err(e) if e.is_conflict() => {
                let same = T::read(store, &key).await.ok().flatten().as_ref() == Some(item);
                return Ok(if same {
                    Outcome::Unchanged
                } else {
                    Outcome::Exists
                });
            }
            Err(e) => return Err(e),
        }
        if T::read(store, &key).await?.as_ref() != Some(item) {
            return Err(Error::Integrity {
                backend: store.backend(),
                key: key.encode(),
                message: "the imported record read back differs from the bundle's".to_owned(),
            });
        }
        Ok(outcome)
    };
    match attempt.await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(e.into()),
    }
}

pub(crate) async fn import(
    opened: &Opened,
    input: &Path,
    overwrite: bool,
    key_args: &BundleKeyArgs,
) -> CliResult<Report> {
    let bytes = read_bundle(input)?;
    let contents = open_bundle(&bytes, key_args)?;
    let store = &opened.store;
    let bar = progress(
        (contents.tokens.len() + contents.clients.len()) as u64,
        "import",
    );
    let mut results = Vec::new();
    for entry in &contents.tokens {
        bar.inc(1);
        let outcome = import_one(store, &entry.key, &entry.record, overwrite).await;
        results.push(("token", entry.key.as_str(), outcome));
    }
    for entry in &contents.clients {
        bar.inc(1);
        let outcome = import_one(store, &entry.key, &entry.registration, overwrite).await;
        results.push(("client", entry.key.as_str(), outcome));
    }
    bar.finish_and_clear();

    let count = |name: &str| results.iter().filter(|r| r.2.name() == name).count();
    let mut text = String::new();
    for (kind, key, outcome) in &results {
        text.push_str(&format!("{:<9} {kind:<6} {}\n", outcome.name(), clean(key)));
        if let Outcome::Failed(f) = outcome {
            text.push_str(&format!("    {}\n", f.message));
        }
    }
    text.push_str(&format!(
        "{} created, {} replaced, {} unchanged, {} skipped{}, {} failed\n",
        count("created"),
        count("replaced"),
        count("unchanged"),
        count("exists"),
        if count("exists") > 0 {
            " (they exist with other content; --overwrite replaces them)"
        } else {
            ""
        },
        count("failed"),
    ));
    let code = results
        .iter()
        .find_map(|r| match &r.2 {
            Outcome::Failed(f) => Some(f.code),
            _ => None,
        })
        .or_else(|| (count("exists") > 0).then_some(Code::Conflict))
        .unwrap_or(Code::Ok);
    let json = json!({
        "results": results.iter().map(|(kind, key, outcome)| json!({
            "kind": kind,
            "storage_key": key,
            "outcome": outcome.name(),
            "error": match outcome {
                Outcome::Failed(f) => json!({"kind": f.code.kind(), "message": f.message}),
                _ => serde_json::Value::Null,
            },
        })).collect::<Vec<_>>(),
        "created": count("created"),
        "replaced": count("replaced"),
        "unchanged": count("unchanged"),
        "exists": count("exists"),
        "failed": count("failed"),
        "source_backend": contents.source_backend,
        "created_at": contents.created_at,
    });
    Ok(Report::new(text, json).with_code(code))
}
