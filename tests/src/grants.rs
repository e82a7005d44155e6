//! The grant-store conformance suite: the authorization-server semantics of
//! `token-store-grants` (registration, single-use PKCE codes, verification, rotation with
//! reuse detection, revocation, expiry, purge, sealed properties) on one backend, each case
//! on a fresh store from the backend's [`Factory`], plus the concurrent checks of rotation
//! and code redemption.
//!
//! Every secret a case handles (issued tokens, codes, client secrets, registration tokens,
//! PKCE verifiers, grant properties) is recorded in [`handled_secrets`], so a leak check can
//! search logs, errors and `Debug` output for them, and the `store_dump_holds_no_secret`
//! case searches every record of the raw store for them.
//!
//! ```no_run
//! # async fn demo() {
//! use std::sync::Arc;
//! use token_store_conformance::{Instance, grants::run_grants};
//! let report = run_grants("memory", || async {
//!     Ok(Instance::new(Arc::new(token_store_core::MemoryStore::new())))
//! })
//! .await;
//! report.assert_ok();
//! # }
//! ```

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use token_store_core::{KeyKind, ListEntry, ListFilter, RawStore};
use token_store_grants::{
    AccessGrant, AuthenticatedClient, AuthorizationRequest, ClientMetadata, GrantConfig,
    GrantError, GrantStore, IssuedTokens, RefreshOptions, RegisteredClient, pkce_challenge,
};

use crate::secrets::secret;
use crate::{BoxFuture, Factory, Instance, Outcome, Report};

type CaseResult = std::result::Result<Outcome, String>;
type Case = fn(Instance) -> BoxFuture<'static, Outcome>;

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|i: Instance| -> BoxFuture<'static, Outcome> {
            Box::pin(async move {
                match $name(i).await {
                    Ok(o) => o,
                    Err(msg) => Outcome::Failed(msg),
                }
            })
        }) as Case)),*]
    };
}

fn all() -> Vec<(&'static str, Case)> {
    cases![
        client_registration_and_authentication,
        client_management_rfc_7592,
        code_exchange_issues_verifiable_tokens,
        code_is_single_use_and_reuse_revokes,
        code_bindings_are_enforced,
        authorization_requests_are_validated,
        refresh_rotates_and_reuse_revokes_family,
        refresh_checks_client_scope_and_resource,
        introspection_rfc_7662,
        revocation_rfc_7009,
        grants_listed_and_revoked_per_user,
        deleting_a_client_revokes_its_grants,
        props_sealed_and_readable_only_with_a_token,
        store_dump_holds_no_secret,
        everything_expires_and_purge_removes_it,
        concurrent_rotation_at_most_one_wins_and_reuse_revokes,
        concurrent_code_redemption_at_most_one_wins,
        revocation_racing_rotation_leaves_nothing_valid,
        garbage_and_wrong_kind_tokens_never_verify,
        random_walk_matches_the_model,
        grants_survive_reopen,
    ]
}

/// Runs every grant case against fresh stores from `factory` and reports each by name.
pub async fn run_grants(backend: &str, factory: impl Factory) -> Report {
    let factory: Arc<dyn Factory> = Arc::new(factory);
    let mut outcomes = Vec::new();
    for (name, case) in all() {
        let factory = factory.clone();
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
        backend: format!("{backend}/grants"),
        outcomes,
    }
}

/// Every secret the suite handled in this process (tokens, codes, client secrets,
/// registration tokens, verifiers, property values), for leak searches.
pub fn handled_secrets() -> Vec<String> {
    secrets_cell()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

fn secrets_cell() -> &'static Mutex<Vec<String>> {
    static CELL: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    CELL.get_or_init(Mutex::default)
}

fn note(s: &str) {
    secrets_cell()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(s.to_owned());
}

/// Formats a value's `Debug` and `Display`-like output into the log, where a leak check
/// looks for secrets.
fn show(what: &str, value: &dyn std::fmt::Debug) {
    tracing::debug!(target: "token_store_grants_conformance", "{what}: {value:?}");
}

fn show_err(what: &str, e: &GrantError) {
    tracing::debug!(target: "token_store_grants_conformance", "{what}: {e} / {e:?} / {}", e.to_json());
}

const REDIRECT: &str = "http://127.0.0.1:8765/callback";
const RESOURCE: &str = "https://mcp.example.com/mcp";

/// A PKCE verifier (≥ 43 characters) that carries the canary.
fn verifier(tag: &str) -> String {
    let v = format!("{}-{}", secret(tag), "v".repeat(30));
    note(&v);
    v
}

struct Fx {
    grants: GrantStore,
    client: RegisteredClient,
    auth: AuthenticatedClient,
}

fn store_err(what: &str) -> impl Fn(token_store_core::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn grant_err(what: &str) -> impl Fn(GrantError) -> String + '_ {
    move |e| {
        show_err(what, &e);
        format!("{what}: {e}")
    }
}

async fn fixture(i: &Instance, config: GrantConfig, confidential: bool) -> Result<Fx, String> {
    let grants = GrantStore::with_config(i.token_store(), config).map_err(store_err("open"))?;
    let client = register(&grants, confidential).await?;
    let auth = grants
        .authenticate_client(
            client.client_id(),
            client.client_secret.as_ref().map(|s| s.expose()),
        )
        .await
        .map_err(grant_err("authenticate"))?;
    Ok(Fx {
        grants,
        client,
        auth,
    })
}

async fn register(grants: &GrantStore, confidential: bool) -> Result<RegisteredClient, String> {
    let mut metadata = ClientMetadata::new([REDIRECT])
        .with_grant_types(["authorization_code", "refresh_token"])
        .with_name("conformance client");
    if !confidential {
        metadata = metadata.public();
    }
    let client = grants
        .register_client(metadata)
        .await
        .map_err(grant_err("register"))?;
    if let Some(s) = &client.client_secret {
        note(s.expose());
    }
    note(client.registration_access_token.expose());
    show("registered", &client);
    Ok(client)
}

fn fast() -> GrantConfig {
    GrantConfig::new()
}

/// Authorize + exchange for `user`, returning the tokens.
async fn login(
    fx: &Fx,
    user: &str,
    props: Option<&serde_json::Value>,
) -> Result<IssuedTokens, String> {
    let v = verifier("verifier");
    let code = authorize(fx, user, &v, props).await?;
    exchange(fx, &code, &v).await
}

