//! Security and robustness of the encrypted file store: damaged and tampered files, wrong
//! keys, file modes, re-keying, no plaintext on disk, KDF parameters, URLs.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{all_files, open, pass, record_files};
use token_store_core::{
    Error, KdfParams, KeyKind, KeySource, ListEntry, ListFilter, Precondition, PutOptions,
    RawStore, Scope, StorageKey, StoreUrl, TokenKey, TokenRecord, TokenStore,
};
use token_store_file::{FileConfig, FileStore};

fn key(n: &str) -> StorageKey {
    TokenKey::new(
        format!("user-{n}"),
        &format!("https://{n}.example/mcp"),
        None,
        ["read"],
    )
    .storage_key()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The record file of `k`, found as the only file a fresh write of `k` changes.
async fn file_of(store: &FileStore, k: &StorageKey) -> std::path::PathBuf {
    let before: Vec<_> = record_files(store.dir())
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    let cur = store.read(k).await.unwrap().unwrap();
    store
        .write(k, &cur.value, &PutOptions::default())
        .await
        .unwrap();
    let changed: Vec<_> = record_files(store.dir())
        .into_iter()
        .filter(|p| {
            before
                .iter()
                .find(|(q, _)| q == p)
                .is_none_or(|(_, b)| *b != std::fs::read(p).unwrap())
        })
        .collect();
    assert_eq!(changed.len(), 1, "one write changed {changed:?}");
    changed[0].clone()
}

fn is_damage(r: &token_store_core::Result<Option<token_store_core::RawRecord>>) -> bool {
    matches!(r, Err(Error::Corrupt { .. } | Error::Integrity { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_fail_only_their_key() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(&tmp.path().join("s"), pass("pw")).await.unwrap();
    let names = [
        "trunc", "empty", "flip", "swap1", "swap2", "foreign", "good",
    ];
    for n in names {
        store
            .write(
                &key(n),
                format!("value-{n}").as_bytes(),
                &PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let mut files = std::collections::HashMap::new();
    for n in names {
        files.insert(n, file_of(&store, &key(n)).await);
    }
    let bytes = |n: &str| std::fs::read(&files[n]).unwrap();
    let len = bytes("trunc").len();
    std::fs::write(&files["trunc"], &bytes("trunc")[..len / 2]).unwrap();
    std::fs::write(&files["empty"], b"").unwrap();
    let mut flipped = bytes("flip");
    flipped[len - 20] ^= 0x04;
    std::fs::write(&files["flip"], &flipped).unwrap();
    let (s1, s2) = (bytes("swap1"), bytes("swap2"));
    std::fs::write(&files["swap1"], &s2).unwrap();
    std::fs::write(&files["swap2"], &s1).unwrap();
    std::fs::write(&files["foreign"], b"{\"access_token\": \"not ours\"}").unwrap();
    let data_dir = files["good"].parent().unwrap().to_owned();
    std::fs::write(data_dir.join("notes.txt"), b"hello").unwrap();
    std::fs::write(data_dir.join("ab".repeat(32)), b"TSF\x01garbage").unwrap();

    for n in ["trunc", "empty", "flip", "swap1", "swap2", "foreign"] {
        let got = store.read(&key(n)).await;
        assert!(is_damage(&got), "{n}: {got:?}");
    }
    assert!(matches!(
        store.read(&key("swap1")).await,
        Err(Error::Integrity { .. })
    ));
    assert!(matches!(
        store.read(&key("empty")).await,
        Err(Error::Corrupt { .. })
    ));
    let good = store.read(&key("good")).await.unwrap().unwrap();
    assert_eq!(good.value.as_slice(), b"value-good");

    // The listing lists what it can and names the rest, by file name only.
    let entries = store
        .scan(KeyKind::Token, &ListFilter::all())
        .await
        .unwrap();
    let keys: Vec<_> = entries
        .iter()
        .filter_map(|e| match e {
            ListEntry::Key(k) => Some(k.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, vec![key("good")]);
    let unreadable: Vec<_> = entries
        .iter()
        .filter_map(|e| match e {
            ListEntry::Unreadable { location, reason } => Some((location.clone(), reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(unreadable.len(), 8, "{unreadable:?}");
    for (location, reason) in &unreadable {
        assert!(!location.contains('/'), "{location}");
        assert!(!reason.contains("not ours"), "{reason}");
    }
    let page = TokenStore::new(store.clone())
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(page.keys.len(), 1);
    assert_eq!(page.unreadable.len(), 8);

    // Conditional operations on a damaged key fail; unconditional ones clear it.
    let cas = store
        .write(&key("flip"), b"x", &PutOptions::new(Precondition::IfAbsent))
        .await;
    assert!(matches!(cas, Err(Error::Integrity { .. })), "{cas:?}");
    store
        .write(&key("flip"), b"repaired", &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store
            .read(&key("flip"))
            .await
            .unwrap()
            .unwrap()
            .value
            .as_slice(),
        b"repaired"
    );
    assert!(
        store
            .remove(&key("trunc"), &Precondition::Any)
            .await
            .unwrap()
    );
    assert!(store.read(&key("trunc")).await.unwrap().is_none());
    // New writes keep working.
    store
        .write(
            &key("new"),
            b"fresh",
            &PutOptions::new(Precondition::IfAbsent),
        )
        .await
        .unwrap();
    // A damaged store still reopens.
    drop(store);
    open(&tmp.path().join("s"), pass("pw")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = open(&dir, pass("right")).await.unwrap();
    store
        .write(&key("a"), b"v", &PutOptions::default())
        .await
        .unwrap();
    drop(store);
    assert!(matches!(
        open(&dir, pass("wrong")).await,
        Err(Error::WrongKey { .. })
    ));
    // A key file for a passphrase store: a clear configuration error.
    let wrong_kind = open(&dir, KeySource::KeyFile(tmp.path().join("k"))).await;
    assert!(
        matches!(wrong_kind, Err(Error::Config { .. })),
        "{wrong_kind:?}"
    );
    let store = open(&dir, pass("right")).await.unwrap();
    assert!(store.read(&key("a")).await.unwrap().is_some());

    // Key files: another 32-byte key is WrongKey, a short file is a Config error.
    let kdir = tmp.path().join("k-store");
    let kf = tmp.path().join("key");
    open(&kdir, KeySource::KeyFile(kf.clone())).await.unwrap();
    assert_eq!(mode(&kf), 0o600);
    assert_eq!(std::fs::read(&kf).unwrap().len(), 32);
    let other = tmp.path().join("other-key");
    common::write_private(&other, &[9u8; 32]);
    assert!(matches!(
        open(&kdir, KeySource::KeyFile(other.clone())).await,
        Err(Error::WrongKey { .. })
    ));
    common::write_private(&other, &[9u8; 5]);
    assert!(matches!(
        open(&kdir, KeySource::KeyFile(other)).await,
        Err(Error::Config { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_are_private_and_open_dirs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/s");
    let store = open(&dir, pass("pw")).await.unwrap();
    store
        .write(&key("a"), b"v", &PutOptions::default())
        .await
        .unwrap();
    store
        .write(
            &key("b"),
            b"v",
            &PutOptions::default().with_ttl(Some(Duration::from_secs(60))),
        )
        .await
        .unwrap();
    assert_eq!(mode(&dir), 0o700);
    let mut dirs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            dirs += 1;
            assert_eq!(mode(&p), 0o700, "{p:?}");
        }
    }
    assert_eq!(dirs, 1);
    let files = all_files(&dir);
    assert_eq!(files.len(), 4, "{files:?}"); // .lock, store.json, two records
    for f in files {
        assert_eq!(mode(&f), 0o600, "{f:?}");
    }
    drop(store);

    // A store directory others can write is refused, new or existing.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = open(&dir, pass("pw")).await;
    assert!(
        matches!(refused, Err(Error::PermissionDenied { .. })),
        "{refused:?}"
    );
    let open_dir = tmp.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(matches!(
        open(&open_dir, pass("pw")).await,
        Err(Error::PermissionDenied { .. })
    ));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    open(&dir, pass("pw")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_reaches_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = open(&dir, pass("pw")).await.unwrap();
    let k = TokenKey::new(
        "alice@corp-secretive.example",
        "https://mcp.hidden-server.example/mcp",
        Some("https://issuer-hidden.example"),
        ["scope-hidden"],
    );
    let rec =
        TokenRecord::new("ACCESS-PLAINTEXT-eyJhbGciOi").with_refresh_token("REFRESH-PLAINTEXT");
    TokenStore::new(store.clone())
        .put(&k, &rec, Precondition::Any)
        .await
        .unwrap();
    store
        .write(&key("z"), b"RAW-PLAINTEXT", &PutOptions::default())
        .await
        .unwrap();
    let needles: [&[u8]; 7] = [
        b"ACCESS-PLAINTEXT",
        b"REFRESH-PLAINTEXT",
        b"RAW-PLAINTEXT",
        b"hidden-server",
        b"corp-secretive",
        b"issuer-hidden",
        b"scope-hidden",
    ];
    let mut checked = 0;
    for f in all_files(&dir) {
        let bytes = std::fs::read(&f).unwrap();
        let name = f.to_string_lossy().into_owned();
        for n in needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n),
                "{f:?} holds plaintext"
            );
            assert!(!name.as_bytes().windows(n.len()).any(|w| w == n), "{name}");
        }
        checked += 1;
    }
    assert!(checked >= 4);
    // And the header says how the key is derived, and nothing secret.
    let header = store.key_header().await.unwrap();
    assert_eq!(header.kdf, "argon2id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_switches_keys_and_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = open(&dir, pass("old")).await.unwrap();
    let mut versions = Vec::new();
    for n in 0..20 {
        let v = store
            .write(
                &key(&n.to_string()),
                format!("v{n}").as_bytes(),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        versions.push(v);
    }
    store
        .write(
            &key("short"),
            b"gone",
            &PutOptions::default().with_ttl(Some(Duration::from_millis(1))),
        )
        .await
        .unwrap();
    let stale = open(&dir, pass("old")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    assert_eq!(store.rekey(pass("new")).await.unwrap(), 20);
    // The same handle goes on, versions kept.
    for (n, version) in versions.iter().enumerate() {
        let got = store.read(&key(&n.to_string())).await.unwrap().unwrap();
        assert_eq!(got.value.as_slice(), format!("v{n}").as_bytes());
        assert_eq!(got.version, *version);
    }
    store
        .write(
            &key("0"),
            b"after",
            &PutOptions::new(Precondition::IfVersion(versions[0].clone())),
        )
        .await
        .unwrap();
    // A handle opened with the old key fails loudly rather than reading stale data.
    assert!(matches!(
        stale.read(&key("1")).await,
        Err(Error::WrongKey { .. })
    ));
    assert!(matches!(
        stale.write(&key("1"), b"x", &PutOptions::default()).await,
        Err(Error::WrongKey { .. })
    ));
    assert!(matches!(
        stale.scan(KeyKind::Token, &ListFilter::all()).await,
        Err(Error::WrongKey { .. })
    ));
    drop((store, stale));
    // One record directory is left, the old one is gone.
    let dirs = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(dirs, 1);
    assert!(matches!(
        open(&dir, pass("old")).await,
        Err(Error::WrongKey { .. })
    ));
    let store = open(&dir, pass("new")).await.unwrap();
    assert_eq!(
        store
            .read(&key("0"))
            .await
            .unwrap()
            .unwrap()
            .value
            .as_slice(),
        b"after"
    );
    assert_eq!(
        store
            .scan(KeyKind::Token, &ListFilter::all())
            .await
            .unwrap()
            .len(),
        20
    );

    // To a key file and back to a passphrase.
    let kf = tmp.path().join("key");
    store.rekey(KeySource::KeyFile(kf.clone())).await.unwrap();
    drop(store);
    assert!(open(&dir, pass("new")).await.is_err());
    let store = open(&dir, KeySource::KeyFile(kf)).await.unwrap();
    assert_eq!(
        store
            .read(&key("5"))
            .await
            .unwrap()
            .unwrap()
            .value
            .as_slice(),
        b"v5"
    );

    // A damaged record stops a re-key before anything changes.
    let f = file_of(&store, &key("7")).await;
    std::fs::write(&f, b"junk").unwrap();
    let refused = store.rekey(pass("third")).await;
    assert!(matches!(refused, Err(Error::Corrupt { .. })), "{refused:?}");
    assert_eq!(
        store
            .read(&key("5"))
            .await
            .unwrap()
            .unwrap()
            .value
            .as_slice(),
        b"v5"
    );
    store.remove(&key("7"), &Precondition::Any).await.unwrap();
    assert_eq!(store.rekey(pass("third")).await.unwrap(), 19);
    drop(store);
    let store = open(&dir, pass("third")).await.unwrap();
    assert_eq!(
        store
            .read(&key("5"))
            .await
            .unwrap()
            .unwrap()
            .value
            .as_slice(),
        b"v5"
    );
}

/// A handle that has already read `store.json` (and keeps what it read) still notices every
/// change to it: a re-key by another handle, even one back to the same key, a header
/// removed, a header edited in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_notices_header_changes_after_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let kf = tmp.path().join("k");
    let store = open(&dir, KeySource::KeyFile(kf.clone())).await.unwrap();
    store
        .write(&key("a"), b"v", &PutOptions::default())
        .await
        .unwrap();
    let header_path = dir.join("store.json");
    let header = std::fs::read(&header_path).unwrap();

    // Removed: every operation is Corrupt, nothing is created, and putting the same header
    // back (as a new file) makes the handle work again.
    std::fs::remove_file(&header_path).unwrap();
    assert!(matches!(
        store.read(&key("a")).await,
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        store.read(&key("missing")).await,
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        store.write(&key("b"), b"x", &PutOptions::default()).await,
        Err(Error::Corrupt { .. })
    ));
    assert!(!header_path.exists());
    std::fs::write(&header_path, &header).unwrap();
    assert_eq!(
        store
            .read(&key("a"))
            .await
            .unwrap()
            .unwrap()
            .value
            .as_slice(),
        b"v"
    );

    // Edited in place (same inode) to name another record directory: noticed.
    let mut edited: serde_json::Value = serde_json::from_slice(&header).unwrap();
    edited["records"] = format!("d-{}", "0".repeat(32)).into();
    std::fs::write(&header_path, serde_json::to_vec_pretty(&edited).unwrap()).unwrap();
    assert!(matches!(
        store.read(&key("a")).await,
        Err(Error::WrongKey { .. })
    ));
    std::fs::write(&header_path, &header).unwrap();
    assert!(store.read(&key("a")).await.unwrap().is_some());

    // Re-keyed twice by another handle, back to the same key: the old records directory is
    // gone, so this handle must fail rather than read nothing.
    let other = open(&dir, KeySource::KeyFile(kf.clone())).await.unwrap();
    let kf2 = tmp.path().join("k2");
    other.rekey(KeySource::KeyFile(kf2)).await.unwrap();
    other.rekey(KeySource::KeyFile(kf.clone())).await.unwrap();
    assert!(matches!(
        store.read(&key("a")).await,
        Err(Error::WrongKey { .. })
    ));
    assert!(matches!(
        store.read(&key("missing")).await,
        Err(Error::WrongKey { .. })
    ));
    assert!(matches!(
        store.write(&key("a"), b"x", &PutOptions::default()).await,
        Err(Error::WrongKey { .. })
    ));
    assert!(matches!(
        store.scan(KeyKind::Token, &ListFilter::all()).await,
        Err(Error::WrongKey { .. })
    ));
    assert_eq!(
        other
            .read(&key("a"))
            .await
            .unwrap()
            .unwrap()
            .value
            .as_slice(),
        b"v"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_is_kept_across_reopen_and_swept_by_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let store = open(&dir, pass("pw")).await.unwrap();
    let opts = PutOptions::default().with_ttl(Some(Duration::from_millis(300)));
    store.write(&key("t"), b"v", &opts).await.unwrap();
    let got = store.read(&key("t")).await.unwrap().unwrap();
    assert!(got.expires_at.is_some());
    drop(store);
    let store = open(&dir, pass("pw")).await.unwrap();
    assert!(store.read(&key("t")).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.read(&key("t")).await.unwrap().is_none());
    assert_eq!(record_files(&dir).len(), 1);
    assert!(
        store
            .scan(KeyKind::Token, &ListFilter::all())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(record_files(&dir).len(), 0, "scan did not sweep");
}

/// Records and their versions survive a reopen (the suite checks this too; kept here beside
/// the other on-disk tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_versions_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let k = TokenKey::for_server("https://mcp.example.com/mcp");
    let mut rec = TokenRecord::new("at").with_refresh_token("rt");
    rec.obtained_at = 1_700_000_000.5;
    let store = open(&dir, pass("pw")).await.unwrap();
    let v = TokenStore::new(store)
        .put(&k, &rec, Precondition::Any)
        .await
        .unwrap();
    let store = TokenStore::new(open(&dir, pass("pw")).await.unwrap());
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!(got.value, rec);
    assert_eq!(got.version, v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_kdf_params_meet_the_minimum_and_are_recorded() {
    let min = KdfParams::MINIMUM;
    let def = KdfParams::DEFAULT;
    assert!(def.m_kib >= min.m_kib && def.t >= min.t && def.p >= min.p);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let started = Instant::now();
    let store = FileStore::open(&FileConfig::new(&dir, pass("pw")))
        .await
        .unwrap();
    println!(
        "Argon2id with the default parameters: {:?}",
        started.elapsed()
    );
    let header = store.key_header().await.unwrap();
    assert_eq!(header.kdf, "argon2id");
    assert_eq!(header.params, Some(def));
    assert_eq!(header.salt.as_ref().unwrap().len(), 32);
    // The same, as the documented file says it.
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("store.json")).unwrap()).unwrap();
    assert_eq!(file["magic"], "token-store-file");
    assert_eq!(file["format"], 1);
    assert_eq!(file["key"]["kdf"], "argon2id");
    assert_eq!(file["key"]["params"]["m_kib"], def.m_kib);
    assert_eq!(file["key"]["params"]["t"], def.t);
    assert!(dir.join(file["records"].as_str().unwrap()).is_dir());
    // Weak or excessive parameters are refused before anything is created.
    let weak = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    for (name, params) in [("w", weak), ("x", KdfParams { t: 64, ..def })] {
        let dir = tmp.path().join(name);
        let refused =
            FileStore::open(&FileConfig::new(&dir, pass("pw")).with_kdf_params(params)).await;
        assert!(matches!(refused, Err(Error::Config { .. })), "{refused:?}");
        assert!(!dir.exists());
    }
    FileStore::open(
        &FileConfig::new(
            tmp.path().join("m"),
            KeySource::KeyFile(tmp.path().join("k")),
        )
        .with_kdf_params(min),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls() {
    let tmp = tempfile::tempdir().unwrap();
    let kf = tmp.path().join("url.key");
    let u = format!(
        "file://{}?key_file={}",
        tmp.path().join("a").display(),
        kf.display()
    );
    let store = token_store_file::open_url(&StoreUrl::parse(&u).unwrap())
        .await
        .unwrap();
    assert_eq!(store.backend(), "file");
    let caps = store.capabilities();
    assert!(caps.ttl && caps.encrypted_at_rest && caps.persistent);
    assert_eq!((caps.shared_with, caps.cas), (Scope::Host, Scope::Host));
    assert_eq!(caps.max_value_size, token_store_file::MAX_VALUE_SIZE);
    assert_eq!(caps.max_value_size, 1024 * 1024);
    let store = store.raw().clone();
    store
        .write(&key("u"), b"v", &PutOptions::default())
        .await
        .unwrap();
    drop(store);
    let again = token_store_file::open_url(&StoreUrl::parse(&u).unwrap())
        .await
        .unwrap();
    assert!(again.raw().read(&key("u")).await.unwrap().is_some());

    let bad = |u: String| async move {
        token_store_file::open_url(&StoreUrl::parse(&u).unwrap())
            .await
            .unwrap_err()
    };
    let unset = bad(format!(
        "file://{}?passphrase_env=TOKEN_STORE_FILE_TEST_SURELY_UNSET",
        tmp.path().join("b").display()
    ))
    .await;
    assert!(
        matches!(&unset, Error::Config { message, .. } if message.contains("TOKEN_STORE_FILE_TEST_SURELY_UNSET")),
        "{unset}"
    );
    let unknown = bad(format!("file://{}?key=x", tmp.path().join("b").display())).await;
    assert!(matches!(unknown, Error::Config { .. }), "{unknown}");
    if KeySource::from_env().is_none() {
        let none = bad(format!("file://{}", tmp.path().join("c").display())).await;
        assert!(
            matches!(&none, Error::Config { message, .. } if message.contains("key_file") && message.contains("TOKEN_STORE_PASSPHRASE")),
            "{none}"
        );
        assert!(!tmp.path().join("c").join("store.json").exists());
    }
}
