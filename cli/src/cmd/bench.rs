//! `bench`: time the typed API's operations on this store.

use serde_json::json;
use token_store::Error;

use crate::exit::CliResult;
use crate::out::{Report, clean, spinner};
use crate::store::Opened;

pub(crate) async fn run(opened: &Opened, ops: usize) -> CliResult<Report> {
    let store = opened.store.clone();
    let backend = store.backend();
    let run_id = token_store_bench::ops::run_id();
    let plan = token_store_bench::Plan::fixed(ops);
    let bar = spinner(&format!("timing 6 operations x {ops} calls"));
    let rows = token_store_bench::measure_store(store, &run_id, &plan).await;
    bar.finish_and_clear();
    let rows = rows.map_err(|e| match e.downcast::<Error>() {
        Ok(e) => *e,
        Err(e) => Error::backend(backend, format!("benchmark failed: {e}"), None),
    })?;
    Ok(Report::new(
        format!(
            "store: {}\n{}",
            clean(&opened.url),
            token_store_bench::store_table(&rows)
        ),
        json!({"store": opened.url, "backend": backend, "ops": ops, "rows": rows}),
    ))
}