async fn authorize(
    fx: &Fx,
    user: &str,
    verifier: &str,
    props: Option<&serde_json::Value>,
) -> Result<String, String> {
    let mut req = AuthorizationRequest::new(
        fx.client.client_id(),
        REDIRECT,
        user,
        pkce_challenge(verifier),
    )
    .with_scopes(["mcp", "read"])
    .with_resource(RESOURCE);
    if let Some(p) = props {
        req = req.with_props(p).map_err(grant_err("props"))?;
    }
    show("authorization request", &req);
    let code = fx
        .grants
        .authorize(req)
        .await
        .map_err(grant_err("authorize"))?;
    note(code.expose());
    Ok(code.expose().to_owned())
}

async fn exchange(fx: &Fx, code: &str, verifier: &str) -> Result<IssuedTokens, String> {
    let tokens = fx
        .grants
        .exchange_code(&fx.auth, code, REDIRECT, verifier, Some(RESOURCE))
        .await
        .map_err(grant_err("exchange"))?;
    remember(&tokens);
    Ok(tokens)
}

fn remember(tokens: &IssuedTokens) {
    note(tokens.access_token.expose());
    if let Some(rt) = &tokens.refresh_token {
        note(rt.expose());
    }
    show("issued", tokens);
}

async fn refresh(fx: &Fx, rt: &str) -> Result<IssuedTokens, GrantError> {
    let r = fx.grants.refresh(&fx.auth, rt, RefreshOptions::new()).await;
    match &r {
        Ok(t) => remember(t),
        Err(e) => show_err("refresh", e),
    }
    r
}

fn rt_of(t: &IssuedTokens) -> Result<String, String> {
    t.refresh_token
        .as_ref()
        .map(|s| s.expose().to_owned())
        .ok_or_else(|| "no refresh token issued".to_owned())
}

async fn verifies(fx: &Fx, at: &str) -> Result<Option<AccessGrant>, String> {
    let v = fx.grants.verify(at).await.map_err(store_err("verify"))?;
    if let Some(g) = &v {
        show("verified", g);
    }
    Ok(v)
}

fn is_invalid_grant<T>(r: &Result<T, GrantError>) -> bool {
    matches!(r, Err(GrantError::InvalidGrant(_)))
}

// ---------------------------------------------------------------------------------------

async fn client_registration_and_authentication(i: Instance) -> CaseResult {
    let grants = GrantStore::new(i.token_store()).map_err(store_err("open"))?;
    let confidential = register(&grants, true).await?;
    let id = confidential.client_id().to_owned();
    let secret = confidential
        .client_secret
        .as_ref()
        .ok_or("a confidential client got no secret")?
        .expose()
        .to_owned();
    check!(
        secret.len() >= 43,
        "client secret too short: {} chars",
        secret.len()
    );
    let json = confidential.to_json(None);
    check!(
        json["client_secret"] == secret.as_str(),
        "registration response lacks the secret"
    );
    check!(
        json["client_secret_expires_at"] == 0,
        "secret expiry not 0: {}",
        json["client_secret_expires_at"]
    );
    check!(
        json["redirect_uris"][0] == REDIRECT,
        "redirect URIs not echoed"
    );
    grants
        .authenticate_client(&id, Some(&secret))
        .await
        .map_err(grant_err("right secret"))?;
    let mut wrong = secret.clone().into_bytes();
    wrong[0] = if wrong[0] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).map_err(|e| e.to_string())?;
    for (what, given) in [
        ("wrong", Some(wrong.as_str())),
        ("missing", None),
        ("garbage", Some("x")),
    ] {
        let r = grants.authenticate_client(&id, given).await;
        check!(
            matches!(r, Err(GrantError::InvalidClient(_))),
            "{what} secret accepted or wrong error: {:?}",
            r.map(|_| ())
        );
    }
    let r = grants
        .authenticate_client("no-such-client", Some(&secret))
        .await;
    check!(
        matches!(r, Err(GrantError::InvalidClient(_))),
        "unknown client authenticated"
    );
    let public = register(&grants, false).await?;
    check!(
        public.client_secret.is_none(),
        "a public client got a secret"
    );
    grants
        .authenticate_client(public.client_id(), None)
        .await
        .map_err(grant_err("public client"))?;
    let r = grants
        .authenticate_client(public.client_id(), Some(&secret))
        .await;
    check!(r.is_err(), "a public client authenticated with a secret");
    let found = grants
        .client(&id)
        .await
        .map_err(grant_err("lookup"))?
        .ok_or("registered client not found")?;
    check!(
        found.confidential && found.metadata.redirect_uris == [REDIRECT],
        "lookup differs: {found:?}"
    );
    // Refused metadata.
    for bad in [
        ClientMetadata::new(["http://evil.example/cb"]),
        ClientMetadata::new(Vec::<String>::new()),
        ClientMetadata::new([REDIRECT]).with_grant_types(["client_credentials"]),
    ] {
        let r = grants.register_client(bad).await;
        check!(
            matches!(
                r,
                Err(GrantError::InvalidRedirectUri(_) | GrantError::InvalidClientMetadata(_))
            ),
            "bad metadata accepted: {:?}",
            r.map(|c| c.client.client_id)
        );
    }
    Ok(Outcome::Passed)
}

async fn client_management_rfc_7592(i: Instance) -> CaseResult {
    let grants = GrantStore::new(i.token_store()).map_err(store_err("open"))?;
    let client = register(&grants, true).await?;
    let id = client.client_id().to_owned();
    let rat = client.registration_access_token.expose().to_owned();
    grants
        .check_registration_token(&id, &rat)
        .await
        .map_err(grant_err("check"))?;
    let other = register(&grants, true).await?;
    let r = grants
        .check_registration_token(&id, other.registration_access_token.expose())
        .await;
    check!(
        r.is_err(),
        "another client's registration token manages this one"
    );
    let updated = grants
        .update_client(
            &id,
            &rat,
            ClientMetadata::new([REDIRECT, "https://app.example/cb"]).with_name("renamed"),
        )
        .await
        .map_err(grant_err("update"))?;
    check!(
        updated.metadata.redirect_uris.len() == 2,
        "update not applied"
    );
    // The secret survives an update.
    let secret = client
        .client_secret
        .as_ref()
        .ok_or("no secret")?
        .expose()
        .to_owned();
    grants
        .authenticate_client(&id, Some(&secret))
        .await
        .map_err(grant_err("after update"))?;
    let r = grants
        .update_client(&id, &rat, ClientMetadata::new([REDIRECT]).public())
        .await;
    check!(r.is_err(), "a confidential client became public");
    let r = grants
        .delete_client(&id, other.registration_access_token.expose())
        .await;
    check!(r.is_err(), "deleted with another client's token");
    check!(
        grants
            .delete_client(&id, &rat)
            .await
            .map_err(grant_err("delete"))?,
        "delete found nothing"
    );
    check!(
        grants
            .client(&id)
            .await
            .map_err(grant_err("lookup"))?
            .is_none(),
        "deleted client still found"
    );
    let r = grants.authenticate_client(&id, Some(&secret)).await;
    check!(r.is_err(), "a deleted client authenticated");
    Ok(Outcome::Passed)
}

