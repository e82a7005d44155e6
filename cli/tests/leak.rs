//! `tokenstore` never prints a token, refresh token, ID token, client secret or passphrase
//! unless asked with `--reveal`: every command (put, get, list, status, migrate, export,
//! import, logout with revocation, doctor, delete) and its error paths (bad input that quotes
//! a token, a wrong passphrase, a wrong bundle passphrase, an issuer that refuses a
//! revocation and echoes the token, an unreachable issuer, an unreachable store with a
//! password in its URL), with `--verbose` logging on, is searched for the secrets it handled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const CANARY: &str = "Cnry7Qx";

fn secret(tag: &str) -> String {
    format!("{tag}-{CANARY}-sEcReT")
}

struct Run {
    home: tempfile::TempDir,
    passphrase: String,
    /// Everything every command printed, for the final search.
    seen: String,
    cases: usize,
}

impl Run {
    fn new() -> Self {
        Run {
            home: tempfile::tempdir().unwrap(),
            passphrase: secret("cli-passphrase"),
            seen: String::new(),
            cases: 0,
        }
    }

    fn tokenstore(
        &mut self,
        args: &[&str],
        stdin: Option<&str>,
        passphrase: Option<&str>,
    ) -> Output {
        self.tokenstore_env(args, stdin, passphrase, &[])
    }

