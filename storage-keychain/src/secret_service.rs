//! Linux Secret Service (gnome-keyring, KeePassXC, KWallet) through the async
//! `secret-service` crate over one persistent D-Bus connection per store.
//!
//! Every call runs under `tokio::time::timeout`, and dropping a zbus future really cancels
//! it, so a hung provider or a prompt waiting for a user never hangs the program. Nothing
//! here asks for an unlock prompt: a locked default collection is [`Error::Locked`].
//!
//! A read makes two D-Bus calls, as a bare client would: a service-wide `SearchItems`
//! (which splits unlocked from locked items) kept to the items under the default
//! collection's object path, then `GetSecret`; deletes and listings find their items the
//! same way. A miss also asks the collection's `Locked` property: a provider may hide a
//! locked collection's items (KeePassXC finds nothing in a locked database), and "not
//! found" would then be wrong. The collection's path is resolved with `ReadAlias` once per
//! session and again by every write, so a store that only reads follows a changed default
//! collection when its session is renewed or the old collection disappears; one that
//! writes, at its next write.
//!
//! Writes, deletes, sweeps and `clear` run under the key's locks: this process' mutex, then
//! the host-wide lock file ([`crate::host_lock`]), which makes their read-check-write atomic
//! against every token-store process of the user. Reads take no lock: an item is replaced
//! in place by one `CreateItem` call, so a read sees the old or the new secret. (A write
//! that changes the expiry attribute creates a new item, then deletes the old one: a read
//! that found only the old item and asks for its secret after the delete finds nothing.)
//!
//! The Diffie-Hellman session belongs to the provider process that opened it. When the
//! provider dies (or the bus connection drops) the session is marked stale and the next call
//! opens a new one — on the same connection while it is open, else on a new connection —
//! before it runs, so a restarted gnome-keyring is picked up by the same store. A call that
//! failed because the session or the provider was gone is retried once on the new session:
//! reads and listings always, writes and deletes only when the failure proves nothing was
//! changed (the provider refused the session, or the bus had no provider to deliver to).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use secret_service::{Collection, EncryptionType, Item, SecretService};
use token_store_core::backend::{check_precondition, check_size};
use token_store_core::{
    Capabilities, Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawRecord,
    RawStore, Result, Scope, StorageKey, Version, async_trait,
};
use zbus::zvariant::OwnedObjectPath;

use crate::envelope::{Envelope, millis_ceil};
use crate::host_lock::{Held, HostLocks};
use crate::{KeychainConfig, SECRET_SERVICE, slots};

const SCHEMA: &str = "org.token-store.Record";
const CONTENT_TYPE: &str = "application/octet-stream";

/// The largest value stored: gnome-keyring holds a whole collection in memory and rewrites
/// its file on every change, so items are kept far below anything D-Bus would allow.
pub const SECRET_SERVICE_MAX_VALUE: usize = 256 * 1024;

/// One session with the provider on one bus connection, replaced whole when it dies.
struct Live {
    ss: SecretService<'static>,
    conn: zbus::Connection,
    /// Set when a call saw the session (or its provider) gone: the next call opens a new one.
    stale: AtomicBool,
    /// The default collection's object path, once resolved on this session.
    default: Mutex<Option<OwnedObjectPath>>,
}

impl Live {
    fn usable(&self) -> bool {
        !self.stale.load(Ordering::Acquire) && !self.conn.is_closed()
    }

    fn cached_default(&self) -> Option<OwnedObjectPath> {
        // Poisoning only means a panic elsewhere while swapping a path; the value is whole.
        self.default
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn remember_default(&self, path: Option<OwnedObjectPath>) {
        *self.default.lock().unwrap_or_else(|p| p.into_inner()) = path;
    }
}

/// What one attempt of a call changed, to know whether retrying it is safe.
struct Attempt {
    /// A mutating call was sent and may have taken effect.
    touched: AtomicBool,
    /// The call's deadline, which lock waits keep to.
    deadline: Instant,
}

impl Attempt {
    fn new(deadline: Instant) -> Self {
        Attempt {
            touched: AtomicBool::new(false),
            deadline,
        }
    }

