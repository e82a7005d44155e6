//! Shared helpers for the Vault integration tests: service variables, store factories, and a
//! private OpenBao dev server for the tests that stop or seal one.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use token_store_conformance::Instance;
use token_store_conformance::services::{require, unique};
use token_store_core::{RawStore, Result};
use token_store_vault::{Auth, VaultConfig};

pub struct Env {
    pub addr: String,
    pub token: String,
}

pub fn env() -> Option<Env> {
    Some(Env {
        addr: require("TOKEN_STORE_TEST_VAULT_ADDR")?,
        token: require("TOKEN_STORE_TEST_VAULT_TOKEN")?,
    })
}

pub fn token_config(addr: &str, token: &str, prefix: &str) -> VaultConfig {
    VaultConfig::new(addr, Auth::token(token))
        .unwrap()
        .with_prefix(prefix)
        .unwrap()
}

pub fn approle(role_id: &str, secret_id: &str) -> Auth {
    Auth::approle(role_id, secret_id)
}

/// The store as users open it (`open`: the time limit layer over the backend), as the raw
/// store the shared suites take.
pub async fn open_raw(config: VaultConfig) -> Result<Arc<dyn RawStore>> {
    Ok(token_store_vault::open(config).await?.raw().clone())
}

/// A fresh store under its own prefix, reopenable (a new client on the same prefix).
pub async fn instance(config: VaultConfig) -> Result<Instance> {
    let store = open_raw(config.clone()).await?;
    Ok(Instance::with_reopen(store, move || {
        open_raw(config.clone())
    }))
}

pub fn unique_prefix(base: &str) -> String {
    format!("{base}/{}", unique("t"))
}

/// An OpenBao dev server of our own (killed on drop), for tests that stop or seal it.
pub struct OwnBao {
    pub bin: String,
    pub port: u16,
    pub token: String,
    pub home: std::path::PathBuf,
    child: Option<Child>,
}

impl OwnBao {
    pub async fn start() -> Option<OwnBao> {
        let bin = require("TOKEN_STORE_TEST_VAULT_BAO_BIN")?;
        let port = free_port_pair();
        let home = std::env::temp_dir().join(unique("ts-vault-test"));
        std::fs::create_dir_all(&home).unwrap();
        let mut bao = OwnBao {
            bin,
            port,
            token: "root-test-token".into(),
            home,
            child: None,
        };
        bao.launch().await;
        Some(bao)
    }

    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn launch(&mut self) {
        let child = Command::new(&self.bin)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={}", self.token),
                &format!("-dev-listen-address=127.0.0.1:{}", self.port),
            ])
            .env("HOME", &self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bao");
        self.child = Some(child);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Not sys/health: the dev server answers it before it swaps in our root token.
            let ok = http
                .get(format!("{}/v1/auth/token/lookup-self", self.addr()))
                .header("X-Vault-Token", &self.token)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "own OpenBao did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::StatusCode {
        reqwest::Client::new()
            .post(format!("{}/v1/{path}", self.addr()))
            .header("X-Vault-Token", &self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
    }
}

impl Drop for OwnBao {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// A port whose successor is free too (the dev server also listens on port + 1).
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 65535 && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

impl OwnBao {
    /// AppRole `ts` with fixed ids and a policy for `secret/*/token-store-outage*` only, as
    /// scripts/services.sh sets up, so a restarted (empty) server accepts the same login.
    pub async fn provision_approle(&self, role_id: &str, secret_id: &str) {
        let policy = r#"path "secret/data/token-store-outage/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/token-store-outage/*" { capabilities = ["list", "delete"] }"#;
        for (path, body) in [
            ("sys/auth/approle", serde_json::json!({"type": "approle"})),
            (
                "sys/policies/acl/ts",
                serde_json::json!({ "policy": policy }),
            ),
            (
                "auth/approle/role/ts",
                serde_json::json!({"token_policies": ["ts"], "token_ttl": "20m", "secret_id_ttl": "0"}),
            ),
            (
                "auth/approle/role/ts/role-id",
                serde_json::json!({ "role_id": role_id }),
            ),
            (
                "auth/approle/role/ts/custom-secret-id",
                serde_json::json!({ "secret_id": secret_id }),
            ),
        ] {
            let status = self.post(path, body).await;
            assert!(status.is_success(), "{path}: {status}");
        }
    }
}
