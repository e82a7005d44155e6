//! Secret-leak check: the whole conformance suite runs with every `tracing` event (TRACE level,
//! every target, `log` records of client libraries included) written into a buffer, with
//! every store call's result and error formatted (`Display`, `Debug`, the source chain) into the
//! same buffer, and the stores' own `Debug`; then the buffer is searched for the suite's
//! secrets ([`crate::secrets::CANARY`]) and for any secret the backend test adds (passphrases,
//! service tokens).
//!
//! It also exercises every audited change (`token_store::audit`: stored, refreshed, deleted,
//! revoked, conflict_lost, lease_taken_over) and checks that the captured audit events exist
//! and name no key part the stores saw (users, URLs, lease names): only a fingerprint.
//!
//! The capturing subscriber is global, so run a leak check from its own test binary (one
//! test file per backend): everything else in that process is captured too.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use token_store_core::layers::Traced;
use token_store_core::{
    Capabilities, ClientKey, ClientRegistration, KeyKind, Lease, LeaseOptions, ListEntry,
    ListFilter, Precondition, PutOptions, RawRecord, RawStore, RefreshError, Result, StorageKey,
    TokenKey, TokenManager, TokenRecord, Version, audit,
};

use crate::{BoxFuture, Factory, Instance};

/// The captured text of this process.
#[derive(Clone, Default)]
pub struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl Capture {
    /// Appends a line.
    pub fn line(&self, text: &str) {
        let mut b = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        b.extend_from_slice(text.as_bytes());
        b.push(b'\n');
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Bytes captured so far.
    pub fn len(&self) -> usize {
        self.buf.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Writer(Capture);

impl std::io::Write for Writer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .buf
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per process) a TRACE-level subscriber for every target writing into the
/// returned buffer, and routes `log` records into it.
pub fn capture() -> Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            let sink = capture.clone();
            let installed = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_target(true)
                .with_writer(move || Writer(sink.clone()))
                .try_init();
            if let Err(e) = installed {
                panic!("leak check: cannot install the capturing subscriber: {e}");
            }
            capture
        })
        .clone()
}

/// A layer writing every call and its outcome, `Debug` and `Display`, into the capture.
#[derive(Debug)]
pub struct Recording<R> {
    inner: R,
}

/// Every key part the recorded stores saw (user ids, URLs, lease names...): none may appear
/// in an audit event.
fn key_parts() -> &'static Mutex<BTreeSet<String>> {
    static PARTS: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    PARTS.get_or_init(Default::default)
}

fn note_key(key: &StorageKey) {
    let mut parts = key_parts().lock().unwrap_or_else(|e| e.into_inner());
    for part in key.parts() {
        if !parts.contains(part) {
            parts.insert(part.clone());
        }
    }
    // Percent-encoded, as a key's Display would show it.
    parts.insert(key.encode());
}

fn record<T: std::fmt::Debug>(op: &str, key: &str, result: &Result<T>) {
    let c = capture();
    let mut line = format!("call {op} {key}: ");
    match result {
        Ok(v) => {
            let _ = write!(line, "ok {v:?}");
        }
        Err(e) => {
            let _ = write!(line, "err {e} / {e:?}");
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let _ = write!(line, " / caused by: {s} / {s:?}");
                source = s.source();
            }
        }
    }
    c.line(&line);
}

impl<R: RawStore> Recording<R> {
    /// Wraps `inner`; its `Debug` goes into the capture now.
    pub fn new(inner: R) -> Self {
        capture().line(&format!("store: {inner:?}"));
        Recording { inner }
    }
}

#[async_trait]
impl<R: RawStore> RawStore for Recording<R> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn read(&self, key: &StorageKey) -> Result<Option<RawRecord>> {
        note_key(key);
        let r = self.inner.read(key).await;
        record("read", &key.to_string(), &r);
        r
    }
    async fn write(&self, key: &StorageKey, value: &[u8], options: &PutOptions) -> Result<Version> {
        note_key(key);
        let r = self.inner.write(key, value, options).await;
        record("write", &format!("{key} {options:?}"), &r);
        r
    }
    async fn remove(&self, key: &StorageKey, precondition: &Precondition) -> Result<bool> {
        note_key(key);
        let r = self.inner.remove(key, precondition).await;
        record("remove", &format!("{key} {precondition:?}"), &r);
        r
    }
    async fn scan(
        &self,
        kind: token_store_core::KeyKind,
        filter: &ListFilter,
    ) -> Result<Vec<ListEntry>> {
        let r = self.inner.scan(kind, filter).await;
        record("scan", &format!("{kind:?} {filter:?}"), &r);
        r
    }
}