async fn code_exchange_issues_verifiable_tokens(i: Instance) -> CaseResult {
    let fx = fixture(&i, fast(), true).await?;
    let tokens = login(&fx, "alice", None).await?;
    let at = tokens.access_token.expose();
    check!(
        at.len() == 64,
        "access token is not 256 bits of hex: {} chars",
        at.len()
    );
    let json = tokens.to_json();
    check!(
        json["token_type"] == "Bearer" && json["expires_in"].as_u64().is_some_and(|s| s > 3000),
        "token response: {}",
        json["expires_in"]
    );
    check!(json["scope"] == "mcp read", "scope: {}", json["scope"]);
    let g = verifies(&fx, at)
        .await?
        .ok_or("a fresh access token does not verify")?;
    check!(g.user_id == "alice", "user {}", g.user_id);
    check!(
        g.client_id == fx.client.client_id(),
        "client {}",
        g.client_id
    );
    check!(g.scopes == ["mcp", "read"], "scopes {:?}", g.scopes);
    check!(
        g.resource.as_deref() == Some(RESOURCE),
        "resource {:?}",
        g.resource
    );
    check!(g.has_scope("mcp") && !g.has_scope("admin"), "has_scope");
    check!(
        (g.expires_at - g.issued_at).total_cmp(&3000.0).is_gt(),
        "expiry {} vs {}",
        g.expires_at,
        g.issued_at
    );
    check!(
        g.grant_id == tokens.grant.grant_id,
        "grant id differs between issue and verify"
    );
    let intro = g.introspection();
    check!(
        intro.active && intro.sub.as_deref() == Some("alice"),
        "introspection {intro:?}"
    );
    let listed = fx
        .grants
        .list_grants("alice")
        .await
        .map_err(store_err("list"))?;
    check!(
        listed.len() == 1 && listed[0].grant_id == g.grant_id,
        "listed {listed:?}"
    );
    Ok(Outcome::Passed)
}

async fn code_is_single_use_and_reuse_revokes(i: Instance) -> CaseResult {
    let fx = fixture(&i, fast(), false).await?;
    let v = verifier("single-use");
    let code = authorize(&fx, "bob", &v, None).await?;
    let first = exchange(&fx, &code, &v).await?;
    check!(
        verifies(&fx, first.access_token.expose()).await?.is_some(),
        "first exchange's token invalid"
    );
    let second = fx
        .grants
        .exchange_code(&fx.auth, &code, REDIRECT, &v, Some(RESOURCE))
        .await;
    check!(
        is_invalid_grant(&second),
        "a code was redeemed twice: {:?}",
        second.map(|_| ())
    );
    check!(
        verifies(&fx, first.access_token.expose()).await?.is_none(),
        "the second redemption did not revoke the first's access token"
    );
    let r = refresh(&fx, &rt_of(&first)?).await;
    check!(
        is_invalid_grant(&r),
        "the first's refresh token survived the code's reuse"
    );
    check!(
        fx.grants
            .list_grants("bob")
            .await
            .map_err(store_err("list"))?
            .is_empty(),
        "grant still listed"
    );
    Ok(Outcome::Passed)
}

async fn code_bindings_are_enforced(i: Instance) -> CaseResult {
    let fx = fixture(&i, fast(), true).await?;
    let other = register(&fx.grants, false).await?;
    let other_auth = fx
        .grants
        .authenticate_client(other.client_id(), None)
        .await
        .map_err(grant_err("other"))?;
    let v = verifier("bindings");
    let code = authorize(&fx, "carol", &v, None).await?;
    let wrong_v = verifier("wrong-verifier");
    let attempts: Vec<(&str, Result<IssuedTokens, GrantError>)> = vec![
        (
            "another client",
            fx.grants
                .exchange_code(&other_auth, &code, REDIRECT, &v, None)
                .await,
        ),
        (
            "another redirect",
            fx.grants
                .exchange_code(&fx.auth, &code, "http://127.0.0.1:8765/other", &v, None)
                .await,
        ),
        (
            "a wrong verifier",
            fx.grants
                .exchange_code(&fx.auth, &code, REDIRECT, &wrong_v, None)
                .await,
        ),
        (
            "a short verifier",
            fx.grants
                .exchange_code(&fx.auth, &code, REDIRECT, "abc", None)
                .await,
        ),
        (
            "another resource",
            fx.grants
                .exchange_code(
                    &fx.auth,
                    &code,
                    REDIRECT,
                    &v,
                    Some("https://other.example/mcp"),
                )
                .await,
        ),
    ];
    for (what, r) in attempts {
        if let Err(e) = &r {
            show_err(what, e);
        }
        check!(
            matches!(
                r,
                Err(GrantError::InvalidGrant(_) | GrantError::InvalidTarget(_))
            ),
            "exchange with {what} succeeded or failed oddly: {:?}",
            r.map(|_| ())
        );
    }
    // None of those burned the code: the legitimate exchange still works.
    let tokens = exchange(&fx, &code, &v).await?;
    check!(
        verifies(&fx, tokens.access_token.expose()).await?.is_some(),
        "legit exchange invalid"
    );
    Ok(Outcome::Passed)
}

async fn authorization_requests_are_validated(i: Instance) -> CaseResult {
    let fx = fixture(&i, fast(), false).await?;
    let id = fx.client.client_id().to_owned();
    let ch = pkce_challenge(&verifier("validate"));
    let cases: Vec<(&str, AuthorizationRequest)> = vec![
        (
            "unknown client",
            AuthorizationRequest::new("nope", REDIRECT, "u", ch.clone()),
        ),
        (
            "unregistered redirect",
            AuthorizationRequest::new(id.clone(), "https://evil.example/cb", "u", ch.clone()),
        ),
        (
            "plain PKCE",
            AuthorizationRequest::new(id.clone(), REDIRECT, "u", ch.clone())
                .with_challenge_method("plain"),
        ),
        (
            "malformed challenge",
            AuthorizationRequest::new(id.clone(), REDIRECT, "u", "short"),
        ),
        (
            "no user",
            AuthorizationRequest::new(id.clone(), REDIRECT, "", ch.clone()),
        ),
        (
            "resource with fragment",
            AuthorizationRequest::new(id.clone(), REDIRECT, "u", ch.clone())
                .with_resource("https://a.example/#x"),
        ),
    ];
    for (what, req) in cases {
        let r = fx.grants.authorize(req).await;
        check!(r.is_err(), "authorize accepted {what}");
    }
    // A loopback redirect on another port is the same redirect (RFC 8252 §7.3).
    fx.grants
        .authorize(AuthorizationRequest::new(
            id.clone(),
            "http://127.0.0.1:40000/callback",
            "u",
            ch.clone(),
        ))
        .await
        .map(|c| note(c.expose()))
        .map_err(grant_err("loopback port"))?;
    // A client limited to some scopes cannot be granted others.
    let limited = fx
        .grants
        .register_client(ClientMetadata::new([REDIRECT]).public().with_scope("mcp"))
        .await
        .map_err(grant_err("register limited"))?;
    note(limited.registration_access_token.expose());
    let r = fx
        .grants
        .authorize(
            AuthorizationRequest::new(limited.client_id(), REDIRECT, "u", ch)
                .with_scopes(["admin"]),
        )
        .await;
    check!(
        matches!(r, Err(GrantError::InvalidScope(_))),
        "unregistered scope granted"
    );
    Ok(Outcome::Passed)
}

