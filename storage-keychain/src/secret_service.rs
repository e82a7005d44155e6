//! Linux Secret Service (gnome-keyring, KeePassXC, KWallet) through the async
//! `secret-service` crate over one persistent D-Bus connection per store.
//!
//! Every call runs under `tokio::time::timeout`, and dropping a zbus future really cancels
//! it, so a hung provider or a prompt waiting for a user never hangs the program. Nothing
//! here asks for an unlock prompt: a locked default collection is [`Error::Locked`].

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use secret_service::{Collection, EncryptionType, Item, SecretService};
use token_store_core::{
    Capabilities, Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord,
    RawStore, Result, StorageKey, Version, async_trait, check_precondition, check_size,
};

use crate::envelope::{Envelope, millis_ceil};
use crate::{Config, SECRET_SERVICE, lock, slots};

const SCHEMA: &str = "org.token-store.Record";
const CONTENT_TYPE: &str = "application/octet-stream";

/// The largest value stored: gnome-keyring holds a whole collection in memory and rewrites
/// its file on every change, so items are kept far below anything D-Bus would allow.
pub const SECRET_SERVICE_MAX_VALUE: usize = 256 * 1024;

/// A store in the default collection of the Secret Service on the D-Bus session bus.
pub struct SecretServiceStore {
    ss: SecretService<'static>,
    service: String,
    timeout: Duration,
    namespace: String,
    bus: String,
}

impl std::fmt::Debug for SecretServiceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretServiceStore")
            .field("service", &self.service)
            .field("bus", &self.bus)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn unavailable(message: impl std::fmt::Display, e: Option<secret_service::Error>) -> Error {
    Error::unavailable(
        SECRET_SERVICE,
        message,
        e.map(|e| Box::new(e) as token_store_core::BoxError),
    )
}

fn locked(message: impl Into<String>) -> Error {
    Error::Locked {
        backend: SECRET_SERVICE,
        message: message.into(),
    }
}

const LOCKED: &str = "the default keyring collection is locked; unlock it in the desktop session \
                      (token-store never shows unlock prompts)";

/// Maps a secret-service error; the texts are D-Bus errors, never item contents.
fn map_error(e: secret_service::Error) -> Error {
    use secret_service::Error as S;
    match e {
        S::Locked => locked(LOCKED),
        S::Prompt | S::PromptDisconnected => {
            locked("the operation needs an authorization prompt, which token-store does not show")
        }
        S::Unavailable => unavailable("no D-Bus session bus or Secret Service provider", Some(e)),
        other => {
            let text = other.to_string();
            if text.contains("IsLocked") {
                locked(LOCKED)
            } else if text.contains("ServiceUnknown") || text.contains("NameHasNoOwner") {
                unavailable(
                    "no Secret Service provider (org.freedesktop.secrets) on the session bus",
                    Some(other),
                )
            } else if text.contains("Disconnected")
                || text.contains("NoReply")
                || text.contains("I/O")
                || text.contains("Timeout")
            {
                unavailable("lost the D-Bus connection", Some(other))
            } else {
                Error::backend(
                    SECRET_SERVICE,
                    "Secret Service call failed",
                    Some(Box::new(other)),
                )
            }
        }
    }
}

fn gone(e: &secret_service::Error) -> bool {
    // An item deleted by someone else between our search and our call.
    let text = e.to_string();
    text.contains("UnknownObject")
        || text.contains("NoSuchObject")
        || text.contains("UnknownMethod")
}

/// The attribute holding part `n` of a key, named so items read well in a keyring viewer.
fn part_attr(kind: KeyKind, n: usize) -> &'static str {
    match (kind, n) {
        (KeyKind::Token, 0) => "user",
        (KeyKind::Token, 1) => "resource",
        (KeyKind::Token, 2) | (KeyKind::Client, 0) => "authorization_server",
        (KeyKind::Token, _) => "scopes",
        (KeyKind::Client, _) => "application",
        _ => "name",
    }
}

struct Found<'a> {
    item: Item<'a>,
    env: Result<Envelope>,
}

