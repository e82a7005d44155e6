//! Running `tokenstore` as a user would: a real process, an isolated HOME, real stores.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use token_store_conformance::services;

/// One `tokenstore` run.
pub struct Run {
    pub out: Output,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    /// stdout then stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// stdout as the one JSON document `--json` prints.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.out.stdout)
            .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", self.text()))
    }

    /// Asserts success and returns the text.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert_eq!(self.code(), 0, "tokenstore failed: {}", self.text());
        self.text()
    }

    /// Asserts the exit code and returns the text.
    #[track_caller]
    pub fn exits(&self, code: i32) -> String {
        assert_eq!(self.code(), code, "exit code: {}", self.text());
        self.text()
    }
}

/// A `tokenstore` with a private HOME and no inherited store settings.
pub struct Tool {
    pub home: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Default for Tool {
    fn default() -> Self {
        Self::new()
    }
}

impl Tool {
    pub fn new() -> Self {
        Tool {
            home: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    /// An encrypted file store in HOME, keyed by a key file.
    pub fn file_url(&self, name: &str) -> String {
        format!(
            "file://{}?key_file={}.key",
            self.path(name).display(),
            self.path(name).display()
        )
    }

    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        self.run_with(args, stdin, &[])
    }

    pub fn run_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
        let home = self.home.path();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenstore"));
        cmd.args(args)
            .env_remove("TOKEN_STORE_URL")
            .env_remove("OAUTH_REDIS_URL")
            .env_remove("TOKEN_STORE_PASSPHRASE")
            .env_remove("TOKEN_STORE_KEY_FILE")
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Auto-detection must not find the test keyring: it falls back to the file store.
        // Stores named by URL (keychain:secret-service) still get the bus.
        if !args.iter().any(|a| a.starts_with("keychain:")) {
            cmd.env_remove("DBUS_SESSION_BUS_ADDRESS")
                .env("XDG_RUNTIME_DIR", home.join("no-runtime"));
        }
        for (k, v) in self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(env.iter().copied())
        {
            cmd.env(k, v);
        }
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
        Run {
            out: child.wait_with_output().expect("wait tokenstore"),
        }
    }
}

/// `args` with `--store URL` in front.
pub fn on<'a>(url: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--store", url];
    v.extend_from_slice(args);
    v
}

/// Sets a file's mode.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Store URLs of every backend this machine has, each isolated (a fresh directory, Redis
/// prefix, Vault folder, PostgreSQL table or keychain service): `(name, url)`. Under
/// `CI=true` a missing service fails the test.
pub fn every_store(dir: &Path) -> Vec<(&'static str, String)> {
    let name = services::unique("cli");
    let mut out = vec![
        (
            "file",
            format!(
                "file://{}?key_file={}",
                dir.join("file-store").display(),
                dir.join("file-store.key").display()
            ),
        ),
        (
            "sqlite",
            format!("sqlite://{}", dir.join("tokens.db").display()),
        ),
    ];
    if let Some(base) = services::require("TOKEN_STORE_TEST_REDIS_URL") {
        out.push((
            "redis",
            format!("{}/?prefix=ts-test:{name}", base.trim_end_matches('/')),
        ));
    }
    if let Some(addr) = services::require("TOKEN_STORE_TEST_VAULT_ADDR")
        && services::require("TOKEN_STORE_TEST_VAULT_TOKEN").is_some()
    {
        let host = addr.trim_start_matches("http://").trim_end_matches('/');
        out.push((
            "vault",
            format!(
                "vault://{host}/secret?prefix=ts-test/{name}&token_env=TOKEN_STORE_TEST_VAULT_TOKEN"
            ),
        ));
    }
    if let Some(base) = services::require("TOKEN_STORE_TEST_POSTGRES_URL") {
        let sep = if base.contains('?') { '&' } else { '?' };
        out.push((
            "postgres",
            format!("{base}{sep}table=cli_{}", name.replace('-', "_")),
        ));
    }
    if services::require("TOKEN_STORE_TEST_SECRET_SERVICE").is_some()
        && services::require("DBUS_SESSION_BUS_ADDRESS").is_some()
    {
        out.push((
            "secret-service",
            format!("keychain:secret-service?service={name}"),
        ));
    }
    if services::require("TOKEN_STORE_TEST_KEYUTILS").is_some() {
        out.push(("keyutils", format!("keychain:keyutils?service={name}")));
    }
    out
}

/// Reads one HTTP/1.1 request and returns its body.
pub fn read_request(conn: &mut std::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text[end + 4..].to_owned();
            }
        }
        if n == 0 {
            return String::new();
        }
    }
}

/// An HTTP server on loopback answering one request per given response (a status line and
/// a JSON body), in order; returns its base URL and, when joined, the request bodies.
pub fn http_responder(
    responses: Vec<(u16, String)>,
) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        for (status, body) in responses {
            let (mut conn, _) = listener.accept().unwrap();
            bodies.push(read_request(&mut conn));
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(reply.as_bytes()).unwrap();
        }
        bodies
    });
    (base, handle)
}