async fn refresh_rotates_and_reuse_revokes_family(i: Instance) -> CaseResult {
    let fx = fixture(&i, fast(), true).await?;
    let first = login(&fx, "dave", None).await?;
    let mut rts = vec![rt_of(&first)?];
    let mut ats = vec![first.access_token.expose().to_owned()];
    for n in 0..3 {
        let prev = rts.last().cloned().unwrap_or_default();
        let next = refresh(&fx, &prev)
            .await
            .map_err(|e| format!("rotation {n}: {e}"))?;
        let rt = rt_of(&next)?;
        check!(!rts.contains(&rt), "a refresh token was issued twice");
        rts.push(rt);
        ats.push(next.access_token.expose().to_owned());
    }
    // Access tokens of earlier rotations stay valid until they expire.
    for at in &ats {
        check!(
            verifies(&fx, at).await?.is_some(),
            "an access token of the family died early"
        );
    }
    let listed = fx
        .grants
        .list_grants("dave")
        .await
        .map_err(store_err("list"))?;
    check!(
        listed.len() == 1 && listed[0].rotations == 3,
        "rotations: {listed:?}"
    );
    // An already-rotated refresh token: refused, and the family is gone.
    let reuse = refresh(&fx, &rts[1]).await;
    check!(
        is_invalid_grant(&reuse),
        "a rotated refresh token was accepted"
    );
    let current = refresh(&fx, rts.last().map(String::as_str).unwrap_or_default()).await;
    check!(
        is_invalid_grant(&current),
        "reuse did not revoke the current refresh token"
    );
    for at in &ats {
        check!(
            verifies(&fx, at).await?.is_none(),
            "reuse left an access token valid"
        );
    }
    check!(
        fx.grants
            .list_grants("dave")
            .await
            .map_err(store_err("list"))?
            .is_empty(),
        "revoked family still listed"
    );
    Ok(Outcome::Passed)
}

async fn refresh_checks_client_scope_and_resource(i: Instance) -> CaseResult {
    let fx = fixture(&i, fast(), true).await?;
    let t = login(&fx, "erin", None).await?;
    let rt = rt_of(&t)?;
    let other = register(&fx.grants, false).await?;
    let other_auth = fx
        .grants
        .authenticate_client(other.client_id(), None)
        .await
        .map_err(grant_err("other"))?;
    let r = fx
        .grants
        .refresh(&other_auth, &rt, RefreshOptions::new())
        .await;
    check!(
        is_invalid_grant(&r),
        "another client refreshed this client's token"
    );
    let r = fx
        .grants
        .refresh(&fx.auth, &rt, RefreshOptions::new().with_scopes(["admin"]))
        .await;
    check!(
        matches!(r, Err(GrantError::InvalidScope(_))),
        "scope widened on refresh"
    );
    let r = fx
        .grants
        .refresh(
            &fx.auth,
            &rt,
            RefreshOptions::new().with_resource("https://other.example/mcp"),
        )
        .await;
    check!(
        matches!(r, Err(GrantError::InvalidTarget(_))),
        "resource changed on refresh"
    );
    // None of those rotated or revoked: narrowing works with the same token.
    let narrowed = fx
        .grants
        .refresh(
            &fx.auth,
            &rt,
            RefreshOptions::new()
                .with_scopes(["read"])
                .with_resource(RESOURCE),
        )
        .await
        .map_err(grant_err("narrowed refresh"))?;
    remember(&narrowed);
    check!(
        narrowed.scopes == ["read"],
        "narrowed scopes {:?}",
        narrowed.scopes
    );
    let g = verifies(&fx, narrowed.access_token.expose())
        .await?
        .ok_or("narrowed token invalid")?;
    check!(g.scopes == ["read"], "verify scopes {:?}", g.scopes);
    // The grant keeps its full scopes for the next refresh.
    let full = refresh(&fx, &rt_of(&narrowed)?)
        .await
        .map_err(|e| e.to_string())?;
    check!(
        full.scopes == ["mcp", "read"],
        "grant scopes lost: {:?}",
        full.scopes
    );
    Ok(Outcome::Passed)
}

async fn introspection_rfc_7662(i: Instance) -> CaseResult {
    let fx = fixture(&i, fast(), true).await?;
    let t = login(&fx, "frank", None).await?;
    let rt = rt_of(&t)?;
    let a = fx
        .grants
        .introspect(t.access_token.expose())
        .await
        .map_err(store_err("introspect"))?;
    check!(
        a.active && a.token_type.as_deref() == Some("Bearer") && a.aud.as_deref() == Some(RESOURCE),
        "access: {a:?}"
    );
    check!(
        a.scope.as_deref() == Some("mcp read")
            && a.client_id.as_deref() == Some(fx.client.client_id()),
        "access: {a:?}"
    );
    let r = fx
        .grants
        .introspect(&rt)
        .await
        .map_err(store_err("introspect"))?;
    check!(
        r.active && r.token_type.as_deref() == Some("refresh_token"),
        "refresh: {r:?}"
    );
    let next = refresh(&fx, &rt).await.map_err(|e| e.to_string())?;
    let old = fx
        .grants
        .introspect(&rt)
        .await
        .map_err(store_err("introspect"))?;
    check!(!old.active, "a rotated refresh token introspects active");
    check!(
        serde_json::to_value(&old).map_err(|e| e.to_string())?
            == serde_json::json!({"active": false}),
        "inactive body"
    );
    let new = fx
        .grants
        .introspect(&rt_of(&next)?)
        .await
        .map_err(store_err("introspect"))?;
    check!(new.active, "the current refresh token introspects inactive");
    let g = fx
        .grants
        .introspect("not-a-token")
        .await
        .map_err(store_err("introspect"))?;
    check!(!g.active, "garbage introspects active");
    Ok(Outcome::Passed)
}

