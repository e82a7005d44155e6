//! `export` / `import`: encrypted bundles moved between every pair of stores this machine
//! has (file, SQLite, Redis, Vault, PostgreSQL, the Secret Service, keyutils), and every way
//! a bundle or its key can be wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Tool, chmod, every_store, on};
use serde_json::json;
use token_store::{
    ClientKey, ClientRegistration, ListFilter, Precondition, Query, StoreUrl, TokenKey,
    TokenRecord, TokenStore,
};

/// The records a source store is seeded with: two tokens and a client registration, all
/// named after the source so that every target can hold every source's records at once.
fn seed_for(
    source: &str,
) -> (
    Vec<(TokenKey, TokenRecord)>,
    (ClientKey, ClientRegistration),
) {
    let full_key = TokenKey::new(
        format!("user-{source}"),
        &format!("https://{source}.example/mcp"),
        Some("https://as.example"),
        ["read", "write"],
    );
    let mut full = TokenRecord::new(format!("at-{source}-0123456789"))
        .with_refresh_token(format!("rt-{source}"))
        .with_scopes(["read", "write"]);
    // Fixed times, so that a record seeded and one computed again compare equal.
    full.obtained_at = 1_700_000_000.0;
    full.expires_at = Some(4_000_000_000.0);
    full.client_id = Some(format!("client-{source}"));
    full.metadata.insert("server_name".into(), json!(source));
    full.extra
        .insert("vendor_field".into(), json!({"n": [1, 2]}));
    let bare_key = TokenKey::for_server(&format!("https://{source}.example/other"));
    let mut bare = TokenRecord::new(format!("bare-{source}"));
    bare.obtained_at = 1_700_000_100.5;
    let client_key =
        ClientKey::new(&format!("https://as-{source}.example")).with_application("rmcp");
    let client =
        ClientRegistration::new(format!("client-{source}")).with_secret(format!("cs-{source}"));
    (
        vec![(full_key, full), (bare_key, bare)],
        (client_key, client),
    )
}

async fn seed(store: &TokenStore, source: &str) {
    let (tokens, (ck, cr)) = seed_for(source);
    for (k, r) in &tokens {
        store.put(k, r, Precondition::Any).await.unwrap();
    }
    store.put_client(&ck, &cr, Precondition::Any).await.unwrap();
}

