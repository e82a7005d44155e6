//! `rekey`: re-encrypt an encrypted file store under a new key, crash-safe.

use std::path::PathBuf;

use serde_json::json;
use token_store::{Error, KeySource};

use crate::exit::CliResult;
use crate::out::{Report, clean};

pub(crate) async fn run(
    store: Option<&str>,
    new_key_file: Option<PathBuf>,
    new_passphrase_env: Option<String>,
) -> CliResult<Report> {
    let new_key = match (new_key_file, new_passphrase_env) {
        (Some(path), None) => KeySource::KeyFile(path),
        (None, Some(var)) => match std::env::var(&var) {
            Ok(p) if !p.is_empty() => KeySource::passphrase(p),
            _ => return Err(Error::config(format!("{var} is unset or empty")).into()),
        },
        _ => {
            return Err(crate::exit::Failure::usage(
                "give --new-key-file or --new-passphrase-env",
            ));
        }
    };
    let store = match store {
        Some(url) => {
            let url = token_store::StoreUrl::parse(url)?;
            if url.kind() != token_store::BackendKind::File {
                return Err(Error::config(format!(
                    "rekey works on encrypted file stores (file://), not {}",
                    url.scheme()
                ))
                .into());
            }
            token_store::file::FileStore::open(&token_store::file::FileConfig::from_url(&url)?)
                .await?
        }
        None => {
            let config = token_store::file::FileConfig::new(
                token_store::default_data_dir()?,
                token_store::default_key_source()?,
            );
            token_store::file::FileStore::open(&config).await?
        }
    };
    let n = store.rekey(new_key).await?;
    let dir = store.dir().display().to_string();
    Ok(Report::new(
        format!(
            "re-encrypted {n} records under the new key in {}\n",
            clean(&dir)
        ),
        json!({"records": n, "dir": dir}),
    ))
}
