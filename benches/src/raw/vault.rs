use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use token_store_core::async_trait;

use super::RawKeys;
use crate::fixture;
use crate::ops::{BResult, LIST_SIZE, Op, SIDE_KEYS, Target, fail};

/// Plain KV v2 HTTP calls with `reqwest`, one request per operation: GET data, POST data
/// (with the `cas` option for CAS), DELETE metadata, LIST metadata. The value is stored as
/// base64 in the data map, as the backend stores it.
pub struct RawVault {
    http: reqwest::Client,
    base: String,
    token: String,
    folder: String,
    keys: RawKeys,
    value_b64: String,
    versions: Vec<AtomicU64>,
    /// Attribution variant: writes read first, deletes write a tombstone (the backend's
    /// request sequence).
    backend_requests: bool,
}

impl RawVault {
    /// A client for the Vault at `addr` (`http://host:port`), KV v2 at `mount`; records go
    /// under `mount/data/<prefix>/...`.
    pub fn new(addr: &str, token: &str, mount: &str, prefix: &str, run_id: &str) -> BResult<Self> {
        Ok(RawVault {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base: format!("{}/v1/{mount}", addr.trim_end_matches('/')),
            token: token.to_owned(),
            folder: prefix.to_owned(),
            keys: RawKeys::new(run_id),
            value_b64: B64.encode(fixture::record_bytes(1)),
            versions: (0..LIST_SIZE).map(|_| AtomicU64::new(0)).collect(),
            backend_requests: false,
        })
    }

    /// The attribution variant: a put or CAS put is a read then a `cas` write (2 requests),
    /// a delete is read, tombstone `cas` write, read, metadata delete (4 requests), as the
    /// backend makes them; lists and gets are not run.
    pub fn with_backend_requests(mut self) -> Self {
        self.backend_requests = true;
        self
    }

    /// The current KV version of a key (0 when absent).
    async fn version_of(&self, encoded: &str) -> BResult<u64> {
        let url = format!("{}/data/{}", self.base, self.path(encoded));
        let (_, reply) = self.call(Method::GET, url, None).await?;
        Ok(reply
            .pointer("/data/metadata/version")
            .and_then(Value::as_u64)
            .unwrap_or(0))
    }

    async fn run_backend_requests(&self, op: Op, i: usize) -> BResult<()> {
        let k = i % LIST_SIZE;
        match op {
            // One plain write with a new generation: the raw client's request.
            Op::Put => {
                let v = self.write(&self.keys.hit[k], None).await?;
                self.versions[k].store(v, Ordering::Relaxed);
            }
            // The generation check needs the current data, so a CAS write reads first.
            Op::CasPut => {
                let key = &self.keys.hit[k];
                let cas = self.version_of(key).await?;
                let v = self.write(key, Some(cas)).await?;
                self.versions[k].store(v, Ordering::Relaxed);
            }
            // Read, tombstone written with `cas`, then destroy every older version.
            _ => {
                let key = &self.keys.del[i % SIDE_KEYS];
                let cas = self.version_of(key).await?;
                let mut body = json!({ "options": { "cas": cas }, "data": { "tombstone": true } });
                body["data"]["generation"] = json!("0");
                let url = format!("{}/data/{}", self.base, self.path(key));
                let (_, reply) = self.call(Method::POST, url, Some(&body)).await?;
                let tombstone = reply
                    .pointer("/data/version")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| fail("tombstone: no version"))?;
                let versions: Vec<u64> = (1..tombstone).collect();
                let url = format!("{}/destroy/{}", self.base, self.path(key));
                self.call(Method::POST, url, Some(&json!({ "versions": versions })))
                    .await?;
            }
        }
        Ok(())
    }

    /// The KV path of a key: user folder, then the rest (as the backend lays keys out),
    /// with `%` escaped for the wire.
    fn path(&self, encoded: &str) -> String {
        let (user, rest) = encoded.split_once(':').unwrap_or(("", encoded));
        format!("{}/{user}/{rest}", self.folder).replace('%', "%25")
    }

    async fn call(
        &self,
        method: Method,
        url: String,
        body: Option<&Value>,
    ) -> BResult<(StatusCode, Value)> {
        let mut req = self
            .http
            .request(method, url)
            .header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)?
        };
        Ok((status, body))
    }

    async fn write(&self, encoded: &str, cas: Option<u64>) -> BResult<u64> {
        let mut body = json!({ "data": { "value": self.value_b64 } });
        if let Some(cas) = cas {
            body["options"] = json!({ "cas": cas });
        }
        let url = format!("{}/data/{}", self.base, self.path(encoded));
        let (status, reply) = self.call(Method::POST, url, Some(&body)).await?;
        if !status.is_success() {
            return Err(fail(format!("write: HTTP {status}: {reply}")));
        }
        reply
            .pointer("/data/version")
            .and_then(Value::as_u64)
            .ok_or_else(|| fail("write: no version"))
    }

    async fn read(&self, encoded: &str) -> BResult<Option<Vec<u8>>> {
        let url = format!("{}/data/{}", self.base, self.path(encoded));
        let (status, reply) = self.call(Method::GET, url, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let v = reply
            .pointer("/data/data/value")
            .and_then(Value::as_str)
            .ok_or_else(|| fail(format!("read: HTTP {status}")))?;
        Ok(Some(B64.decode(v)?))
    }

    async fn delete(&self, encoded: &str) -> BResult<()> {
        let url = format!("{}/metadata/{}", self.base, self.path(encoded));
        let (status, reply) = self.call(Method::DELETE, url, None).await?;
        if !status.is_success() {
            return Err(fail(format!("delete: HTTP {status}: {reply}")));
        }
        Ok(())
    }
}

