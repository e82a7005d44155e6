//! The backends of a run: for each, the URL of the store under test, its raw client, and
//! the attribution variants, built from the `TOKEN_STORE_TEST_*` environment that
//! `scripts/services.sh` exports. The runner and the criterion bench both start here.

use std::path::Path;
use std::sync::Arc;

use token_store::postgres::{PostgresConfig, PostgresStore};
use token_store_core::TokenStore;

use crate::ops::{BResult, BytesTarget, Target, fail};
use crate::raw::{
    RawFile, RawMemory, RawPostgres, RawRedis, RawSecretService, RawSqlite, RawVault, SqliteVariant,
};

/// Every backend, in report order. `memory` is the memory store read through the handle's
/// read cache (what compares with a map of parsed records); `memory-uncached` without it.
pub const ALL: [&str; 11] = [
    "memory",
    "memory-uncached",
    "file",
    "sqlite",
    "redis",
    "redis-cluster",
    "redis-tls",
    "vault",
    "secret-service",
    "keyutils",
    "postgres",
];

/// An environment variable, unless unset or blank.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Opens a store exactly as a user does: `token_store::open` (the backend's layers and the
/// `Traced` layer included).
pub async fn open_store(url: &str) -> BResult<TokenStore> {
    Ok(token_store::open(url).await?)
}

/// How the label of a target timing ours as bytes (`raw()` of the opened store) begins.
pub const BYTES_LABEL: &str = "ours as bytes: `raw()` of the opened store";

/// "Ours" for a spec: the store as a user opens it, with the read cache when the spec says.
pub async fn open_ours(spec: &Spec) -> BResult<TokenStore> {
    let store = open_store(&spec.url).await?;
    Ok(if spec.cached {
        store.with_cache(token_store_core::CacheOptions::new())
    } else {
        store
    })
}

/// One backend of the run: its URL, how to build its raw client, how hard to push it.
pub struct Spec {
    /// The backend's name in the report (`redis-tls`, ...).
    pub name: &'static str,
    /// The URL `token_store::open` takes for it.
    pub url: String,
    /// Its floor for the typed API, when it has one: the raw client whose caller also parses
    /// and serializes the record (memory's holds parsed records).
    pub raw: Option<Arc<dyn Target>>,
    /// The same raw client handing back bytes, timed beside ours as bytes.
    pub raw_bytes: Option<Arc<dyn Target>>,
    /// The redis-benchmark target (host, port) for the concurrency ceiling.
    pub redis_benchmark: Option<(String, u16)>,
    /// Whether the raw client also runs the concurrency section.
    pub raw_concurrency: bool,
    /// Attribution variants: the raw client plus one thing the backend does, timed beside
    /// ours and raw on the operations they support, to measure where a ratio comes from.
    pub variants: Vec<Arc<dyn Target>>,
    /// Read "ours" through the handle's read cache (`TokenStore::with_cache`).
    pub cached: bool,
}

