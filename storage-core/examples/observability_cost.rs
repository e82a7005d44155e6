//! What metrics and audit events cost on the memory store's `get` and `put` (the cheapest
//! backend, so the overhead shows most): medians of per-call means over batches, the
//! configurations alternating batch by batch so drift hits them alike.
//!
//! ```text
//! cargo run --release -p token-store-core --example observability_cost [ROUNDS]                     # feature off
//! cargo run --release -p token-store-core --features metrics --example observability_cost [ROUNDS]  # feature on
//! ```
//!
//! Without the feature only the plain store and the audit rows are measured; compare the
//! plain rows of both builds (the feature must cost nothing on a store without the layer).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use token_store_core::{Precondition, TokenKey, TokenRecord, TokenStore};

const BATCH: u32 = 2_000;
/// Rounds by default; the first argument overrides it.
const ROUNDS: usize = 101;

fn rounds() -> usize {
    std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(ROUNDS)
        .max(2)
}

fn record() -> TokenRecord {
    // The size of a typical record: a JWT access token, an opaque refresh token, scopes.
    TokenRecord::new("a".repeat(800))
        .with_refresh_token("r".repeat(64))
        .expires_in(Duration::from_secs(3600))
}

/// One batch: the mean time of a put followed by a get, each, in nanoseconds.
fn batch(rt: &tokio::runtime::Runtime, store: &TokenStore, key: &TokenKey) -> (f64, f64) {
    let record = record();
    rt.block_on(async {
        let started = Instant::now();
        for _ in 0..BATCH {
            store.put(key, &record, Precondition::Any).await.unwrap();
        }
        let put = started.elapsed();
        let started = Instant::now();
        for _ in 0..BATCH {
            std::hint::black_box(store.get(key).await.unwrap());
        }
        let get = started.elapsed();
        (
            put.as_nanos() as f64 / f64::from(BATCH),
            get.as_nanos() as f64 / f64::from(BATCH),
        )
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

type Setup<'a> = Box<dyn Fn(&dyn Fn()) + 'a>;

/// Runs every configuration once per round; prints medians.
fn measure(title: &str, configs: Vec<(&str, TokenStore, Setup<'_>)>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let key = TokenKey::for_server("https://mcp.example.com/mcp");
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); configs.len()];
    let rounds = rounds();
    for round in 0..rounds {
        for (i, (_, store, setup)) in configs.iter().enumerate() {
            let out = std::cell::Cell::new((0.0, 0.0));
            setup(&|| out.set(batch(&rt, store, &key)));
            let out = out.get();
            if round > 0 {
                // The first round warms caches and allocators.
                results[i].0.push(out.0);
                results[i].1.push(out.1);
            }
        }
    }
    println!("\n{title} ({} rounds of {BATCH} calls each)", rounds - 1);
    println!("| configuration | put median (ns) | get median (ns) |");
    println!("| --- | ---: | ---: |");
    for ((name, ..), (put, get)) in configs.iter().zip(results) {
        println!("| {name} | {:.0} | {:.0} |", median(put), median(get));
    }
}

/// What an audit event costs when no subscriber takes it: the same macro, target and fields
/// as the real one (whose fields, the fingerprint included, are then never evaluated).
fn disabled_event() {
    const N: u32 = 10_000_000;
    let started = Instant::now();
    for i in 0..N {
        tracing::info!(
            target: "token_store::audit",
            action = "stored",
            backend = std::hint::black_box("memory"),
            kind = "token",
            key_fp = %std::hint::black_box(i),
            version = Some("v"),
            "token store state change"
        );
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(N);
    println!("\nan audit event nobody takes: {ns:.1} ns");
}

fn plain() -> Setup<'static> {
    Box::new(|run| run())
}

fn main() {
    println!(
        "feature `metrics`: {}",
        if cfg!(feature = "metrics") {
            "on"
        } else {
            "off"
        }
    );
    #[cfg(feature = "metrics")]
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[0.0001, 0.001, 0.01, 0.1, 1.0, 10.0],
        )
        .unwrap()
        .build_recorder();
    // Phase 1 before any tracing subscriber exists, as in a program that installs none.
    #[allow(unused_mut)]
    let mut configs: Vec<(&str, TokenStore, Setup<'_>)> = vec![
        ("plain memory store", TokenStore::in_memory(), plain()),
        // The same layering as Metrics::wrap with a layer that does next to nothing without
        // a subscriber: what any layer costs (its boxed future, the Arc's), for comparison.
        (
            "Traced layer, no subscriber (a layer's own cost)",
            TokenStore::new(token_store_core::layers::Traced::new(
                TokenStore::in_memory().raw().clone(),
            )),
            plain(),
        ),
    ];
    #[cfg(feature = "metrics")]
    {
        use token_store_core::layers::Metrics;
        configs.push((
            "Metrics layer, no recorder installed",
            Metrics::wrap(TokenStore::in_memory()),
            plain(),
        ));
        configs.push((
            "Metrics layer, Prometheus recorder",
            Metrics::wrap(TokenStore::in_memory()),
            Box::new(|run| metrics::with_local_recorder(&prometheus, run)),
        ));
    }
    measure("no tracing subscriber", configs);
    disabled_event();

    // Phase 2: a subscriber that takes audit events (formatted, written to a sink), and one
    // that takes other INFO events but not the audit target.
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let sink = || {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::io::sink)
    };
    let audit_on = tracing_subscriber::registry().with(sink().with_filter(
        Targets::new().with_target(token_store_core::audit::TARGET, tracing::Level::INFO),
    ));
    let audit_off = tracing_subscriber::registry().with(
        sink().with_filter(
            Targets::new()
                .with_default(tracing::Level::INFO)
                .with_target(
                    token_store_core::audit::TARGET,
                    tracing::level_filters::LevelFilter::OFF,
                ),
        ),
    );
    let audit_on = tracing::Dispatch::new(audit_on);
    let audit_off = tracing::Dispatch::new(audit_off);
    measure(
        "with a tracing subscriber",
        vec![
            (
                "subscriber without the audit target",
                TokenStore::in_memory(),
                Box::new(|run| tracing::dispatcher::with_default(&audit_off, run)),
            ),
            (
                "audit events formatted to a sink",
                TokenStore::in_memory(),
                Box::new(|run| tracing::dispatcher::with_default(&audit_on, run)),
            ),
        ],
    );
}
