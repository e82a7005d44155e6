//! The `tokenstore` tool, run as a user would: real processes on real stores.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const ACCESS: &str = "eyJhbGciOiJSUzI1NiJ9.ACCESS-SECRET-PAYLOAD.signature";
const REFRESH: &str = "refresh-SECRET-0123456789abcdef";

fn tokenstore(home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenstore"));
    cmd.args(args)
        .env_remove("TOKEN_STORE_URL")
        .env_remove("TOKEN_STORE_PASSPHRASE")
        .env_remove("TOKEN_STORE_KEY_FILE")
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        // No session bus: auto-detection must fall back to the encrypted file, not hang.
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("XDG_RUNTIME_DIR", home.join("no-runtime"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
    child.wait_with_output().expect("wait tokenstore")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    let t = text(&o);
    assert!(o.status.success(), "tokenstore failed: {t}");
    t
}

fn file_url(dir: &Path) -> String {
    format!(
        "file://{}?key_file={}",
        dir.join("store").display(),
        dir.join("store.key").display()
    )
}

#[test]
fn put_get_list_delete_with_redaction() {
    let home = tempfile::tempdir().unwrap();
    let url = file_url(home.path());
    let store = ["--store", url.as_str()];
    let response = format!(
        r#"{{"access_token":"{ACCESS}","refresh_token":"{REFRESH}","token_type":"Bearer","expires_in":3600,"scope":"read write"}}"#
    );
    let args = [
        &store[..],
        &["put", "--server", "https://MCP.example.com/mcp/"],
    ]
    .concat();
    let out = ok(tokenstore(home.path(), &args, Some(&response)));
    assert!(out.contains("stored"), "{out}");

    let get = [
        &store[..],
        &["get", "--server", "https://mcp.example.com/mcp"],
    ]
    .concat();
    let shown = ok(tokenstore(home.path(), &get, None));
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

    let reveal = [&get[..], &["--reveal"]].concat();
    let revealed = ok(tokenstore(home.path(), &reveal, None));
    assert!(
        revealed.contains(ACCESS) && revealed.contains(REFRESH),
        "{revealed}"
    );

    let list = ok(tokenstore(
        home.path(),
        &[&store[..], &["list"]].concat(),
        None,
    ));
    assert!(
        list.contains("https://mcp.example.com/mcp") && list.contains("1 tokens"),
        "{list}"
    );
    assert!(!list.contains(ACCESS), "{list}");

    let del = [
        &store[..],
        &["delete", "--server", "https://mcp.example.com/mcp"],
    ]
    .concat();
    assert!(ok(tokenstore(home.path(), &del, None)).contains("deleted"));
    let missing = tokenstore(home.path(), &get, None);
    assert!(!missing.status.success());
    let err = text(&missing);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
}

#[test]
fn bad_input_gives_one_clear_line() {
    let home = tempfile::tempdir().unwrap();
    let url = file_url(home.path());
    let put = [
        "--store",
        url.as_str(),
        "put",
        "--server",
        "https://x.example",
    ];
    let out = tokenstore(home.path(), &put, Some("not json"));
    assert!(!out.status.success());
    assert!(text(&out).contains("not JSON"), "{}", text(&out));
    let out = tokenstore(home.path(), &["--store", "nope://x", "list"], None);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown store scheme"),
        "{}",
        text(&out)
    );
    let out = tokenstore(
        home.path(),
        &["--store", "redis://user:hunter2@127.0.0.1:1/", "list"],
        None,
    );
    assert!(!out.status.success());
    assert!(
        !text(&out).contains("hunter2"),
        "password leaked: {}",
        text(&out)
    );
}

#[test]
fn migrate_copies_verifies_and_is_idempotent() {
    let home = tempfile::tempdir().unwrap();
    let from = file_url(home.path());
    let to = format!("sqlite://{}", home.path().join("to.db").display());
    for n in 0..3 {
        let record = format!(r#"{{"access_token":"at-{n}","refresh_token":"rt-{n}"}}"#);
        let server = format!("https://s{n}.example/mcp");
        let args = ["--store", from.as_str(), "put", "--server", server.as_str()];
        ok(tokenstore(home.path(), &args, Some(&record)));
    }
    let args = ["--store", from.as_str(), "migrate", "--to", to.as_str()];
    let first = ok(tokenstore(home.path(), &args, None));
    assert!(
        first.contains("migrated 3 records (0 already up to date)"),
        "{first}"
    );
    let again = ok(tokenstore(home.path(), &args, None));
    assert!(
        again.contains("migrated 0 records (3 already up to date)"),
        "{again}"
    );
    let list = ok(tokenstore(
        home.path(),
        &["--store", to.as_str(), "list"],
        None,
    ));
    assert!(list.contains("3 tokens"), "{list}");
    let get = [
        "--store",
        to.as_str(),
        "get",
        "--server",
        "https://s1.example/mcp",
        "--reveal",
    ];
    assert!(ok(tokenstore(home.path(), &get, None)).contains("rt-1"));
}

#[test]
fn doctor_picks_the_encrypted_file_store_on_a_headless_host() {
    let home = tempfile::tempdir().unwrap();
    let out = ok(tokenstore(home.path(), &["doctor"], None));
    assert!(out.contains("OS keychain not used"), "{out}");
    assert!(out.contains("encrypted file store"), "{out}");
    assert!(out.contains("encrypted_at_rest=true"), "{out}");
    for op in ["put", "get", "cas put", "delete"] {
        assert!(out.contains(op), "no {op} timing: {out}");
    }
    assert!(out.trim_end().ends_with("ok"), "{out}");
    // The key file was created private, apart from the data.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = home.path().join("config/token-store/store.key");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key file mode");
        let data = home.path().join("data/token-store");
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "data dir mode");
    }
    // An explicit store that fails is an error, never a fall-back.
    let bad = tokenstore(
        home.path(),
        &["--store", "sqlite:///proc/nope/x.db", "doctor"],
        None,
    );
    assert!(!bad.status.success(), "{}", text(&bad));
}

