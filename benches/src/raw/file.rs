use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use token_store_core::async_trait;
use token_store_core::backend::Cipher;

use super::Payload;
use crate::fixture;
use crate::ops::{BResult, LIST_SIZE, Op, SIDE_KEYS, Target, fail};

/// The floor under an encrypted file store with the file store's guarantees, done with
/// `std::fs` and the same AEAD (XChaCha20-Poly1305 through the same `Cipher`):
///
/// - names are keyed (HMAC-SHA-256 of the key, computed per call), so a directory listing
///   reveals nothing; the keys therefore live inside the records, and a list decrypts every
///   record;
/// - a read is `stat` of the store header (another process may have re-keyed the store),
///   `fs::read` and an authenticated decryption, on the calling thread;
/// - a write is sealed, written, fsynced, renamed over the old file and the directory
///   fsynced, under an `flock` that every writer takes (a CAS is atomic against every other
///   process only if unconditional writes take it too), on `spawn_blocking` (an fsync must
///   not stall the caller's async runtime);
/// - a CAS or a delete reads and decrypts the current record under the lock (the version and
///   the expiry are inside it: a delete of an expired record reports nothing removed).
pub struct RawFile {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    header: PathBuf,
    lock: File,
    /// `flock` is held by the open file, which every thread here shares: it excludes other
    /// processes, and this mutex the floor's own threads (as the store excludes its own).
    threads: std::sync::Mutex<()>,
    cipher: Cipher,
    hit: Vec<String>,
    miss: Vec<String>,
    del: Vec<String>,
    payload: Payload,
}

impl RawFile {
    /// Uses (and creates) directory `dir`.
    pub fn new(dir: &Path) -> BResult<Self> {
        Self::with(dir, Payload::bytes())
    }

    /// The typed floor (`Payload`) in directory `dir`: the record serialized on a write,
    /// parsed on a read.
    pub fn typed(dir: &Path) -> BResult<Self> {
        Self::with(dir, Payload::bytes().typed())
    }

    fn with(dir: &Path, payload: Payload) -> BResult<Self> {
        std::fs::create_dir_all(dir)?;
        // Lock and header live beside the records directory, so a list sees only records.
        let lock = File::create(dir.with_extension("lock"))?;
        let header = dir.with_extension("header");
        std::fs::write(&header, b"{}")?;
        // Bound to a store id as the store's cipher is (a record cannot be moved between
        // stores): the same associated data, so the same AEAD work.
        let cipher = Cipher::from_master(&[7u8; 32]).bound_to_store(&[9u8; 16]);
        let enc = |user: &str, i: usize| fixture::key(user, i).storage_key().encode();
        Ok(RawFile {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                header,
                lock,
                threads: std::sync::Mutex::new(()),
                cipher,
                hit: (0..LIST_SIZE).map(|i| enc("rawfile-hit", i)).collect(),
                miss: (0..SIDE_KEYS).map(|i| enc("rawfile-miss", i)).collect(),
                del: (0..SIDE_KEYS).map(|i| enc("rawfile-del", i)).collect(),
                payload,
            }),
        })
    }
}

impl Inner {
    fn name(&self, key: &str) -> String {
        self.cipher.keyed_name(key.as_bytes())
    }

    /// The plaintext of a record: its key (the name cannot be reversed) and its value.
    fn plaintext(&self, key: &str) -> Vec<u8> {
        let value = self.payload.value();
        let mut p = Vec::with_capacity(key.len() + 1 + value.len());
        p.extend_from_slice(key.as_bytes());
        p.push(0);
        p.extend_from_slice(&value);
        p
    }

    fn read(&self, name: &str) -> BResult<Option<Vec<u8>>> {
        std::fs::metadata(&self.header)?;
        let sealed = match std::fs::read(self.dir.join(name)) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let plain = self
            .cipher
            .open(&aad(name), &sealed)
            .map_err(|e| fail(format!("open: {e:?}")))?;
        Ok(Some(plain.to_vec()))
    }

