//! `doctor`: which store auto-detection picks and why, its guarantees in words, and a timed
//! put / get / compare-and-swap / delete round trip on it.

use std::time::Instant;

use serde_json::json;
use token_store::{Error, MCP_AGENT_REDIS_VAR, Precondition, TokenKey, TokenRecord};

use crate::exit::CliResult;
use crate::out::{Report, clean};
use crate::store::{Opened, Origin};

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub(crate) async fn run(opened: &Opened) -> CliResult<Report> {
    let store = &opened.store;
    let mut text = format!("store:   {}\n", clean(&opened.url));
    for r in &opened.reasons {
        text.push_str(&format!("  - {}\n", clean(r)));
    }
    let mcp_agent_var = std::env::var(MCP_AGENT_REDIS_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let via_mcp_agent = opened.via_mcp_agent_var();
    if via_mcp_agent {
        text.push_str(&format!(
            "{MCP_AGENT_REDIS_VAR} (mcp-agent's switch to Redis) chose this store: tokens are shared with mcp-agent processes using the same Redis and prefix\n"
        ));
    } else if mcp_agent_var.is_some() {
        text.push_str(&format!(
            "{MCP_AGENT_REDIS_VAR} is set but not used: {} takes precedence\n",
            if opened.origin == Origin::Flag {
                "--store"
            } else {
                "TOKEN_STORE_URL"
            }
        ));
    }
    let caps = store.capabilities();
    let refresh_safe = caps.cas_covers_sharing();
    text.push_str(&format!("backend: {}\n", store.backend()));
    text.push_str(&format!("shared:           {}\n", caps.shared_with));
    text.push_str(&format!("compare-and-swap: {}\n", caps.cas));
    text.push_str(&format!(
        "refresh-safe:     {}\n",
        if refresh_safe {
            "yes: one refresh per expiry across every process that shares this store"
        } else {
            "NO: two processes could spend one refresh token (compare-and-swap does not reach every process sharing the store)"
        }
    ));
    text.push_str(&format!(
        "encrypted at rest: {}   persistent: {}   ttl: {}   max value: {} bytes\n",
        yes_no(caps.encrypted_at_rest),
        yes_no(caps.persistent),
        yes_no(caps.ttl),
        caps.max_value_size
    ));
    if !caps.persistent {
        text.push_str(
            "WARNING: this store does not persist: tokens are lost when the process exits\n",
        );
    }
    let timings = round_trip(store).await?;
    text.push_str("round trip:\n");
    for (label, ms) in &timings {
        text.push_str(&format!("  {label:<8} {ms:>9.3} ms\n"));
    }
    text.push_str("ok\n");
    let json = json!({
        "store": opened.url,
        "reasons": opened.reasons,
        "oauth_redis_url": {"set": mcp_agent_var.is_some(), "used": via_mcp_agent},
        "backend": store.backend(),
        "capabilities": {
            "shared_with": caps.shared_with.to_string(),
            "compare_and_swap": caps.cas.to_string(),
            "refresh_safe": refresh_safe,
            "encrypted_at_rest": caps.encrypted_at_rest,
            "persistent": caps.persistent,
            "ttl": caps.ttl,
            "max_value_size": caps.max_value_size,
        },
        "round_trip_ms": timings.iter().map(|(l, ms)| (l.replace(' ', "_"), json!(ms))).collect::<serde_json::Map<_, _>>(),
    });
    Ok(Report::new(text, json))
}

/// Times put, get, a compare-and-swap put and a delete of a probe record, checking each
/// result (a stale compare-and-swap must be refused, the delete must remove it).
async fn round_trip(store: &token_store::TokenStore) -> CliResult<Vec<(&'static str, f64)>> {
    let key = TokenKey::new(
        format!("tokenstore-doctor-{}", std::process::id()),
        "https://doctor.invalid/mcp",
        None,
        ["probe"],
    );
    let record = TokenRecord::new("doctor-access-token").with_refresh_token("doctor-refresh-token");
    let ms = |start: Instant| start.elapsed().as_secs_f64() * 1e3;
    let mut timings = Vec::new();
    let t = Instant::now();
    let v1 = store.put(&key, &record, Precondition::IfAbsent).await?;
    timings.push(("put", ms(t)));
    let t = Instant::now();
    let read = store.get(&key).await?;
    timings.push(("get", ms(t)));
    if read.as_ref().map(|r| &r.value) != Some(&record) {
        return Err(Error::Integrity {
            backend: store.backend(),
            key: key.to_string(),
            message: "the record read back differs from the one written".to_owned(),
        }
        .into());
    }
    let rotated = TokenRecord::new("doctor-access-2").with_refresh_token("doctor-refresh-2");
    let t = Instant::now();
    store
        .put(&key, &rotated, Precondition::IfVersion(v1.clone()))
        .await?;
    timings.push(("cas put", ms(t)));
    let stale = store.put(&key, &record, Precondition::IfVersion(v1)).await;
    if !matches!(stale, Err(Error::Conflict { .. })) {
        let _ = store.delete(&key, Precondition::Any).await;
        return Err(Error::backend(
            store.backend(),
            "a stale compare-and-swap was not refused",
            None,
        )
        .into());
    }
    let t = Instant::now();
    store.delete(&key, Precondition::Any).await?;
    timings.push(("delete", ms(t)));
    if store.get(&key).await?.is_some() {
        return Err(Error::backend(
            store.backend(),
            "the probe record survived its delete",
            None,
        )
        .into());
    }
    Ok(timings)
}
