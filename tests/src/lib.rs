//! The conformance suite every token-store backend passes.
//!
//! A backend's integration test hands [`run`] a [`Factory`] that makes a fresh, isolated
//! store (a temp directory, a unique Redis prefix, a unique Vault path) and, for persistent
//! backends, a way to reopen the same data. Every case is named; a case whose capability the
//! backend lacks is reported as not applicable by name, never silently passed.
//!
//! ```no_run
//! # async fn demo() {
//! use std::sync::Arc;
//! use token_store_conformance::{Instance, run};
//! let report = run("memory", || async {
//!     Ok(Instance::new(Arc::new(token_store_core::MemoryStore::new())))
//! })
//! .await;
//! report.assert_ok();
//! # }
//! ```

mod cases;
pub mod crash;
pub mod fault;
pub mod grants;
pub mod hostile;
pub mod leak;
mod linear;
mod model;
pub mod processes;
pub mod secrets;
pub mod services;
pub mod soak;
pub mod summary;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use token_store_core::{RawStore, Result, TokenStore};

pub use linear::{concurrent_model_check, concurrent_model_check_without_deletes};
pub use model::{model_check, model_check_cases};
/// Re-exported so backend tests write strategies without a dependency of their own.
pub use proptest;
/// Re-exported for backend tests that build or read JSON.
pub use serde_json;

/// A token key with exactly these parts, uncanonicalised and unvalidated (as a foreign writer
/// may store it), built through the encoded form as a listing would yield it.
pub(crate) fn exact_token_key(
    user_key: String,
    resource: String,
    authorization_server: Option<String>,
    scope_fingerprint: String,
) -> token_store_core::TokenKey {
    use token_store_core::backend::percent_encode;
    let encoded = [
        user_key,
        resource,
        authorization_server.unwrap_or_default(),
        scope_fingerprint,
    ]
    .iter()
    .map(|p| percent_encode(p))
    .collect::<Vec<_>>()
    .join(":");
    token_store_core::StorageKey::decode(&encoded)
        .and_then(|k| token_store_core::TokenKey::from_storage_key(&k))
        .unwrap_or_else(|| panic!("not a token key: {encoded}"))
}

/// Whether the long torture variants were asked for (`TOKEN_STORE_TORTURE_LONG=1`).
pub fn torture_long() -> bool {
    std::env::var("TOKEN_STORE_TORTURE_LONG").is_ok_and(|v| v == "1" || v == "true")
}

/// A boxed future, as the factory and reopen closures return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Reopens the same data as a new store handle (a new process would see this).
pub type Reopen = Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn RawStore>>> + Send + Sync>;

/// One fresh store under test.
#[derive(Clone)]
pub struct Instance {
    /// The store.
    pub store: Arc<dyn RawStore>,
    /// How to open the same data again, for persistent backends.
    pub reopen: Option<Reopen>,
    /// The typed handle the cases use (with a read cache after [`Instance::cached`]).
    typed: TokenStore,
}

impl Instance {
    /// The store as the typed handle users hold.
    pub fn token_store(&self) -> TokenStore {
        self.typed.clone()
    }

    /// The same store with every typed call going through one read cache
    /// ([`TokenStore::with_cache`]); byte-level calls of the cases go through the layer that
    /// drops cached entries on writes, as `TokenStore::raw` does for users.
    pub fn cached(mut self, options: token_store_core::CacheOptions) -> Self {
        self.typed = self.typed.with_cache(options);
        self.store = self.typed.raw().clone();
        self
    }

    /// A store that cannot be reopened (persistence cases do not apply).
    pub fn new(store: Arc<dyn RawStore>) -> Self {
        Instance {
            typed: TokenStore::from_arc(store.clone()),
            store,
            reopen: None,
        }
    }

