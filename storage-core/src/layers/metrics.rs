use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use ::metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};
use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::key::{KeyKind, StorageKey};
use crate::metrics::{OPERATION_DURATION, OPERATIONS};
use crate::raw::{
    Capabilities, ListEntry, ListFilter, Precondition, PutOptions, RawRecord, RawStore, Version,
};
use crate::store::TokenStore;

/// Records every call through the [`metrics`](::metrics) facade: a counter
/// ([`OPERATIONS`](crate::metrics::OPERATIONS)) and a latency histogram
/// ([`OPERATION_DURATION`](crate::metrics::OPERATION_DURATION)), labelled by backend,
/// operation (`get`, `put`, `delete`, `list`) and outcome (`ok`, `miss` (nothing found),
/// `conflict`, `unavailable`, `corrupt`, `integrity`, `permission`, `too_large`, `config`,
/// `other`). Never by key. Needs the crate feature `metrics`.
///
/// Each series is registered with the recorder in force on its first call and its handles
/// kept, so a call costs two atomic updates, not a registration (an exporter copies the key
/// on each). A recorder installed later, or a thread-local one, gets handles of its own;
/// recorders are told apart by address, so a layer that outlives a thread-local recorder and
/// then meets another at the same address (a test making recorders in a loop) keeps the
/// first one's handles.
///
/// Put it outermost, so the latency includes encryption and the outcome includes timeouts:
///
/// ```
/// # async fn demo() -> token_store_core::Result<()> {
/// use token_store_core::{TokenKey, TokenStore, layers::Metrics};
/// let store = Metrics::wrap(TokenStore::in_memory());
/// store.get(&TokenKey::for_server("https://mcp.example.com")).await?; // outcome="miss"
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(demo()).unwrap();
/// ```
pub struct Metrics<R> {
    inner: R,
    keys: Box<Keys>,
    handles: RwLock<Arc<Handles>>,
}

impl<R: fmt::Debug> fmt::Debug for Metrics<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Metrics").field(&self.inner).finish()
    }
}

/// The `operation` label: one per `RawStore` call.
#[derive(Clone, Copy)]
enum Op {
    Get,
    Put,
    Delete,
    List,
}

impl Op {
    const ALL: [Op; 4] = [Op::Get, Op::Put, Op::Delete, Op::List];

    fn label(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::List => "list",
        }
    }
}

/// The `outcome` label.
#[derive(Clone, Copy)]
enum Outcome {
    Ok,
    Miss,
    Conflict,
    Unavailable,
    Corrupt,
    Integrity,
    Permission,
    TooLarge,
    Config,
    Other,
}

impl Outcome {
    const ALL: [Outcome; 10] = [
        Outcome::Ok,
        Outcome::Miss,
        Outcome::Conflict,
        Outcome::Unavailable,
        Outcome::Corrupt,
        Outcome::Integrity,
        Outcome::Permission,
        Outcome::TooLarge,
        Outcome::Config,
        Outcome::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Miss => "miss",
            Outcome::Conflict => "conflict",
            Outcome::Unavailable => "unavailable",
            Outcome::Corrupt => "corrupt",
            Outcome::Integrity => "integrity",
            Outcome::Permission => "permission",
            Outcome::TooLarge => "too_large",
            Outcome::Config => "config",
            Outcome::Other => "other",
        }
    }

    /// The outcome of an error. Coarse on purpose: a value per error an operator would act
    /// on differently, and no more.
    fn of_error(e: &Error) -> Self {
        match e {
            Error::NotFound { .. } => Outcome::Miss,
            Error::Conflict { .. } => Outcome::Conflict,
            Error::Unavailable { .. } => Outcome::Unavailable,
            Error::Corrupt { .. } => Outcome::Corrupt,
            Error::Integrity { .. } => Outcome::Integrity,
            Error::PermissionDenied { .. } | Error::Locked { .. } => Outcome::Permission,
            Error::TooLarge { .. } => Outcome::TooLarge,
            // A wrong key file or passphrase is a deployment mistake, like a bad URL.
            Error::Config { .. } | Error::WrongKey { .. } => Outcome::Config,
            _ => Outcome::Other,
        }
    }

    fn of<T>(result: &Result<T>, found: impl FnOnce(&T) -> bool) -> Self {
        match result {
            Ok(v) if found(v) => Outcome::Ok,
            Ok(_) => Outcome::Miss,
            Err(e) => Outcome::of_error(e),
        }
    }
}

