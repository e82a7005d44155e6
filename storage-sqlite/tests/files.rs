//! The database file itself: permissions, corrupt and foreign files, schema versions, a
//! locked database, URLs and the encryption switch, expiry sweeping, reopening.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use token_store_core::{
    Error, KeyKind, ListEntry, ListFilter, Precondition, PutOptions, RawStore, StorageKey,
    StoreUrl, TokenKey, TokenRecord, TokenStore,
};
use token_store_sqlite::{SCHEMA_VERSION, SqliteConfig, SqliteStore, open_url};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn meta_key(name: &str) -> StorageKey {
    StorageKey::single(KeyKind::Meta, name).unwrap()
}

fn url(s: String) -> StoreUrl {
    StoreUrl::parse(&s).unwrap()
}

#[tokio::test]
async fn directory_is_0700_and_database_wal_shm_are_0600() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a").join("b");
    let db = dir.join("tokens.db");
    let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
    store
        .write(&meta_key("x"), b"v", &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(mode(&dir), 0o700, "directory mode");
    assert_eq!(mode(&db), 0o600, "database mode");
    for suffix in ["-wal", "-shm"] {
        let side = dir.join(format!("tokens.db{suffix}"));
        assert!(side.exists(), "{suffix} missing: not in WAL mode?");
        assert_eq!(mode(&side), 0o600, "{suffix} mode");
    }
}

#[tokio::test]
async fn existing_open_files_and_directories_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let db = dir.join("tokens.db");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    match SqliteStore::open(&SqliteConfig::new(&db)).await {
        Err(Error::PermissionDenied { message, .. }) => assert!(message.contains("chmod 600")),
        other => panic!("a world-readable database file gave {other:?}"),
    }
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    match SqliteStore::open(&SqliteConfig::new(&db)).await {
        Err(Error::PermissionDenied { .. }) => {}
        other => panic!("a world-writable directory gave {other:?}"),
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_typed_error() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("tokens.db");
    let mut garbage = b"this is a text file, not an SQLite database\n".repeat(200);
    garbage.extend((0..5000u32).map(|i| (i * 7 % 251) as u8));
    std::fs::write(&db, &garbage).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    match SqliteStore::open(&SqliteConfig::new(&db)).await {
        Err(e @ Error::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(text.contains("not an SQLite database"), "{text}");
            assert!(text.contains("tokens.db"), "{text}");
        }
        other => panic!("garbage gave {other:?}"),
    }
    // The garbage is left alone.
    assert_eq!(std::fs::read(&db).unwrap(), garbage);
}

#[tokio::test]
async fn a_damaged_database_gives_typed_errors_not_panics() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("tokens.db");
    {
        let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
        for n in 0..200 {
            let key = TokenKey::for_server(&format!("https://s{n}.example")).storage_key();
            store
                .write(&key, &vec![n as u8; 3000], &PutOptions::default())
                .await
                .unwrap();
        }
    }
    // Move everything from the WAL into the main file, so the damage below hits the data.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(busy, 0, "checkpoint blocked");
    }
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 64 * 1024);
    // Overwrite the pages after the first two with noise (b-tree pages of the table/index).
    for (i, b) in bytes[8192..].iter_mut().enumerate() {
        *b = (i.wrapping_mul(131) % 256) as u8;
    }
    std::fs::write(&db, &bytes).unwrap();
    let outcome = async {
        let store = SqliteStore::open(&SqliteConfig::new(&db)).await?;
        store.scan(KeyKind::Token, &ListFilter::all()).await?;
        let key = TokenKey::for_server("https://s7.example").storage_key();
        store.read(&key).await?;
        store
            .write(&key, b"new", &PutOptions::default())
            .await
            .map(|_| ())
    }
    .await;
    match outcome {
        Err(e @ (Error::Corrupt { .. } | Error::Backend { .. })) => println!("damaged: {e}"),
        other => panic!("a damaged database gave {other:?}"),
    }
}