/// Removes what the test wrote into stores that outlive it.
async fn clean_up(url: &str) {
    let parsed = StoreUrl::parse(url).unwrap();
    if parsed.scheme() == "keychain" {
        let service = parsed.param("service").unwrap();
        let config = token_store::keychain::KeychainConfig::default().with_service(service);
        match parsed.body().trim_matches('/') {
            "secret-service" => {
                token_store::keychain::SecretServiceStore::connect(&config)
                    .await
                    .unwrap()
                    .clear()
                    .await
                    .unwrap();
            }
            _ => {
                token_store::keychain::KeyringStore::keyutils(&config)
                    .unwrap()
                    .clear()
                    .await
                    .unwrap();
            }
        }
        return;
    }
    let store = token_store::open(url).await.unwrap();
    for key in store
        .list(&Query::new(ListFilter::all()))
        .await
        .unwrap()
        .keys
    {
        store.delete(&key, Precondition::Any).await.unwrap();
    }
    for key in store.list_clients().await.unwrap().keys {
        store.delete_client(&key, Precondition::Any).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn export_import_round_trips_between_every_pair_of_stores() {
    let tool = Tool::new();
    let stores = every_store(tool.home.path());
    println!(
        "stores: {:?}",
        stores.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    let key_file = tool.path("bundle.key");
    let key_arg = key_file.to_str().unwrap();
    for (name, url) in &stores {
        seed(&token_store::open(url).await.unwrap(), name).await;
    }
    // One bundle per source, before any import (so each holds its source's records only).
    for (name, url) in &stores {
        let bundle = tool.path(&format!("{name}.bundle"));
        let out = tool.run(
            &on(
                url,
                &[
                    "--json",
                    "export",
                    "-o",
                    bundle.to_str().unwrap(),
                    "--key-file",
                    key_arg,
                ],
            ),
            None,
        );
        out.exits(0);
        let doc = out.json();
        assert_eq!(doc["command"], "export");
        assert_eq!(
            (doc["tokens"].as_u64(), doc["clients"].as_u64()),
            (Some(2), Some(1)),
            "{name}: {doc}"
        );
        assert_eq!(doc["skipped"], json!([]), "{name}: {doc}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&bundle).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let raw = std::fs::read_to_string(&bundle).unwrap();
        assert!(
            !raw.contains(&format!("rt-{name}")) && !raw.contains(&format!("cs-{name}")),
            "a secret in clear in the bundle"
        );
    }
    // Every source into every other store.
    for (target, url) in &stores {
        for (source, _) in stores.iter().filter(|(s, _)| s != target) {
            let bundle = tool.path(&format!("{source}.bundle"));
            let out = tool.run(
                &on(
                    url,
                    &[
                        "--json",
                        "import",
                        "-i",
                        bundle.to_str().unwrap(),
                        "--key-file",
                        key_arg,
                    ],
                ),
                None,
            );
            out.exits(0);
            assert_eq!(out.stderr(), "", "no progress bar into a pipe");
            let doc = out.json();
            assert_eq!(
                (doc["created"].as_u64(), doc["failed"].as_u64()),
                (Some(3), Some(0)),
                "{source} -> {target}: {doc}"
            );
        }
    }
    // Each target holds every source's records exactly.
    for (target, url) in &stores {
        let store = token_store::open(url).await.unwrap();
        for (source, _) in &stores {
            let (tokens, (ck, cr)) = seed_for(source);
            for (k, r) in &tokens {
                let got = store
                    .get(k)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{source} -> {target}: {k:?} missing"));
                assert!(got.value == *r, "{source} -> {target}: {k:?} differs");
            }
            let got = store
                .get_client(&ck)
                .await
                .unwrap()
                .expect("client registration");
            assert!(
                got.value == cr,
                "{source} -> {target}: the client registration differs"
            );
        }
    }
    // Create-only: again is "unchanged" (exit 0); a changed record is skipped (exit 4);
    // --overwrite replaces it.
    let (target, url) = &stores[1];
    let (source, _) = &stores[0];
    let bundle = tool.path(&format!("{source}.bundle"));
    let import = on(
        url,
        &[
            "--json",
            "import",
            "-i",
            bundle.to_str().unwrap(),
            "--key-file",
            key_arg,
        ],
    );
    let doc = tool.run(&import, None).json();
    assert_eq!(doc["unchanged"], 3, "{target}: {doc}");
    let (tokens, _) = seed_for(source);
    let store = token_store::open(url).await.unwrap();
    store
        .put(
            &tokens[1].0,
            &TokenRecord::new("changed-locally"),
            Precondition::Any,
        )
        .await
        .unwrap();
    let out = tool.run(&import, None);
    out.exits(4);
    let doc = out.json();
    assert_eq!(
        (doc["exists"].as_u64(), doc["unchanged"].as_u64()),
        (Some(1), Some(2)),
        "{doc}"
    );
    let skipped = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["outcome"] == "exists")
        .unwrap();
    assert_eq!(
        skipped["storage_key"],
        tokens[1].0.storage_key().encode().as_str()
    );
    assert_eq!(
        store
            .get(&tokens[1].0)
            .await
            .unwrap()
            .unwrap()
            .value
            .access_token
            .expose(),
        "changed-locally"
    );
    let doc = tool
        .run(&[&import[..], &["--overwrite"]].concat(), None)
        .json();
    assert_eq!(
        (doc["replaced"].as_u64(), doc["exit_code"].as_u64()),
        (Some(1), Some(0)),
        "{doc}"
    );
    assert!(store.get(&tokens[1].0).await.unwrap().unwrap().value == tokens[1].1);

    for (_, url) in &stores {
        clean_up(url).await;
    }
}

#[test]
fn bundle_keys_and_damaged_bundles_are_refused_clearly() {
    let tool = Tool::new();
    let from = tool.file_url("from");
    let to = format!("sqlite://{}", tool.path("to.db").display());
    tool.run(
        &on(&from, &["put", "--server", "https://x.example"]),
        Some(r#"{"access_token":"at-x","refresh_token":"rt-x"}"#),
    )
    .ok();
    let pass = ("BUNDLE_PASS", "correct horse battery staple");
    let bundle = tool.path("p.bundle");
    let b = bundle.to_str().unwrap();

    // A passphrase bundle: exported from a variable, imported from a 0600 file.
    let out = tool.run_with(
        &on(
            &from,
            &["export", "-o", b, "--passphrase-env", "BUNDLE_PASS"],
        ),
        None,
        &[pass],
    );
    assert!(
        out.ok()
            .contains("exported 1 tokens and 0 client registrations")
    );
    let text = std::fs::read_to_string(&bundle).unwrap();
    let outer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(outer["format"], "tokenstore-bundle");
    assert_eq!(outer["version"], 1);
    assert_eq!(outer["key"]["kdf"], "argon2id");
    // Never overwritten.
    tool.run_with(
        &on(
            &from,
            &["export", "-o", b, "--passphrase-env", "BUNDLE_PASS"],
        ),
        None,
        &[pass],
    )
    .exits(4);
    let pass_file = tool.path("pass.txt");
    std::fs::write(&pass_file, format!("{}\n", pass.1)).unwrap();
    chmod(&pass_file, 0o644);
    fn with<'a>(mut args: Vec<&'a str>, key: &[&'a str]) -> Vec<&'a str> {
        args.extend_from_slice(key);
        args
    }
    let import_args = on(&to, &["import", "-i", b]);
    let pf = pass_file.to_str().unwrap();
    // A passphrase file others can read: refused (7), naming chmod 600.
    let text = tool
        .run(&with(import_args.clone(), &["--passphrase-file", pf]), None)
        .exits(7);
    assert!(text.contains("chmod 600"), "{text}");
    chmod(&pass_file, 0o600);
    // The wrong passphrase (7), the wrong kind of key (2), an unset variable (8).
    let text = tool
        .run_with(
            &with(import_args.clone(), &["--passphrase-env", "BUNDLE_PASS"]),
            None,
            &[("BUNDLE_PASS", "wrong")],
        )
        .exits(7);
    assert!(text.contains("wrong key or passphrase"), "{text}");
    let missing = tool.path("missing.key");
    tool.run(
        &with(
            import_args.clone(),
            &["--key-file", missing.to_str().unwrap()],
        ),
        None,
    )
    .exits(2);
    tool.run(
        &with(import_args.clone(), &["--passphrase-env", "UNSET_VARIABLE"]),
        None,
    )
    .exits(8);
    let out = tool.run(&with(import_args.clone(), &["--passphrase-file", pf]), None);
    assert!(out.ok().contains("1 created"), "{}", out.text());
    assert!(
        tool.run(
            &on(&to, &["get", "--server", "https://x.example", "--reveal"]),
            None
        )
        .ok()
        .contains("rt-x")
    );

    // A damaged bundle: a flipped bit in the sealed payload (6), not a bundle (6), a newer
    // version (8).
    let mut outer = outer;
    let sealed = outer["sealed"].as_str().unwrap().to_owned();
    let flipped: String = sealed
        .char_indices()
        .map(|(i, c)| {
            if i == 60 {
                if c == 'A' { 'B' } else { 'A' }
            } else {
                c
            }
        })
        .collect();
    outer["sealed"] = json!(flipped);
    let tampered = tool.path("tampered.bundle");
    std::fs::write(&tampered, outer.to_string()).unwrap();
    let t = tampered.to_str().unwrap();
    let out = tool.run(
        &on(&to, &["--json", "import", "-i", t, "--passphrase-file", pf]),
        None,
    );
    out.exits(6);
    assert_eq!(out.json()["error"]["kind"], "corrupt");
    std::fs::write(&tampered, "{\"hello\": 1}").unwrap();
    tool.run(
        &on(&to, &["import", "-i", t, "--passphrase-file", pf]),
        None,
    )
    .exits(6);
    outer["version"] = json!(2);
    std::fs::write(&tampered, outer.to_string()).unwrap();
    let text = tool
        .run(
            &on(&to, &["import", "-i", t, "--passphrase-file", pf]),
            None,
        )
        .exits(8);
    assert!(text.contains("version 2"), "{text}");

    // Key files: created 0600 by export when missing; refused when others can read them.
    let key_file = tool.path("new.key");
    let kb = tool.path("k.bundle");
    let out = tool.run(
        &on(
            &from,
            &[
                "export",
                "-o",
                kb.to_str().unwrap(),
                "--key-file",
                key_file.to_str().unwrap(),
            ],
        ),
        None,
    );
    assert!(out.ok().contains("created key file"), "{}", out.text());
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    chmod(&key_file, 0o644);
    let text = tool
        .run(
            &on(
                &to,
                &[
                    "import",
                    "-i",
                    kb.to_str().unwrap(),
                    "--key-file",
                    key_file.to_str().unwrap(),
                ],
            ),
            None,
        )
        .exits(7);
    assert!(text.contains("chmod 600"), "{text}");
    chmod(&key_file, 0o600);
    // A missing key file (8); a key-file bundle given a passphrase: a usage error saying
    // which key it needs (2).
    let text = tool
        .run(
            &on(
                &to,
                &[
                    "import",
                    "-i",
                    kb.to_str().unwrap(),
                    "--key-file",
                    missing.to_str().unwrap(),
                ],
            ),
            None,
        )
        .exits(8);
    assert!(text.contains("does not exist"), "{text}");
    let text = tool
        .run(
            &on(
                &to,
                &[
                    "import",
                    "-i",
                    kb.to_str().unwrap(),
                    "--passphrase-file",
                    pf,
                ],
            ),
            None,
        )
        .exits(2);
    assert!(text.contains("sealed with a key file"), "{text}");

    // Through a pipe: `export -o -` to stdout, `import -i -` from stdin.
    tool.run(
        &on(
            &from,
            &[
                "--json",
                "export",
                "-o",
                "-",
                "--key-file",
                key_file.to_str().unwrap(),
            ],
        ),
        None,
    )
    .exits(2);
    let piped = tool.run(
        &on(
            &from,
            &[
                "export",
                "-o",
                "-",
                "--key-file",
                key_file.to_str().unwrap(),
            ],
        ),
        None,
    );
    piped.exits(0);
    assert!(
        piped.stderr().contains("exported 1 tokens"),
        "the summary goes to stderr: {}",
        piped.stderr()
    );
    let third = format!("sqlite://{}", tool.path("third.db").display());
    let out = tool.run(
        &on(
            &third,
            &[
                "import",
                "-i",
                "-",
                "--key-file",
                key_file.to_str().unwrap(),
            ],
        ),
        Some(&piped.stdout()),
    );
    assert!(out.ok().contains("1 created"), "{}", out.text());
}
