//! The `tokenstore` tool, run as a user would: real processes on real stores. Exit codes,
//! `--json` documents, strict input, key addressing, status, doctor, completions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Tool, chmod, on};
use serde_json::Value;
use token_store::{KeyKind, Precondition, PutOptions, StorageKey, TokenKey, TokenRecord};

const ACCESS: &str = "eyJhbGciOiJSUzI1NiJ9.ACCESS-SECRET-PAYLOAD.signature";
const REFRESH: &str = "refresh-SECRET-0123456789abcdef";

/// The envelope every `--json` document has.
#[track_caller]
fn envelope(doc: &Value, command: &str, code: i64) {
    assert_eq!(doc["schema_version"], 1, "{doc}");
    assert_eq!(doc["command"], command, "{doc}");
    assert_eq!(doc["exit_code"], code, "{doc}");
}

/// An error document: the envelope and `error.kind`.
#[track_caller]
fn error_doc(doc: &Value, command: &str, code: i64, kind: &str) {
    envelope(doc, command, code);
    assert_eq!(doc["error"]["kind"], kind, "{doc}");
    assert!(doc["error"]["message"].is_string(), "{doc}");
}

#[test]
fn put_get_list_delete_with_redaction_and_json() {
    let tool = Tool::new();
    let url = tool.file_url("store");
    let response = format!(
        r#"{{"access_token":"{ACCESS}","refresh_token":"{REFRESH}","token_type":"Bearer","expires_in":3600,"scope":"read write"}}"#
    );
    let out = tool.run(
        &on(
            &url,
            &[
                "--json",
                "put",
                "--server",
                "https://MCP.example.com/mcp/",
                "--issuer",
                "https://AS.example.com/",
            ],
        ),
        Some(&response),
    );
    out.exits(0);
    let doc = out.json();
    envelope(&doc, "put", 0);
    let key = doc["stored"]["storage_key"].as_str().unwrap().to_owned();
    assert!(doc["stored"]["version"].is_string(), "{doc}");
    assert_eq!(
        key,
        "mcp-agent%3Apreconfigured-tokens:https%3A%2F%2Fmcp.example.com%2Fmcp:https%3A%2F%2Fas.example.com:"
    );

    let get = on(
        &url,
        &[
            "get",
            "--server",
            "https://mcp.example.com/mcp",
            "--issuer",
            "https://as.example.com",
        ],
    );
    let shown = tool.run(&get, None).ok();
    assert!(
        !shown.contains(ACCESS) && !shown.contains(REFRESH),
        "secret shown: {shown}"
    );
    assert!(shown.contains("eyJh…ture"), "no preview: {shown}");
    assert!(shown.contains("read write"), "scopes: {shown}");
    assert!(
        shown.contains("(in 3"),
        "expires_in became an absolute expiry: {shown}"
    );

    // JSON: the same shape with and without --reveal; values only with it.
    let doc = tool.run(&[&["--json"][..], &get].concat(), None).json();
    envelope(&doc, "get", 0);
    assert_eq!(doc["kind"], "token");
    assert_eq!(doc["key"]["storage_key"], key.as_str());
    assert_eq!(doc["key"]["resource"], "https://mcp.example.com/mcp");
    assert_eq!(doc["key"]["issuer"], "https://as.example.com");
    let r = &doc["record"];
    assert_eq!(r["access_token"]["value"], Value::Null, "{doc}");
    assert_eq!(r["access_token"]["length"], ACCESS.len());
    assert_eq!(r["refresh_token"]["preview"], "refr…cdef (31 chars)");
    assert_eq!(r["id_token"], Value::Null);
    assert_eq!(r["scopes"], serde_json::json!(["read", "write"]));
    // mcp-agent writes the resource and issuer into the record body: so does put.
    assert_eq!(r["resource"], "https://mcp.example.com/mcp");
    assert_eq!(r["authorization_server"], "https://as.example.com");
    assert!(r["seconds_left"].as_f64().unwrap() > 3500.0, "{doc}");
    assert!(!doc.to_string().contains(ACCESS), "{doc}");
    let revealed = tool
        .run(&[&["--json"][..], &get, &["--reveal"]].concat(), None)
        .json();
    assert_eq!(revealed["record"]["access_token"]["value"], ACCESS);
    assert_eq!(revealed["record"]["refresh_token"]["value"], REFRESH);
    let text = tool.run(&[&get[..], &["--reveal"]].concat(), None).ok();
    assert!(text.contains(ACCESS) && text.contains(REFRESH), "{text}");

    let list = tool.run(&on(&url, &["list"]), None).ok();
    assert!(
        list.contains("https://mcp.example.com/mcp") && list.contains("1 tokens"),
        "{list}"
    );
    assert!(list.contains(&key), "list prints the storage key: {list}");
    let doc = tool.run(&on(&url, &["--json", "list"]), None).json();
    envelope(&doc, "list", 0);
    assert_eq!(doc["tokens"][0]["storage_key"], key.as_str());
    assert_eq!(doc["tokens"][0]["user"], "mcp-agent:preconfigured-tokens");
    assert_eq!(doc["tokens"][0]["scopes"], "");
    assert_eq!(doc["clients"], serde_json::json!([]));
    assert_eq!(doc["unreadable"], serde_json::json!([]));

    // delete by the printed key; then get and delete of the missing record alike: exit 3.
    let doc = tool
        .run(&on(&url, &["--json", "delete", "--key", &key]), None)
        .json();
    envelope(&doc, "delete", 0);
    assert_eq!(doc["deleted"]["storage_key"], key.as_str());
    for args in [&get[..], &on(&url, &["delete", "--key", &key])[..]] {
        let missing = tool.run(args, None);
        let err = missing.exits(3);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with("error: ") && err.contains("no record"),
            "{err}"
        );
        let doc = tool.run(&[&["--json"][..], args].concat(), None).json();
        error_doc(&doc, args[2], 3, "not_found");
    }
}