#[tokio::test]
async fn a_database_of_another_application_is_refused_untouched() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("other.db");
    token_store_core::backend::fs::create_private_file(&db).unwrap();
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
            .unwrap();
    }
    match SqliteStore::open(&SqliteConfig::new(&db)).await {
        Err(Error::Config { message, .. }) => {
            assert!(message.contains("another application"), "{message}")
        }
        other => panic!("a foreign database gave {other:?}"),
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "the foreign database was changed");
    let journal: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(
        journal, "delete",
        "the foreign database was switched to WAL"
    );
}

#[tokio::test]
async fn a_newer_schema_is_a_clear_config_error() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("tokens.db");
    drop(SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap());
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let v: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    match SqliteStore::open(&SqliteConfig::new(&db)).await {
        Err(Error::Config { message, .. }) => {
            assert!(message.contains("schema version 2"), "{message}");
            assert!(message.contains("upgrade"), "{message}");
        }
        other => panic!("a newer schema gave {other:?}"),
    }
}

#[tokio::test]
async fn a_lock_held_past_the_busy_timeout_is_unavailable_then_clears() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("tokens.db");
    let config = SqliteConfig::new(&db).with_busy_timeout(Duration::from_millis(300));
    let store = SqliteStore::open(&config).await.unwrap();
    let key = meta_key("busy");
    store
        .write(&key, b"before", &PutOptions::default())
        .await
        .unwrap();
    // Another connection (as another process would) takes the write lock and keeps it.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    match store.write(&key, b"during", &PutOptions::default()).await {
        Err(e @ Error::Unavailable { .. }) => {
            assert!(e.is_retryable());
            assert!(!e.to_string().contains("database is locked"), "{e}");
        }
        other => panic!("a write against a held lock gave {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "gave up after {waited:?}"
    );
    // WAL: readers are not blocked by the writer.
    let got = store.read(&key).await.unwrap().unwrap();
    assert_eq!(&got.value[..], b"before");
    holder.execute_batch("ROLLBACK").unwrap();
    store
        .write(&key, b"after", &PutOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lock_released_within_the_busy_timeout_is_waited_for() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("tokens.db");
    let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
    let db2 = db.clone();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db2).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::sleep(Duration::from_millis(800));
        conn.execute_batch("COMMIT").unwrap();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    store
        .write(&meta_key("waited"), b"v", &PutOptions::default())
        .await
        .unwrap();
    holder.join().unwrap();
}

#[tokio::test]
async fn versions_never_repeat_across_delete_and_reopen() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("tokens.db");
    let key = meta_key("aba");
    let first = {
        let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
        let v = store
            .write(&key, b"1", &PutOptions::new(Precondition::IfAbsent))
            .await
            .unwrap();
        assert!(store.remove(&key, &Precondition::Any).await.unwrap());
        v
    };
    let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
    let second = store
        .write(&key, b"2", &PutOptions::new(Precondition::IfAbsent))
        .await
        .unwrap();
    assert_ne!(first, second);
    match store
        .write(
            &key,
            b"stale",
            &PutOptions::new(Precondition::IfVersion(first)),
        )
        .await
    {
        Err(Error::Conflict { current, .. }) => assert_eq!(current, Some(second)),
        other => panic!("a stale CAS after re-create gave {other:?}"),
    }
}

#[tokio::test]
async fn a_record_survives_reopen_with_its_version() {
    // The suite's persistence case compares against a second `full_record` (a new
    // `obtained_at`); this checks the same property with one record.
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("tokens.db");
    let key = TokenKey::for_server("https://mcp.example.com/mcp");
    let record = TokenRecord::new("access-p").with_refresh_token("refresh-p");
    let v = {
        let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
        TokenStore::new(store)
            .put(&key, &record, Precondition::Any)
            .await
            .unwrap()
    };
    let store = TokenStore::new(SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap());
    let got = store.get(&key).await.unwrap().unwrap();
    assert_eq!(got.value, record);
    assert_eq!(got.version, v);
}

