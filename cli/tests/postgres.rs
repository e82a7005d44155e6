//! PostgreSQL through the tool, as an operator moving an MCP server's tokens would use it:
//! `doctor --store postgres://…` checks the store end to end, and `migrate` copies records from
//! PostgreSQL into every other backend this machine has and back again, nothing lost or
//! changed on the way. Under `CI=true` a missing PostgreSQL (or other service) fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Tool, every_store, on};

/// The PostgreSQL store among `every_store`, or `None` (not run) outside CI without it.
fn postgres(stores: &[(&'static str, String)]) -> Option<String> {
    stores
        .iter()
        .find(|(name, _)| *name == "postgres")
        .map(|(_, url)| url.clone())
}

fn put(tool: &Tool, url: &str, server: &str, refresh: &str) {
    let record = format!(r#"{{"access_token":"at-{refresh}","refresh_token":"{refresh}"}}"#);
    tool.run(&on(url, &["put", "--server", server]), Some(&record))
        .ok();
}

/// The refresh token stored for `server`, read back with `--json --reveal`.
fn refresh_token(tool: &Tool, url: &str, server: &str) -> String {
    let doc = tool
        .run(
            &on(url, &["--json", "get", "--server", server, "--reveal"]),
            None,
        )
        .json();
    doc["record"]["refresh_token"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh token for {server} in {url}: {doc}"))
        .to_owned()
}

fn migrate(tool: &Tool, from: &str, to: &str) -> serde_json::Value {
    let doc = tool
        .run(&on(from, &["--json", "migrate", "--to", to]), None)
        .json();
    assert_eq!(doc["exit_code"], 0, "{doc}");
    doc
}

#[test]
fn doctor_checks_a_postgres_store_end_to_end() {
    let tool = Tool::new();
    let stores = every_store(tool.home.path());
    let Some(url) = postgres(&stores) else { return };
    let text = tool.run(&on(&url, &["doctor"]), None).ok();
    assert!(text.contains("backend: postgres"), "{text}");
    assert!(text.contains("refresh-safe:     yes"), "{text}");
    assert!(text.contains("cas put"), "{text}");
    let doc = tool.run(&on(&url, &["--json", "doctor"]), None).json();
    assert_eq!(doc["backend"], "postgres", "{doc}");
    assert_eq!(doc["capabilities"]["persistent"], true, "{doc}");
    // The URL's password never reaches the output.
    if let Some(password) = url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password.to_owned())
        .filter(|p| !p.is_empty())
    {
        assert!(!text.contains(&password), "password shown: {text}");
    }
}

#[test]
fn migrate_between_postgres_and_every_other_backend() {
    let tool = Tool::new();
    let stores = every_store(tool.home.path());
    let Some(pg) = postgres(&stores) else { return };
    put(&tool, &pg, "https://a.example/mcp", "rt-pg-a");
    put(&tool, &pg, "https://b.example/mcp", "rt-pg-b");
    let mut in_pg = 2;
    let others: Vec<_> = stores.iter().filter(|(n, _)| *n != "postgres").collect();
    assert!(others.len() >= 2, "only {others:?} beside PostgreSQL");
    for (name, other) in others {
        // PostgreSQL → a fresh store of the other backend: everything copied, verified.
        let out = migrate(&tool, &pg, other);
        assert_eq!(out["copied"], in_pg, "to {name}: {out}");
        assert_eq!(out["unchanged"], 0, "to {name}: {out}");
        assert_eq!(
            refresh_token(&tool, other, "https://b.example/mcp"),
            "rt-pg-b",
            "{name}"
        );
        // A record that only the other backend has comes back into PostgreSQL; what both
        // hold is recognised as up to date.
        let server = format!("https://from-{name}.example/mcp");
        let refresh = format!("rt-{name}");
        put(&tool, other, &server, &refresh);
        let back = migrate(&tool, other, &pg);
        assert_eq!(back["copied"], 1, "from {name}: {back}");
        assert_eq!(back["unchanged"], in_pg, "from {name}: {back}");
        in_pg += 1;
        assert_eq!(refresh_token(&tool, &pg, &server), refresh, "{name}");
        assert_eq!(
            refresh_token(&tool, &pg, "https://a.example/mcp"),
            "rt-pg-a"
        );
    }
    let listed = tool.run(&on(&pg, &["--json", "list"]), None).json();
    let tokens = listed["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), in_pg, "{listed}");
}
