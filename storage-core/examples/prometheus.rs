//! Token-store metrics in Prometheus text format, and audit events on stderr.
//!
//! ```text
//! cargo run -p token-store-core --features metrics --example prometheus
//! ```
//!
//! Installs `metrics-exporter-prometheus` as the global recorder (any `metrics` exporter
//! works the same), sends the `token_store::audit` target to stderr, then stores, reads,
//! refreshes (once successfully, once with a rejected refresh token) and takes over a dead
//! holder's lease on an in-memory store, and prints what a scrape would return. A server
//! serves `handle.render()` on its `/metrics` route instead.

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use token_store_core::layers::Metrics;
use token_store_core::{
    KeyKind, Lease, LeaseOptions, Precondition, PutOptions, RefreshError, StorageKey, TokenKey,
    TokenManager, TokenRecord, TokenStore,
};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Latencies as histograms with buckets from 100 µs (memory) to 10 s (a lease wait).
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.0001, 0.001, 0.01, 0.1, 1.0, 10.0],
        )?
        .install_recorder()?;
    token_store_core::metrics::describe();
    // Audit events only, to stderr: a deployment sends this target to its audit sink.
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(Targets::new().with_target(token_store_core::audit::TARGET, tracing::Level::INFO))
        .init();

    // Outermost, so latencies include every layer below (encryption, timeouts).
    let store = Metrics::wrap(TokenStore::in_memory());
    let key = TokenKey::new(
        "alice",
        "https://mcp.example.com/mcp",
        Some("https://auth.example.com"),
        ["read"],
    );
    let expiring = TokenRecord::new("at-1")
        .with_refresh_token("rt-1")
        .expires_in(Duration::ZERO);
    store.put(&key, &expiring, Precondition::Any).await?;

    let manager = TokenManager::new(store.clone())?;
    manager
        .valid_token(&key, |_old| async {
            Ok(TokenRecord::new("at-2")
                .with_refresh_token("rt-2")
                .expires_in(Duration::from_secs(3600)))
        })
        .await?;
    manager
        .valid_token(&key, |_| async { unreachable!() })
        .await?;

    let other = TokenKey::for_server("https://other.example.com/mcp");
    store.put(&other, &expiring, Precondition::Any).await?;
    let rejected = manager
        .valid_token(&other, |_| async {
            Err(RefreshError::Rejected("invalid_grant".into()))
        })
        .await;
    assert!(rejected.is_err());

    // A holder that died mid-refresh left an unreadable lease record behind.
    let lease_key = StorageKey::single(KeyKind::Lease, "refresh:demo")?;
    store
        .raw()
        .write(&lease_key, b"{}", &PutOptions::default())
        .await?;
    let options = LeaseOptions::new(Duration::from_secs(5), Duration::from_secs(1));
    Lease::acquire(&store, "refresh:demo", &options)
        .await?
        .release()
        .await?;

    print!("{}", handle.render());
    Ok(())
}