    /// Runs a call that changes the keychain, remembering that it may have taken effect
    /// unless its error proves it never ran.
    async fn mutate<T>(
        &self,
        call: impl Future<Output = std::result::Result<T, secret_service::Error>>,
    ) -> std::result::Result<T, secret_service::Error> {
        let before = self.touched.swap(true, Ordering::AcqRel);
        let r = call.await;
        if let Err(e) = &r
            && !before
            && never_ran(e)
        {
            self.touched.store(false, Ordering::Release);
        }
        r
    }
}

/// When a call that failed on a dead session may run again on a new one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads, listings and sweeps of expired items: running twice changes nothing.
    Always,
    /// Writes and deletes: only when the failed attempt provably changed nothing.
    IfUntouched,
}

type Attempted<'s, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 's>>;

/// A store in the default collection of the Secret Service on the D-Bus session bus.
pub struct SecretServiceStore {
    live: Mutex<Arc<Live>>,
    /// Serialises opening a new session, so concurrent calls that all saw the old one die
    /// open one new session, not one each.
    renew: tokio::sync::Mutex<()>,
    bus_address: Option<String>,
    service: String,
    timeout: Duration,
    /// This process' lock namespace (see [`crate::lock`]).
    namespace: String,
    host: HostLocks,
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
            } else if text.contains("NoSession") {
                unavailable(
                    "the Secret Service session is gone (the provider restarted?); a new one \
                     is opened on the next call",
                    Some(other),
                )
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

/// Why a session can no longer be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dead {
    /// The provider does not know the session (it restarted, or closed it).
    NoSession,
    /// Nobody owns org.freedesktop.secrets on the bus (the provider died).
    ServiceGone,
    /// The bus connection itself is gone.
    ConnectionLost,
}

fn dead(e: &secret_service::Error) -> Option<Dead> {
    if matches!(e, secret_service::Error::Unavailable) {
        return Some(Dead::ServiceGone);
    }
    let text = e.to_string();
    if text.contains("NoSession") {
        Some(Dead::NoSession)
    } else if text.contains("ServiceUnknown") || text.contains("NameHasNoOwner") {
        Some(Dead::ServiceGone)
    } else if text.contains("Disconnected") || text.contains("I/O") {
        Some(Dead::ConnectionLost)
    } else {
        None
    }
}

/// Whether a failed call certainly did nothing: the provider refused it for want of a
/// session before looking at it, or the bus had nobody to deliver it to. A call lost with
/// the connection or unanswered may have run.
fn never_ran(e: &secret_service::Error) -> bool {
    matches!(dead(e), Some(Dead::NoSession | Dead::ServiceGone))
}