    fn write(&self, key: &str, name: &str) -> BResult<()> {
        let sealed = self.cipher.seal(&aad(name), &self.plaintext(key))?;
        let tmp = self.dir.join(format!(".tmp-{name}"));
        let mut f = File::create(&tmp)?;
        f.write_all(&sealed)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, self.dir.join(name))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// `f` under the cross-process lock, after the header check.
    fn locked<T>(&self, f: impl FnOnce() -> BResult<T>) -> BResult<T> {
        let _threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        self.lock.lock()?;
        let outcome = std::fs::metadata(&self.header)
            .map_err(Into::into)
            .and_then(|_| f());
        self.lock.unlock()?;
        outcome
    }
}

/// A record's associated data, as the store binds it: a format tag and the file name.
fn aad(name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(4 + name.len());
    aad.extend_from_slice(b"TSF\x01");
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[async_trait]
impl Target for RawFile {
    fn label(&self) -> String {
        self.inner
            .payload
            .label("std::fs + XChaCha20-Poly1305, keyed names, flock'd writes on spawn_blocking")
    }

    async fn setup(&self) -> BResult<()> {
        for key in &self.inner.hit {
            self.inner.write(key, &self.inner.name(key))?;
        }
        Ok(())
    }

    async fn prepare(&self, op: Op, i: usize) -> BResult<()> {
        if op == Op::Delete {
            let key = &self.inner.del[i % SIDE_KEYS];
            self.inner.write(key, &self.inner.name(key))?;
        }
        Ok(())
    }

    async fn run(&self, op: Op, i: usize) -> BResult<()> {
        let inner = &self.inner;
        let k = i % LIST_SIZE;
        match op {
            Op::GetHit => {
                let name = inner.name(&inner.hit[k]);
                let plain = inner.read(&name)?.ok_or_else(|| fail("missing"))?;
                let start = plain.iter().position(|&b| b == 0).map_or(0, |end| end + 1);
                inner.payload.take(plain, start)?;
            }
            Op::GetMiss => {
                let name = inner.name(&inner.miss[i % SIDE_KEYS]);
                if inner.read(&name)?.is_some() {
                    return Err(fail("found"));
                }
            }
            Op::Put | Op::CasPut | Op::Delete => {
                let inner = self.inner.clone();
                tokio::task::spawn_blocking(move || -> BResult<()> {
                    let key = match op {
                        Op::Delete => &inner.del[i % SIDE_KEYS],
                        _ => &inner.hit[k],
                    };
                    let name = inner.name(key);
                    inner.locked(|| {
                        if op != Op::Put {
                            // The version (and the expiry) are inside the current record.
                            let current = inner.read(&name)?.ok_or_else(|| fail("missing"))?;
                            std::hint::black_box(current);
                        }
                        if op == Op::Delete {
                            std::fs::remove_file(inner.dir.join(&name))?;
                            File::open(&inner.dir)?.sync_all()?;
                            Ok(())
                        } else {
                            inner.write(key, &name)
                        }
                    })
                })
                .await??;
            }
            Op::List => {
                std::fs::metadata(&inner.header)?;
                let mut n = 0;
                for entry in std::fs::read_dir(&inner.dir)? {
                    let name = entry?.file_name();
                    let Some(name) = name.to_str().filter(|n| !n.starts_with('.')) else {
                        continue;
                    };
                    let Some(plain) = inner.read(name)? else {
                        continue;
                    };
                    let end = plain.iter().position(|&b| b == 0).unwrap_or(plain.len());
                    let key = std::str::from_utf8(&plain[..end])?;
                    if key.starts_with("rawfile-hit:") && inner.payload.listed(key) {
                        n += 1;
                    }
                }
                if n != LIST_SIZE {
                    return Err(fail(format!("listed {n}")));
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        let _ = std::fs::remove_dir_all(&self.inner.dir);
        let _ = std::fs::remove_file(self.inner.dir.with_extension("lock"));
        let _ = std::fs::remove_file(&self.inner.header);
        Ok(())
    }
}
