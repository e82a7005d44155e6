//! `tokenstore`: inspect, edit, migrate and check token stores from the command line.
//!
//! Tokens are shown redacted (first and last few characters) unless `--reveal` is given.
//! Errors print one line and exit non-zero.

use std::io::Read;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use token_store::backend::{json_error_summary, unix_now};
use token_store::{
    ClientRegistration, Error, ListFilter, Precondition, Query, Secret, TokenKey, TokenRecord,
    TokenStore, Versioned,
};

#[derive(Parser)]
#[command(
    name = "tokenstore",
    version,
    about = "Inspect and manage MCP OAuth token stores"
)]
struct Cli {
    /// Store URL (memory:, file://, sqlite://, redis://, vault://, keychain:). Default: what
    /// auto-detection picks (TOKEN_STORE_URL, else the OS keychain, else the encrypted file).
    #[arg(long, global = true, env = "TOKEN_STORE_URL")]
    store: Option<String>,

    /// Log store calls to stderr (values are never logged).
    #[arg(long, global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show one token record.
    Get {
        #[command(flatten)]
        key: KeyArgs,
        /// Show tokens in full.
        #[arg(long)]
        reveal: bool,
    },
    /// Store a token record read as JSON from a file or stdin (a TokenRecord, or an OAuth
    /// token response with `expires_in`).
    Put {
        #[command(flatten)]
        key: KeyArgs,
        /// Read from this file instead of stdin.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Only create; fail if a record exists.
        #[arg(long)]
        create: bool,
    },
    /// List token keys (and client registrations).
    List {
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
        /// Only tokens for this resource (canonicalised).
        #[arg(long)]
        resource: Option<String>,
    },
    /// Delete one token record.
    Delete {
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Copy every token and client registration to another store, verifying each copy.
    /// Safe to re-run: records already identical are left alone.
    Migrate {
        /// The destination store URL.
        #[arg(long)]
        to: String,
    },
    /// Show which store auto-detection picks and why, then time a put/get/CAS/delete round trip.
    Doctor,
    /// Re-encrypt every record of an encrypted file store under a new key, crash-safe
    /// (a crash leaves the store under either the old key or the new one, complete).
    Rekey {
        /// The new key file (created 0600 with a random key if it does not exist).
        #[arg(long, conflicts_with = "new_passphrase_env")]
        new_key_file: Option<std::path::PathBuf>,
        /// The environment variable holding the new passphrase.
        #[arg(long)]
        new_passphrase_env: Option<String>,
    },
    /// Time get (hit and miss), put, CAS put, delete and a list of 100 through the typed
    /// API on this store; prints median, p99 and ops/s. Writes only records of its own
    /// (users named `tsbench-<pid>-...`) and deletes them afterwards.
    Bench {
        /// Timed calls per operation (a tenth of it for the list).
        #[arg(long, default_value_t = 1000)]
        ops: usize,
    },
}

#[derive(Args)]
struct KeyArgs {
    /// The MCP server (resource) URL.
    #[arg(long)]
    server: String,
    /// The user key (default: the single-user client id mcp-agent uses).
    #[arg(long)]
    user: Option<String>,
    /// The authorization server (issuer) URL.
    #[arg(long)]
    issuer: Option<String>,
    /// Scopes (repeat or space-separate).
    #[arg(long = "scope")]
    scopes: Vec<String>,
}

impl KeyArgs {
    fn key(&self) -> TokenKey {
        let scopes = self.scopes.iter().flat_map(|s| s.split_whitespace());
        TokenKey::new(
            self.user
                .as_deref()
                .unwrap_or(token_store::DEFAULT_USER_KEY),
            &self.server,
            self.issuer.as_deref(),
            scopes,
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.verbose {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter("token_store=debug,token_store_core=debug")
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Text from a store (keys, locations, reasons, metadata names) as it may reach a terminal:
/// control characters escaped, so a foreign key holding ESC sequences cannot clear the screen
/// or fake output.
fn clean(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// The error and its sources on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    clean(&line.replace('\n', " "))
}

async fn open(store: Option<&str>) -> token_store::Result<(TokenStore, String, Vec<String>)> {
    match store {
        Some(url) => {
            let parsed = token_store::StoreUrl::parse(url)?;
            Ok((
                token_store::open(url).await?,
                parsed.redacted(),
                vec!["--store / TOKEN_STORE_URL".to_owned()],
            ))
        }
        None => {
            let s = token_store::auto().await?;
            Ok((s.store, s.url, s.reasons))
        }
    }
}

async fn run(cli: Cli) -> token_store::Result<()> {
    match cli.command {
        Command::Doctor => doctor(cli.store.as_deref()).await,
        Command::Bench { ops } => bench(cli.store.as_deref(), ops).await,
        Command::Rekey {
            new_key_file,
            new_passphrase_env,
        } => rekey(cli.store.as_deref(), new_key_file, new_passphrase_env).await,
        command => {
            let (store, _, _) = open(cli.store.as_deref()).await?;
            match command {
                Command::Get { key, reveal } => get(&store, &key.key(), reveal).await,
                Command::Put { key, file, create } => put(&store, &key.key(), file, create).await,
                Command::List { user, resource } => list(&store, user, resource).await,
                Command::Delete { key } => {
                    let existed = store.delete(&key.key(), Precondition::Any).await?;
                    println!("{}", if existed { "deleted" } else { "no such record" });
                    Ok(())
                }
                Command::Migrate { to } => migrate(&store, &to).await,
                Command::Doctor | Command::Rekey { .. } | Command::Bench { .. } => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

fn show(secret: &Secret, reveal: bool) -> String {
    if reveal {
        clean(secret.expose())
    } else {
        clean(&secret.preview())
    }
}

async fn get(store: &TokenStore, key: &TokenKey, reveal: bool) -> token_store::Result<()> {
    let Some(Versioned {
        value: r, version, ..
    }) = store.get(key).await?
    else {
        return Err(Error::NotFound {
            backend: store.backend(),
            key: key.to_string(),
        });
    };
    println!("key:           {}", clean(&key.to_string()));
    println!("version:       {}", clean(version.as_str()));
    println!("access_token:  {}", show(&r.access_token, reveal));
    if let Some(rt) = &r.refresh_token {
        println!("refresh_token: {}", show(rt, reveal));
    }
    println!("token_type:    {}", clean(&r.token_type));
    println!("scopes:        {}", clean(&r.scopes.join(" ")));
    if let Some(at) = r.expires_at {
        let left = at - unix_now();
        if left > 0.0 {
            println!("expires_at:    {at:.0} (in {left:.0} s)");
        } else {
            println!("expires_at:    {at:.0} (expired {:.0} s ago)", -left);
        }
    }
    if let Some(c) = &r.client_id {
        println!("client_id:     {}", clean(c));
    }
    if !r.metadata.is_empty() {
        println!(
            "metadata keys: {}",
            clean(&r.metadata.keys().cloned().collect::<Vec<_>>().join(", "))
        );
    }
    Ok(())
}

fn parse_record(text: &str) -> token_store::Result<TokenRecord> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        Error::invalid_input(format!(
            "input is not JSON: {}",
            json_error_summary(&e)
        ))
    })?;
    let mut record: TokenRecord = serde_json::from_value(value.clone()).map_err(|e| {
        let why = json_error_summary(&e);
        Error::invalid_input(format!("input is not a token record: {why}"))
    })?;
    // An OAuth token response carries a relative lifetime; store it as an absolute time.
    if record.expires_at.is_none()
        && let Some(secs) = value.get("expires_in").and_then(|v| v.as_f64())
    {
        record.expires_at = Some(record.obtained_at + secs);
        record.extra.remove("expires_in");
    }
    if let Some(scope) = value.get("scope").and_then(|v| v.as_str())
        && record.scopes.is_empty()
    {
        record.scopes = scope.split_whitespace().map(str::to_owned).collect();
        record.extra.remove("scope");
    }
    Ok(record)
}

async fn put(
    store: &TokenStore,
    key: &TokenKey,
    file: Option<std::path::PathBuf>,
    create: bool,
) -> token_store::Result<()> {
    let mut text = String::new();
    match file {
        Some(path) => {
            text = std::fs::read_to_string(&path).map_err(|e| Error::Config {
                message: format!("cannot read {}", path.display()),
                source: Some(Box::new(e)),
            })?;
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Error::Config {
                    message: "cannot read stdin".to_owned(),
                    source: Some(Box::new(e)),
                })?;
        }
    }
    let record = parse_record(&text)?;
    let precondition = if create {
        Precondition::IfAbsent
    } else {
        Precondition::Any
    };
    let version = store.put(key, &record, precondition).await?;
    println!(
        "stored {} (version {})",
        clean(&key.to_string()),
        clean(version.as_str())
    );
    Ok(())
}

async fn list(
    store: &TokenStore,
    user: Option<String>,
    resource: Option<String>,
) -> token_store::Result<()> {
    let mut filter = ListFilter::all();
    filter.user_key = user;
    filter.resource = resource.as_deref().map(token_store::canonical_url);
    let page = store.list(&Query::new(filter)).await?;
    println!("{:<40} {:<50} {:<30} scopes", "user", "resource", "issuer");
    for k in &page.keys {
        println!(
            "{:<40} {:<50} {:<30} {}",
            clean(k.user_key()),
            clean(k.resource()),
            clean(k.authorization_server().unwrap_or("-")),
            clean(k.scope_fingerprint())
        );
    }
    let clients = store.list_clients().await?;
    for c in &clients.keys {
        println!(
            "client registration: {} {}",
            clean(c.authorization_server()),
            clean(c.application())
        );
    }
    for u in page.unreadable.iter().chain(&clients.unreadable) {
        println!("unreadable entry {}: {}", clean(&u.location), clean(&u.reason));
    }
    println!(
        "{} tokens, {} client registrations",
        page.keys.len(),
        clients.keys.len()
    );
    Ok(())
}

async fn migrate(from: &TokenStore, to_url: &str) -> token_store::Result<()> {
    let to = token_store::open(to_url).await?;
    let tokens = from.list(&Query::default()).await?;
    let clients = from.list_clients().await?;
    let total = (tokens.keys.len() + clients.keys.len()) as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut copied, mut unchanged) = (0usize, 0usize);
    for key in &tokens.keys {
        let Some(source) = from.get(key).await? else {
            continue;
        };
        match to.get(key).await? {
            Some(existing) if existing.value == source.value => unchanged += 1,
            _ => {
                to.put(key, &source.value, Precondition::Any).await?;
                let check = to.get(key).await?;
                if check.map(|c| c.value) != Some(source.value) {
                    return Err(Error::Integrity {
                        backend: to.backend(),
                        key: key.to_string(),
                        message: "the copy read back differs from the source".to_owned(),
                    });
                }
                copied += 1;
            }
        }
        bar.inc(1);
    }
    for key in &clients.keys {
        let Some(source) = from.get_client(key).await? else {
            continue;
        };
        let same = to
            .get_client(key)
            .await?
            .is_some_and(|e| e.value == source.value);
        if same {
            unchanged += 1;
        } else {
            copy_client(&to, key, &source.value).await?;
            copied += 1;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    for u in tokens.unreadable.iter().chain(&clients.unreadable) {
        eprintln!(
            "skipped unreadable entry {}: {}",
            clean(&u.location),
            clean(&u.reason)
        );
    }
    println!(
        "migrated {copied} records ({unchanged} already up to date) to {}",
        redacted(to_url)
    );
    Ok(())
}

async fn copy_client(
    to: &TokenStore,
    key: &token_store::ClientKey,
    reg: &ClientRegistration,
) -> token_store::Result<()> {
    to.put_client(key, reg, Precondition::Any).await?;
    let back = to.get_client(key).await?;
    if back.map(|b| b.value).as_ref() != Some(reg) {
        return Err(Error::Integrity {
            backend: to.backend(),
            key: key.storage_key().to_string(),
            message: "the copy read back differs from the source".to_owned(),
        });
    }
    Ok(())
}

fn redacted(url: &str) -> String {
    token_store::StoreUrl::parse(url)
        .map(|u| u.redacted())
        .unwrap_or_else(|_| "(invalid URL)".to_owned())
}

async fn bench(store: Option<&str>, ops: usize) -> token_store::Result<()> {
    let (store, url, _) = open(store).await?;
    let backend = store.backend();
    println!("store: {}", clean(&url));
    let run_id = token_store_bench::ops::run_id();
    let plan = token_store_bench::Plan::fixed(ops);
    let rows = token_store_bench::measure_store(store, &run_id, &plan)
        .await
        .map_err(|e| match e.downcast::<Error>() {
            Ok(e) => *e,
            Err(e) => Error::backend(backend, format!("benchmark failed: {e}"), None),
        })?;
    print!("{}", token_store_bench::store_table(&rows));
    Ok(())
}

async fn doctor(store: Option<&str>) -> token_store::Result<()> {
    let (store, url, reasons) = open(store).await?;
    println!("store:   {}", clean(&url));
    for r in &reasons {
        println!("  - {}", clean(r));
    }
    let caps = store.capabilities();
    println!("backend: {}", store.backend());
    println!("shared:           {}", caps.shared_with);
    println!("compare-and-swap: {}", caps.cas);
    println!(
        "refresh-safe:     {}",
        if caps.cas_covers_sharing() {
            "yes: one refresh per expiry across every process that shares this store"
        } else {
            "NO: two processes could spend one refresh token (compare-and-swap does not reach every process sharing the store)"
        }
    );
    println!(
        "encrypted at rest: {}   persistent: {}   ttl: {}   max value: {} bytes",
        yes_no(caps.encrypted_at_rest),
        yes_no(caps.persistent),
        yes_no(caps.ttl),
        caps.max_value_size
    );
    if !caps.persistent {
        println!("WARNING: this store does not persist: tokens are lost when the process exits");
    }
    let key = TokenKey::new(
        format!("tokenstore-doctor-{}", std::process::id()),
        "https://doctor.invalid/mcp",
        None,
        ["probe"],
    );
    let record = TokenRecord::new("doctor-access-token").with_refresh_token("doctor-refresh-token");
    let timed = |label: &str, start: Instant| {
        println!(
            "  {label:<8} {:>9.3} ms",
            start.elapsed().as_secs_f64() * 1e3
        )
    };
    println!("round trip:");
    let t = Instant::now();
    let v1 = store.put(&key, &record, Precondition::IfAbsent).await?;
    timed("put", t);
    let t = Instant::now();
    let read = store.get(&key).await?;
    timed("get", t);
    if read.as_ref().map(|r| &r.value) != Some(&record) {
        return Err(Error::Integrity {
            backend: store.backend(),
            key: key.to_string(),
            message: "the record read back differs from the one written".to_owned(),
        });
    }
    let rotated = TokenRecord::new("doctor-access-2").with_refresh_token("doctor-refresh-2");
    let t = Instant::now();
    store
        .put(&key, &rotated, Precondition::IfVersion(v1.clone()))
        .await?;
    timed("cas put", t);
    let stale = store
        .put(&key, &record, Precondition::IfVersion(v1))
        .await;
    if !matches!(stale, Err(Error::Conflict { .. })) {
        return Err(Error::backend(
            store.backend(),
            "a stale compare-and-swap was not refused",
            None,
        ));
    }
    let t = Instant::now();
    store.delete(&key, Precondition::Any).await?;
    timed("delete", t);
    if store.get(&key).await?.is_some() {
        return Err(Error::backend(
            store.backend(),
            "the probe record survived its delete",
            None,
        ));
    }
    println!("ok");
    Ok(())
}

async fn rekey(
    store: Option<&str>,
    new_key_file: Option<std::path::PathBuf>,
    new_passphrase_env: Option<String>,
) -> token_store::Result<()> {
    use token_store::KeySource;
    let new_key = match (new_key_file, new_passphrase_env) {
        (Some(path), None) => KeySource::KeyFile(path),
        (None, Some(var)) => match std::env::var(&var) {
            Ok(p) if !p.is_empty() => KeySource::passphrase(p),
            _ => return Err(Error::config(format!("{var} is unset or empty"))),
        },
        _ => return Err(Error::config("give --new-key-file or --new-passphrase-env")),
    };
    let store = match store {
        Some(url) => {
            let url = token_store::StoreUrl::parse(url)?;
            if url.kind() != token_store::BackendKind::File {
                return Err(Error::config(format!(
                    "rekey works on encrypted file stores (file://), not {}",
                    url.scheme()
                )));
            }
            token_store::file::FileStore::open(&token_store::file::FileConfig::from_url(&url)?)
                .await?
        }
        None => {
            let config = token_store::file::FileConfig::new(
                token_store::default_data_dir()?,
                token_store::default_key_source()?,
            );
            token_store::file::FileStore::open(&config).await?
        }
    };
    let n = store.rekey(new_key).await?;
    println!(
        "re-encrypted {n} records under the new key in {}",
        store.dir().display()
    );
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