/// The dead-session cause behind a mapped error, if that is what it is.
fn dead_cause(e: &Error) -> Option<Dead> {
    match e {
        Error::Unavailable {
            source: Some(source),
            ..
        } => source
            .downcast_ref::<secret_service::Error>()
            .and_then(dead),
        _ => None,
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
        // Two parts need two attributes, or the second overwrites the first and a search
        // by user (a grant store listing one user's grants) finds nothing.
        (KeyKind::Grant, 0) => "user",
        (KeyKind::Grant, _) => "grant",
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
    pub async fn connect(config: &KeychainConfig) -> Result<Self> {
        if config.service.is_empty() {
            return Err(Error::config("the keychain service name must not be empty"));
        }
        // Not per bus: two processes naming the same bus differently must still meet.
        let host = HostLocks::open(SECRET_SERVICE, &config.service, config.lock_dir.as_deref())?;
        let bus_address = config.bus_address.clone();
        let work = async {
            let conn = connect_bus(bus_address.as_deref()).await?;
            open_session(conn).await.map_err(map_error)
        };
        let live = match tokio::time::timeout(config.timeout, work).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(unavailable(
                    format!("connecting timed out after {:?}", config.timeout),
                    None,
                ));
            }
        };
        let bus = bus_address.clone().unwrap_or_else(|| "session".to_owned());
        Ok(SecretServiceStore {
            live: Mutex::new(Arc::new(live)),
            renew: tokio::sync::Mutex::new(()),
            bus_address,
            namespace: format!("{SECRET_SERVICE}\0{bus}\0{}", config.service),
            host,
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
        self.call("clear", Retry::IfUntouched, |live, attempt| {
            Box::pin(async move {
                let coll = collection(&live).await?;
                let items = coll
                    .search_items(HashMap::from([("service", self.service.as_str())]))
                    .await
                    .map_err(map_error)?;
                // Key by key under the key's locks, so that no delete lands in the middle
                // of another process' compare-and-swap.
                let mut by_key: std::collections::BTreeMap<String, Vec<&Item<'_>>> =
                    std::collections::BTreeMap::new();
                for item in &items {
                    let key = match item.get_attributes().await {
                        Ok(attrs) => attrs.get("key").cloned().unwrap_or_default(),
                        Err(e) if gone(&e) => continue,
                        Err(e) => return Err(map_error(e)),
                    };
                    by_key.entry(key).or_default().push(item);
                }
                let mut n = 0;
                for (encoded, items) in &by_key {
                    let _held = self.lock(encoded, &attempt).await?;
                    for item in items {
                        match attempt.mutate(item.delete()).await {
                            Ok(()) => n += 1,
                            Err(e) if gone(&e) => {}
                            Err(e) => return Err(map_error(e)),
                        }
                    }
                }
                Ok(n)
            })
        })
        .await
    }

    /// This process' lock of `encoded`, then the host-wide one, within the call's deadline.
    async fn lock(&self, encoded: &str, attempt: &Attempt) -> Result<Held> {
        self.host
            .lock_both(&self.namespace, encoded, attempt.deadline)
            .await
    }

    async fn timed<T>(
        &self,
        op: &str,
        deadline: Instant,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout_at(deadline.into(), fut).await {
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

    /// Runs one store operation on the current session within the timeout. When it fails
    /// because the session or its provider is gone, the session is marked stale and, if
    /// `retry` allows, the operation runs once more on a new session (same deadline).
    async fn call<'s, T: 's>(
        &'s self,
        op: &str,
        retry: Retry,
        attempt: impl Fn(Arc<Live>, Arc<Attempt>) -> Attempted<'s, T> + Send + Sync + 's,
    ) -> Result<T> {
        let deadline = Instant::now() + self.timeout;
        self.timed(op, deadline, async {
            let mut retried = false;
            loop {
                let live = self.live().await?;
                let progress = Arc::new(Attempt::new(deadline));
                let err = match attempt(live.clone(), progress.clone()).await {
                    Ok(v) => return Ok(v),
                    Err(e) => e,
                };
                let Some(cause) = dead_cause(&err) else {
                    return Err(err);
                };
                live.stale.store(true, Ordering::Release);
                let safe = retry == Retry::Always || !progress.touched.load(Ordering::Acquire);
                if retried || !safe {
                    return Err(err);
                }
                retried = true;
                tracing::debug!(
                    backend = SECRET_SERVICE,
                    op,
                    ?cause,
                    "Secret Service session lost; retrying once on a new session"
                );
            }
        })
        .await
    }

    /// The current session, or a new one when it was found dead. The happy path takes no
    /// lock but this short mutex and makes no D-Bus call.
    async fn live(&self) -> Result<Arc<Live>> {
        let current = self.current();
        if current.usable() {
            return Ok(current);
        }
        let _renewing = self.renew.lock().await;
        let current = self.current();
        if current.usable() {
            return Ok(current);
        }
        let reuse = !current.conn.is_closed();
        let conn = if reuse {
            current.conn.clone()
        } else {
            connect_bus(self.bus_address.as_deref()).await?
        };
        let fresh = match open_session(conn).await {
            Ok(live) => live,
            // The connection looked open but is not: one new connection.
            Err(e) if reuse && dead(&e) == Some(Dead::ConnectionLost) => {
                let conn = connect_bus(self.bus_address.as_deref()).await?;
                open_session(conn).await.map_err(map_error)?
            }
            Err(e) => return Err(map_error(e)),
        };
        tracing::debug!(
            backend = SECRET_SERVICE,
            bus = %self.bus,
            new_connection = !reuse,
            "opened a new Secret Service session"
        );
        let fresh = Arc::new(fresh);
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    fn current(&self) -> Arc<Live> {
        // Poisoning only means a panic elsewhere while swapping an Arc; the value is whole.
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn identity<'k>(&'k self, encoded: &'k str) -> HashMap<&'k str, &'k str> {
        HashMap::from([("service", self.service.as_str()), ("key", encoded)])
    }

    /// Every item of one key in `coll` with its decoded envelope (several only after an
    /// interrupted write; the newest wins).
    async fn find<'c>(&self, coll: &'c Collection<'_>, encoded: &str) -> Result<Vec<Found<'c>>> {
        let items = coll
            .search_items(self.identity(encoded))
            .await
            .map_err(map_error)?;
        secrets(items, encoded).await
    }

    /// [`find`](Self::find) in the default collection without resolving it or asking
    /// whether it is locked when the search answers that: two calls for a hit.
    async fn lookup<'l>(&self, live: &'l Live, encoded: &str) -> Result<Vec<Found<'l>>> {
        let items = search_default(live, self.identity(encoded)).await?;
        secrets(items, encoded).await
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

/// Connects to `address`, or to the session bus.
async fn connect_bus(address: Option<&str>) -> Result<zbus::Connection> {
    match address {
        Some(address) => match zbus::connection::Builder::address(address) {
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
                address.map_or_else(bus_hint, str::to_owned)
            ),
            Some(Box::new(e)),
        )
    })
}

/// Opens a Diffie-Hellman session with the provider on `conn`.
async fn open_session(conn: zbus::Connection) -> std::result::Result<Live, secret_service::Error> {
    let ss = SecretService::connect_with_existing(EncryptionType::Dh, conn.clone()).await?;
    Ok(Live {
        ss,
        conn,
        stale: AtomicBool::new(false),
        default: Mutex::new(None),
    })
}

/// The default collection, unlocked, or why not; resolved afresh (`ReadAlias`) and
/// remembered for reads.
async fn collection(live: &Live) -> Result<Collection<'_>> {
    let coll = match live.ss.get_default_collection().await {
        Ok(c) => c,
        Err(secret_service::Error::NoResult) => return Err(no_default()),
        Err(e) => return Err(map_error(e)),
    };
    live.remember_default(Some(coll.collection_path.clone()));
    if coll.is_locked().await.map_err(map_error)? {
        return Err(locked(LOCKED));
    }
    Ok(coll)
}

/// The default collection's path: remembered, or resolved (`ReadAlias`) and remembered.
async fn default_path(live: &Live) -> Result<OwnedObjectPath> {
    if let Some(path) = live.cached_default() {
        return Ok(path);
    }
    let path = match live.ss.get_default_collection().await {
        Ok(c) => c.collection_path,
        Err(secret_service::Error::NoResult) => return Err(no_default()),
        Err(e) => return Err(map_error(e)),
    };
    live.remember_default(Some(path.clone()));
    Ok(path)
}

fn no_default() -> Error {
    locked(
        "the Secret Service has no default collection; creating one needs a prompt \
         (start the keyring unlocked, e.g. gnome-keyring-daemon --unlock)",
    )
}

/// Whether `item` lives in the collection at `collection` (the Secret Service API puts
/// items at `<collection path>/<id>`).
fn in_collection(item: &Item<'_>, collection: &str) -> bool {
    item.item_path
        .as_str()
        .strip_prefix(collection)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The unlocked items matching `attributes` in the default collection: a service-wide
/// search kept to the collection, [`Error::Locked`] when a match there is locked. Only
/// when nothing matches is the collection asked whether it is locked.
async fn search_default<'l>(
    live: &'l Live,
    attributes: HashMap<&str, &str>,
) -> Result<Vec<Item<'l>>> {
    let mut resolved = live.cached_default().is_none();
    loop {
        let path = default_path(live).await?;
        let found = live
            .ss
            .search_items(attributes.clone())
            .await
            .map_err(map_error)?;
        if found.locked.iter().any(|i| in_collection(i, &path)) {
            return Err(locked(LOCKED));
        }
        let items: Vec<Item<'l>> = found
            .unlocked
            .into_iter()
            .filter(|i| in_collection(i, &path))
            .collect();
        if !items.is_empty() {
            return Ok(items);
        }
        let is_locked = match live.ss.get_collection_by_path(path).await {
            Ok(coll) => coll.is_locked().await,
            Err(e) => Err(e),
        };
        match is_locked {
            Ok(true) => return Err(locked(LOCKED)),
            Ok(false) => return Ok(items),
            // The remembered collection was deleted (or renamed): resolve it again, once.
            Err(e) if gone(&e) && !resolved => {
                live.remember_default(None);
                resolved = true;
            }
            Err(e) => return Err(map_error(e)),
        }
    }
}