#[test]
fn rekey_re_encrypts_and_the_old_key_no_longer_opens() {
    let home = tempfile::tempdir().unwrap();
    let url = file_url(home.path());
    let put = [
        "--store",
        url.as_str(),
        "put",
        "--server",
        "https://r.example",
    ];
    ok(tokenstore(
        home.path(),
        &put,
        Some(r#"{"access_token":"at-rekey"}"#),
    ));
    let new_key = home.path().join("new.key");
    let args = [
        "--store",
        url.as_str(),
        "rekey",
        "--new-key-file",
        new_key.to_str().unwrap(),
    ];
    let out = ok(tokenstore(home.path(), &args, None));
    assert!(out.contains("re-encrypted 1 records"), "{out}");
    let old = tokenstore(home.path(), &["--store", url.as_str(), "list"], None);
    assert!(
        !old.status.success(),
        "the old key still opens: {}",
        text(&old)
    );
    assert!(text(&old).contains("wrong key"), "{}", text(&old));
    let new_url = format!(
        "file://{}?key_file={}",
        home.path().join("store").display(),
        new_key.display()
    );
    let get = [
        "--store",
        new_url.as_str(),
        "get",
        "--server",
        "https://r.example",
        "--reveal",
    ];
    assert!(ok(tokenstore(home.path(), &get, None)).contains("at-rekey"));
}

#[test]
fn control_characters_in_stored_keys_never_reach_the_terminal() {
    let home = tempfile::tempdir().unwrap();
    let url = file_url(home.path());
    // A key written by another program can hold anything; ESC sequences could clear the
    // screen or fake output, BEL rings, CR overwrites the line.
    let evil = "evil\x1b[2J\x1b]0;pwned\x07\rFAKE";
    let put = [
        "--store",
        url.as_str(),
        "put",
        "--server",
        "https://x.example/mcp",
        "--user",
        evil,
    ];
    ok(tokenstore(home.path(), &put, Some(r#"{"access_token":"a"}"#)));
    for args in [
        &["--store", url.as_str(), "list"][..],
        &["--store", url.as_str(), "get", "--server", "https://x.example/mcp", "--user", evil][..],
    ] {
        let out = ok(tokenstore(home.path(), args, None));
        assert!(
            !out.contains(['\x1b', '\x07', '\r']),
            "raw control characters printed: {out:?}"
        );
        assert!(out.contains("evil\\u{1b}[2J"), "the key is shown escaped: {out}");
    }
}
