//! `tokenstore` never prints a token, refresh token, ID token or passphrase unless asked with
//! `--reveal`: every command (put, get, list, migrate, doctor, delete) and its error paths
//! (bad input that quotes a token, a wrong passphrase, an unreachable store with a password
//! in its URL), with `--verbose` logging on, is searched for the secrets it handled.

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
}

impl Run {
    fn new() -> Self {
        Run {
            home: tempfile::tempdir().unwrap(),
            passphrase: secret("cli-passphrase"),
            seen: String::new(),
        }
    }

    fn tokenstore(
        &mut self,
        args: &[&str],
        stdin: Option<&str>,
        passphrase: Option<&str>,
    ) -> Output {
        let home = self.home.path();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenstore"));
        cmd.arg("--verbose")
            .args(args)
            .env_remove("TOKEN_STORE_URL")
            .env_remove("TOKEN_STORE_KEY_FILE")
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("XDG_RUNTIME_DIR", home.join("no-runtime"))
            .env("RUST_LOG", "trace")
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

    let put = run.tokenstore(
        &[&s[..], &["put"], &server[..]].concat(),
        Some(&response),
        Some(&pass),
    );
    assert!(put.status.success(), "put: {}", text(&put));
    let get = run.tokenstore(&[&s[..], &["get"], &server[..]].concat(), None, Some(&pass));
    assert!(get.status.success(), "get: {}", text(&get));
    let list = run.tokenstore(&[&s[..], &["list"]].concat(), None, Some(&pass));
    assert!(list.status.success(), "list: {}", text(&list));
    let to = format!("sqlite://{}", run.home.path().join("to.db").display());
    let migrate = run.tokenstore(
        &[&s[..], &["migrate", "--to", to.as_str()]].concat(),
        None,
        Some(&pass),
    );
    assert!(migrate.status.success(), "migrate: {}", text(&migrate));
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
    assert!(
        get_to.status.success(),
        "get from the copy: {}",
        text(&get_to)
    );
    let doctor = run.tokenstore(&[&s[..], &["doctor"]].concat(), None, Some(&pass));
    assert!(doctor.status.success(), "doctor: {}", text(&doctor));

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
    let env_url = format!("{store}?passphrase_env=TOKEN_STORE_PASSPHRASE");
    let via_env = run.tokenstore(&["--store", env_url.as_str(), "list"], None, Some(&wrong));
    assert!(!via_env.status.success());

    let delete = run.tokenstore(
        &[&s[..], &["delete"], &server[..]].concat(),
        None,
        Some(&pass),
    );
    assert!(delete.status.success(), "delete: {}", text(&delete));

    let secrets = [
        access.as_str(),
        refresh.as_str(),
        id.as_str(),
        pass.as_str(),
        wrong.as_str(),
        redis_password.as_str(),
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
    write_report(&run.seen, found.len());
}

fn write_report(seen: &str, leaks: usize) {
    let line = format!(
        "torture leak backend=tokenstore-cli cases=11 captured_bytes={} secrets_searched=7 leaks={leaks}",
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
