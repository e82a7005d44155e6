//! The Vault / OpenBao backend of token-store: records in a KV **v2** secrets engine.
//!
//! # Opening a store
//!
//! [`open_url`] reads a URL, [`open`] takes a [`VaultConfig`] built in code; both return the
//! [`TokenStore`] handle with the configured layers (the per-call time limit, and the
//! encryption layer when a key is given). [`VaultStore::open`] is the raw backend, without
//! layers.
//!
//! ```no_run
//! # async fn demo() -> token_store_core::Result<()> {
//! use std::time::Duration;
//! use token_store_core::{KeySource, StoreUrl};
//! use token_store_vault::{Auth, VaultConfig};
//!
//! // From a URL, credentials from VAULT_ROLE_ID / VAULT_SECRET_ID:
//! let store = token_store_vault::open_url(&StoreUrl::parse("vaults://bao.internal/secret?prefix=mcp")?).await?;
//!
//! // The same in code:
//! let config = VaultConfig::new("https://bao.internal:8200", Auth::approle("role-id", "secret-id"))?
//!     .with_prefix("mcp")?
//!     .with_timeout(Duration::from_secs(5))
//!     .with_key(KeySource::KeyFile("/etc/app/token.key".into()));
//! let store = token_store_vault::open(config).await?;
//! # Ok(()) }
//! ```
//!
//! # URL grammar
//!
//! | URL | meaning |
//! | --- | --- |
//! | `vault://host[:port][/mount]` | plain HTTP (port 8200 by default, mount `secret`) |
//! | `vaults://host[:port][/mount]` | HTTPS, system roots or `ca=` / `VAULT_CACERT` |
//! | `vault://` or `vaults://` (no host), `vault:///mount` | the address from `VAULT_ADDR` (or `BAO_ADDR`) |
//!
//! Query parameters follow core's one grammar: an unknown, duplicated or malformed parameter
//! is a configuration error naming it, so a typo never sends tokens somewhere unexpected or
//! stores them unencrypted.
//!
//! | parameter | default | |
//! | --- | --- | --- |
//! | `prefix=P` | `token-store` | folder under the mount (may be nested; `prefix=/` for the mount's root) |
//! | `namespace=NS` | `VAULT_NAMESPACE` / `BAO_NAMESPACE` | Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`) |
//! | `ca=FILE` | `VAULT_CACERT` / `BAO_CACERT` | PEM CA bundle; it **replaces** the system roots, as in the Vault CLI (`~/` expanded) |
//! | `timeout_ms=N` | 10000 | bound on each store call, all its HTTP requests included (N > 0) |
//! | `token_env=VAR` | `VAULT_TOKEN` / `BAO_TOKEN` | read the token from another variable |
//! | `role_id=R`, `secret_id_env=VAR` / `secret_id=S` | `VAULT_ROLE_ID`, `VAULT_SECRET_ID` (`BAO_*`) | AppRole login instead of a token |
//! | `approle_mount=M` | `approle` | where AppRole is mounted |
//! | `key_file=F` / `passphrase_file=F` / `passphrase_env=VAR` | – | wrap the store in token-store's encryption layer |
//! | `reclaim_after_ms=N` | 3600000 (1 h) | the youngest tombstone reclamation removes (N > 0; the same for every client of the prefix, see "Reclaiming deleted keys") |
//! | `reclaim_in_listings=BOOL` | `true` | whether listings reclaim the old tombstones they meet |
//!
//! Credentials, in order: `token_env=` (a token; refused together with AppRole parameters);
//! AppRole when a role id is given (`role_id=`, else `VAULT_ROLE_ID`), with the secret id
//! from `secret_id_env=`, `secret_id=` or `VAULT_SECRET_ID`; else `VAULT_TOKEN`. A token
//! never goes in the URL (`token=` is refused): URLs end up in logs and shell history. For
//! the same reason prefer `secret_id_env=` or `VAULT_SECRET_ID` to `secret_id=`; where it is
//! used anyway, the URL's `Display` (core's [`StoreUrl::redacted`]) hides it, and this crate
//! names a store only by [`VaultConfig`]'s `Display`, which holds no credential at all.
//!
//! # Time limits
//!
//! One per-call limit, [`DEFAULT_TIMEOUT`] unless `timeout_ms=` or
//! [`VaultConfig::with_timeout`] says otherwise: core's `Timeout` layer, which [`open`]
//! stacks. A call that exceeds it fails with `Unavailable`; dropping the call cancels its
//! HTTP request for real. The same limit is handed to `reqwest` as each request's limit, and
//! connects are bounded by the shorter of it and 5 s: that is what bounds the AppRole login
//! inside [`VaultStore::open`] (no layer is around the store yet) and the calls of a raw
//! [`VaultStore`] used without layers.
//!
//! # Authentication
//!
//! A token (`VAULT_TOKEN`) is used as given: renewing it is its owner's business (use a
//! periodic token or an agent). With AppRole the store logs in at open, renews its token
//! (`auth/token/renew-self`) once two thirds of the lease have passed, and logs in again when
//! renewal is refused or no longer buys at least a third of the original lease (max TTL).
//! That happens lazily inside the next call, under a `tokio::sync::RwLock`: no background
//! task, and callers never see an expired token. A 403 under AppRole triggers one fresh login
//! and retry (the token may have been revoked, or the server restarted) before it is
//! reported as `PermissionDenied`.
//!
//! # Layout
//!
//! With mount `M` and prefix `P`, a key's record is the KV v2 secret
//!
//! ```text
//! M/data/P/token/<user_key>/<resource>:<authorization_server>:<scopes>
//! M/data/P/client/<authorization_server>/<application>
//! M/data/P/state/<state digest>      M/data/P/lease/<name>      M/data/P/meta/<name>
//! ```
//!
//! where every part is percent-encoded exactly as [`StorageKey::encode`] does it (Python's
//! `quote(part, safe="")`, the key layout mcp-agent uses), and a whole path segment that
//! would be empty, `.` or `..` is written `!`, `%2E`, `%2E%2E` (forms the encoder never
//! produces, so the mapping stays one-to-one). On the wire each `%` is escaped once more
//! (`%25`), because Vault decodes the request path: the KV key name is the encoded text.
//! Listing one user's tokens is one `LIST M/metadata/P/token/<user_key>/`; listing all is
//! one LIST per user. A missing folder (404) is an empty list. LIST also names deleted keys
//! (their tombstones, below), so each listed key is read, 8 at a time, and tombstones are
//! left out; an entry that does not decode is listed, so it can be found and replaced.
//!
//! The KV data map of a record is `{"value": "<base64 of the bytes>", "generation": "<hex>"}`
//! (the bytes are the JSON record of token-store-core, or its ciphertext under the
//! encryption layer). Base64 because the bytes need not be UTF-8; its 4/3 growth is why
//! [`MAX_VALUE_SIZE`] is 256 KiB: 342 KiB stored, under Consul storage's 512 KiB entry limit
//! and raft's 1 MiB default.
//!
//! # Versions and compare-and-swap
//!
//! A version is `"<kv version>@<generation>"`. The generation is 64 random bits chosen by
//! every create and unconditional write, and carried by a compare-and-swap write. The store
//! never deletes a key's metadata, so KV versions only grow; but KV v2 restarts at version 1
//! after a metadata delete by anyone else (`bao kv metadata delete`, an older token-store),
//! and without the generation a client holding version `1` of the deleted record could then
//! overwrite a newly created one (ABA).
//!
//! Writes, by precondition:
//!
//! - **unconditional**: one plain write (no `cas`), whatever the key holds (a record, a
//!   tombstone, foreign data), under a new generation; a holder of any older version then
//!   fails its `IfVersion`. Where the mount or key has `cas_required`, Vault refuses it; the
//!   store then reads and writes with `cas` as below, for that call and every later one.
//! - **create** (`IfAbsent`): one write with `cas` 0, which Vault accepts only when the key
//!   has no version at all. A key with metadata (a tombstone, a record) refuses it, and the
//!   store reads and judges, as for `IfVersion`.
//! - **`IfVersion`**: a read of the current version and generation, the check, then a write
//!   with KV v2's `cas` option set to the version read (2 requests). `cas` compares only the
//!   KV version, and after a metadata delete and re-creation a stale version names the same
//!   number as the new record: only the read can tell the generations apart, so this cannot
//!   be one request without losing the ABA guarantee. A version of another generation is a
//!   conflict even when the KV version numbers match.
//!
//! Vault rejects a `cas` write atomically if anyone wrote in between (HTTP 400
//! "check-and-set parameter did not match"); the store then re-reads and judges again, so
//! `Conflict` always names the version that is current (or `None`). The remaining ABA
//! window: a stale writer's read and its `cas` write (one round trip) would both have to
//! straddle a delete *and* a re-creation that reached the same KV version.
//!
//! A delete is one `cas` write of a tombstone version, `{"tombstone": true, ...}`, after a
//! read (the precondition, and whether there was anything to delete), and that is its final
//! state: atomic, so of several racing conditional deleters (two callbacks taking one PKCE
//! state) exactly one wins, and a stale writer's `cas` fails from then on. Readers treat a
//! tombstone as absent and a create `cas`-writes over it, making a newer version. The key's
//! metadata is never deleted: KV v2 can only delete it unconditionally, and doing so after
//! "the tombstone is still the latest" (two requests) could wipe a create acknowledged in
//! between. So no acknowledged write is ever lost to a delete.
//!
//! So that a deleted token is really gone from Vault, the delete then `destroy`s every
//! version older than the tombstone. For a history of up to 128 versions it names them all
//! without looking (Vault skips versions already destroyed or no longer kept); a longer one
//! is read from the key's metadata first, to name only those whose data still exists. That
//! is safe against a concurrent create too: it makes a version newer than the tombstone,
//! which is never named. If the client dies between the tombstone and the destroy (or the
//! destroy fails, then the delete reports the error although it happened), the older
//! versions stay until the next delete of that key, which finishes the job even when the
//! key is already absent. A soft-deleted (`bao kv delete`) or destroyed latest version also
//! reads as absent and is created over with `cas`.
//!
//! Deleted keys leave their metadata and a tombstone version (a few hundred bytes, no token
//! material) in Vault, and LIST names them: a key written again reuses them, but every
//! distinct key ever deleted, e.g. each PKCE state taken, would stay, and every listing
//! (`purge_expired_states` among them) would read each one. Reclamation removes them.
//!
//! # Reclaiming deleted keys
//!
//! KV v2 removes a key's metadata only unconditionally (`DELETE <mount>/metadata/<key>`; OpenBao's
//! `metadata_cas` guards metadata *updates* only, and data writes do not move it). Deleting after
//! "the latest version is still our tombstone" (two requests) would wipe a create acknowledged
//! in between: the bug the tombstones were introduced to fix. So a reclamation first makes
//! every writer of the key wait, with requests Vault judges atomically, and deletes only then:
//!
//! 1. the key's latest version `t` is our tombstone, written at least
//!    [`reclaim_after`](VaultConfig::reclaim_after) ago (1 h by default);
//! 2. its metadata still says `t`; the reclamation sets the key's `cas_required`, so from now on
//!    Vault refuses any write that does not name the version it replaces;
//! 3. it writes a *marker* over the tombstone with `cas = t`, `{"tombstone": true, "reclaim":
//!    true, ...}`. If anything was written since step 1 the `cas` fails and the reclamation
//!    stops there (the writer won; `cas_required` is taken off again);
//! 4. it checks the tombstone's age with Vault's own `created_time`s (the marker's minus the
//!    tombstone's), so no client clock decides; too young, the marker becomes a plain
//!    tombstone again;
//! 5. it deletes the metadata, but only if at most 10 s passed since it sent the marker.
//!
//! Every writer reads before it writes over a deleted key (a create's `cas` 0 fails on a key
//! with metadata; an unconditional write is refused by `cas_required`), and a writer that
//! reads a marker younger than [`RECLAIM_LEASE`] (30 s, by the server's clock) does not write:
//! it waits (2 ms doubling to 50 ms) until the key is gone, then creates it afresh with `cas`
//! 0. So between the marker and the metadata delete no write can land on the key, and the
//! delete can only remove the tombstone and the marker. A marker older than the lease was
//! abandoned (its reclaimer died or gave up): writers then `cas`-write over it as over a
//! tombstone and take `cas_required` off again. A write waiting on a marker fails with
//! `Unavailable` (retryable) if its call's time limit runs out first.
//!
//! What this rests on, beyond Vault applying each request atomically:
//!
//! - **A request reaches Vault within 20 s of being sent** (the lease minus the 10 s within
//!   which the metadata delete must be sent): otherwise a delete held up longer (say in a
//!   Vault that was paused) could land after writers took over the marker. A reclamation whose
//!   metadata delete was refused outright turns the marker back into a tombstone at once.
//! - **No store call takes longer than half of `reclaim_after` between the read it judges by
//!   and its `cas` write** (each write and delete checks and re-reads rather than send a `cas`
//!   based on an older read). After a reclamation KV versions restart at 1; a writer's
//!   version is `"<kv version>@<generation>"` and the generation is new with every creation,
//!   so a stale `IfVersion` from before the reclamation is a conflict, never a success (the
//!   ABA the generations exist for). What the generation cannot cover is one call's own read
//!   and `cas` straddling a deletion, reclamation and re-creation up to the same KV version:
//!   that needs the tombstone to age `reclaim_after` in between, which the rule excludes.
//!   Every client of a prefix must therefore use the same `reclaim_after` (or a larger one).
//!
//! Who reclaims: listings do, lazily — a listing reads every listed key anyway, and reclaims up
//! to 16 of the old tombstones it finds (so `purge_expired_states`, which lists the states,
//! keeps the taken ones from piling up without any change to the typed layer); its failures
//! are logged at `debug` and never fail the listing, and a policy that refuses them turns them
//! off for the store. [`VaultStore::reclaim`] (every kind) and [`VaultStore::reclaim_kind`] are
//! the explicit sweep, for a maintenance job or a server's periodic task. Each reclamation runs
//! in a task of its own, so a caller's time limit cannot stop it between its marker and its
//! delete. Reclaiming needs `update` and `delete` on `<mount>/metadata/<prefix>/*` (see the
//! policy below); without them, tombstones stay as before. Measured on a dev server: with 200
//! taken PKCE states, `purge_expired_states` took 257 ms before their tombstones were reclaimed
//! and 5 ms after.
//!
//! An entry another writer left at one of our paths that does not decode (no `value`, not
//! base64) reads as `Corrupt`; an unconditional write replaces it and an unconditional
//! delete deletes it (with `cas` on its KV version), as in the file and keychain stores,
//! while conditional ones report `Corrupt`.
//!
//! Consistency: every call goes to the node the address names and KV v2 orders writes per
//! key, so on one active node (and OpenBao / Vault HA, where standbys forward to the active
//! node) a read sees every write that returned before it. Vault Enterprise performance
//! standbys may serve a stale read; a version read there fails its `cas` with `Conflict`
//! (never a lost update), and their 412 "not yet caught up" is `Unavailable`. Listing is not a
//! snapshot: keys created or deleted during a multi-folder listing may or may not appear.
//!
//! Operation costs in requests: read 1; unconditional write 1; create 1 (3 over a
//! tombstone: the refused `cas` 0, read, `cas` write; over a reclaimed key, 1 again); `IfVersion` write 2 (read + `cas`
//! write); delete 3 (read, `cas` tombstone, destroy; +1 metadata read for a history over
//! 128 versions); delete of an absent key 1 (2 when it has metadata: the destroy that
//! finishes an interrupted delete); list 1 per user folder (+1 without a user filter) + 1
//! read per listed key, 8 in flight (+4 per old tombstone it reclaims, at most 16). Those reads are what a listing costs: LIST names
//! tombstones too, and only the data tells them from records (more in flight did not help:
//! on a small server the reads are bound by its CPU). [`open`] costs the AppRole login (1,
//! none with a token) and the encryption layer's read of its header (1; with a key and no
//! header yet, a listing of tokens and of clients, to refuse a key over plaintext records).
//!
//! # Capabilities
//!
//! `shared_with: Scope::Hosts` (every process on every host that reaches the server),
//! `cas: Scope::Hosts` (compare-and-swap is judged by Vault itself, so it holds against every
//! such writer), `persistent` (as persistent as the Vault's storage; a `-dev` server keeps
//! nothing), `encrypted_at_rest: false` as far as token-store knows (Vault's barrier encrypts
//! its storage, but Vault reads the values; add a key for end-to-end encryption),
//! `max_value_size` 256 KiB. **No TTL**: KV v2's only expiry, `delete_version_after`, is per-key metadata (a
//! second, non-atomic request), soft-deletes only, and leaves the key listed; token-store
//! keeps expiry inside its records instead (token `expires_at`, PKCE states purged by
//! `purge_expired_states`). A TTL in `PutOptions` is therefore not enforced by this backend.
//!
//! # Errors
//!
//! 403 → `PermissionDenied`; 503 (sealed, standby), 429, 412, 502, 504, a 400 "Upgrading
//! from non-versioned to versioned data" (a KV mount upgrading after a restart), connection
//! failures and timeouts → `Unavailable` (retryable). Messages carry the operation, the KV path, the
//! HTTP status and Vault's own error text (e.g. "Vault is sealed"), never a token or value.
//! A 404 that carries error text (a wrong mount: "no handler for route"; a wrong namespace:
//! "namespace not found") → `Config`, never an empty store. Undecodable stored data →
//! `Corrupt`; a bad URL → `Config` (validated before use, no panics). A write that meets a
//! reclamation in progress waits for it; if its time limit runs out first → `Unavailable`. An answer larger than
//! 1 MiB (16 MiB for LIST) is not read further and fails with `Backend`: the largest KV read
//! is ~350 KiB, so more is a broken server or proxy, and reading it whole would let it make
//! the client allocate without bound.
//!
//! # Least-privilege policy
//!
//! For mount `secret` and prefix `token-store`:
//!
//! ```hcl
//! path "secret/data/token-store/*" {
//!   capabilities = ["create", "read", "update"]
//! }
//! # list: listing; read: which versions a delete destroys (keys with a long history);
//! # update + delete: reclaiming deleted keys (optional: without them tombstones stay)
//! path "secret/metadata/token-store/*" {
//!   capabilities = ["list", "read", "update", "delete"]
//! }
//! # a delete destroys the older versions of the deleted key
//! path "secret/destroy/token-store/*" {
//!   capabilities = ["update"]
//! }
//! # AppRole only (the `default` policy usually grants these already):
//! path "auth/token/renew-self" { capabilities = ["update"] }
//! path "auth/token/lookup-self" { capabilities = ["read"] }
//! ```
//!
//! Recommended on the mount (`bao write secret/config max_versions=1` or per prefix via
//! metadata): keep one version, so refreshed-away tokens do not linger in KV history until
//! the key is deleted (a delete destroys them, but an overwrite keeps up to `max_versions`,
//! 10 by default).
//!
//! # Why `reqwest` and not `vaultrs`
//!
//! The KV v2 and auth calls are made with `reqwest` directly (rustls, one client, one TLS
//! configuration). `reqwest`'s `rustls` feature brings its own crypto provider (`aws-lc-rs`)
//! and uses it unless the application installed a process-wide default, so this crate needs
//! no provider set up by its user or the facade. `vaultrs` 0.8 was evaluated and is not used: its `kv2::read` returns only
//! the data map, so value and version would take two requests and could disagree under
//! concurrent writes; its `cas` option is a `u32` while versions are `u64`; a soft-deleted
//! secret and a missing one come back as different error shapes; a down server's error says
//! only "An error occurred with the request"; its settings builder panics on a bad address
//! and silently takes defaults from the ambient `VAULT_*` variables. Each is a few lines
//! here, with the status and Vault's error text kept for the messages.
//!
//! # Threat model and limits
//!
//! Vault paths (user keys, resource URLs, scopes) are not secret by design and appear in
//! Vault's audit log and in error messages; token material never goes into a path. Anyone
//! with the policy above for the prefix reads every token under it: give each application
//! its own prefix and policy. Values are protected by Vault's barrier encryption; add
//! `key_file=`/`passphrase_env=` for end-to-end encryption Vault operators cannot read.
//! HTTP redirects are not followed (they would carry the token to another host).
//!
//! [`StorageKey::encode`]: token_store_core::StorageKey::encode
mod client;
mod config;
mod store;

