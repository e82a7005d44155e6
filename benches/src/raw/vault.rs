use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use token_store_core::async_trait;

use super::{Payload, RawKeys};
use crate::ops::{BResult, LIST_SIZE, Op, SIDE_KEYS, Target, fail};

/// Plain KV v2 HTTP calls with `reqwest`, as few as the backend's guarantees allow (the
/// value is base64 in the data map, as the backend stores it):
///
/// - get: one `GET data`; put: one `POST data`;
/// - CAS put: `GET data` then `POST data` with `options.cas`: KV v2's `cas` compares only a
///   version number, which restarts at 1 after `kv metadata delete`, so a correct CAS must
///   read the record (its generation) first, or a stale writer would win against a
///   re-created key;
/// - delete: `GET data`, a `cas` tombstone write, `POST destroy` of the older versions: the
///   fewest requests that make a conditional delete that never removes a concurrent
///   create (an unconditional `DELETE metadata` can do neither);
/// - list: `LIST metadata`, then a read of every key, 8 in flight (`LIST` also names keys
///   whose tombstone an interrupted delete left behind: only a read tells).
pub struct RawVault {
    http: reqwest::Client,
    base: String,
    token: String,
    folder: String,
    keys: RawKeys,
    payload: Payload,
    versions: Vec<AtomicU64>,
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
            payload: Payload::bytes(),
            versions: (0..LIST_SIZE).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The typed floor (`Payload`): the record serialized on a write, parsed on a read.
    pub fn typed(mut self) -> Self {
        self.payload = self.payload.typed();
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

    /// Read, tombstone written with `cas`, then destroy every older version.
    async fn delete_conditionally(&self, i: usize) -> BResult<()> {
        {
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
        // Base64 of each write's value, as the backend must (values change).
        let value = B64.encode(&*self.payload.value());
        let mut body = json!({ "data": { "value": value } });
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
        self.payload.label("reqwest: get 1 request, put 1, CAS put 2 (read + cas write), delete 3 (read, cas tombstone, destroy), list LIST + a read per key")
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
        let k = i % LIST_SIZE;
        match op {
            Op::GetHit => {
                let value = self
                    .read(&self.keys.hit[k])
                    .await?
                    .ok_or_else(|| fail("missing"))?;
                self.payload.take(value, 0)?;
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
                // The generation check needs the current data, so a CAS write reads first.
                let key = &self.keys.hit[k];
                let cas = self.version_of(key).await?;
                if cas != self.versions[k].load(Ordering::Relaxed) {
                    return Err(fail("CAS mismatch"));
                }
                let v = self.write(key, Some(cas)).await?;
                self.versions[k].store(v, Ordering::Relaxed);
            }
            Op::Delete => self.delete_conditionally(i).await?,
            Op::List => {
                let folder = self.path(&self.keys.user_prefix());
                let url = format!("{}/metadata/{folder}", self.base);
                let list = Method::from_bytes(b"LIST")?;
                let (status, reply) = self.call(list, url, None).await?;
                let names: Vec<String> = reply
                    .pointer("/data/keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                // A read per key, 8 in flight: only the data tells a record from a tombstone.
                let mut n = 0;
                for chunk in names.chunks(8) {
                    let mut reads = tokio::task::JoinSet::new();
                    for name in chunk {
                        let url =
                            format!("{}/data/{folder}{}", self.base, name.replace('%', "%25"));
                        let req = self.http.get(url).header("X-Vault-Token", &self.token);
                        reads.spawn(async move {
                            let resp = req.send().await?;
                            let body: Value = resp.json().await?;
                            Ok::<_, reqwest::Error>(body.pointer("/data/data/value").is_some())
                        });
                    }
                    while let Some(r) = reads.join_next().await {
                        n += usize::from(r??);
                    }
                }
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
