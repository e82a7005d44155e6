//! `delete`: one token record or client registration; a missing one is "no record" (exit 3),
//! as for `get`.

use serde_json::json;
use token_store::{Precondition, TokenStore};

use crate::args::KeyArgs;
use crate::exit::CliResult;
use crate::out::{Report, clean};
use crate::store::{Target, not_found, target};

pub(crate) async fn run(store: &TokenStore, args: &KeyArgs) -> CliResult<Report> {
    let key = match target(args)? {
        Target::Token { key, as_typed } => {
            if store.delete(&key, Precondition::Any).await? {
                key.storage_key()
            } else if let Some(typed) = as_typed
                && store.delete(&typed, Precondition::Any).await?
            {
                typed.storage_key()
            } else {
                return Err(not_found(store, &key.storage_key()));
            }
        }
        Target::Client(key) => {
            if !store.delete_client(&key, Precondition::Any).await? {
                return Err(not_found(store, &key.storage_key()));
            }
            key.storage_key()
        }
    };
    Ok(Report::new(
        format!("deleted {}\n", clean(&key.encode())),
        json!({"deleted": {"storage_key": key.encode()}}),
    ))
}
