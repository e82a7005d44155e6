//! The `file://` URL grammar and [`FileConfig`]: every parameter accepted with valid values;
//! unknown, duplicated and malformed parameters refused with `Error::Config` naming the
//! parameter; a config's `Debug` never shows a passphrase; the config builders.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use token_store_core::{
    Error, KdfParams, KeyKind, KeySource, PutOptions, RawStore, StorageKey, StoreUrl,
};
use token_store_file::{FileConfig, FileStore};

fn parse(url: &str) -> token_store_core::Result<FileConfig> {
    FileConfig::from_url(&StoreUrl::parse(url)?)
}

fn config_error(url: &str) -> String {
    match parse(url) {
        Err(e @ Error::Config { .. }) => e.to_string(),
        other => panic!("{url}: {other:?}"),
    }
}

/// A variable that is set wherever tests run, to stand for a passphrase variable without
/// changing the environment (`set_var` is unsafe in a multi-threaded test binary).
const SET_VAR: &str = "PATH";

#[test]
fn every_parameter_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let pass_file = tmp.path().join("pass");
    common::write_private(&pass_file, b"  a passphrase from a file \n");
    let key_file = tmp.path().join("k");

    let c = parse(&format!(
        "file://{}?key_file={}&timeout_ms=250",
        dir.display(),
        key_file.display()
    ))
    .unwrap();
    assert_eq!(c.dir, dir);
    assert!(matches!(&c.common.key, Some(KeySource::KeyFile(p)) if *p == key_file));
    assert_eq!(c.common.timeout, Some(Duration::from_millis(250)));
    assert_eq!(c.kdf_params, KdfParams::DEFAULT);

    let c = parse(&format!(
        "file://{}?passphrase_file={}",
        dir.display(),
        pass_file.display()
    ))
    .unwrap();
    assert!(matches!(&c.common.key, Some(KeySource::Passphrase(_))));
    assert_eq!(c.common.timeout, None);

    let c = parse(&format!(
        "file://{}?passphrase_env={SET_VAR}",
        dir.display()
    ))
    .unwrap();
    assert!(matches!(&c.common.key, Some(KeySource::Passphrase(_))));

    // No parameter: the key comes from the environment when the store opens.
    let c = parse(&format!("file://{}", dir.display())).unwrap();
    assert!(c.common.key.is_none());

    // `~/` and percent-encoding in the path and in path parameters.
    let c = parse("file://~/tok%20ens?key_file=~/k").unwrap();
    let home = std::path::PathBuf::from(std::env::var_os("HOME").unwrap());
    assert_eq!(c.dir, home.join("tok ens"));
    assert!(matches!(&c.common.key, Some(KeySource::KeyFile(p)) if *p == home.join("k")));
}

#[test]
fn unknown_duplicated_and_malformed_parameters_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("s");
    let d = d.display();
    let k = tmp.path().join("k");
    let k = k.display();
    let cases = [
        (format!("file://{d}?key=x"), "`key`"),
        (format!("file://{d}?key_file={k}&prefix=p"), "`prefix`"),
        (format!("file://{d}?key_flie={k}"), "`key_flie`"),
        (
            format!("file://{d}?key_file={k}&key_file={k}"),
            "`key_file`",
        ),
        (
            format!("file://{d}?timeout_ms=1&timeout_ms=2"),
            "`timeout_ms`",
        ),
        (format!("file://{d}?timeout_ms=abc"), "`timeout_ms`"),
        (format!("file://{d}?timeout_ms=0"), "`timeout_ms`"),
        (format!("file://{d}?timeout_ms=-5"), "`timeout_ms`"),
        (format!("file://{d}?key_file="), "`key_file`"),
        (format!("file://{d}?passphrase_file="), "`passphrase_file`"),
        (format!("file://{d}?passphrase_env="), "`passphrase_env`"),
        (format!("file://{d}?key_file=%zz"), "`key_file`"),
        (
            format!("file://{d}?passphrase_env=TOKEN_STORE_FILE_TEST_SURELY_UNSET"),
            "TOKEN_STORE_FILE_TEST_SURELY_UNSET",
        ),
        (
            format!("file://{d}?key_file={k}&passphrase_env={SET_VAR}"),
            "one of key_file, passphrase_file and passphrase_env",
        ),
    ];
    for (url, named) in cases {
        let message = config_error(&url);
        assert!(message.contains(named), "{url}: {message}");
    }
    // The known parameters are listed for an unknown one.
    let message = config_error(&format!("file://{d}?color=blue"));
    for known in [
        "key_file",
        "passphrase_file",
        "passphrase_env",
        "timeout_ms",
    ] {
        assert!(message.contains(known), "{message}");
    }
    // Not a file:// URL.
    let message = config_error("sqlite:///tmp/x.db");
    assert!(message.contains("file://"), "{message}");
    assert!(parse("file://").is_err());
}

#[test]
fn debug_never_shows_a_passphrase() {
    let c = FileConfig::new(
        "/srv/tokens",
        KeySource::passphrase("hunter2-the-passphrase"),
    )
    .with_timeout(Duration::from_secs(3));
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("/srv/tokens"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builders_and_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let key_file = tmp.path().join("k");
    let config = FileConfig::new(&dir, KeySource::passphrase("unused"))
        .with_key(KeySource::KeyFile(key_file.clone()))
        .with_timeout(Duration::from_secs(5))
        .with_kdf_params(KdfParams::MINIMUM);
    assert!(matches!(&config.common.key, Some(KeySource::KeyFile(p)) if *p == key_file));
    assert_eq!(config.common.timeout, Some(Duration::from_secs(5)));
    assert_eq!(config.kdf_params, KdfParams::MINIMUM);

    // The handle (under the time limit layer) and the raw store open the same records.
    let store = token_store_file::open(config.clone()).await.unwrap();
    assert_eq!(store.backend(), "file");
    let k = StorageKey::single(KeyKind::Meta, "k").unwrap();
    store
        .raw()
        .write(&k, b"v", &PutOptions::default())
        .await
        .unwrap();
    drop(store);
    let raw = FileStore::open(&config).await.unwrap();
    assert_eq!(raw.dir(), dir);
    assert_eq!(raw.read(&k).await.unwrap().unwrap().value.as_slice(), b"v");

    // From a URL with every parameter.
    let url = format!(
        "file://{}?key_file={}&timeout_ms=5000",
        dir.display(),
        key_file.display()
    );
    let store = token_store_file::open_url(&StoreUrl::parse(&url).unwrap())
        .await
        .unwrap();
    assert!(store.raw().read(&k).await.unwrap().is_some());
}