/// Each item's decoded envelope, skipping items deleted meanwhile.
async fn secrets<'c>(items: Vec<Item<'c>>, encoded: &str) -> Result<Vec<Found<'c>>> {
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

async fn delete_all(attempt: &Attempt, found: &[Found<'_>], keep: Option<&str>) -> Result<()> {
    for f in found {
        if Some(f.item.item_path.as_str()) == keep {
            continue;
        }
        match attempt.mutate(f.item.delete()).await {
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

    fn capabilities(&self) -> Capabilities {
        // Atomic across this host's token-store processes (the host lock), not across hosts.
        Capabilities::new(SECRET_SERVICE_MAX_VALUE)
            .with_sharing(Scope::Host)
            .with_cas(Scope::Host)
            .with_ttl()
            .with_persistence(true)
    }

    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        key.validate()?;
        let encoded = &key.encode();
        self.call("get", Retry::Always, |live, _| {
            Box::pin(async move {
                let found = self.lookup(&live, encoded).await?;
                Ok(match newest(&found)? {
                    Some((env, true)) => Some(
                        RawRecord::new(env.value.clone(), env.version.clone())
                            .with_expiry(env.expires_at),
                    ),
                    _ => None,
                })
            })
        })
        .await
    }

    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        key.validate()?;
        check_size(SECRET_SERVICE, key, value.len(), SECRET_SERVICE_MAX_VALUE)?;
        let encoded = &key.encode();
        let env = Envelope::new(key, value, options.ttl)?;
        let expires = if env.expires_at.is_some() {
            env.expires_millis().to_string()
        } else {
            String::new()
        };
        let bytes = &env.encode();
        let label = &slots::label(key);
        let attrs = &self.attributes(key, encoded, &expires);
        self.call("put", Retry::IfUntouched, |live, attempt| {
            Box::pin(async move {
                let _held = self.lock(encoded, &attempt).await?;
                let coll = collection(&live).await?;
                let found = self.find(&coll, encoded).await?;
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
                let item = attempt
                    .mutate(coll.create_item(label, attrs, bytes, true, CONTENT_TYPE))
                    .await
                    .map_err(map_error)?;
                delete_all(&attempt, &found, Some(item.item_path.as_str())).await
            })
        })
        .await?;
        Ok(env.version)
    }

    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        key.validate()?;
        let encoded = &key.encode();
        self.call("delete", Retry::IfUntouched, |live, attempt| {
            Box::pin(async move {
                let _held = self.lock(encoded, &attempt).await?;
                let found = self.lookup(&live, encoded).await?;
                let existed = match newest(&found) {
                    Ok(n) => {
                        let current = n.filter(|(_, live)| *live).map(|(e, _)| e.version.clone());
                        check_precondition(SECRET_SERVICE, key, precondition, current.as_ref())?;
                        current.is_some()
                    }
                    Err(e) if *precondition != Precondition::Any => return Err(e),
                    Err(_) => true,
                };
                delete_all(&attempt, &found, None).await?;
                Ok(existed)
            })
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
        let search = &search;
        let (mut keys, to_check, mut unreadable) = self
            .call("list", Retry::Always, |live, _| {
                Box::pin(async move {
                    let items = search_default(&live, search.clone()).await?;
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
            })
            .await?;
        // An item past its expiry attribute is checked against the authoritative envelope
        // (the newest item of the key) and swept; the keychain would keep it forever.
        // Sweeping is safe to repeat: a retry re-reads what the first attempt left.
        for encoded in to_check {
            let encoded = &encoded;
            let live = self
                .call("list", Retry::Always, |live, attempt| {
                    Box::pin(async move {
                        let _held = self.lock(encoded, &attempt).await?;
                        let found = self.lookup(&live, encoded).await?;
                        match newest(&found) {
                            Ok(Some((_, true))) => Ok(true),
                            Ok(_) => delete_all(&attempt, &found, None).await.map(|()| false),
                            Err(_) => Ok(true),
                        }
                    })
                })
                .await?;
            if !live {
                keys.remove(encoded);
            }
        }
        let mut out: Vec<ListEntry> = keys.into_values().map(ListEntry::Key).collect();
        out.append(&mut unreadable);
        Ok(out)
    }
}