fn wrap(store: Arc<dyn RawStore>) -> Arc<dyn RawStore> {
    Arc::new(Recording::new(Traced::new(store)))
}

/// A record whose free-form `extra` and `metadata` hold vendor tokens (as a provider's token
/// response may: a nested user token, a raw response copy): written, read back, and its
/// `Debug` and the read's `Debug` captured. Only field names may show.
async fn vendor_fields(instance: &Instance, capture: &Capture) {
    let store = instance.token_store();
    let key = TokenKey::for_server("https://vendor-fields.example/mcp");
    let mut record = token_store_core::TokenRecord::new(crate::secrets::secret("vendor-at"));
    record.extra.insert(
        "authed_user".into(),
        serde_json::json!({ "access_token": crate::secrets::secret("nested-user-token") }),
    );
    record.metadata.insert(
        "raw".into(),
        serde_json::Value::String(crate::secrets::secret("raw-response-copy")),
    );
    capture.line(&format!("vendor record: {record:?} / {record:#?}"));
    let put = store.put(&key, &record, Precondition::Any).await;
    capture.line(&format!("vendor put: {put:?}"));
    let got = store.get(&key).await;
    capture.line(&format!("vendor get: {got:?}"));
    let mut client = token_store_core::ClientRegistration::new("vendor-client");
    client.extra.insert(
        "software_statement".into(),
        serde_json::Value::String(crate::secrets::secret("client-extra")),
    );
    capture.line(&format!("vendor client: {client:?}"));
}

/// Every audited change once, on keys whose parts are easy to recognise, with tokens made by
/// [`crate::secrets::secret`]: stored, refreshed (by [`TokenManager`]), conflict_lost,
/// revoked (a rejected refresh token), stored and deleted (a client registration), and a
/// lease taken over from a dead holder. Results and errors go into the capture too.
async fn audit_trail(instance: &Instance, capture: &Capture) {
    use crate::secrets::secret;
    let key = TokenKey::new(
        "audit-user-leakcheck",
        "https://audit-resource.leakcheck.example/mcp",
        Some("https://audit-issuer.leakcheck.example"),
        ["audit-scope-leakcheck"],
    );
    let expiring = |tag: &str| {
        TokenRecord::new(secret(format!("audit-at-{tag}")))
            .with_refresh_token(secret(format!("audit-rt-{tag}")))
            .expires_in(Duration::ZERO)
    };
    // A test in one process: the store's CAS scope does not matter here.
    let manager = TokenManager::assume_single_process(instance.token_store());
    // Writes through the manager's handle, so its read cache sees them at once.
    let store = manager.store().clone();
    let stored = store.put(&key, &expiring("0"), Precondition::Any).await;
    capture.line(&format!("audit stored: {stored:?}"));
    let refreshed = manager
        .valid_token(&key, |old| async move {
            capture_line(&format!("audit refreshing: {old:?}"));
            Ok(TokenRecord::new(secret("audit-at-1"))
                .with_refresh_token(secret("audit-rt-1"))
                .expires_in(Duration::from_secs(3600)))
        })
        .await;
    capture.line(&format!("audit refreshed: {refreshed:?}"));
    let lost = store
        .put(
            &key,
            &expiring("lost"),
            Precondition::IfVersion(Version::new("audit-stale")),
        )
        .await;
    capture.line(&format!("audit conflict: {lost:?}"));
    let _ = store.put(&key, &expiring("2"), Precondition::Any).await;
    let revoked = manager
        .valid_token(&key, |_| async {
            Err(RefreshError::Rejected("invalid_grant".into()))
        })
        .await;
    capture.line(&format!("audit revoked: {revoked:?}"));
    let client = ClientKey::new("https://audit-issuer.leakcheck.example")
        .with_application("audit-app-leakcheck");
    let mut registration = ClientRegistration::new("audit-client-leakcheck");
    registration.client_secret = Some(secret("audit-client-secret").into());
    let put = store
        .put_client(&client, &registration, Precondition::Any)
        .await;
    let deleted = store.delete_client(&client, Precondition::Any).await;
    capture.line(&format!("audit client: {put:?} {deleted:?}"));
    // A holder that died left an unreadable lease record: the next taker replaces it.
    let name = "refresh:audit-lease-leakcheck";
    match StorageKey::single(KeyKind::Lease, name) {
        Ok(lease_key) => {
            let _ = instance
                .store
                .write(&lease_key, b"{\"owner\": 1}", &PutOptions::default())
                .await;
        }
        Err(e) => capture.line(&format!("audit lease key: {e}")),
    }
    let options = LeaseOptions::new(Duration::from_secs(10), Duration::from_secs(5));
    match Lease::acquire(&store, name, &options).await {
        Ok(lease) => {
            let released = lease.release().await;
            capture.line(&format!("audit lease released: {released:?}"));
        }
        Err(e) => capture.line(&format!("audit lease: {e} / {e:?}")),
    }
}