/// Every bad input of the issue: refused with a clear line, exit 2, nothing stored.
#[test]
fn bad_input_is_refused_with_a_clear_message_and_nothing_is_stored() {
    let tool = Tool::new();
    let url = tool.file_url("store");
    let put = |server: &str, json: &str, extra: &[&str]| {
        let mut args = on(&url, &["put", "--server", server]);
        args.extend_from_slice(extra);
        tool.run(&args, Some(json))
    };
    let ok_json = r#"{"access_token":"at"}"#;
    for (server, json, extra, says) in [
        (
            "https://x.example",
            r#"{"access_token":"x","expires_in":"soon"}"#,
            &[][..],
            "\"expires_in\" must be a non-negative integer",
        ),
        (
            "https://x.example",
            r#"{"access_token":""}"#,
            &[],
            "\"access_token\" is empty",
        ),
        (
            "https://x.example",
            r#"{"access_token":"a","refresh_token":""}"#,
            &[],
            "\"refresh_token\" is empty",
        ),
        (
            "https://x.example",
            r#"{"access_token":"a","expires_at":"tomorrow"}"#,
            &[],
            "\"expires_at\" must be a number",
        ),
        (
            "https://x.example",
            r#"{"access_token":"a","expires_in":-5}"#,
            &[],
            "non-negative integer",
        ),
        (
            "https://x.example",
            r#"{"access_token":"a","scope":7}"#,
            &[],
            "\"scope\" must be a space-separated string",
        ),
        (
            "https://x.example",
            r#"{"access_token":"a","scopes":["read","bad\"scope"]}"#,
            &[],
            "is not a scope",
        ),
        (
            "https://x.example",
            r#"{"access_token":"a","token_type":null}"#,
            &[],
            "\"token_type\" must be a non-empty string",
        ),
        (
            "https://x.example",
            r#"{"access_token":"a","metadata":[]}"#,
            &[],
            "\"metadata\" must be an object",
        ),
        ("https://x.example", "not json", &[], "not JSON"),
        (
            "not a url",
            ok_json,
            &[],
            "--server \"not a url\" is not a URL",
        ),
        (
            "ftp://x/y",
            ok_json,
            &[],
            "--server \"ftp://x/y\" has the scheme ftp; only http and https",
        ),
        (
            "https://x.example",
            ok_json,
            &["--issuer", "ldap://as"],
            "--issuer \"ldap://as\" has the scheme ldap",
        ),
        (
            "https://x.example",
            ok_json,
            &["--scope", "read\\write"],
            "--scope \"read\\write\" is not a scope",
        ),
    ] {
        let out = put(server, json, extra);
        let text = out.exits(2);
        assert!(
            text.contains(says),
            "{server} {json} {extra:?}: expected {says:?} in {text}"
        );
        assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    }
    // Nothing was written by any of them.
    let doc = tool.run(&on(&url, &["--json", "list"]), None).json();
    assert_eq!(doc["tokens"], serde_json::json!([]), "{doc}");
    // The JSON error document of a usage error.
    let doc = tool
        .run(
            &on(&url, &["--json", "put", "--server", "ftp://x/y"]),
            Some(ok_json),
        )
        .json();
    error_doc(&doc, "put", 2, "usage");
    // Unknown fields are kept as they are, never coerced.
    tool.run(
        &on(&url, &["put", "--server", "https://x.example"]),
        Some(r#"{"access_token":"a","refresh_token_expires_in":"86400","vendor":{"k":[1,2]}}"#),
    )
    .ok();
    let doc = tool
        .run(
            &on(
                &url,
                &["--json", "get", "--server", "https://x.example", "--reveal"],
            ),
            None,
        )
        .json();
    assert_eq!(
        doc["record"]["extra"]["refresh_token_expires_in"], "86400",
        "{doc}"
    );
    assert_eq!(
        doc["record"]["extra"]["vendor"],
        serde_json::json!({"k": [1, 2]})
    );
    assert_eq!(doc["record"]["expires_at"], Value::Null);
    // clap's own usage errors exit 2 too, with a JSON document when --json was asked.
    let out = tool.run(&["--json", "get"], None);
    out.exits(2);
    assert_eq!(out.json()["error"]["kind"], "usage");
}

#[test]
fn exit_codes_by_error_kind() {
    let tool = Tool::new();
    let url = tool.file_url("store");
    let put = on(
        &url,
        &["put", "--server", "https://x.example/mcp", "--create"],
    );
    tool.run(&put, Some(r#"{"access_token":"a"}"#)).ok();
    // 4: create over an existing record.
    let out = tool.run(
        &[&["--json"][..], &put].concat(),
        Some(r#"{"access_token":"b"}"#),
    );
    out.exits(4);
    error_doc(&out.json(), "put", 4, "conflict");
    // 5: the store is down.
    let out = tool.run(&["--json", "--store", "redis://127.0.0.1:1/", "list"], None);
    out.exits(5);
    error_doc(&out.json(), "list", 5, "unavailable");
    // 8: a bad store URL.
    let out = tool.run(&["--json", "--store", "nope://x", "list"], None);
    assert!(
        out.text().contains("unknown store scheme"),
        "{}",
        out.text()
    );
    error_doc(&out.json(), "list", 8, "config");
    // 7: a key file other users can read (core refuses it, naming chmod 600).
    let key_file = tool.path("store.key");
    chmod(&key_file, 0o644);
    let out = tool.run(&on(&url, &["list"]), None);
    let text = out.exits(7);
    assert!(text.contains("chmod 600"), "{text}");
    chmod(&key_file, 0o600);
    // 7: a passphrase file other users can read.
    let pass_file = tool.path("pass");
    std::fs::write(&pass_file, "correct horse battery staple").unwrap();
    chmod(&pass_file, 0o640);
    let pass_url = format!(
        "file://{}?passphrase_file={}",
        tool.path("p-store").display(),
        pass_file.display()
    );
    let text = tool.run(&on(&pass_url, &["list"]), None).exits(7);
    assert!(text.contains("chmod 600"), "{text}");
    // 7: the wrong key.
    let other_key = tool.path("other.key");
    std::fs::write(&other_key, [7u8; 32]).unwrap();
    chmod(&other_key, 0o600);
    let wrong = format!(
        "file://{}?key_file={}",
        tool.path("store").display(),
        other_key.display()
    );
    let out = tool.run(&on(&wrong, &["--json", "list"]), None);
    out.exits(7);
    assert!(out.text().contains("wrong key"), "{}", out.text());
    // A password in a store URL never reaches the output.
    let out = tool.run(
        &["--store", "redis://user:hunter2@127.0.0.1:1/", "list"],
        None,
    );
    out.exits(5);
    assert!(
        !out.text().contains("hunter2"),
        "password leaked: {}",
        out.text()
    );
}

/// A record another program wrote with a non-canonical resource, and one whose value is
/// damaged: listed with their storage keys, read and deleted by them; status lists the
/// damaged one once, with a delete command that works.
#[tokio::test(flavor = "multi_thread")]
async fn foreign_and_damaged_records_are_addressed_by_their_storage_key() {
    let tool = Tool::new();
    let url = format!("sqlite://{}", tool.path("tokens.db").display());
    let store = token_store::open(&url).await.unwrap();
    let foreign = TokenKey::from_storage_key(
        &StorageKey::new(
            KeyKind::Token,
            vec![
                "someone".into(),
                "https://x.example/mcp/".into(),
                String::new(),
                String::new(),
            ],
        )
        .unwrap(),
    )
    .unwrap();
    store
        .put(&foreign, &TokenRecord::new("foreign-at"), Precondition::Any)
        .await
        .unwrap();
    let damaged = TokenKey::for_server("https://damaged.example/mcp").storage_key();
    store
        .raw()
        .write(
            &damaged,
            b"{not a record",
            &PutOptions::new(Precondition::Any),
        )
        .await
        .unwrap();

    let doc = tool.run(&on(&url, &["--json", "list"]), None).json();
    let keys: Vec<&str> = doc["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["storage_key"].as_str().unwrap())
        .collect();
    let foreign_key = foreign.storage_key().encode();
    assert!(keys.contains(&foreign_key.as_str()), "{doc}");
    let printed = doc["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["storage_key"] == foreign_key.as_str())
        .unwrap();
    assert_eq!(printed["resource"], "https://x.example/mcp/");
    // What list printed works with --server too (the key as typed is tried when the
    // canonical one misses), and exactly with --key.
    let text = tool
        .run(
            &on(
                &url,
                &[
                    "get",
                    "--user",
                    "someone",
                    "--server",
                    "https://x.example/mcp/",
                ],
            ),
            None,
        )
        .ok();
    assert!(text.contains("https://x.example/mcp/"), "{text}");
    tool.run(&on(&url, &["get", "--key", &foreign_key]), None)
        .ok();

    // The damaged record: get says corrupt (6); status lists it once, needs a login (10).
    let out = tool.run(
        &on(&url, &["--json", "get", "--key", &damaged.encode()]),
        None,
    );
    out.exits(6);
    error_doc(&out.json(), "get", 6, "corrupt");
    let out = tool.run(&on(&url, &["--json", "status"]), None);
    out.exits(10);
    let doc = out.json();
    envelope(&doc, "status", 10);
    assert_eq!(doc["needs_login"], true);
    let unreadable = doc["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1, "{doc}");
    assert_eq!(unreadable[0]["storage_key"], damaged.encode().as_str());
    let command = unreadable[0]["delete_command"].as_str().unwrap().to_owned();
    assert!(command.starts_with("tokenstore --store "), "{command}");
    let text = tool.run(&on(&url, &["status"]), None).exits(10);
    assert_eq!(
        text.matches("unreadable:").count(),
        1,
        "listed once: {text}"
    );
    assert!(text.contains(&command), "{text}");
    // The printed command deletes it.
    let shell = command.replacen("tokenstore", env!("CARGO_BIN_EXE_tokenstore"), 1);
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&shell)
        .env_remove("TOKEN_STORE_URL")
        .status()
        .unwrap();
    assert!(status.success(), "{shell}");
    tool.run(&on(&url, &["delete", "--key", &foreign_key]), None)
        .ok();
    let doc = tool.run(&on(&url, &["--json", "list"]), None).json();
    assert_eq!(doc["tokens"], serde_json::json!([]), "{doc}");
    tool.run(&on(&url, &["status"]), None).ok();
}

/// The file store's unreadable files are listed once (not once per kind listed), with a
/// command that removes exactly that file.
#[test]
fn unreadable_files_are_listed_once_with_a_working_delete_command() {
    let tool = Tool::new();
    let url = tool.file_url("store");
    tool.run(
        &on(&url, &["put", "--server", "https://x.example"]),
        Some(r#"{"access_token":"a"}"#),
    )
    .ok();
    let records = std::fs::read_dir(tool.path("store"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with("d-"))
        .expect("the record directory");
    let junk = records.join("junk file [1]");
    std::fs::write(&junk, "not a record").unwrap();
    let text = tool.run(&on(&url, &["list"]), None).ok();
    assert_eq!(
        text.matches("unreadable:").count(),
        1,
        "listed once: {text}"
    );
    let doc = tool.run(&on(&url, &["--json", "list"]), None).json();
    let unreadable = doc["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1, "{doc}");
    assert_eq!(unreadable[0]["location"], "junk file [1]");
    let command = unreadable[0]["delete_command"].as_str().unwrap();
    assert!(command.starts_with("find "), "{command}");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!junk.exists(), "{command} left the file");
    let doc = tool.run(&on(&url, &["--json", "list"]), None).json();
    assert_eq!(doc["unreadable"], serde_json::json!([]));
    assert_eq!(
        doc["tokens"].as_array().unwrap().len(),
        1,
        "the record survived"
    );
}

#[test]
fn status_says_what_needs_a_login() {
    let tool = Tool::new();
    let url = tool.file_url("store");
    let now = token_store::backend::unix_now();
    let put = |server: &str, json: String| {
        tool.run(
            &on(
                &url,
                &["put", "--server", server, "--issuer", "https://as.example"],
            ),
            Some(&json),
        )
        .ok();
    };
    put(
        "https://valid.example",
        format!(r#"{{"access_token":"a1","expires_at":{}}}"#, now + 7200.0),
    );
    put(
        "https://soon.example",
        r#"{"access_token":"a2","refresh_token":"r2","expires_in":60}"#.into(),
    );
    put(
        "https://refresh.example",
        format!(
            r#"{{"access_token":"a3","refresh_token":"r3","expires_at":{},"scopes":["read"]}}"#,
            now - 60.0
        ),
    );
    let out = tool.run(&on(&url, &["--json", "status"]), None);
    out.exits(0);
    let doc = out.json();
    envelope(&doc, "status", 0);
    assert_eq!(doc["needs_login"], false);
    assert_eq!(doc["within_minutes"], 5);
    assert_eq!(doc["counts"]["valid"], 1);
    assert_eq!(doc["counts"]["expiring"], 1);
    assert_eq!(doc["counts"]["refreshable"], 1);
    let state = |server: &str| {
        doc["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"]["resource"] == server)
            .unwrap()
            .clone()
    };
    assert_eq!(state("https://valid.example")["state"], "valid");
    assert_eq!(state("https://soon.example")["state"], "expiring");
    let r = state("https://refresh.example");
    assert_eq!(r["state"], "refreshable");
    assert_eq!(r["issuer"], "https://as.example");
    assert_eq!(r["scopes"], serde_json::json!(["read"]));
    assert_eq!(r["has_refresh_token"], true);
    assert!(r["seconds_left"].as_f64().unwrap() < 0.0);
    // A wider window makes the two-hour token "expiring" too.
    let wide = tool
        .run(&on(&url, &["--json", "status", "--within", "180"]), None)
        .json();
    assert_eq!(wide["counts"]["expiring"], 2);
    // An expired token without a refresh token needs a login: exit 10.
    put(
        "https://expired.example",
        format!(r#"{{"access_token":"a4","expires_at":{}}}"#, now - 5.0),
    );
    let out = tool.run(&on(&url, &["status"]), None);
    let text = out.exits(10);
    assert!(
        text.contains("expired") && text.contains("https://expired.example"),
        "{text}"
    );
    assert!(text.contains("a new login is needed"), "{text}");
    for token in ["a1", "a2", "r2", "a3", "r3", "a4"] {
        assert!(
            !text.split_whitespace().any(|w| w == token),
            "status printed a token: {text}"
        );
    }
    // Only one user's records.
    let doc = tool
        .run(&on(&url, &["--json", "status", "--user", "nobody"]), None)
        .json();
    assert_eq!(doc["records"], serde_json::json!([]));
}

#[test]
fn migrate_copies_verifies_and_is_idempotent() {
    let tool = Tool::new();
    let from = tool.file_url("store");
    let to = format!("sqlite://{}", tool.path("to.db").display());
    for n in 0..3 {
        let record = format!(r#"{{"access_token":"at-{n}","refresh_token":"rt-{n}"}}"#);
        let server = format!("https://s{n}.example/mcp");
        tool.run(&on(&from, &["put", "--server", &server]), Some(&record))
            .ok();
    }
    let args = on(&from, &["migrate", "--to", &to]);
    let run = tool.run(&args, None);
    // stderr is not a terminal here: no progress bar, nothing at all.
    assert_eq!(run.stderr(), "", "progress drawn into a pipe");
    let first = run.ok();
    assert!(
        first.contains("migrated 3 records (0 already up to date)"),
        "{first}"
    );
    let again = tool.run(&[&["--json"][..], &args].concat(), None).json();
    envelope(&again, "migrate", 0);
    assert_eq!(again["copied"], 0);
    assert_eq!(again["unchanged"], 3);
    assert!(again["to"].as_str().unwrap().starts_with("sqlite://"));
    let get = on(
        &to,
        &["get", "--server", "https://s1.example/mcp", "--reveal"],
    );
    assert!(tool.run(&get, None).ok().contains("rt-1"));
}

#[test]
fn doctor_explains_the_choice_including_mcp_agents_redis_switch() {
    let tool = Tool::new();
    let out = tool.run(&["doctor"], None).ok();
    assert!(out.contains("OS keychain not used"), "{out}");
    assert!(out.contains("encrypted file store"), "{out}");
    assert!(
        out.contains("compare-and-swap: across processes on this host"),
        "{out}"
    );
    for op in ["put", "get", "cas put", "delete"] {
        assert!(out.contains(op), "no {op} timing: {out}");
    }
    assert!(out.trim_end().ends_with("ok"), "{out}");
    {
        use std::os::unix::fs::PermissionsExt;
        let key = tool.path("config/token-store/store.key");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key file mode");
    }
    let doc = tool.run(&["--json", "doctor"], None).json();
    envelope(&doc, "doctor", 0);
    assert_eq!(doc["backend"], "file");
    assert_eq!(
        doc["capabilities"]["compare_and_swap"],
        "across processes on this host"
    );
    assert_eq!(doc["capabilities"]["refresh_safe"], true);
    assert_eq!(doc["oauth_redis_url"]["used"], false);
    for op in ["put", "get", "cas_put", "delete"] {
        assert!(doc["round_trip_ms"][op].is_number(), "{doc}");
    }
    // An explicit store that fails is an error, never a fall-back.
    let bad = tool.run(&["--store", "sqlite:///proc/nope/x.db", "doctor"], None);
    assert_ne!(bad.code(), 0, "{}", bad.text());

    let Some(redis) = token_store_conformance::services::require("TOKEN_STORE_TEST_REDIS_URL")
    else {
        return;
    };
    let prefix = token_store_conformance::services::unique("cli-doctor");
    let mcp_agent = format!("{}/?prefix={prefix}", redis.trim_end_matches('/'));
    let out = tool
        .run_with(&["doctor"], None, &[("OAUTH_REDIS_URL", &mcp_agent)])
        .ok();
    assert!(
        out.contains("OAUTH_REDIS_URL (mcp-agent's switch to Redis) chose this store"),
        "{out}"
    );
    assert!(
        out.contains("compare-and-swap: across processes on every host"),
        "{out}"
    );
    let doc = tool
        .run_with(
            &["--json", "doctor"],
            None,
            &[("OAUTH_REDIS_URL", &mcp_agent)],
        )
        .json();
    assert_eq!(
        doc["oauth_redis_url"],
        serde_json::json!({"set": true, "used": true})
    );
    assert_eq!(doc["backend"], "redis");
    // TOKEN_STORE_URL wins, and doctor says OAUTH_REDIS_URL was not used.
    let file = tool.file_url("explicit");
    let out = tool
        .run_with(
            &["doctor"],
            None,
            &[("OAUTH_REDIS_URL", &mcp_agent), ("TOKEN_STORE_URL", &file)],
        )
        .ok();
    assert!(
        out.contains("OAUTH_REDIS_URL is set but not used: TOKEN_STORE_URL takes precedence"),
        "{out}"
    );
}

#[test]
fn rekey_re_encrypts_and_the_old_key_no_longer_opens() {
    let tool = Tool::new();
    let url = tool.file_url("store");
    tool.run(
        &on(&url, &["put", "--server", "https://r.example"]),
        Some(r#"{"access_token":"at-rekey"}"#),
    )
    .ok();
    let new_key = tool.path("new.key");
    let doc = tool
        .run(
            &on(
                &url,
                &[
                    "--json",
                    "rekey",
                    "--new-key-file",
                    new_key.to_str().unwrap(),
                ],
            ),
            None,
        )
        .json();
    envelope(&doc, "rekey", 0);
    assert_eq!(doc["records"], 1);
    let old = tool.run(&on(&url, &["list"]), None);
    assert!(old.exits(7).contains("wrong key"), "{}", old.text());
    let new_url = format!(
        "file://{}?key_file={}",
        tool.path("store").display(),
        new_key.display()
    );
    let get = on(
        &new_url,
        &["get", "--server", "https://r.example", "--reveal"],
    );
    assert!(tool.run(&get, None).ok().contains("at-rekey"));
}

#[test]
fn control_characters_in_stored_keys_never_reach_the_terminal() {
    let tool = Tool::new();
    let url = tool.file_url("store");
    // A key written by another program can hold anything; ESC sequences could clear the
    // screen or fake output, BEL rings, CR overwrites the line.
    let evil = "evil\x1b[2J\x1b]0;pwned\x07\rFAKE";
    let put = on(
        &url,
        &["put", "--server", "https://x.example/mcp", "--user", evil],
    );
    tool.run(&put, Some(r#"{"access_token":"a","expires_in":0}"#))
        .ok();
    for args in [
        on(&url, &["list"]),
        on(
            &url,
            &["get", "--server", "https://x.example/mcp", "--user", evil],
        ),
        on(&url, &["status"]),
    ] {
        let out = tool.run(&args, None);
        let text = out.text();
        assert!(
            !text.contains(['\x1b', '\x07', '\r']),
            "raw control characters printed: {text:?}"
        );
        assert!(
            text.contains("evil\\u{1b}[2J"),
            "the key is shown escaped: {text}"
        );
    }
}

#[test]
fn completions_and_help_for_every_command() {
    let tool = Tool::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef tokenstore"),
        ("fish", "complete -c tokenstore"),
    ] {
        let text = tool.run(&["completions", shell], None).ok();
        assert!(text.contains(marker), "{shell}: {text}");
        for command in ["status", "logout", "export", "import"] {
            assert!(text.contains(command), "{shell} completes no {command}");
        }
    }
    let doc = tool.run(&["--json", "completions", "bash"], None).json();
    envelope(&doc, "completions", 0);
    assert!(doc["script"].as_str().unwrap().contains("complete -F"));
    let help = tool.run(&["--help"], None).ok();
    for code in [
        "  0  ok",
        "  3  not_found",
        "  5  unavailable",
        " 10  needs_login",
    ] {
        assert!(
            help.contains(code),
            "the exit code table lacks {code:?}: {help}"
        );
    }
    for command in [
        "status",
        "list",
        "get",
        "put",
        "delete",
        "logout",
        "migrate",
        "export",
        "import",
        "doctor",
        "rekey",
        "bench",
        "completions",
    ] {
        let help = tool.run(&[command, "--help"], None).ok();
        assert!(help.contains("Usage: tokenstore"), "{command}: {help}");
        assert!(
            help.contains("--json"),
            "{command} help lacks the global --json: {help}"
        );
    }
}

#[test]
fn bench_runs_and_cleans_up() {
    let tool = Tool::new();
    let url = format!("sqlite://{}", tool.path("bench.db").display());
    let doc = tool
        .run(&on(&url, &["--json", "bench", "--ops", "20"]), None)
        .json();
    envelope(&doc, "bench", 0);
    assert_eq!(doc["rows"].as_array().unwrap().len(), 6, "{doc}");
    let list = tool.run(&on(&url, &["--json", "list"]), None).json();
    assert_eq!(
        list["tokens"],
        serde_json::json!([]),
        "bench left records: {list}"
    );
}