/// Every series' key, built (and hashed) once per layer, so no call allocates labels or
/// hashes a key.
struct Keys {
    counters: [[Key; Outcome::ALL.len()]; Op::ALL.len()],
    durations: [[Key; Outcome::ALL.len()]; Op::ALL.len()],
}

impl Keys {
    fn new(backend: &'static str) -> Self {
        let key = |name: &'static str, op: usize, outcome: usize| {
            Key::from_parts(
                name,
                vec![
                    Label::new("backend", backend),
                    Label::new("operation", Op::ALL[op].label()),
                    Label::new("outcome", Outcome::ALL[outcome].label()),
                ],
            )
        };
        Keys {
            counters: std::array::from_fn(|op| {
                std::array::from_fn(|outcome| key(OPERATIONS, op, outcome))
            }),
            durations: std::array::from_fn(|op| {
                std::array::from_fn(|outcome| key(OPERATION_DURATION, op, outcome))
            }),
        }
    }
}

/// The handles of one recorder, each series registered on its first use (so only series
/// that occur are exported). Registering per call would cost more than the memory store's
/// whole call: exporters copy the key on every registration (Prometheus does).
struct Handles {
    /// The address of the recorder they belong to.
    recorder: usize,
    series: [[OnceLock<(Counter, Histogram)>; Outcome::ALL.len()]; Op::ALL.len()],
}

impl Handles {
    fn new(recorder: usize) -> Self {
        Handles {
            recorder,
            series: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
        }
    }
}

/// What the `metrics` macros would attach: this module, at INFO.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

impl<R: RawStore> Metrics<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Metrics {
            keys: Box::new(Keys::new(inner.backend())),
            handles: RwLock::new(Arc::new(Handles::new(0))),
            inner,
        }
    }

    fn record(&self, op: Op, outcome: Outcome, started: Instant) {
        let seconds = started.elapsed().as_secs_f64();
        let (op, outcome) = (op as usize, outcome as usize);
        ::metrics::with_recorder(|recorder| {
            // Handles stay bound to the recorder they came from: when another one is in
            // force (installed later, or a thread's local recorder), register anew.
            let id = (recorder as *const dyn Recorder).cast::<()>().addr();
            let handles = self.handles_of(id);
            let (counter, histogram) = handles.series[op][outcome].get_or_init(|| {
                (
                    recorder.register_counter(&self.keys.counters[op][outcome], &METADATA),
                    recorder.register_histogram(&self.keys.durations[op][outcome], &METADATA),
                )
            });
            counter.increment(1);
            histogram.record(seconds);
        });
    }

    fn handles_of(&self, recorder: usize) -> Arc<Handles> {
        let current = self
            .handles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if current.recorder == recorder {
            return current;
        }
        let mut slot = self.handles.write().unwrap_or_else(PoisonError::into_inner);
        if slot.recorder != recorder {
            *slot = Arc::new(Handles::new(recorder));
        }
        slot.clone()
    }
}

impl Metrics<Arc<dyn RawStore>> {
    /// The same store with every call recorded: `token_store::open(url)`'s handle, say.
    /// Wrap before adding a read cache ([`TokenStore::with_cache`]): the new handle is
    /// built over the store's backend.
    pub fn wrap(store: TokenStore) -> TokenStore {
        TokenStore::new(Metrics::new(store.raw().clone()))
    }
}

#[async_trait]
impl<R: RawStore> RawStore for Metrics<R> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        let t = Instant::now();
        let r = self.inner.read(key).await;
        self.record(Op::Get, Outcome::of(&r, Option::is_some), t);
        r
    }
    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        let t = Instant::now();
        let r = self.inner.write(key, value, options).await;
        self.record(Op::Put, Outcome::of(&r, |_| true), t);
        r
    }
    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        let t = Instant::now();
        let r = self.inner.remove(key, precondition).await;
        self.record(Op::Delete, Outcome::of(&r, |removed| *removed), t);
        r
    }
    async fn scan(&self, kind: KeyKind, filter: &ListFilter) -> Result<Vec<ListEntry>> {
        let t = Instant::now();
        let r = self.inner.scan(kind, filter).await;
        self.record(Op::List, Outcome::of(&r, |_| true), t);
        r
    }
}