fn capture_line(text: &str) {
    capture().line(text);
}

/// The audit events of `text` (target `token_store::audit`): there must be some, every
/// action must show, and no key part the stores saw may appear in one (keys name users and
/// URLs; an event carries only a fingerprint). Returns how many there were.
fn check_audit(backend: &str, text: &str) -> usize {
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(audit::TARGET)).collect();
    assert!(
        !lines.is_empty(),
        "leak[{backend}]: no audit events ({}) were captured",
        audit::TARGET
    );
    for action in [
        "stored",
        "refreshed",
        "deleted",
        "revoked",
        "conflict_lost",
        "lease_taken_over",
    ] {
        let field = format!("action=\"{action}\"");
        assert!(
            lines.iter().any(|l| l.contains(&field)),
            "leak[{backend}]: no audit event with {field}"
        );
    }
    let parts = key_parts()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // Short parts ("u", "read") and digests (state and lease names) would match by accident.
    let telling: Vec<&String> = parts
        .iter()
        .filter(|p| p.len() >= 5 && !p.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert!(
        telling.iter().any(|p| p.contains("audit-user-leakcheck"))
            && telling.iter().any(|p| p.contains("mcp.example.com")),
        "leak[{backend}]: the recorded key parts miss the suite's keys: {telling:?}"
    );
    for line in &lines {
        assert!(line.contains("key_fp="), "leak[{backend}]: {line}");
        for part in &telling {
            assert!(
                !line.contains(part.as_str()),
                "leak[{backend}]: a key part ({part:?}) in the audit event: {line}"
            );
        }
    }
    lines.len()
}

/// Store URLs carrying secrets (a password with `@` in it, an AppRole `secret_id`, a token, a
/// password parameter): their `Display`, `Debug`, `redacted()` and the errors parsing them
/// gives are captured.
fn store_urls(capture: &Capture) {
    let pw = crate::secrets::secret("url-pw");
    let secret_id = crate::secrets::secret("url-secret-id");
    let token = crate::secrets::secret("url-token");
    for raw in [
        format!("redis://user:{pw}@x@127.0.0.1:1/?prefix=p&unknown_param=1"),
        format!("rediss://:{pw}@127.0.0.1:1/"),
        format!("vault://127.0.0.1:1/secret?role_id=R&secret_id={secret_id}&bogus=1"),
        format!("vaults://127.0.0.1:1/?token={token}&prefix=a&prefix=b"),
        format!("redis://127.0.0.1:1/?password={pw}&timeout_ms=0"),
    ] {
        match token_store_core::StoreUrl::parse(&raw) {
            Ok(url) => {
                capture.line(&format!("url: {url} / {url:?} / {}", url.redacted()));
                match url.params() {
                    Ok(mut params) => {
                        let _ = params.prefix();
                        let _ = params.timeout();
                        if let Err(e) = params.finish() {
                            capture.line(&format!("url error: {e} / {e:?}"));
                        }
                    }
                    Err(e) => capture.line(&format!("url error: {e} / {e:?}")),
                }
            }
            Err(e) => capture.line(&format!("url parse error: {e} / {e:?}")),
        }
    }
}

/// What a leak check found.
#[derive(Debug, Clone)]
pub struct LeakReport {
    /// Bytes of logs, results and errors searched.
    pub captured: usize,
    /// Conformance cases run under capture.
    pub cases: usize,
    /// Excerpts around each secret found (the secret itself blanked out).
    pub leaks: Vec<String>,
}

impl LeakReport {
    /// Panics listing the leaks, if any.
    pub fn assert_ok(&self, backend: &str) {
        assert!(
            self.leaks.is_empty(),
            "leak[{backend}]: {} secrets found in logs, errors or Debug output:\n{}",
            self.leaks.len(),
            self.leaks.join("\n")
        );
    }
}