async fn revocation_rfc_7009(i: Instance) -> CaseResult {
    let fx = fixture(&i, fast(), true).await?;
    let t = login(&fx, "gina", None).await?;
    let at = t.access_token.expose().to_owned();
    let rt = rt_of(&t)?;
    let other = register(&fx.grants, false).await?;
    let other_auth = fx
        .grants
        .authenticate_client(other.client_id(), None)
        .await
        .map_err(grant_err("other"))?;
    // Another client cannot revoke this client's tokens.
    check!(
        !fx.grants
            .revoke_token(&other_auth, &at)
            .await
            .map_err(store_err("revoke"))?,
        "another client revoked an access token"
    );
    check!(
        !fx.grants
            .revoke_token(&other_auth, &rt)
            .await
            .map_err(store_err("revoke"))?,
        "another client revoked a refresh token"
    );
    check!(
        verifies(&fx, &at).await?.is_some(),
        "foreign revocation took effect"
    );
    // An access token alone.
    check!(
        fx.grants
            .revoke_token(&fx.auth, &at)
            .await
            .map_err(store_err("revoke"))?,
        "revoking an access token found nothing"
    );
    check!(
        verifies(&fx, &at).await?.is_none(),
        "a revoked access token verifies"
    );
    let next = refresh(&fx, &rt)
        .await
        .map_err(|e| format!("refresh after access revocation: {e}"))?;
    // A refresh token revokes its grant.
    let rt2 = rt_of(&next)?;
    check!(
        fx.grants
            .revoke_token(&fx.auth, &rt2)
            .await
            .map_err(store_err("revoke"))?,
        "revoking a refresh token found nothing"
    );
    check!(
        verifies(&fx, next.access_token.expose()).await?.is_none(),
        "refresh-token revocation left the access token"
    );
    check!(
        is_invalid_grant(&refresh(&fx, &rt2).await),
        "a revoked refresh token refreshed"
    );
    // Unknown and garbage tokens: not an error.
    check!(
        !fx.grants
            .revoke_token(&fx.auth, &rt2)
            .await
            .map_err(store_err("revoke"))?,
        "second revocation found something"
    );
    check!(
        !fx.grants
            .revoke_token(&fx.auth, "garbage")
            .await
            .map_err(store_err("revoke"))?,
        "garbage revoked something"
    );
    Ok(Outcome::Passed)
}

async fn grants_listed_and_revoked_per_user(i: Instance) -> CaseResult {
    let fx = fixture(&i, fast(), true).await?;
    let mut hank = Vec::new();
    for _ in 0..3 {
        hank.push(login(&fx, "hank", None).await?);
    }
    let ivy = login(&fx, "ivy", None).await?;
    // An authorization never exchanged is not a grant the user sees.
    authorize(&fx, "hank", &verifier("pending"), None).await?;
    let listed = fx
        .grants
        .list_grants("hank")
        .await
        .map_err(store_err("list"))?;
    check!(listed.len() == 3, "hank has {} grants listed", listed.len());
    check!(
        listed
            .iter()
            .all(|g| g.user_id == "hank" && g.client_id == fx.client.client_id()),
        "listing {listed:?}"
    );
    // Revoke one.
    check!(
        fx.grants
            .revoke_grant("hank", &listed[0].grant_id)
            .await
            .map_err(store_err("revoke"))?,
        "revoke_grant found nothing"
    );
    check!(
        !fx.grants
            .revoke_grant("hank", &listed[0].grant_id)
            .await
            .map_err(store_err("revoke"))?,
        "revoked twice"
    );
    check!(
        fx.grants
            .list_grants("hank")
            .await
            .map_err(store_err("list"))?
            .len()
            == 2,
        "revoked grant still listed"
    );
    let n = fx
        .grants
        .revoke_user_grants("hank")
        .await
        .map_err(store_err("revoke all"))?;
    check!(n >= 2, "revoke_user_grants revoked {n}");
    for t in &hank {
        check!(
            verifies(&fx, t.access_token.expose()).await?.is_none(),
            "a revoked user's token verifies"
        );
        check!(
            is_invalid_grant(&refresh(&fx, &rt_of(t)?).await),
            "a revoked user's refresh token works"
        );
    }
    check!(
        verifies(&fx, ivy.access_token.expose()).await?.is_some(),
        "another user's grant was revoked"
    );
    check!(
        fx.grants
            .list_grants("ivy")
            .await
            .map_err(store_err("list"))?
            .len()
            == 1,
        "ivy's listing"
    );
    Ok(Outcome::Passed)
}

async fn deleting_a_client_revokes_its_grants(i: Instance) -> CaseResult {
    let fx = fixture(&i, fast(), true).await?;
    let t = login(&fx, "jack", None).await?;
    let deleted = fx
        .grants
        .delete_client(
            fx.client.client_id(),
            fx.client.registration_access_token.expose(),
        )
        .await
        .map_err(grant_err("delete"))?;
    check!(deleted, "delete found nothing");
    check!(
        verifies(&fx, t.access_token.expose()).await?.is_none(),
        "a deleted client's token verifies"
    );
    Ok(Outcome::Passed)
}

async fn props_sealed_and_readable_only_with_a_token(i: Instance) -> CaseResult {
    let fx = fixture(&i, fast(), true).await?;
    let upstream = secret("upstream-access-token");
    note(&upstream);
    let props = serde_json::json!({"upstream": {"access_token": upstream, "provider": "github"}});
    let t = login(&fx, "kim", Some(&props)).await?;
    let g = verifies(&fx, t.access_token.expose())
        .await?
        .ok_or("token invalid")?;
    let read: serde_json::Value = g.props().map_err(store_err("props"))?.ok_or("no props")?;
    check!(read == props, "props differ after exchange");
    // A refresh keeps them, or replaces them.
    let r1 = refresh(&fx, &rt_of(&t)?).await.map_err(|e| e.to_string())?;
    let g1 = verifies(&fx, r1.access_token.expose())
        .await?
        .ok_or("refreshed token invalid")?;
    check!(
        g1.props::<serde_json::Value>()
            .map_err(store_err("props"))?
            == Some(props.clone()),
        "props lost on refresh"
    );
    let upstream2 = secret("upstream-access-token-2");
    note(&upstream2);
    let props2 = serde_json::json!({"upstream": {"access_token": upstream2}});
    let r2 = fx
        .grants
        .refresh(
            &fx.auth,
            &rt_of(&r1)?,
            RefreshOptions::new()
                .with_props(&props2)
                .map_err(grant_err("props"))?,
        )
        .await
        .map_err(grant_err("refresh with props"))?;
    remember(&r2);
    let g2 = verifies(&fx, r2.access_token.expose())
        .await?
        .ok_or("token invalid")?;
    check!(
        g2.props::<serde_json::Value>()
            .map_err(store_err("props"))?
            == Some(props2),
        "props not replaced"
    );
    // Earlier tokens keep the properties they were issued with.
    check!(
        g1.props::<serde_json::Value>()
            .map_err(store_err("props"))?
            == Some(props.clone()),
        "old token's props changed"
    );
    // A grant without properties.
    let plain = login(&fx, "kim", None).await?;
    let gp = verifies(&fx, plain.access_token.expose())
        .await?
        .ok_or("token invalid")?;
    check!(
        gp.props::<serde_json::Value>()
            .map_err(store_err("props"))?
            .is_none(),
        "props out of nowhere"
    );
    // The sealed properties are bound to their grant: moved to another grant's access
    // record, they do not open.
    let dump = dump(&*i.store).await?;
    check!(
        !contains(&dump, upstream.as_bytes()),
        "the upstream token is in the store in the clear"
    );
    Ok(Outcome::Passed)
}

