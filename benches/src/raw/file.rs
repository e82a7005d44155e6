use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use token_store_core::async_trait;

use crate::fixture;
use crate::ops::{BResult, LIST_SIZE, Op, SIDE_KEYS, Target, fail};

/// Plain files in one directory, with `std::fs` on the calling thread: a read is
/// `fs::read`; a write is write + fsync + rename + directory fsync (the durability the file
/// store gives); a CAS takes an `flock` around read-compare-write; a list reads the
/// directory. No encryption: that is part of what the ratio shows.
pub struct RawFile {
    dir: PathBuf,
    lock: File,
    hit: Vec<String>,
    miss: Vec<String>,
    del: Vec<String>,
    value: Vec<u8>,
    /// Attribution variant: every call also `stat`s this header file (the file store's
    /// `store.json` check); writes go to `spawn_blocking` under the `flock`, as the backend
    /// makes them.
    header: Option<PathBuf>,
}

impl RawFile {
    /// Uses (and creates) directory `dir`.
    pub fn new(dir: &Path) -> BResult<Self> {
        std::fs::create_dir_all(dir)?;
        // The lock file lives beside the records directory, not in it, so a list sees
        // only records.
        let lock = File::create(dir.with_extension("lock"))?;
        // Names as long as the file store's (64 hex digits).
        let name = |kind: &str, i: usize| format!("{kind}{i:0>60}");
        Ok(RawFile {
            dir: dir.to_owned(),
            lock,
            hit: (0..LIST_SIZE).map(|i| name("hit-", i)).collect(),
            miss: (0..SIDE_KEYS).map(|i| name("mis-", i)).collect(),
            del: (0..SIDE_KEYS).map(|i| name("del-", i)).collect(),
            value: fixture::record_bytes(1),
            header: None,
        })
    }

    /// The attribution variant: the file store's steps around the raw calls: gets on the
    /// calling thread plus a `stat` of `header`; puts on `spawn_blocking` under the `flock`,
    /// with the same `stat`. Only gets and puts.
    pub fn with_backend_steps(mut self, header: PathBuf) -> Self {
        self.header = Some(header);
        self
    }

    async fn write_like_backend(&self, name: &str) -> BResult<()> {
        let header = self.header.clone();
        let dir = self.dir.clone();
        let lock = self.lock.try_clone()?;
        let value = self.value.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || -> BResult<()> {
            lock.lock()?;
            let outcome = (|| -> BResult<()> {
                check_header(header.as_deref())?;
                let tmp = dir.join(format!(".tmp-{name}"));
                let mut f = File::create(&tmp)?;
                f.write_all(&value)?;
                f.sync_all()?;
                drop(f);
                std::fs::rename(&tmp, dir.join(&name))?;
                File::open(&dir)?.sync_all()?;
                Ok(())
            })();
            lock.unlock()?;
            outcome
        })
        .await?
    }

    fn read_like_backend(&self, name: &str) -> BResult<Option<Vec<u8>>> {
        let found = match std::fs::read(self.dir.join(name)) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        check_header(self.header.as_deref())?;
        Ok(found)
    }

    fn write(&self, name: &str) -> BResult<()> {
        let tmp = self.dir.join(format!(".tmp-{name}"));
        let mut f = File::create(&tmp)?;
        f.write_all(&self.value)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, self.dir.join(name))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

/// `stat`s the store header, as the file store does to notice a re-key by another process.
fn check_header(header: Option<&Path>) -> BResult<()> {
    if let Some(header) = header {
        std::fs::metadata(header)?;
    }
    Ok(())
}

#[async_trait]
impl Target for RawFile {
    fn label(&self) -> String {
        if self.header.is_some() {
            return "std::fs + stat of store.json (writes: spawn_blocking + flock)".to_owned();
        }
        "std::fs: read / write+fsync+rename+dir fsync".to_owned()
    }

    fn supports(&self, op: Op) -> bool {
        self.header.is_none() || matches!(op, Op::GetHit | Op::GetMiss | Op::Put)
    }

    async fn setup(&self) -> BResult<()> {
        for name in &self.hit {
            self.write(name)?;
        }
        Ok(())
    }

    async fn prepare(&self, op: Op, i: usize) -> BResult<()> {
        if op == Op::Delete {
            self.write(&self.del[i % SIDE_KEYS])?;
        }
        Ok(())
    }

    async fn run(&self, op: Op, i: usize) -> BResult<()> {
        let k = i % LIST_SIZE;
        if self.header.is_some() {
            let found = match op {
                Op::GetHit => self.read_like_backend(&self.hit[k])?.is_some(),
                Op::Put => {
                    self.write_like_backend(&self.hit[k]).await?;
                    true
                }
                _ => self.read_like_backend(&self.miss[i % SIDE_KEYS])?.is_none(),
            };
            return if found {
                Ok(())
            } else {
                Err(fail("unexpected result"))
            };
        }
        match op {
            Op::GetHit => {
                std::fs::read(self.dir.join(&self.hit[k]))?;
            }
            Op::GetMiss => match std::fs::read(self.dir.join(&self.miss[i % SIDE_KEYS])) {
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
                Ok(_) => return Err(fail("found")),
            },
            Op::Put => self.write(&self.hit[k])?,
            Op::CasPut => {
                self.lock.lock()?;
                let outcome = (|| {
                    let current = std::fs::read(self.dir.join(&self.hit[k]))?;
                    if current != self.value {
                        return Err(fail("CAS mismatch"));
                    }
                    self.write(&self.hit[k])
                })();
                self.lock.unlock()?;
                outcome?;
            }
            Op::Delete => {
                std::fs::remove_file(self.dir.join(&self.del[i % SIDE_KEYS]))?;
                File::open(&self.dir)?.sync_all()?;
            }
            Op::List => {
                let n = std::fs::read_dir(&self.dir)?
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("hit-"))
                    .count();
                if n != LIST_SIZE {
                    return Err(fail(format!("listed {n}")));
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&self) -> BResult<()> {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.with_extension("lock"));
        Ok(())
    }
}