#[tokio::test]
async fn expired_rows_are_absent_and_swept() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("tokens.db");
    let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
    store
        .write(&meta_key("keep"), b"x", &PutOptions::default())
        .await
        .unwrap();
    let short = PutOptions::default().with_ttl(Some(Duration::from_millis(50)));
    for n in 1..5 {
        store
            .write(&meta_key(&format!("t{n}")), b"x", &short)
            .await
            .unwrap();
    }
    // Written last and read at once, with room for a loaded machine's fsyncs.
    let ttl = Duration::from_millis(400);
    store
        .write(
            &meta_key("t0"),
            b"x",
            &PutOptions::default().with_ttl(Some(ttl)),
        )
        .await
        .unwrap();
    let got = store.read(&meta_key("t0")).await.unwrap().unwrap();
    assert!(got.expires_at.is_some());
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(store.read(&meta_key("t0")).await.unwrap().is_none());
    // A CAS against the expired record's own version fails: it is absent.
    match store
        .write(
            &meta_key("t0"),
            b"y",
            &PutOptions::new(Precondition::IfVersion(got.version.clone())),
        )
        .await
    {
        Err(Error::Conflict { current: None, .. }) => {}
        other => panic!("CAS on an expired record gave {other:?}"),
    }
    // So does a conditional delete, which leaves the row to the sweep.
    match store
        .remove(&meta_key("t0"), &Precondition::IfVersion(got.version))
        .await
    {
        Err(Error::Conflict { current: None, .. }) => {}
        other => panic!("a conditional delete of an expired record gave {other:?}"),
    }
    let listed = store.scan(KeyKind::Meta, &ListFilter::all()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    // The listing met expired rows and deleted them.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn an_expired_row_of_another_kind_leaves_a_listing_exact_and_is_swept() {
    // A listing reads the key index only, and rereads with each row's expiry when any row
    // of the table has expired: both paths must list exactly the live keys.
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("tokens.db");
    let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
    let long = PutOptions::default().with_ttl(Some(Duration::from_secs(3600)));
    store
        .write(&meta_key("plain"), b"x", &PutOptions::default())
        .await
        .unwrap();
    store.write(&meta_key("ttl"), b"x", &long).await.unwrap();
    let names = |entries: Vec<ListEntry>| {
        let mut names: Vec<String> = entries
            .into_iter()
            .map(|e| match e {
                ListEntry::Key(k) => k.parts()[0].clone(),
                other => panic!("unreadable entry {other:?}"),
            })
            .collect();
        names.sort();
        names
    };
    let listed = store.scan(KeyKind::Meta, &ListFilter::all()).await.unwrap();
    assert_eq!(names(listed), ["plain", "ttl"]);

    let state = StorageKey::single(KeyKind::State, "pkce").unwrap();
    let short = PutOptions::default().with_ttl(Some(Duration::from_millis(50)));
    store.write(&state, b"s", &short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let listed = store.scan(KeyKind::Meta, &ListFilter::all()).await.unwrap();
    assert_eq!(names(listed), ["plain", "ttl"]);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT count(*) FROM records WHERE kind = 'state'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0, "the expired state was not swept");
    assert!(
        store
            .scan(KeyKind::State, &ListFilter::all())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn urls_open_plain_and_encrypted_stores() {
    let root = tempfile::tempdir().unwrap();
    let plain_db = root.path().join("plain").join("tokens.db");
    let enc_db = root.path().join("enc").join("tokens.db");
    let key_file = root.path().join("keys").join("store.key");
    let key = TokenKey::for_server("https://mcp.example.com/mcp");
    let record = TokenRecord::new("SECRET-ACCESS-TOKEN");

    let plain = open_url(&url(format!("sqlite://{}", plain_db.display())))
        .await
        .unwrap();
    assert!(!plain.capabilities().encrypted_at_rest);
    plain.put(&key, &record, Precondition::Any).await.unwrap();
    let raw = plain.raw().read(&key.storage_key()).await.unwrap().unwrap();
    assert!(raw.value.windows(19).any(|w| w == b"SECRET-ACCESS-TOKEN"));
    // A key cannot be turned on over plaintext records.
    match open_url(&url(format!(
        "sqlite://{}?key_file={}",
        plain_db.display(),
        key_file.display()
    )))
    .await
    {
        Err(Error::Config { message, .. }) => assert!(message.contains("unencrypted"), "{message}"),
        other => panic!("a key over plaintext gave {other:?}"),
    }

    let enc_url = url(format!(
        "sqlite://{}?key_file={}&busy_timeout_ms=2000&synchronous=normal",
        enc_db.display(),
        key_file.display()
    ));
    let enc = open_url(&enc_url).await.unwrap();
    assert!(enc.capabilities().encrypted_at_rest);
    enc.put(&key, &record, Precondition::Any).await.unwrap();
    drop(enc);
    assert_eq!(mode(&key_file), 0o600);
    // Only ciphertext reaches the file.
    let raw_store = SqliteStore::open(&SqliteConfig::new(&enc_db))
        .await
        .unwrap();
    let raw = raw_store.read(&key.storage_key()).await.unwrap().unwrap();
    assert!(!raw.value.windows(19).any(|w| w == b"SECRET-ACCESS-TOKEN"));
    drop(raw_store);
    // Reopened with the key, it reads; without it, it is a clear error.
    let again = open_url(&enc_url).await.unwrap();
    let got = again.get(&key).await.unwrap().unwrap();
    assert_eq!(got.value.access_token.expose(), "SECRET-ACCESS-TOKEN");
    match open_url(&url(format!("sqlite://{}", enc_db.display()))).await {
        Err(Error::Config { message, .. }) => assert!(message.contains("encrypted"), "{message}"),
        other => panic!("an encrypted store without a key gave {other:?}"),
    }
}

#[tokio::test]
async fn passphrase_env_url_encrypts_and_a_wrong_passphrase_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("tokens.db");
    // Both set for every test process by the workspace's .cargo/config.toml.
    let var = "TOKEN_STORE_FIXTURE_PASSPHRASE";
    let other = "TOKEN_STORE_FIXTURE_WRONG_PASSPHRASE";
    let u = url(format!("sqlite://{}?passphrase_env={var}", db.display()));
    let store = open_url(&u).await.unwrap();
    assert!(store.capabilities().encrypted_at_rest);
    let key = TokenKey::for_server("https://mcp.example.com/mcp");
    store
        .put(&key, &TokenRecord::new("t"), Precondition::Any)
        .await
        .unwrap();
    drop(store);
    let wrong = url(format!("sqlite://{}?passphrase_env={other}", db.display()));
    assert!(matches!(
        open_url(&wrong).await,
        Err(Error::WrongKey { .. })
    ));
    let text = match open_url(&url(format!(
        "sqlite://{}?passphrase_env=TOKEN_STORE_SQLITE_TEST_UNSET",
        db.display()
    )))
    .await
    {
        Err(e @ Error::Config { .. }) => e.to_string(),
        other => panic!("an unset passphrase variable gave {other:?}"),
    };
    assert!(text.contains("TOKEN_STORE_SQLITE_TEST_UNSET"), "{text}");
    assert!(!text.contains("correct horse"), "{text}");
}

#[tokio::test]
async fn bad_urls_are_config_errors() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("tokens.db").display().to_string();
    for bad in [
        format!("sqlite://{db}?keyfile=/k"),
        format!("sqlite://{db}?key_file=/k&passphrase_env=X"),
        format!("sqlite://{db}?busy_timeout_ms=soon"),
        format!("sqlite://{db}?synchronous=off"),
        "sqlite://".to_owned(),
        "redis://localhost".to_owned(),
    ] {
        match open_url(&url(bad.clone())).await {
            Err(Error::Config { .. }) => {}
            other => panic!("{bad} gave {other:?}"),
        }
    }
}

#[tokio::test]
async fn debug_shows_the_path_and_no_values() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("tokens.db");
    let store = SqliteStore::open(&SqliteConfig::new(&db)).await.unwrap();
    let text = format!("{store:?}");
    assert!(
        text.contains("tokens.db") && text.contains("busy_timeout"),
        "{text}"
    );
}
