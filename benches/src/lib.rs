//! Latency benchmarks of token-store: every backend through the typed
//! [`TokenStore`](token_store_core::TokenStore) API, beside the same operation done with the
//! backend's raw client in the same run, with the ratio of the two.
//!
//! - [`fixture`]: realistic records (1 KB JWT-like access token, refresh token, scopes,
//!   metadata; about 1.5 KB of JSON) and keys.
//! - [`ops`]: the six operations (get hit, get miss, put, CAS put, delete, list of 100), the
//!   [`ops::Target`] they run on, the interleaving driver [`ops::measure`] and the
//!   concurrency driver [`ops::throughput`]. [`ops::measure_store`] is what
//!   `tokenstore bench` runs on any store.
//! - [`stats`], [`report`]: medians, p99, ops/s, process memory, markdown tables.
//! - `raw` (feature `runner`, on by default): the raw clients (redis on one multiplexed
//!   connection, one prepared rusqlite statement, plain KV v2 HTTP calls with reqwest,
//!   plain files, the `secret-service` crate, a `HashMap`).
//!
//! - `backends` (feature `runner`): every backend of a run, its URL, raw client and
//!   attribution variants, from the services' environment.
//!
//! The runner binary (`cargo run --release -p token-store-bench`) measures everything and
//! prints the table; `cargo bench -p token-store-bench` runs the criterion version (get,
//! put, CAS put, ours beside raw) on every backend available. See `BENCHMARKS.md` at the
//! repository root.
#![warn(missing_docs)]

#[cfg(feature = "runner")]
pub mod backends;
pub mod fixture;
pub mod ops;
#[cfg(feature = "runner")]
pub mod probe;
#[cfg(feature = "runner")]
pub mod raw;
pub mod report;
#[cfg(feature = "runner")]
pub mod rmcp_load;
pub mod stats;

pub use ops::{
    BResult, BenchError, BytesTarget, Op, OpRow, Plan, Target, TypedTarget, measure, measure_store,
};
pub use report::{BackendOps, bytes_table, ops_table, store_table};
pub use stats::{Memory, Summary};
