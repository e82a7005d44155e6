//! `put`: a token record or OAuth token response from stdin or a file, checked strictly;
//! nothing is written when the input is refused.

use std::io::Read;
use std::path::Path;

use serde_json::json;
use token_store::{Precondition, TokenStore};

use crate::args::KeyArgs;
use crate::exit::{CliResult, Failure};
use crate::input::parse_record;
use crate::out::{Report, clean};
use crate::store::token_target;

/// More than any token response; a bigger input is a mistake (a wrong file).
const MAX_INPUT: u64 = 1024 * 1024;

pub(crate) async fn run(
    store: &TokenStore,
    args: &KeyArgs,
    file: Option<&Path>,
    create: bool,
) -> CliResult<Report> {
    // The key first: a bad --server is reported before stdin is read.
    let (key, _) = token_target(args)?;
    let text = read_input(file)?;
    let record = parse_record(&text, &key)?;
    let precondition = if create {
        Precondition::IfAbsent
    } else {
        Precondition::Any
    };
    let version = store.put(&key, &record, precondition).await?;
    let encoded = key.storage_key().encode();
    Ok(Report::new(
        format!(
            "stored {} (version {})\n",
            clean(&encoded),
            clean(version.as_str())
        ),
        json!({"stored": {"storage_key": encoded, "version": version.as_str()}}),
    ))
}

fn read_input(file: Option<&Path>) -> CliResult<zeroize::Zeroizing<String>> {
    let mut text = zeroize::Zeroizing::new(String::new());
    let (what, read) = match file {
        Some(path) => (
            path.display().to_string(),
            std::fs::File::open(path).and_then(|f| f.take(MAX_INPUT + 1).read_to_string(&mut text)),
        ),
        None => (
            "stdin".to_owned(),
            std::io::stdin()
                .take(MAX_INPUT + 1)
                .read_to_string(&mut text),
        ),
    };
    read.map_err(|e| Failure::usage(format!("cannot read {}: {e}", clean(&what))))?;
    if text.len() as u64 > MAX_INPUT {
        return Err(Failure::usage(format!(
            "{} is larger than {MAX_INPUT} bytes; not a token response",
            clean(&what)
        )));
    }
    Ok(text)
}