use token_store_core::{Result, StoreUrl, TokenStore};

pub use config::{
    Auth, DEFAULT_APPROLE_MOUNT, DEFAULT_MOUNT, DEFAULT_PREFIX, DEFAULT_RECLAIM_AFTER,
    DEFAULT_TIMEOUT, VaultConfig,
};
pub use store::{MAX_VALUE_SIZE, RECLAIM_LEASE, ReclaimReport, VaultStore};

/// Opens the store `config` describes, under its layers: the per-call time limit, and the
/// encryption layer when it has a key. With AppRole it logs in first.
pub async fn open(config: VaultConfig) -> Result<TokenStore> {
    let store = VaultStore::open(&config).await?;
    token_store_core::layers::assemble(store, &config.common, &config).await
}

/// Opens the store a `vault://` / `vaults://` URL names (see the crate docs for the grammar).
pub async fn open_url(url: &StoreUrl) -> Result<TokenStore> {
    open(VaultConfig::from_url(url)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The facade, the crash harness and `tokio::spawn` need `Send` futures.
    #[test]
    fn open_futures_are_send() {
        fn send<T: Send>(_: T) {}
        let url = StoreUrl::parse("vault://127.0.0.1:1/?role_id=r&secret_id=s").unwrap();
        send(open_url(&url));
        send(open(VaultConfig::from_url(&url).unwrap()));
    }
}
