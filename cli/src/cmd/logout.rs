//! `logout`: delete a token record, after revoking its tokens at the issuer with `--revoke`.
//!
//! The record is read once; its refresh token, then its access token are revoked (RFC 7009);
//! then the record is deleted only if it is still the version read (compare-and-swap), so
//! tokens another process obtained meanwhile are never dropped unrevoked. A failed
//! revocation keeps the record unless `--force`.

use std::time::Duration;

use serde_json::{Value, json};
use token_store::{Error, Precondition, Secret, TokenKey, TokenRecord, TokenStore, canonical_url};

use crate::args::{KeyArgs, RevokeArgs};
use crate::exit::{CliResult, Code, Failure};
use crate::out::{Report, clean};
use crate::revoke::{ClientAuth, Revoked, Revoker};
use crate::store::{Opened, find_token, token_target};

/// What the revocation did.
struct Revocation {
    endpoint: String,
    /// (`refresh_token` / `access_token`, outcome)
    tokens: Vec<(&'static str, Revoked)>,
}

pub(crate) async fn run(opened: &Opened, key: &KeyArgs, args: &RevokeArgs) -> CliResult<Report> {
    let store = &opened.store;
    let (key, as_typed) = token_target(key)?;
    let (key, found) = find_token(store, key, as_typed).await?;
    let encoded = key.storage_key().encode();
    let mut text = String::new();
    let mut warnings = Vec::new();
    let mut revocation_json = Value::Null;
    if args.revoke {
        match revoke(store, &key, &found.value, args).await {
            Ok(done) => {
                for (what, outcome) in &done.tokens {
                    text.push_str(&match outcome {
                        Revoked::Yes => format!(
                            "revoked the {} at {}\n",
                            what.replace('_', " "),
                            clean(&done.endpoint)
                        ),
                        Revoked::Unsupported => format!(
                            "the issuer does not revoke {}s (it stays valid until it expires)\n",
                            what.replace('_', " ")
                        ),
                    });
                }
                revocation_json = json!({
                    "endpoint": done.endpoint,
                    "tokens": done.tokens.iter().map(|(what, outcome)| json!({
                        "token": what,
                        "outcome": if *outcome == Revoked::Yes { "revoked" } else { "unsupported" },
                    })).collect::<Vec<_>>(),
                    "error": Value::Null,
                });
            }
            Err(f) if args.force => {
                warnings.push(format!(
                    "revocation failed: {}; deleting the record anyway (--force)",
                    f.message
                ));
                revocation_json = json!({
                    "endpoint": Value::Null,
                    "tokens": [],
                    "error": {"kind": f.code.kind(), "message": f.message},
                });
            }
            Err(f) => {
                return Err(Failure::new(
                    f.code,
                    format!(
                        "{}; the record is kept (--force deletes it anyway)",
                        f.message
                    ),
                ));
            }
        }
    }
    let deleted = match store
        .delete(&key, Precondition::IfVersion(found.version.clone()))
        .await
    {
        Ok(existed) => existed,
        Err(Error::Conflict { .. }) => {
            return Err(Failure::new(
                Code::Conflict,
                format!(
                    "{} changed since it was read (another process refreshed it?) and was kept{}; run logout again",
                    clean(&encoded),
                    if args.revoke {
                        ": the tokens read were revoked, its new ones were not"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if deleted {
        text.push_str(&format!("deleted {}\n", clean(&encoded)));
    } else {
        text.push_str(&format!(
            "{} was already deleted by another process\n",
            clean(&encoded)
        ));
    }
    Ok(Report::new(
        text,
        json!({
            "storage_key": encoded,
            "version": found.version.as_str(),
            "revocation": revocation_json,
            "deleted": deleted,
        }),
    )
    .with_warnings(warnings))
}

async fn revoke(
    store: &TokenStore,
    key: &TokenKey,
    record: &TokenRecord,
    args: &RevokeArgs,
) -> CliResult<Revocation> {
    let revoker = Revoker::new(Duration::from_secs(args.timeout.max(1)))?;
    let issuer = args
        .revoke_issuer
        .clone()
        .or_else(|| key.authorization_server().map(str::to_owned))
        .or_else(|| record.authorization_server.clone());
    let endpoint = match (&args.revocation_endpoint, &issuer) {
        (Some(url), _) => Revoker::given(url)?,
        (None, Some(issuer)) => revoker.discover(issuer).await?,
        (None, None) => {
            return Err(Failure::usage(
                "the record names no issuer: give --revoke-issuer URL or --revocation-endpoint URL",
            ));
        }
    };
    let client = client_auth(store, record, issuer.as_deref(), args).await?;
    let mut tokens = Vec::new();
    // The refresh token first: revoking it commonly ends the whole grant.
    if let Some(rt) = &record.refresh_token {
        match revoker
            .revoke(&endpoint, rt, "refresh_token", &client)
            .await?
        {
            Revoked::Yes => tokens.push(("refresh_token", Revoked::Yes)),
            Revoked::Unsupported => {
                return Err(Failure::new(
                    Code::Refused,
                    format!(
                        "{} does not revoke refresh tokens (unsupported_token_type)",
                        clean(endpoint.url.as_str())
                    ),
                ));
            }
        }
    }
    let outcome = revoker
        .revoke(&endpoint, &record.access_token, "access_token", &client)
        .await?;
    tokens.push(("access_token", outcome));
    Ok(Revocation {
        endpoint: endpoint.url.to_string(),
        tokens,
    })
}

/// Who to authenticate as: `--client-id` / `--client-secret-env`, else the record's client
/// id with the secret of the matching client registration stored for the issuer.
async fn client_auth(
    store: &TokenStore,
    record: &TokenRecord,
    issuer: Option<&str>,
    args: &RevokeArgs,
) -> CliResult<ClientAuth> {
    let mut auth = ClientAuth {
        id: args.client_id.clone().or_else(|| record.client_id.clone()),
        secret: None,
        method: None,
    };
    if let Some(var) = &args.client_secret_env {
        match std::env::var(var) {
            Ok(s) if !s.is_empty() => auth.secret = Some(Secret::new(s)),
            _ => return Err(Error::config(format!("{} is unset or empty", clean(var))).into()),
        }
        return Ok(auth);
    }
    let Some(issuer) = issuer else {
        return Ok(auth);
    };
    let issuer = canonical_url(issuer);
    let mut candidates = Vec::new();
    for key in store.list_clients().await?.keys {
        if canonical_url(key.authorization_server()) != issuer {
            continue;
        }
        if let Ok(Some(found)) = store.get_client(&key).await {
            candidates.push(found.value);
        }
    }
    let registration = match &auth.id {
        Some(id) => candidates.into_iter().find(|r| r.client_id == *id),
        // Without a client id on record, only an unambiguous registration is used.
        None if candidates.len() == 1 => candidates.pop(),
        None => None,
    };
    if let Some(r) = registration {
        auth.id = Some(r.client_id.clone());
        auth.method = r
            .extra
            .get("token_endpoint_auth_method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        auth.secret = r.client_secret;
    }
    Ok(auth)
}