    /// A store with a way to reopen its data.
    pub fn with_reopen<F, Fut>(store: Arc<dyn RawStore>, reopen: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn RawStore>>> + Send + 'static,
    {
        Instance {
            typed: TokenStore::from_arc(store.clone()),
            store,
            reopen: Some(Arc::new(move || Box::pin(reopen()))),
        }
    }
}

/// Makes a fresh, empty, isolated store for each case.
pub trait Factory: Send + Sync + 'static {
    /// A fresh store.
    fn create(&self) -> BoxFuture<'static, Result<Instance>>;
}

impl<F, Fut> Factory for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Instance>> + Send + 'static,
{
    fn create(&self) -> BoxFuture<'static, Result<Instance>> {
        Box::pin(self())
    }
}

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Passed,
    /// The case does not apply to this backend, and why.
    NotApplicable(String),
    /// A check failed.
    Failed(String),
}

/// The results of a suite run on one backend.
#[derive(Debug, Clone)]
pub struct Report {
    /// The backend's name.
    pub backend: String,
    /// Each case's name and outcome, in run order.
    pub outcomes: Vec<(&'static str, Outcome)>,
}

impl Report {
    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Passed))
    }

    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    /// How many cases did not apply.
    pub fn not_applicable(&self) -> usize {
        self.count(|o| matches!(o, Outcome::NotApplicable(_)))
    }

    /// Appends the summary line to the file `TOKEN_STORE_CONFORMANCE_REPORT` names, if set,
    /// so a whole test run can print one table of cases run per backend at its end.
    fn append_summary(&self) {
        use std::io::Write;
        let Some(path) = std::env::var_os("TOKEN_STORE_CONFORMANCE_REPORT") else {
            return;
        };
        let line = self.to_string();
        let summary = line.lines().last().unwrap_or_default();
        let na: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|(n, o)| match o {
                Outcome::NotApplicable(why) => Some(format!("{n} ({why})")),
                _ => None,
            })
            .collect();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(
                f,
                "{summary}; n/a: {}",
                if na.is_empty() {
                    "none".to_owned()
                } else {
                    na.join(", ")
                }
            );
        }
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|(_, o)| f(o)).count()
    }

    /// Panics with every failure listed if any case failed (for `#[test]`s).
    pub fn assert_ok(&self) {
        println!("{self}");
        self.append_summary();
        assert!(
            self.failed() == 0,
            "conformance failures on {}:\n{self}",
            self.backend
        );
        assert!(
            self.passed() > 0,
            "no conformance case ran on {}",
            self.backend
        );
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, outcome) in &self.outcomes {
            match outcome {
                Outcome::Passed => writeln!(f, "  ok    {}::{name}", self.backend)?,
                Outcome::NotApplicable(why) => {
                    writeln!(f, "  n/a   {}::{name} ({why})", self.backend)?
                }
                Outcome::Failed(why) => writeln!(f, "  FAIL  {}::{name}: {why}", self.backend)?,
            }
        }
        write!(
            f,
            "conformance[{}]: {} cases run, {} passed, {} failed, {} not applicable",
            self.backend,
            self.passed() + self.failed(),
            self.passed(),
            self.failed(),
            self.not_applicable()
        )
    }
}

/// Runs every case against fresh stores from `factory` and reports each by name.
pub async fn run(backend: &str, factory: impl Factory) -> Report {
    let factory: Arc<dyn Factory> = Arc::new(factory);
    let mut outcomes = Vec::new();
    for (name, case) in cases::all() {
        let factory = factory.clone();
        // Each case on its own task, so a panicking case fails itself, not the run.
        let handle = tokio::spawn(async move {
            match factory.create().await {
                Ok(instance) => case(instance).await,
                Err(e) => Outcome::Failed(format!("factory failed: {e}")),
            }
        });
        let outcome = match handle.await {
            Ok(o) => o,
            Err(e) => Outcome::Failed(format!("panicked: {e}")),
        };
        outcomes.push((name, outcome));
    }
    Report {
        backend: backend.to_owned(),
        outcomes,
    }
}