#[async_trait]
impl Target for RawVault {
    fn label(&self) -> String {
        if self.backend_requests {
            return "reqwest, the backend's requests (put: 1; CAS put: read + cas write; delete: read, cas tombstone, destroy)"
                .to_owned();
        }
        "reqwest, one KV v2 HTTP call".to_owned()
    }

    fn supports(&self, op: Op) -> bool {
        !self.backend_requests || matches!(op, Op::Put | Op::CasPut | Op::Delete)
    }

    async fn setup(&self) -> BResult<()> {
        for (k, key) in self.keys.hit.iter().enumerate() {
            let v = self.write(key, None).await?;
            self.versions[k].store(v, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn prepare(&self, op: Op, i: usize) -> BResult<()> {
        if op == Op::Delete {
            self.write(&self.keys.del[i % SIDE_KEYS], None).await?;
        }
        Ok(())
    }

    async fn run(&self, op: Op, i: usize) -> BResult<()> {
        if self.backend_requests {
            return self.run_backend_requests(op, i).await;
        }
        let k = i % LIST_SIZE;
        match op {
            Op::GetHit => {
                self.read(&self.keys.hit[k])
                    .await?
                    .ok_or_else(|| fail("missing"))?;
            }
            Op::GetMiss => {
                if self.read(&self.keys.miss[i % SIDE_KEYS]).await?.is_some() {
                    return Err(fail("found"));
                }
            }
            Op::Put => {
                let v = self.write(&self.keys.hit[k], None).await?;
                self.versions[k].store(v, Ordering::Relaxed);
            }
            Op::CasPut => {
                let expected = self.versions[k].load(Ordering::Relaxed);
                let v = self.write(&self.keys.hit[k], Some(expected)).await?;
                self.versions[k].store(v, Ordering::Relaxed);
            }
            Op::Delete => self.delete(&self.keys.del[i % SIDE_KEYS]).await?,
            Op::List => {
                let folder = self.path(&self.keys.user_prefix());
                let url = format!("{}/metadata/{folder}", self.base);
                let list = Method::from_bytes(b"LIST")?;
                let (status, reply) = self.call(list, url, None).await?;
                let n = reply
                    .pointer("/data/keys")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                if n != LIST_SIZE {
                    return Err(fail(format!("listed {n} (HTTP {status})")));
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        for key in self.keys.hit.iter().chain(&self.keys.del) {
            self.delete(key).await?;
        }
        Ok(())
    }
}