    fn tokenstore_env(
        &mut self,
        args: &[&str],
        stdin: Option<&str>,
        passphrase: Option<&str>,
        env: &[(&str, &str)],
    ) -> Output {
        let home = self.home.path();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenstore"));
        cmd.arg("--verbose")
            .args(args)
            .env_remove("TOKEN_STORE_URL")
            .env_remove("OAUTH_REDIS_URL")
            .env_remove("TOKEN_STORE_KEY_FILE")
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("XDG_RUNTIME_DIR", home.join("no-runtime"))
            .env("RUST_LOG", "trace")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match passphrase {
            Some(p) => cmd.env("TOKEN_STORE_PASSPHRASE", p),
            None => cmd.env_remove("TOKEN_STORE_PASSPHRASE"),
        };
        let mut child = cmd.spawn().expect("spawn tokenstore");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("wait tokenstore");
        // Not the arguments: some hold a secret on purpose (a password in a URL).
        let command = args
            .iter()
            .find(|a| !a.starts_with('-') && !a.contains("://"));
        let text = format!(
            "$ tokenstore {}\n{}{}\n",
            command.unwrap_or(&"?"),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.seen.push_str(&text);
        self.cases += 1;
        out
    }

    fn store(&self) -> String {
        format!("file://{}", self.home.path().join("store").display())
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Excerpts around each secret found, the secret blanked out.
fn leaks(haystack: &str, secrets: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for s in secrets.iter().copied().chain([CANARY]) {
        for (at, _) in haystack.match_indices(s) {
            let start = haystack[..at]
                .char_indices()
                .rev()
                .nth(60)
                .map_or(0, |(i, _)| i);
            let end = (at + s.len() + 60).min(haystack.len());
            let end = (end..=haystack.len())
                .find(|i| haystack.is_char_boundary(*i))
                .unwrap_or(haystack.len());
            found.push(
                haystack[start..end]
                    .replace(s, "<SECRET>")
                    .replace('\n', "\\n"),
            );
        }
    }
    found
}

#[test]
fn tokenstore_prints_no_secret_without_reveal() {
    let mut run = Run::new();
    let store = run.store();
    let (access, refresh, id) = (secret("access"), secret("refresh"), secret("id-token"));
    let pass = run.passphrase.clone();
    let response = format!(
        r#"{{"access_token":"{access}","refresh_token":"{refresh}","id_token":"{id}","token_type":"Bearer","expires_in":3600,"scope":"read write"}}"#
    );
    let server = ["--server", "https://mcp.example.com/mcp"];
    let s = ["--store", store.as_str()];
    let ok = |o: &Output, what: &str| assert!(o.status.success(), "{what}: {}", text(o));

    let put = run.tokenstore(
        &[&s[..], &["put"], &server[..]].concat(),
        Some(&response),
        Some(&pass),
    );
    ok(&put, "put");
    let get = run.tokenstore(&[&s[..], &["get"], &server[..]].concat(), None, Some(&pass));
    ok(&get, "get");
    let get_json = run.tokenstore(
        &[&s[..], &["--json", "get"], &server[..]].concat(),
        None,
        Some(&pass),
    );
    ok(&get_json, "get --json");
    let list = run.tokenstore(&[&s[..], &["list"]].concat(), None, Some(&pass));
    ok(&list, "list");
    let status = run.tokenstore(&[&s[..], &["status"]].concat(), None, Some(&pass));
    ok(&status, "status");
    let status_json = run.tokenstore(&[&s[..], &["--json", "status"]].concat(), None, Some(&pass));
    ok(&status_json, "status --json");
    let to = format!("sqlite://{}", run.home.path().join("to.db").display());
    let migrate = run.tokenstore(
        &[&s[..], &["migrate", "--to", to.as_str()]].concat(),
        None,
        Some(&pass),
    );
    ok(&migrate, "migrate");
    let get_to = run.tokenstore(
        &[
            "--store",
            to.as_str(),
            "get",
            "--server",
            "https://mcp.example.com/mcp",
        ],
        None,
        None,
    );
    ok(&get_to, "get from the copy");
    let doctor = run.tokenstore(&[&s[..], &["doctor"]].concat(), None, Some(&pass));
    ok(&doctor, "doctor");

    // Export and import under a bundle passphrase, and a wrong one.
    let bundle_pass = secret("bundle-passphrase");
    let bundle = run.home.path().join("tokens.bundle");
    let b = bundle.to_str().unwrap().to_owned();
    let export = run.tokenstore_env(
        &[
            &s[..],
            &["export", "-o", &b, "--passphrase-env", "BUNDLE_PASS"],
        ]
        .concat(),
        None,
        Some(&pass),
        &[("BUNDLE_PASS", &bundle_pass)],
    );
    ok(&export, "export");
    let imported = format!("sqlite://{}", run.home.path().join("imported.db").display());
    let import = run.tokenstore_env(
        &[
            "--store",
            &imported,
            "import",
            "-i",
            &b,
            "--passphrase-env",
            "BUNDLE_PASS",
        ],
        None,
        None,
        &[("BUNDLE_PASS", &bundle_pass)],
    );
    ok(&import, "import");
    let wrong_bundle_pass = secret("wrong-bundle-passphrase");
    let denied = run.tokenstore_env(
        &[
            "--store",
            &imported,
            "import",
            "-i",
            &b,
            "--passphrase-env",
            "BUNDLE_PASS",
        ],
        None,
        None,
        &[("BUNDLE_PASS", &wrong_bundle_pass)],
    );
    assert!(
        !denied.status.success(),
        "a wrong bundle passphrase opened it: {}",
        text(&denied)
    );

    // Logout with revocation: an unreachable issuer, an issuer that refuses and echoes the
    // token back, then one that revokes (with a client secret).
    let logout = [
        "--store",
        imported.as_str(),
        "logout",
        "--server",
        "https://mcp.example.com/mcp",
        "--revoke",
    ];
    let down = run.tokenstore(
        &[
            &logout[..],
            &[
                "--revocation-endpoint",
                "http://127.0.0.1:1/revoke",
                "--timeout",
                "2",
            ],
        ]
        .concat(),
        None,
        None,
    );
    assert!(!down.status.success(), "{}", text(&down));
    let (base, refusing) = common::http_responder(vec![(
        400,
        format!(r#"{{"error":"invalid_grant","error_description":"token {refresh} is not ours"}}"#),
    )]);
    let endpoint = format!("{base}/revoke");
    let refused = run.tokenstore(
        &[&logout[..], &["--revocation-endpoint", &endpoint]].concat(),
        None,
        None,
    );
    assert_eq!(refused.status.code(), Some(9), "{}", text(&refused));
    assert!(
        refusing.join().unwrap()[0].contains(&refresh),
        "the refresh token was not sent"
    );
    let client_secret = secret("client-secret");
    let (base, revoking) = common::http_responder(vec![(200, "{}".into()), (200, "{}".into())]);
    let endpoint = format!("{base}/revoke");
    let revoked = run.tokenstore_env(
        &[
            &logout[..],
            &[
                "--revocation-endpoint",
                &endpoint,
                "--client-id",
                "cli-test",
                "--client-secret-env",
                "CLIENT_SECRET",
            ],
        ]
        .concat(),
        None,
        None,
        &[("CLIENT_SECRET", &client_secret)],
    );
    ok(&revoked, "logout --revoke");
    let bodies = revoking.join().unwrap();
    assert!(
        bodies[0].contains(&refresh) && bodies[1].contains(&access),
        "{bodies:?}"
    );

    // Error paths that hold a secret in their input or configuration.
    let bad_json = format!(r#"{{"access_token": "{access}", "refresh_token": "{refresh}" oops"#);
    let bad = run.tokenstore(
        &[&s[..], &["put"], &server[..]].concat(),
        Some(&bad_json),
        Some(&pass),
    );
    assert!(!bad.status.success(), "bad JSON accepted: {}", text(&bad));
    let wrong_type =
        format!(r#"{{"access_token": ["{access}"], "refresh_token": {{"{refresh}": 1}}}}"#);
    let bad = run.tokenstore(
        &[&s[..], &["put"], &server[..]].concat(),
        Some(&wrong_type),
        Some(&pass),
    );
    assert!(
        !bad.status.success(),
        "wrongly typed JSON accepted: {}",
        text(&bad)
    );
    let misplaced = format!(r#"{{"access_token": "a", "expires_in": "{refresh}"}}"#);
    let bad = run.tokenstore(
        &[&s[..], &["--json", "put"], &server[..]].concat(),
        Some(&misplaced),
        Some(&pass),
    );
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a token in expires_in accepted: {}",
        text(&bad)
    );
    let wrong = secret("wrong-passphrase");
    let denied = run.tokenstore(
        &[&s[..], &["get"], &server[..]].concat(),
        None,
        Some(&wrong),
    );
    assert!(
        !denied.status.success(),
        "a wrong passphrase opened the store: {}",
        text(&denied)
    );
    let redis_password = secret("redis-password");
    let url = format!("redis://user:{redis_password}@127.0.0.1:1/");
    let down = run.tokenstore(&["--store", url.as_str(), "list"], None, None);
    assert!(!down.status.success());
    let down = run.tokenstore(&["--store", url.as_str(), "--json", "status"], None, None);
    assert!(!down.status.success());
    let env_url = format!("{store}?passphrase_env=TOKEN_STORE_PASSPHRASE");
    let via_env = run.tokenstore(&["--store", env_url.as_str(), "list"], None, Some(&wrong));
    assert!(!via_env.status.success());

    let delete = run.tokenstore(
        &[&s[..], &["delete"], &server[..]].concat(),
        None,
        Some(&pass),
    );
    ok(&delete, "delete");

    let secrets = [
        access.as_str(),
        refresh.as_str(),
        id.as_str(),
        pass.as_str(),
        wrong.as_str(),
        redis_password.as_str(),
        bundle_pass.as_str(),
        wrong_bundle_pass.as_str(),
        client_secret.as_str(),
    ];
    let found = leaks(&run.seen, &secrets);
    assert!(
        found.is_empty(),
        "tokenstore printed {} secrets without --reveal:\n{}",
        found.len(),
        found.join("\n")
    );
    assert!(
        run.seen.contains("DEBUG"),
        "--verbose logged nothing: the check would prove little"
    );
    assert!(
        run.seen.contains("revoking a token"),
        "the revocation was not logged: the check would prove little"
    );

    // The positive control: --reveal does show them (so the search above would see them).
    let mut control = Run::new();
    control.passphrase = pass.clone();
    let store = control.store();
    let s = ["--store", store.as_str()];
    let put = control.tokenstore(
        &[&s[..], &["put"], &server[..]].concat(),
        Some(&response),
        Some(&pass),
    );
    assert!(put.status.success(), "{}", text(&put));
    let reveal = control.tokenstore(
        &[&s[..], &["get", "--reveal"], &server[..]].concat(),
        None,
        Some(&pass),
    );
    assert!(
        !leaks(&text(&reveal), &[access.as_str(), refresh.as_str()]).is_empty(),
        "--reveal shows no token: {}",
        text(&reveal)
    );
    if std::env::var_os("TOKEN_STORE_LEAK_SHOW").is_some() {
        println!("{}", run.seen);
    }
    write_report(&run.seen, run.cases, secrets.len(), found.len());
}

fn write_report(seen: &str, cases: usize, searched: usize, leaks: usize) {
    let line = format!(
        "torture leak backend=tokenstore-cli cases={cases} captured_bytes={} secrets_searched={searched} leaks={leaks}",
        seen.len()
    );
    println!("{line}");
    if let Some(path) = std::env::var_os("TOKEN_STORE_CONFORMANCE_REPORT")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(&path))
    {
        let _ = writeln!(f, "{line}");
    }
}