/// Runs the whole conformance suite on stores from `factory` with everything captured, plus
/// a corrupt-record read (its error must not quote the stored bytes), then searches the
/// capture for the suite's secrets and for `extra` (passphrases, service tokens). Appends a
/// `torture leak` line to the report. Call from a multi-threaded tokio test in its own binary.
pub async fn leak_check(backend: &str, factory: impl Factory, extra: Vec<String>) -> LeakReport {
    let capture = capture();
    let before = capture.len();
    let started = Instant::now();
    let factory = Arc::new(factory);
    let wrapped = {
        let factory = factory.clone();
        move || -> BoxFuture<'static, Result<Instance>> {
            let factory = factory.clone();
            Box::pin(async move {
                let instance = factory.create().await?;
                let store = wrap(instance.store);
                Ok(match instance.reopen {
                    Some(reopen) => Instance::with_reopen(store, move || {
                        let reopen = reopen.clone();
                        async move { Ok(wrap(reopen().await?)) }
                    }),
                    None => Instance::new(store),
                })
            })
        }
    };
    let report = crate::run(backend, wrapped.clone()).await;
    capture.line(&format!("report: {report}\n{report:?}"));
    // A record that is not JSON but holds a secret: the Corrupt error must not quote it.
    match wrapped().await {
        Ok(instance) => {
            let key = TokenKey::for_server("https://leak.example/mcp");
            let garbage = format!(
                "{{\"access_token\": \"{}\", oops",
                crate::secrets::secret("corrupt-record")
            );
            let _ = instance
                .store
                .write(
                    &key.storage_key(),
                    garbage.as_bytes(),
                    &PutOptions::default(),
                )
                .await;
            let got = instance.token_store().get(&key).await;
            capture.line(&format!("corrupt read: {:?}", got.as_ref().map(|_| ())));
            if let Err(e) = &got {
                capture.line(&format!("corrupt read error: {e} / {e:?}"));
            }
            // A conflict error and the store's Debug, for good measure.
            let conflict = instance
                .token_store()
                .put(
                    &key,
                    &token_store_core::TokenRecord::new(crate::secrets::secret("conflict")),
                    Precondition::IfVersion(Version::new("no-such-version")),
                )
                .await;
            capture.line(&format!("conflict: {conflict:?} / {:?}", instance.store));
            vendor_fields(&instance, &capture).await;
            audit_trail(&instance, &capture).await;
        }
        Err(e) => capture.line(&format!("factory failed: {e}")),
    }
    store_urls(&capture);
    // A positive control: a TRACE event of an arbitrary target must reach the capture.
    let control = crate::services::unique("leak-control");
    tracing::trace!(target: "token_store_leak_control", "{control}");
    let text = capture.text();
    assert!(
        text.contains(&control),
        "leak[{backend}]: TRACE events of other targets are not captured"
    );
    let searched = &text[before.min(text.len())..];
    // The capture must really hold the stores' trace output, or the check proves nothing.
    assert!(
        searched.contains("token store call") && searched.contains("call write"),
        "leak[{backend}]: the capture holds no store calls; is another subscriber installed?"
    );
    if let Some(dir) = std::env::var_os("TOKEN_STORE_LEAK_DUMP") {
        // For looking at what was searched (it holds no secret if the check passes).
        let _ = std::fs::write(
            std::path::Path::new(&dir).join(format!("{backend}.log")),
            searched,
        );
    }
    let audit_events = check_audit(backend, searched);
    let leaks = crate::secrets::find_leaks(searched, &extra);
    // Not `assert_ok`: that would count this run in the conformance table a second time.
    assert!(
        report.failed() == 0 && report.passed() > 0,
        "leak[{backend}]: the suite failed under capture:\n{report}"
    );
    let out = LeakReport {
        captured: searched.len(),
        cases: report.passed() + report.failed(),
        leaks,
    };
    crate::summary::torture(
        "leak",
        backend,
        &[
            ("cases", out.cases.to_string()),
            ("captured_bytes", out.captured.to_string()),
            ("secrets_searched", (1 + extra.len()).to_string()),
            ("audit_events", audit_events.to_string()),
            ("leaks", out.leaks.len().to_string()),
            ("secs", format!("{:.1}", started.elapsed().as_secs_f64())),
        ],
    );
    out
}
