//! `status`: every token record's state and time left, never a token value. Exits 10
//! (needs login) when a record is expired without a usable refresh token, or unreadable.

use serde_json::json;
use token_store::backend::unix_now;
use token_store::{Error, ListFilter, Query, TokenKey, TokenRecord};

use super::{Unreadable, dedup_unreadable, token_key_json};
use crate::exit::{CliResult, Code};
use crate::out::{Report, clean, human_seconds};
use crate::store::Opened;

/// A record's state, from the point of view of an MCP client about to use it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// The access token is good for longer than the window (or has no known expiry).
    Valid,
    /// The access token expires within the window.
    Expiring,
    /// The access token has expired, but a refresh token can get a new one.
    Refreshable,
    /// Expired, and no usable refresh token: a new login is needed.
    Expired,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Valid => "valid",
            State::Expiring => "expiring",
            State::Refreshable => "refreshable",
            State::Expired => "expired",
        }
    }

    fn of(r: &TokenRecord, now: f64, window: f64) -> State {
        let refreshable =
            r.refresh_token.is_some() && r.refresh_expires_at.is_none_or(|until| until > now);
        match r.expires_at {
            None => State::Valid,
            Some(at) if at - now > window => State::Valid,
            Some(at) if at > now => State::Expiring,
            Some(_) if refreshable => State::Refreshable,
            Some(_) => State::Expired,
        }
    }
}

pub(crate) async fn run(opened: &Opened, within: u64, user: Option<String>) -> CliResult<Report> {
    let store = &opened.store;
    let mut filter = ListFilter::all();
    filter.user_key = user;
    let page = store.list(&Query::new(filter)).await?;
    let mut unreadable = dedup_unreadable(opened, &page.unreadable);
    let window = within as f64 * 60.0;
    let mut rows = Vec::new();
    for key in &page.keys {
        match store.get(key).await {
            Ok(Some(found)) => {
                let now = unix_now();
                let state = State::of(&found.value, now, window);
                rows.push((key.clone(), found.value, state, now));
            }
            // Deleted since the listing.
            Ok(None) => {}
            Err(e @ (Error::Corrupt { .. } | Error::Integrity { .. })) => {
                unreadable.push(Unreadable::at_key(
                    opened,
                    &key.storage_key(),
                    crate::out::one_line(&e),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let count = |s: State| rows.iter().filter(|r| r.2 == s).count();
    let needs_login = count(State::Expired) > 0 || !unreadable.is_empty();

    let mut text = String::new();
    for (key, record, state, now) in &rows {
        text.push_str(&format!(
            "{:<12} {:>9}  {}\n    issuer: {}   scopes: {}   user: {}\n    key: {}\n",
            state.name(),
            time_left(record, *now),
            clean(key.resource()),
            clean(issuer(key, record).unwrap_or("-")),
            clean(&or_dash(scopes(key, record).join(" "))),
            clean(key.user_key()),
            clean(&key.storage_key().encode()),
        ));
    }
    for u in &unreadable {
        text.push_str(&u.text(opened));
    }
    text.push_str(&format!(
        "{} records: {} valid, {} expiring within {within} min, {} refreshable, {} expired{}\n",
        rows.len(),
        count(State::Valid),
        count(State::Expiring),
        count(State::Refreshable),
        count(State::Expired),
        if unreadable.is_empty() {
            String::new()
        } else {
            format!(", {} unreadable", unreadable.len())
        }
    ));
    if needs_login {
        text.push_str("a new login is needed for the expired or unreadable records\n");
    }
    let json = json!({
        "within_minutes": within,
        "needs_login": needs_login,
        "records": rows.iter().map(|(key, r, state, now)| json!({
            "key": token_key_json(key),
            "state": state.name(),
            "issuer": issuer(key, r),
            "scopes": scopes(key, r),
            "expires_at": r.expires_at,
            "seconds_left": r.expires_at.map(|at| at - now),
            "has_refresh_token": r.refresh_token.is_some(),
            "refresh_expires_at": r.refresh_expires_at,
        })).collect::<Vec<_>>(),
        "counts": {
            "valid": count(State::Valid),
            "expiring": count(State::Expiring),
            "refreshable": count(State::Refreshable),
            "expired": count(State::Expired),
            "unreadable": unreadable.len(),
        },
        "unreadable": unreadable.iter().map(Unreadable::json).collect::<Vec<_>>(),
    });
    let report = Report::new(text, json);
    Ok(if needs_login {
        report.with_code(Code::NeedsLogin)
    } else {
        report
    })
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".to_owned() } else { s }
}

fn time_left(r: &TokenRecord, now: f64) -> String {
    match r.expires_at {
        None => "no expiry".to_owned(),
        Some(at) => human_seconds(at - now),
    }
}

fn issuer<'a>(key: &'a TokenKey, r: &'a TokenRecord) -> Option<&'a str> {
    key.authorization_server()
        .or(r.authorization_server.as_deref())
}

/// The record's granted scopes, else the key's requested ones.
fn scopes(key: &TokenKey, r: &TokenRecord) -> Vec<String> {
    if r.scopes.is_empty() {
        key.scope_fingerprint()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    } else {
        r.scopes.clone()
    }
}
