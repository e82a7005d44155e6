//! `get`: one token record or client registration, secrets redacted unless `--reveal`.

use serde_json::{Value, json};
use token_store::backend::unix_now;
use token_store::{ClientKey, ClientRegistration, TokenKey, TokenRecord, TokenStore, Version};

use crate::args::KeyArgs;
use crate::exit::CliResult;
use crate::out::{Report, clean, human_seconds, secret_json, show};
use crate::store::{Target, find_token, not_found, target};

pub(crate) async fn run(store: &TokenStore, args: &KeyArgs, reveal: bool) -> CliResult<Report> {
    match target(args)? {
        Target::Token { key, as_typed } => {
            let (key, found) = find_token(store, key, as_typed).await?;
            Ok(token(&key, &found.version, &found.value, reveal))
        }
        Target::Client(key) => {
            let Some(found) = store.get_client(&key).await? else {
                return Err(not_found(store, &key.storage_key()));
            };
            Ok(client(&key, &found.version, &found.value, reveal))
        }
    }
}

fn names(map: &serde_json::Map<String, Value>) -> Vec<String> {
    map.keys().cloned().collect()
}

fn token(key: &TokenKey, version: &Version, r: &TokenRecord, reveal: bool) -> Report {
    let mut text = String::new();
    let mut line = |label: &str, value: String| text.push_str(&format!("{label:<15}{value}\n"));
    line("key:", clean(&key.storage_key().encode()));
    line("user:", clean(key.user_key()));
    line("resource:", clean(key.resource()));
    line("issuer:", clean(key.authorization_server().unwrap_or("-")));
    line("version:", clean(version.as_str()));
    line("access_token:", show(&r.access_token, reveal));
    if let Some(rt) = &r.refresh_token {
        line("refresh_token:", show(rt, reveal));
    }
    if let Some(id) = &r.id_token {
        line("id_token:", show(id, reveal));
    }
    line("token_type:", clean(&r.token_type));
    line("scopes:", clean(&r.scopes.join(" ")));
    let now = unix_now();
    if let Some(at) = r.expires_at {
        let left = at - now;
        line(
            "expires_at:",
            if left > 0.0 {
                format!("{at:.0} (in {left:.0} s, {})", human_seconds(left))
            } else {
                format!("{at:.0} (expired {:.0} s ago)", -left)
            },
        );
    }
    if let Some(at) = r.refresh_expires_at {
        line(
            "refresh until:",
            format!("{at:.0} ({})", human_seconds(at - now)),
        );
    }
    if let Some(c) = &r.client_id {
        line("client_id:", clean(c));
    }
    if !r.metadata.is_empty() {
        line("metadata keys:", clean(&names(&r.metadata).join(", ")));
    }
    if !r.extra.is_empty() {
        line("other fields:", clean(&names(&r.extra).join(", ")));
    }
    let json = json!({
        "kind": "token",
        "key": super::token_key_json(key),
        "version": version.as_str(),
        "record": {
            "access_token": secret_json(Some(&r.access_token), reveal),
            "refresh_token": secret_json(r.refresh_token.as_ref(), reveal),
            "id_token": secret_json(r.id_token.as_ref(), reveal),
            "token_type": r.token_type,
            "scopes": r.scopes,
            "expires_at": r.expires_at,
            "seconds_left": r.expires_at.map(|at| at - now),
            "refresh_expires_at": r.refresh_expires_at,
            "obtained_at": r.obtained_at,
            "resource": r.resource,
            "authorization_server": r.authorization_server,
            "client_id": r.client_id,
            // Free-form fields may hold a vendor's token: their values only with --reveal.
            "metadata_keys": names(&r.metadata),
            "extra_keys": names(&r.extra),
            "metadata": if reveal { Value::Object(r.metadata.clone()) } else { Value::Null },
            "extra": if reveal { Value::Object(r.extra.clone()) } else { Value::Null },
        },
    });
    Report::new(text, json)
}

fn client(key: &ClientKey, version: &Version, r: &ClientRegistration, reveal: bool) -> Report {
    let mut text = String::new();
    let mut line = |label: &str, value: String| text.push_str(&format!("{label:<15}{value}\n"));
    line("key:", clean(&key.storage_key().encode()));
    line("issuer:", clean(key.authorization_server()));
    line("application:", clean(key.application()));
    line("version:", clean(version.as_str()));
    line("client_id:", clean(&r.client_id));
    if let Some(s) = &r.client_secret {
        line("client_secret:", show(s, reveal));
    }
    if let Some(s) = &r.registration_access_token {
        line("registration:", show(s, reveal));
    }
    if !r.redirect_uris.is_empty() {
        line("redirect_uris:", clean(&r.redirect_uris.join(" ")));
    }
    if !r.extra.is_empty() {
        line("other fields:", clean(&names(&r.extra).join(", ")));
    }
    let json = json!({
        "kind": "client",
        "key": {
            "storage_key": key.storage_key().encode(),
            "issuer": key.authorization_server(),
            "application": key.application(),
        },
        "version": version.as_str(),
        "registration": {
            "client_id": r.client_id,
            "client_secret": secret_json(r.client_secret.as_ref(), reveal),
            "client_secret_expires_at": r.client_secret_expires_at,
            "registration_access_token": secret_json(r.registration_access_token.as_ref(), reveal),
            "redirect_uris": r.redirect_uris,
            "extra_keys": names(&r.extra),
            "extra": if reveal { Value::Object(r.extra.clone()) } else { Value::Null },
        },
    });
    Report::new(text, json)
}