/// The backend's URL and raw client, or why it does not run here (`Ok(Err(why))`).
pub async fn spec(name: &'static str, run_id: &str, tmp: &Path) -> BResult<Result<Spec, String>> {
    let prefix = format!("{run_id}-ours");
    let raw_prefix = format!("{run_id}-raw");
    let unset = |var: &str| Ok(Err(format!("not run: {var} is unset")));
    let spec = match name {
        "memory" | "memory-uncached" => Spec {
            name,
            url: "memory:".to_owned(),
            raw: Some(Arc::new(RawMemory::new(run_id))),
            raw_bytes: None,
            redis_benchmark: None,
            raw_concurrency: false,
            variants: vec![],
            cached: name == "memory",
        },
        "file" => {
            let dir = tmp.join("file-store");
            Spec {
                name,
                url: format!(
                    "file://{}?key_file={}",
                    dir.display(),
                    tmp.join("file.key").display()
                ),
                raw: Some(Arc::new(RawFile::typed(&tmp.join("raw-files-typed"))?)),
                raw_bytes: Some(Arc::new(RawFile::new(&tmp.join("raw-files"))?)),
                redis_benchmark: None,
                raw_concurrency: true,
                variants: vec![],
                cached: false,
            }
        }
        "postgres" => {
            let Some(base) = env("TOKEN_STORE_TEST_POSTGRES_URL") else {
                return unset("TOKEN_STORE_TEST_POSTGRES_URL");
            };
            let schema = format!("bench_{}", run_id.replace('-', "_"));
            let url = format!("{base}?schema={schema}&table=tokens");
            // The raw connection prepares its statements on the table the store creates.
            let layered = open_store(&url).await?;
            let parsed = token_store::StoreUrl::parse(&url)?;
            let bare = PostgresStore::open(&PostgresConfig::from_url(&parsed)?).await?;
            Spec {
                name,
                raw: Some(Arc::new(
                    RawPostgres::connect(&base, &schema, "tokens", run_id)
                        .await?
                        .typed(),
                )),
                raw_bytes: Some(Arc::new(
                    RawPostgres::connect(&base, &schema, "tokens", &format!("{run_id}-b")).await?,
                )),
                url,
                redis_benchmark: None,
                raw_concurrency: false,
                // Where ours − floor goes: the typed layer (JSON, key canonicalisation), the
                // layers `open` adds (timeout, tracing), the backend itself.
                variants: vec![
                    Arc::new(BytesTarget::new(
                        layered.raw().clone(),
                        &format!("{run_id}-vb"),
                        format!("{BYTES_LABEL} (backend + its layers, no typed JSON)"),
                    )),
                    Arc::new(BytesTarget::new(
                        Arc::new(bare),
                        &format!("{run_id}-vp"),
                        "the bare `PostgresStore` as bytes (no layers, no typed JSON)",
                    )),
                    Arc::new(
                        RawPostgres::one_connection(
                            &base,
                            &schema,
                            "tokens",
                            &format!("{run_id}-v1"),
                        )
                        .await?,
                    ),
                ],
                cached: false,
            }
        }
        "sqlite" => {
            let path = tmp.join("sqlite").join("tokens.db");
            let url = format!("sqlite://{}", path.display());
            // The raw connection opens the database the store creates.
            drop(open_store(&url).await?);
            Spec {
                name,
                url,
                raw: Some(Arc::new(RawSqlite::typed(&path, run_id)?)),
                raw_bytes: Some(Arc::new(RawSqlite::open(&path, &format!("{run_id}-b"))?)),
                redis_benchmark: None,
                raw_concurrency: true,
                variants: vec![Arc::new(RawSqlite::variant(
                    &path,
                    &format!("{run_id}-v"),
                    SqliteVariant::Transaction,
                )?)],
                cached: false,
            }
        }
        "redis" => {
            let Some(url) = env("TOKEN_STORE_TEST_REDIS_URL") else {
                return unset("TOKEN_STORE_TEST_REDIS_URL");
            };
            let (host, port) = host_port(&url).ok_or_else(|| fail("bad redis URL"))?;
            Spec {
                name,
                url: format!("{url}?prefix={prefix}"),
                raw: Some(Arc::new(
                    RawRedis::connect(&url, None, &raw_prefix, run_id)
                        .await?
                        .typed(),
                )),
                raw_bytes: Some(Arc::new(
                    RawRedis::connect(&url, None, &raw_prefix, &format!("{run_id}-b")).await?,
                )),
                redis_benchmark: Some((host, port)),
                raw_concurrency: true,
                variants: vec![],
                cached: false,
            }
        }
        "redis-cluster" => {
            let (Some(url), Some(nodes)) = (
                env("TOKEN_STORE_TEST_REDIS_CLUSTER_URL"),
                env("TOKEN_STORE_TEST_REDIS_CLUSTER_URLS"),
            ) else {
                return unset("TOKEN_STORE_TEST_REDIS_CLUSTER_URL(S)");
            };
            let nodes: Vec<String> = nodes.split(',').map(str::to_owned).collect();
            Spec {
                name,
                url: format!("{url}?prefix={prefix}"),
                raw: Some(Arc::new(
                    RawRedis::connect_cluster(&nodes, &raw_prefix, run_id)
                        .await?
                        .typed(),
                )),
                raw_bytes: Some(Arc::new(
                    RawRedis::connect_cluster(&nodes, &raw_prefix, &format!("{run_id}-b")).await?,
                )),
                redis_benchmark: None,
                raw_concurrency: true,
                variants: vec![],
                cached: false,
            }
        }
        "redis-tls" => {
            let (Some(url), Some(ca)) = (
                env("TOKEN_STORE_TEST_REDIS_TLS_URL"),
                env("TOKEN_STORE_TEST_TLS_CA"),
            ) else {
                return unset("TOKEN_STORE_TEST_REDIS_TLS_URL");
            };
            Spec {
                name,
                url: format!("{url}?ca={ca}&prefix={prefix}"),
                raw: Some(Arc::new(
                    RawRedis::connect(&url, Some(&ca), &raw_prefix, run_id)
                        .await?
                        .typed(),
                )),
                raw_bytes: Some(Arc::new(
                    RawRedis::connect(&url, Some(&ca), &raw_prefix, &format!("{run_id}-b")).await?,
                )),
                redis_benchmark: None,
                raw_concurrency: true,
                variants: vec![],
                cached: false,
            }
        }
        "vault" => {
            let (Some(addr), Some(token)) = (
                env("TOKEN_STORE_TEST_VAULT_ADDR"),
                env("TOKEN_STORE_TEST_VAULT_TOKEN"),
            ) else {
                return unset("TOKEN_STORE_TEST_VAULT_ADDR");
            };
            let mount = env("TOKEN_STORE_TEST_VAULT_KV_MOUNT").unwrap_or_else(|| "secret".into());
            let hostport = addr
                .strip_prefix("http://")
                .ok_or_else(|| fail("the benchmark uses a plain-HTTP Vault"))?
                .trim_end_matches('/');
            Spec {
                name,
                url: format!(
                    "vault://{hostport}/{mount}?prefix={prefix}&token_env=TOKEN_STORE_TEST_VAULT_TOKEN"
                ),
                raw: Some(Arc::new(
                    RawVault::new(&addr, &token, &mount, &raw_prefix, run_id)?.typed(),
                )),
                raw_bytes: Some(Arc::new(RawVault::new(
                    &addr,
                    &token,
                    &mount,
                    &raw_prefix,
                    &format!("{run_id}-b"),
                )?)),
                redis_benchmark: None,
                raw_concurrency: false,
                variants: vec![],
                cached: false,
            }
        }
        "secret-service" => {
            if env("TOKEN_STORE_TEST_SECRET_SERVICE").is_none()
                || env("DBUS_SESSION_BUS_ADDRESS").is_none()
            {
                return unset("TOKEN_STORE_TEST_SECRET_SERVICE");
            }
            Spec {
                name,
                url: format!("keychain:secret-service?service={prefix}"),
                raw: Some(Arc::new(
                    RawSecretService::connect(&raw_prefix, run_id)
                        .await?
                        .typed(),
                )),
                raw_bytes: Some(Arc::new(
                    RawSecretService::connect(&raw_prefix, &format!("{run_id}-b")).await?,
                )),
                redis_benchmark: None,
                raw_concurrency: false,
                variants: vec![],
                cached: false,
            }
        }
        "keyutils" => {
            if env("TOKEN_STORE_TEST_KEYUTILS").is_none() {
                return unset("TOKEN_STORE_TEST_KEYUTILS");
            }
            Spec {
                name,
                url: format!("keychain:keyutils?service={prefix}"),
                raw: None,
                raw_bytes: None,
                redis_benchmark: None,
                raw_concurrency: false,
                variants: vec![],
                cached: false,
            }
        }
        other => return Ok(Err(format!("unknown backend {other}"))),
    };
    Ok(Ok(spec))
}

/// `(host, port)` of a `redis://` URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}