/// Every record of every kind: the key and the stored bytes.
async fn dump(store: &dyn RawStore) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for kind in KeyKind::ALL {
        let entries = store
            .scan(kind, &ListFilter::all())
            .await
            .map_err(|e| format!("scan {kind:?}: {e}"))?;
        for entry in entries {
            if let ListEntry::Key(k) = entry {
                out.extend_from_slice(k.encode().as_bytes());
                out.push(b'\n');
                if let Some(rec) = store.read(&k).await.map_err(|e| format!("read {k}: {e}"))? {
                    out.extend_from_slice(&rec.value);
                    out.push(b'\n');
                }
            }
        }
    }
    Ok(out)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

async fn store_dump_holds_no_secret(i: Instance) -> CaseResult {
    let fx = fixture(&i, fast(), true).await?;
    let mut secrets: Vec<String> = Vec::new();
    if let Some(s) = &fx.client.client_secret {
        secrets.push(s.expose().to_owned());
    }
    secrets.push(fx.client.registration_access_token.expose().to_owned());
    let upstream = secret("dump-upstream");
    note(&upstream);
    secrets.push(upstream.clone());
    let v = verifier("dump");
    secrets.push(v.clone());
    let pending_v = verifier("dump-pending");
    let pending = authorize(&fx, "lee", &pending_v, None).await?;
    secrets.push(pending.clone());
    secrets.push(pending_v);
    let code = authorize(
        &fx,
        "lee",
        &v,
        Some(&serde_json::json!({"token": upstream})),
    )
    .await?;
    secrets.push(code.clone());
    let t = exchange(&fx, &code, &v).await?;
    secrets.push(t.access_token.expose().to_owned());
    let rt = rt_of(&t)?;
    secrets.push(rt.clone());
    let r = refresh(&fx, &rt).await.map_err(|e| e.to_string())?;
    secrets.push(r.access_token.expose().to_owned());
    secrets.push(rt_of(&r)?);
    let dump = dump(&*i.store).await?;
    check!(
        dump.len() > 500,
        "the dump is suspiciously small ({} bytes): nothing was stored?",
        dump.len()
    );
    for s in &secrets {
        check!(
            !contains(&dump, s.as_bytes()),
            "a secret of {} chars is in the store in the clear",
            s.len()
        );
        // Nor in upper case, nor base64 of its bytes' hex, as a careless encoding might.
        check!(
            !contains(&dump, s.to_uppercase().as_bytes()),
            "a secret is in the store upper-cased"
        );
    }
    check!(
        !contains(&dump, crate::secrets::CANARY.as_bytes()),
        "the canary is in the store in the clear"
    );
    Ok(Outcome::Passed)
}

async fn everything_expires_and_purge_removes_it(i: Instance) -> CaseResult {
    let short = GrantConfig::new()
        .with_access_token_ttl(Duration::from_secs(1))
        .with_code_ttl(Duration::from_secs(1))
        .with_refresh_absolute_lifetime(Some(Duration::from_secs(1)))
        .with_client_secret_ttl(Some(Duration::from_secs(1)));
    let fx = fixture(&i, short, true).await?;
    // A long-lived grant on the same store must survive the purge.
    let long = fixture(&i, fast(), false).await?;
    let keep = login(&long, "mia", None).await?;
    let v = verifier("expiring");
    let unused = authorize(&fx, "mia", &v, None).await?;
    let t = login(&fx, "mia", None).await?;
    check!(
        verifies(&fx, t.access_token.expose()).await?.is_some(),
        "fresh short token invalid"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    check!(
        verifies(&fx, t.access_token.expose()).await?.is_none(),
        "an expired access token verifies"
    );
    let r = fx
        .grants
        .exchange_code(&fx.auth, &unused, REDIRECT, &v, None)
        .await;
    check!(is_invalid_grant(&r), "an expired code was exchanged");
    let r = fx
        .grants
        .refresh(&fx.auth, &rt_of(&t)?, RefreshOptions::new())
        .await;
    check!(
        is_invalid_grant(&r),
        "a refresh token past the absolute lifetime refreshed"
    );
    let secret = fx
        .client
        .client_secret
        .as_ref()
        .ok_or("no secret")?
        .expose()
        .to_owned();
    let r = fx
        .grants
        .authenticate_client(fx.client.client_id(), Some(&secret))
        .await;
    check!(
        matches!(r, Err(GrantError::InvalidClient(_))),
        "an expired client secret authenticated"
    );
    let report = fx
        .grants
        .purge_expired()
        .await
        .map_err(store_err("purge"))?;
    show("purge", &report);
    for kind in [KeyKind::Code, KeyKind::AccessToken] {
        let left = i
            .store
            .scan(kind, &ListFilter::all())
            .await
            .map_err(|e| e.to_string())?;
        // Only the long-lived grant's access token and (redeemed) code may be left.
        let n = left
            .iter()
            .filter(|e| matches!(e, ListEntry::Key(_)))
            .count();
        let allowed = 1;
        check!(
            n <= allowed,
            "{n} {kind:?} records left after purge ({report:?})"
        );
    }
    check!(
        fx.grants
            .list_grants("mia")
            .await
            .map_err(store_err("list"))?
            .len()
            == 1,
        "purge left expired grants or took the live one"
    );
    let again = fx
        .grants
        .purge_expired()
        .await
        .map_err(store_err("purge"))?;
    check!(
        again == Default::default(),
        "a second purge found more: {again:?}"
    );
    check!(
        verifies(&long, keep.access_token.expose()).await?.is_some(),
        "purge removed a live token"
    );
    refresh(&long, &rt_of(&keep)?)
        .await
        .map_err(|e| format!("purge broke a live refresh token: {e}"))?;
    Ok(Outcome::Passed)
}

async fn concurrent_rotation_at_most_one_wins_and_reuse_revokes(i: Instance) -> CaseResult {
    const TASKS: usize = 8;
    const ROUNDS: usize = 4;
    let fx = Arc::new(fixture(&i, fast(), true).await?);
    for round in 0..ROUNDS {
        let t = login(&fx, "nia", None).await?;
        let rt = rt_of(&t)?;
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let mut handles = Vec::new();
        for _ in 0..TASKS {
            let (fx, rt, barrier) = (fx.clone(), rt.clone(), barrier.clone());
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                refresh(&fx, &rt).await
            }));
        }
        let mut winners = Vec::new();
        for h in handles {
            match h.await.map_err(|e| e.to_string())? {
                Ok(tokens) => winners.push(tokens),
                Err(GrantError::InvalidGrant(_)) => {}
                Err(e) => return Err(format!("round {round}: a rotation failed oddly: {e}")),
            }
        }
        check!(
            winners.len() <= 1,
            "round {round}: {} rotations of one refresh token succeeded",
            winners.len()
        );
        // Several presentations of one refresh token: reuse, so the family is revoked,
        // whoever won the race.
        check!(
            verifies(&fx, t.access_token.expose()).await?.is_none(),
            "round {round}: reuse left the first access token valid"
        );
        for w in &winners {
            check!(
                verifies(&fx, w.access_token.expose()).await?.is_none(),
                "round {round}: the winner's access token survived reuse"
            );
            check!(
                is_invalid_grant(&refresh(&fx, &rt_of(w)?).await),
                "round {round}: the winner's refresh token survived reuse"
            );
        }
    }
    // And without a race: one task rotating a chain never trips reuse detection.
    let t = login(&fx, "nia", None).await?;
    let mut rt = rt_of(&t)?;
    for n in 0..10 {
        let next = refresh(&fx, &rt)
            .await
            .map_err(|e| format!("sequential rotation {n}: {e}"))?;
        rt = rt_of(&next)?;
    }
    Ok(Outcome::Passed)
}

