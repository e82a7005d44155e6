//! `migrate`: copy every token and client registration to another store, verifying each
//! copy; records already identical are left alone, so it is safe to re-run.

use serde_json::json;
use token_store::{ClientKey, ClientRegistration, Error, Precondition, Query, TokenStore};

use super::{Unreadable, dedup_unreadable};
use crate::exit::CliResult;
use crate::out::{Report, clean, progress};
use crate::store::Opened;

pub(crate) async fn run(from: &Opened, to_url: &str) -> CliResult<Report> {
    let to = token_store::open(to_url).await?;
    let to_shown = token_store::StoreUrl::parse(to_url)?.redacted();
    let source = &from.store;
    let tokens = source.list(&Query::default()).await?;
    let clients = source.list_clients().await?;
    let bar = progress((tokens.keys.len() + clients.keys.len()) as u64, "migrate");
    let (mut copied, mut unchanged) = (0usize, 0usize);
    for key in &tokens.keys {
        bar.inc(1);
        let Some(found) = source.get(key).await? else {
            continue;
        };
        match to.get(key).await? {
            Some(existing) if existing.value == found.value => unchanged += 1,
            _ => {
                to.put(key, &found.value, Precondition::Any).await?;
                if to.get(key).await?.map(|c| c.value) != Some(found.value) {
                    return Err(differs(&to, key.storage_key().encode()).into());
                }
                copied += 1;
            }
        }
    }
    for key in &clients.keys {
        bar.inc(1);
        let Some(found) = source.get_client(key).await? else {
            continue;
        };
        if to
            .get_client(key)
            .await?
            .is_some_and(|e| e.value == found.value)
        {
            unchanged += 1;
        } else {
            copy_client(&to, key, &found.value).await?;
            copied += 1;
        }
    }
    bar.finish_and_clear();
    let skipped = dedup_unreadable(from, tokens.unreadable.iter().chain(&clients.unreadable));
    let warnings = skipped
        .iter()
        .map(|u| {
            format!(
                "skipped unreadable entry {}: {}",
                clean(&u.location),
                clean(&u.reason)
            )
        })
        .collect();
    Ok(Report::new(
        format!(
            "migrated {copied} records ({unchanged} already up to date) to {}\n",
            clean(&to_shown)
        ),
        json!({
            "to": to_shown,
            "copied": copied,
            "unchanged": unchanged,
            "skipped": skipped.iter().map(Unreadable::json).collect::<Vec<_>>(),
        }),
    )
    .with_warnings(warnings))
}

fn differs(to: &TokenStore, key: String) -> Error {
    Error::Integrity {
        backend: to.backend(),
        key,
        message: "the copy read back differs from the source".to_owned(),
    }
}

/// Writes a client registration and checks that it reads back the same.
pub(crate) async fn copy_client(
    to: &TokenStore,
    key: &ClientKey,
    reg: &ClientRegistration,
) -> token_store::Result<()> {
    to.put_client(key, reg, Precondition::Any).await?;
    if to.get_client(key).await?.map(|b| b.value).as_ref() != Some(reg) {
        return Err(differs(to, key.storage_key().encode()));
    }
    Ok(())
}
