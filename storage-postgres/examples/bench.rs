//! Ours against the raw client on a real server: get hit, get miss, put, CAS put, delete and
//! list of 100, timed in alternating blocks by the bench crate's driver (so load from
//! neighbours hits both alike), medians and their ratio. The raw client is the bench crate's
//! own `benches/src/raw/postgres.rs`, included here by path.
//!
//! ```text
//! eval "$(scripts/services.sh start)"
//! cargo run --release -p token-store-postgres --example bench [-- SAMPLES]
//! ```
//!
//! Reads `TOKEN_STORE_TEST_POSTGRES_URL`; writes only under a schema of its own, dropped at
//! the end.

#![allow(missing_docs)]

use std::error::Error;

use token_store_bench::{Op, Plan, TypedTarget, measure};
use token_store_core::StoreUrl;

/// What the raw client's file names as `crate::fixture` and `crate::ops`.
mod fixture {
    pub use token_store_bench::fixture::*;
}
mod ops {
    pub use token_store_bench::ops::*;
}

#[path = "../../benches/src/raw/postgres.rs"]
mod raw;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let base = std::env::var("TOKEN_STORE_TEST_POSTGRES_URL").map_err(
        |_| "TOKEN_STORE_TEST_POSTGRES_URL is unset: eval \"$(scripts/services.sh start)\"",
    )?;
    let samples: usize = std::env::args().nth(1).map_or(Ok(2000), |n| n.parse())?;
    let run_id = token_store_bench::ops::run_id();
    let schema = format!("bench_{}", std::process::id());
    let table = "tokens";
    let url = StoreUrl::parse(&format!("{base}?schema={schema}&table={table}"))?;
    let store = token_store_postgres::open_url(&url).await?;
    let ours = TypedTarget::new(store, &run_id);
    let raw = raw::RawPostgres::connect(&base, &schema, table, &run_id).await?;
    let targets: [&dyn token_store_bench::Target; 2] = [&ours, &raw];
    for t in targets {
        t.setup().await?;
    }
    println!("| op | ours p50 | raw p50 | ours/raw | ours p99 | raw p99 |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for op in Op::ALL {
        let plan = Plan::fixed(samples);
        let plan = if op == Op::List {
            plan.scaled_down(10)
        } else {
            plan
        };
        let s = measure(op, &targets, &plan).await?;
        let (Some(o), Some(r)) = (s[0], s[1]) else {
            continue;
        };
        println!(
            "| {} | {:.0} µs | {:.0} µs | {:.2} | {:.0} µs | {:.0} µs |",
            op.name(),
            o.p50_us,
            r.p50_us,
            o.p50_us / r.p50_us,
            o.p99_us,
            r.p99_us
        );
    }
    for t in targets {
        t.cleanup().await?;
    }
    let (client, connection) = base
        .parse::<tokio_postgres::Config>()?
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}