async fn concurrent_code_redemption_at_most_one_wins(i: Instance) -> CaseResult {
    const TASKS: usize = 8;
    let fx = Arc::new(fixture(&i, fast(), false).await?);
    for round in 0..3 {
        let v = verifier("race");
        let code = authorize(&fx, "olga", &v, None).await?;
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let mut handles = Vec::new();
        for _ in 0..TASKS {
            let (fx, code, v, barrier) = (fx.clone(), code.clone(), v.clone(), barrier.clone());
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                fx.grants
                    .exchange_code(&fx.auth, &code, REDIRECT, &v, None)
                    .await
            }));
        }
        let mut winners = Vec::new();
        for h in handles {
            match h.await.map_err(|e| e.to_string())? {
                Ok(t) => {
                    remember(&t);
                    winners.push(t)
                }
                Err(GrantError::InvalidGrant(_)) => {}
                Err(e) => return Err(format!("round {round}: an exchange failed oddly: {e}")),
            }
        }
        check!(
            winners.len() <= 1,
            "round {round}: one code was exchanged {} times",
            winners.len()
        );
        for w in &winners {
            check!(
                verifies(&fx, w.access_token.expose()).await?.is_none(),
                "round {round}: tokens of a code redeemed twice are valid"
            );
        }
    }
    Ok(Outcome::Passed)
}

async fn revocation_racing_rotation_leaves_nothing_valid(i: Instance) -> CaseResult {
    let fx = Arc::new(fixture(&i, fast(), true).await?);
    for round in 0..4 {
        let t = login(&fx, "pat", None).await?;
        let grant_id = t.grant.grant_id.clone();
        let rotator = {
            let fx = fx.clone();
            let mut rt = rt_of(&t)?;
            tokio::spawn(async move {
                let mut issued = Vec::new();
                for _ in 0..6 {
                    match refresh(&fx, &rt).await {
                        Ok(next) => {
                            rt = next
                                .refresh_token
                                .as_ref()
                                .map(|s| s.expose().to_owned())
                                .unwrap_or_default();
                            issued.push(next);
                        }
                        Err(_) => break,
                    }
                }
                (issued, rt)
            })
        };
        tokio::time::sleep(Duration::from_millis(round * 3)).await;
        let revoked = fx
            .grants
            .revoke_grant("pat", &grant_id)
            .await
            .map_err(store_err("revoke"))?;
        let (issued, last_rt) = rotator.await.map_err(|e| e.to_string())?;
        check!(revoked, "round {round}: the grant was not found to revoke");
        check!(
            verifies(&fx, t.access_token.expose()).await?.is_none(),
            "round {round}: first access token valid after revocation"
        );
        for n in &issued {
            check!(
                verifies(&fx, n.access_token.expose()).await?.is_none(),
                "round {round}: a rotation's access token survived revocation"
            );
        }
        check!(
            is_invalid_grant(&refresh(&fx, &last_rt).await),
            "round {round}: the last refresh token survived revocation"
        );
    }
    Ok(Outcome::Passed)
}

async fn garbage_and_wrong_kind_tokens_never_verify(i: Instance) -> CaseResult {
    let fx = fixture(&i, fast(), true).await?;
    let t = login(&fx, "quinn", None).await?;
    let rt = rt_of(&t)?;
    let at = t.access_token.expose().to_owned();
    let upper = at.to_uppercase();
    for (what, token) in [
        ("empty", ""),
        ("short", "abc"),
        ("refresh token as access token", rt.as_str()),
        ("non-hex", &"z".repeat(64)),
        ("truncated", &at[..63]),
        ("with whitespace", &format!("{at} ")),
        ("huge", &"a".repeat(100_000)),
    ] {
        check!(verifies(&fx, token).await?.is_none(), "{what} verified");
    }
    // Hex is case-insensitive: the same 256 bits.
    check!(
        verifies(&fx, &upper).await?.is_some(),
        "an upper-cased token does not verify"
    );
    // An access token is no refresh token.
    check!(
        is_invalid_grant(&refresh(&fx, &at).await),
        "an access token refreshed"
    );
    check!(
        verifies(&fx, &at).await?.is_some(),
        "a failed refresh with an access token revoked it"
    );
    Ok(Outcome::Passed)
}