impl SecretServiceStore {
    /// Connects to the session bus (or `config.bus_address`) and opens an encrypted
    /// (Diffie-Hellman) session with the Secret Service, within `config.timeout`.
    pub async fn connect(config: &Config) -> Result<Self> {
        if config.service.is_empty() {
            return Err(Error::config("the keychain service name must not be empty"));
        }
        let bus = config.bus_address.clone();
        let work = async {
            let conn = match &bus {
                Some(address) => match zbus::connection::Builder::address(address.as_str()) {
                    Ok(b) => b.build().await,
                    Err(e) => Err(e),
                },
                None => zbus::Connection::session().await,
            }
            .map_err(|e| {
                Error::unavailable(
                    SECRET_SERVICE,
                    format!(
                        "cannot connect to the D-Bus session bus ({}): {e}",
                        bus.as_deref().map_or_else(bus_hint, str::to_owned)
                    ),
                    Some(Box::new(e)),
                )
            })?;
            SecretService::connect_with_existing(EncryptionType::Dh, conn)
                .await
                .map_err(map_error)
        };
        let ss = match tokio::time::timeout(config.timeout, work).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(unavailable(
                    format!("connecting timed out after {:?}", config.timeout),
                    None,
                ));
            }
        };
        let bus = bus.unwrap_or_else(|| "session".to_owned());
        Ok(SecretServiceStore {
            ss,
            namespace: format!("{SECRET_SERVICE}\0{bus}\0{}", config.service),
            service: config.service.clone(),
            timeout: config.timeout,
            bus,
        })
    }

    /// The service attribute this store's items carry.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Deletes every item of this store's service in the default collection; returns how
    /// many.
    pub async fn clear(&self) -> Result<usize> {
        self.timed("clear", async {
            let coll = self.collection().await?;
            let items = coll
                .search_items(HashMap::from([("service", self.service.as_str())]))
                .await
                .map_err(map_error)?;
            let mut n = 0;
            for item in &items {
                match item.delete().await {
                    Ok(()) => n += 1,
                    Err(e) if gone(&e) => {}
                    Err(e) => return Err(map_error(e)),
                }
            }
            Ok(n)
        })
        .await
    }

    async fn timed<T>(&self, op: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(unavailable(
                format!(
                    "{op} timed out after {:?} (is a keyring prompt waiting?)",
                    self.timeout
                ),
                None,
            )),
        }
    }

    /// The default collection, unlocked, or why not.
    async fn collection(&self) -> Result<Collection<'_>> {
        let coll = match self.ss.get_default_collection().await {
            Ok(c) => c,
            Err(secret_service::Error::NoResult) => {
                return Err(locked(
                    "the Secret Service has no default collection; creating one needs a prompt \
                     (start the keyring unlocked, e.g. gnome-keyring-daemon --unlock)",
                ));
            }
            Err(e) => return Err(map_error(e)),
        };
        if coll.is_locked().await.map_err(map_error)? {
            return Err(locked(LOCKED));
        }
        Ok(coll)
    }

    fn identity<'k>(&'k self, encoded: &'k str) -> HashMap<&'k str, &'k str> {
        HashMap::from([("service", self.service.as_str()), ("key", encoded)])
    }

    /// Every item of one key with its decoded envelope (several only after an interrupted
    /// write; the newest wins).
    async fn find<'c>(&self, coll: &'c Collection<'_>, encoded: &str) -> Result<Vec<Found<'c>>> {
        let items = coll
            .search_items(self.identity(encoded))
            .await
            .map_err(map_error)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let env = match item.get_secret().await {
                Ok(bytes) => {
                    let bytes = token_store_core::SecretBytes::new(bytes);
                    Envelope::decode(SECRET_SERVICE, encoded, &bytes).and_then(|env| {
                        if env.key == encoded {
                            Ok(env)
                        } else {
                            Err(Error::Corrupt {
                                backend: SECRET_SERVICE,
                                key: encoded.to_owned(),
                                message: "the item's secret belongs to another key".into(),
                                source: None,
                            })
                        }
                    })
                }
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(map_error(e)),
            };
            out.push(Found { item, env });
        }
        Ok(out)
    }

    fn attributes(
        &self,
        key: &StorageKey,
        encoded: &str,
        expires: &str,
    ) -> HashMap<String, String> {
        let mut attrs = HashMap::from([
            ("xdg:schema".to_owned(), SCHEMA.to_owned()),
            ("service".to_owned(), self.service.clone()),
            ("kind".to_owned(), key.kind().as_str().to_owned()),
            ("key".to_owned(), encoded.to_owned()),
        ]);
        for (n, part) in key.parts().iter().enumerate() {
            attrs.insert(part_attr(key.kind(), n).to_owned(), part.clone());
        }
        if !expires.is_empty() {
            attrs.insert("expires".to_owned(), expires.to_owned());
        }
        attrs
    }
}

