//! `list`: token keys and client registrations with their storage keys; unreadable entries
//! once each, with the command that removes them.

use serde_json::json;
use token_store::{ListFilter, Query};

use super::{Unreadable, dedup_unreadable, token_key_json};
use crate::exit::CliResult;
use crate::input;
use crate::out::{Report, clean};
use crate::store::Opened;

pub(crate) async fn run(
    opened: &Opened,
    user: Option<String>,
    resource: Option<String>,
) -> CliResult<Report> {
    let store = &opened.store;
    let mut filter = ListFilter::all();
    filter.user_key = user;
    if let Some(r) = &resource {
        input::http_url("--resource", r)?;
    }
    filter.resource = resource.as_deref().map(token_store::canonical_url);
    let page = store.list(&Query::new(filter)).await?;
    let clients = store.list_clients().await?;
    let unreadable: Vec<Unreadable> =
        dedup_unreadable(opened, page.unreadable.iter().chain(&clients.unreadable));

    let mut text = String::new();
    for k in &page.keys {
        text.push_str(&format!(
            "{}\n    user: {}   issuer: {}   scopes: {}\n    key: {}\n",
            clean(k.resource()),
            clean(k.user_key()),
            clean(k.authorization_server().unwrap_or("-")),
            clean(if k.scope_fingerprint().is_empty() {
                "-"
            } else {
                k.scope_fingerprint()
            }),
            clean(&k.storage_key().encode()),
        ));
    }
    for c in &clients.keys {
        text.push_str(&format!(
            "client registration at {}{}\n    key: {}\n",
            clean(c.authorization_server()),
            if c.application().is_empty() {
                String::new()
            } else {
                format!(" (application {})", clean(c.application()))
            },
            clean(&c.storage_key().encode()),
        ));
    }
    for u in &unreadable {
        text.push_str(&u.text(opened));
    }
    text.push_str(&format!(
        "{} tokens, {} client registrations{}\n",
        page.keys.len(),
        clients.keys.len(),
        if unreadable.is_empty() {
            String::new()
        } else {
            format!(", {} unreadable entries", unreadable.len())
        }
    ));
    let json = json!({
        "tokens": page.keys.iter().map(token_key_json).collect::<Vec<_>>(),
        "clients": clients.keys.iter().map(|c| json!({
            "storage_key": c.storage_key().encode(),
            "issuer": c.authorization_server(),
            "application": c.application(),
        })).collect::<Vec<_>>(),
        "unreadable": unreadable.iter().map(Unreadable::json).collect::<Vec<_>>(),
    });
    Ok(Report::new(text, json))
}