async fn grants_survive_reopen(i: Instance) -> CaseResult {
    let Some(reopen) = i.reopen.clone() else {
        return Ok(Outcome::NotApplicable(
            "the store cannot be reopened".into(),
        ));
    };
    let fx = fixture(&i, fast(), true).await?;
    let props = serde_json::json!({"k": secret("reopen-props")});
    let t = login(&fx, "ray", Some(&props)).await?;
    let again = GrantStore::new(token_store_core::TokenStore::from_arc(
        reopen().await.map_err(store_err("reopen"))?,
    ))
    .map_err(store_err("open"))?;
    let g = again
        .verify(t.access_token.expose())
        .await
        .map_err(store_err("verify"))?
        .ok_or("token invalid after reopen")?;
    check!(
        g.props::<serde_json::Value>().map_err(store_err("props"))? == Some(props),
        "props after reopen"
    );
    let auth = again
        .authenticate_client(
            fx.client.client_id(),
            fx.client.client_secret.as_ref().map(|s| s.expose()),
        )
        .await
        .map_err(grant_err("client after reopen"))?;
    let r = again
        .refresh(&auth, &rt_of(&t)?, RefreshOptions::new())
        .await
        .map_err(grant_err("refresh after reopen"))?;
    remember(&r);
    Ok(Outcome::Passed)
}

/// One token family as the model sees it.
struct Family {
    user: &'static str,
    alive: bool,
    current: String,
    rotated: Vec<String>,
    /// Access tokens and whether each should still verify.
    ats: Vec<(String, bool)>,
}

/// A random walk over logins, rotations, replays, revocations (of one access token, of a
/// refresh token, of a user's grants), verifications, introspections and listings, each
/// answer compared with a model of which tokens must be valid. The seed is printed on a
/// failure.
async fn random_walk_matches_the_model(i: Instance) -> CaseResult {
    let mut seed = [0u8; 8];
    token_store_core::backend::fill_random(&mut seed).map_err(|e| e.to_string())?;
    let seed = u64::from_le_bytes(seed) | 1;
    walk(i, seed)
        .await
        .map_err(|e| format!("{e} (seed {seed:#x})"))
}

async fn walk(i: Instance, mut state: u64) -> CaseResult {
    const USERS: [&str; 2] = ["walk-a", "walk-b"];
    let mut next = move |n: usize| {
        // xorshift64: reproducible from the printed seed.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let fx = fixture(&i, fast(), true).await?;
    let mut families: Vec<Family> = Vec::new();
    for step in 0..60 {
        let op = if families.is_empty() { 0 } else { next(9) };
        let f = if families.is_empty() {
            0
        } else {
            next(families.len())
        };
        match op {
            0 => {
                let user = USERS[next(USERS.len())];
                let t = login(&fx, user, None).await?;
                families.push(Family {
                    user,
                    alive: true,
                    current: rt_of(&t)?,
                    rotated: Vec::new(),
                    ats: vec![(t.access_token.expose().to_owned(), true)],
                });
            }
            1 | 2 => {
                let fam = &mut families[f];
                let r = refresh(&fx, &fam.current.clone()).await;
                match (&r, fam.alive) {
                    (Ok(t), true) => {
                        let old = std::mem::replace(&mut fam.current, rt_of(t)?);
                        fam.rotated.push(old);
                        fam.ats.push((t.access_token.expose().to_owned(), true));
                        // A grant keeps its 16 newest access tokens; older ones are revoked.
                        let evicted = fam.ats.len().saturating_sub(16);
                        for at in &mut fam.ats[..evicted] {
                            at.1 = false;
                        }
                    }
                    (Err(GrantError::InvalidGrant(_)), false) => {}
                    _ => {
                        return Err(format!(
                            "step {step}: refresh of a {} family answered {:?}",
                            if fam.alive { "live" } else { "revoked" },
                            r.map(|_| ())
                        ));
                    }
                }
            }
            3 => {
                let fam = &mut families[f];
                if let Some(old) = fam.rotated.first().cloned() {
                    let r = refresh(&fx, &old).await;
                    check!(
                        is_invalid_grant(&r),
                        "step {step}: a rotated refresh token refreshed"
                    );
                    fam.alive = false;
                }
            }
            4 => {
                let fam = &mut families[f];
                let n = next(fam.ats.len());
                let should = fam.alive && fam.ats[n].1;
                let revoked = fx
                    .grants
                    .revoke_token(&fx.auth, &fam.ats[n].0.clone())
                    .await
                    .map_err(store_err("revoke access token"))?;
                check!(
                    revoked == should,
                    "step {step}: revoking an access token answered {revoked}, the model says {should}"
                );
                fam.ats[n].1 = false;
            }
            5 => {
                let fam = &mut families[f];
                let revoked = fx
                    .grants
                    .revoke_token(&fx.auth, &fam.current.clone())
                    .await
                    .map_err(store_err("revoke refresh token"))?;
                check!(
                    revoked == fam.alive,
                    "step {step}: revoking a refresh token answered {revoked}, the model says {}",
                    fam.alive
                );
                fam.alive = false;
            }
            6 => {
                let user = USERS[next(USERS.len())];
                let live = families
                    .iter()
                    .filter(|x| x.user == user && x.alive)
                    .count();
                let n = fx
                    .grants
                    .revoke_user_grants(user)
                    .await
                    .map_err(store_err("revoke user"))?;
                check!(
                    n == live,
                    "step {step}: revoked {n} grants of {user}, the model has {live}"
                );
                for fam in families.iter_mut().filter(|x| x.user == user) {
                    fam.alive = false;
                }
            }
            7 => {
                let user = USERS[next(USERS.len())];
                let live = families
                    .iter()
                    .filter(|x| x.user == user && x.alive)
                    .count();
                let listed = fx
                    .grants
                    .list_grants(user)
                    .await
                    .map_err(store_err("list"))?
                    .len();
                check!(
                    listed == live,
                    "step {step}: {listed} grants of {user} listed, the model has {live}"
                );
                let fam = &families[f];
                let active = fx
                    .grants
                    .introspect(&fam.current)
                    .await
                    .map_err(store_err("introspect"))?
                    .active;
                check!(
                    active == fam.alive,
                    "step {step}: the current refresh token introspects active={active}, the model says {}",
                    fam.alive
                );
            }
            _ => {}
        }
        // After every step: every access token of every family verifies exactly when the
        // model says it should.
        for (n, fam) in families.iter().enumerate() {
            for (at, at_alive) in &fam.ats {
                let should = fam.alive && *at_alive;
                let valid = verifies(&fx, at).await?.is_some();
                check!(
                    valid == should,
                    "step {step}: family {n}: an access token verifies={valid}, the model says {should}"
                );
            }
        }
    }
    Ok(Outcome::Passed)
}