fn bus_hint() -> String {
    match std::env::var("DBUS_SESSION_BUS_ADDRESS") {
        Ok(a) if !a.is_empty() => format!("DBUS_SESSION_BUS_ADDRESS={a}"),
        _ => "DBUS_SESSION_BUS_ADDRESS is unset, so $XDG_RUNTIME_DIR/bus was tried; headless \
              sessions often have no bus"
            .to_owned(),
    }
}

/// The newest readable envelope, if any; the first decoding error when none is readable.
fn newest<'f>(found: &'f [Found<'_>]) -> Result<Option<(&'f Envelope, bool)>> {
    let mut best: Option<&Envelope> = None;
    let mut first_err = None;
    for f in found {
        match &f.env {
            Ok(env) => {
                if best.is_none_or(|b| (env.written_at, &env.version) > (b.written_at, &b.version))
                {
                    best = Some(env);
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match (best, first_err) {
        (Some(env), _) => Ok(Some((env, !env.expired(SystemTime::now())))),
        (None, Some(e)) => Err(clone_corrupt(e)),
        (None, None) => Ok(None),
    }
}

fn clone_corrupt(e: &Error) -> Error {
    Error::Corrupt {
        backend: SECRET_SERVICE,
        key: match e {
            Error::Corrupt { key, .. } => key.clone(),
            _ => String::new(),
        },
        message: e.to_string(),
        source: None,
    }
}

async fn delete_all(found: &[Found<'_>], keep: Option<&str>) -> Result<()> {
    for f in found {
        if Some(f.item.item_path.as_str()) == keep {
            continue;
        }
        match f.item.delete().await {
            Ok(()) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(map_error(e)),
        }
    }
    Ok(())
}

#[async_trait]
impl RawStore for SecretServiceStore {
    fn backend(&self) -> &'static str {
        SECRET_SERVICE
    }

    fn raw_capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.atomic_cas = false;
        c.process_local_cas = true;
        c.ttl = true;
        c.persistent = true;
        c.shared_across_processes = false;
        c.max_value_size = SECRET_SERVICE_MAX_VALUE;
        c
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        key.validate()?;
        let encoded = key.encode();
        self.timed("get", async {
            let coll = self.collection().await?;
            let found = self.find(&coll, &encoded).await?;
            Ok(match newest(&found)? {
                Some((env, true)) => Some(RawRecord {
                    value: env.value.clone(),
                    version: env.version.clone(),
                    expires_at: env.expires_at,
                }),
                _ => None,
            })
        })
        .await
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        key.validate()?;
        check_size(SECRET_SERVICE, key, value.len(), SECRET_SERVICE_MAX_VALUE)?;
        let encoded = key.encode();
        let env = Envelope::new(key, value, options.ttl)?;
        let expires = if env.expires_at.is_some() {
            env.expires_millis().to_string()
        } else {
            String::new()
        };
        let bytes = env.encode();
        let label = slots::label(key);
        let attrs = self.attributes(key, &encoded, &expires);
        self.timed("put", async {
            let _guard = lock::lock(&self.namespace, &encoded).await;
            let coll = self.collection().await?;
            let found = self.find(&coll, &encoded).await?;
            let current = match newest(&found) {
                Ok(n) => n.filter(|(_, live)| *live).map(|(e, _)| e.version.clone()),
                // Only an unconditional write may replace what it cannot read.
                Err(e) if options.precondition != Precondition::Any => return Err(e),
                Err(_) => None,
            };
            check_precondition(SECRET_SERVICE, key, &options.precondition, current.as_ref())?;
            let attrs = attrs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            // `replace` overwrites an item with these exact attributes in place; any other
            // item of this key (other expiry, interrupted write) is deleted after.
            let item = coll
                .create_item(&label, attrs, &bytes, true, CONTENT_TYPE)
                .await
                .map_err(map_error)?;
            delete_all(&found, Some(item.item_path.as_str())).await
        })
        .await?;
        Ok(env.version)
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        key.validate()?;
        let encoded = key.encode();
        self.timed("delete", async {
            let _guard = lock::lock(&self.namespace, &encoded).await;
            let coll = self.collection().await?;
            let found = self.find(&coll, &encoded).await?;
            let existed = match newest(&found) {
                Ok(n) => {
                    let current = n.filter(|(_, live)| *live).map(|(e, _)| e.version.clone());
                    check_precondition(SECRET_SERVICE, key, precondition, current.as_ref())?;
                    current.is_some()
                }
                Err(e) if *precondition != Precondition::Any => return Err(e),
                Err(_) => true,
            };
            delete_all(&found, None).await?;
            Ok(existed)
        })
        .await
    }

    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let mut search =
            HashMap::from([("service", self.service.as_str()), ("kind", kind.as_str())]);
        if let Some(user) = filter.user_key.as_deref() {
            search.insert(part_attr(kind, 0), user);
        }
        if let (KeyKind::Token, Some(resource)) = (kind, filter.resource.as_deref()) {
            search.insert(part_attr(kind, 1), resource);
        }
        let (mut keys, to_check, mut unreadable) = self
            .timed("list", async {
                let coll = self.collection().await?;
                let items = coll.search_items(search).await.map_err(map_error)?;
                let now = millis_ceil(SystemTime::now());
                let mut keys = std::collections::BTreeMap::new();
                let mut to_check = std::collections::BTreeSet::new();
                let mut unreadable = Vec::new();
                for item in items {
                    let attrs = match item.get_attributes().await {
                        Ok(a) => a,
                        Err(e) if gone(&e) => continue,
                        Err(e) => return Err(map_error(e)),
                    };
                    let encoded = attrs.get("key").cloned().unwrap_or_default();
                    let Some(key) = StorageKey::decode(&encoded).filter(|k| k.kind() == kind)
                    else {
                        unreadable.push(ListEntry::Unreadable {
                            location: item.item_path.to_string(),
                            reason: "the item's key attribute is not a token-store key".into(),
                        });
                        continue;
                    };
                    let expired = attrs
                        .get("expires")
                        .and_then(|e| e.parse::<u64>().ok())
                        .is_some_and(|at| at <= now);
                    if expired {
                        to_check.insert(encoded.clone());
                    }
                    keys.insert(encoded, key);
                }
                Ok((keys, to_check, unreadable))
            })
            .await?;
        // An item past its expiry attribute is checked against the authoritative envelope
        // (the newest item of the key) and swept; the keychain would keep it forever.
        for encoded in to_check {
            let live = self
                .timed("list", async {
                    let _guard = lock::lock(&self.namespace, &encoded).await;
                    let coll = self.collection().await?;
                    let found = self.find(&coll, &encoded).await?;
                    match newest(&found) {
                        Ok(Some((_, true))) => Ok(true),
                        Ok(_) => delete_all(&found, None).await.map(|()| false),
                        Err(_) => Ok(true),
                    }
                })
                .await?;
            if !live {
                keys.remove(&encoded);
            }
        }
        let mut out: Vec<ListEntry> = keys.into_values().map(ListEntry::Key).collect();
        out.append(&mut unreadable);
        Ok(out)
    }
}
