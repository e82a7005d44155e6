use super::*;
use std::path::Path;
use token_store_core::KeySource;

fn parse(u: &str) -> SqliteConfig {
    SqliteConfig::from_url(&StoreUrl::parse(u).unwrap()).unwrap()
}

/// The `Error::Config` message for a URL that must be refused.
fn refused(u: &str) -> String {
    match SqliteConfig::from_url(&StoreUrl::parse(u).unwrap()) {
        Err(Error::Config { message, .. }) => message,
        other => panic!("{u} gave {other:?}, not Error::Config"),
    }
}

/// A 0600 file holding a passphrase, removed on drop.
struct PassphraseFile(PathBuf);

impl PassphraseFile {
    fn new(name: &str) -> Self {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!("{name}-{}.pass", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(b"correct horse battery staple\n").unwrap();
        PassphraseFile(path)
    }
}

impl Drop for PassphraseFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn every_parameter_is_read_with_valid_values() {
    let c = parse(
        "sqlite:///var/lib/app/tokens.db?key_file=/etc/app/tokens.key&timeout_ms=750\
         &busy_timeout_ms=2500&synchronous=normal&max_value_size=65536&sweep_interval_ms=1000",
    );
    assert_eq!(c.path, PathBuf::from("/var/lib/app/tokens.db"));
    assert!(
        matches!(c.common.key, Some(KeySource::KeyFile(ref p)) if p.as_path() == Path::new("/etc/app/tokens.key"))
    );
    assert_eq!(c.common.timeout, Some(Duration::from_millis(750)));
    assert_eq!(c.busy_timeout, Duration::from_millis(2500));
    assert_eq!(c.synchronous, Synchronous::Normal);
    assert_eq!(c.max_value_size, 65536);
    assert_eq!(c.sweep_interval, Duration::from_secs(1));
    assert_eq!(
        parse("sqlite://t.db?synchronous=full").synchronous,
        Synchronous::Full
    );

    // Set for every test process by the workspace's .cargo/config.toml.
    let c = parse("sqlite://t.db?passphrase_env=TOKEN_STORE_FIXTURE_PASSPHRASE");
    assert!(matches!(c.common.key, Some(KeySource::Passphrase(_))));
    let file = PassphraseFile::new("sqlite-config-test");
    let c = parse(&format!(
        "sqlite://t.db?passphrase_file={}",
        file.0.display()
    ));
    assert!(matches!(c.common.key, Some(KeySource::Passphrase(_))));
    // Debug names where the key comes from, never the passphrase.
    let shown = format!("{c:?}");
    assert!(
        shown.contains("Passphrase([REDACTED])") && !shown.contains("correct horse"),
        "{shown}"
    );

    // Defaults: no layer, the documented constants; `~/` is the home directory.
    let c = parse("sqlite://~/tokens.db");
    assert_eq!(
        c.path,
        PathBuf::from(std::env::var_os("HOME").unwrap()).join("tokens.db")
    );
    assert!(c.common.key.is_none() && c.common.timeout.is_none());
    assert_eq!(c.busy_timeout, DEFAULT_BUSY_TIMEOUT);
    assert_eq!(c.synchronous, Synchronous::Full);
    assert_eq!(c.max_value_size, DEFAULT_MAX_VALUE_SIZE);
    assert_eq!(c.sweep_interval, DEFAULT_SWEEP_INTERVAL);
}

#[test]
fn a_mistyped_key_file_is_refused_not_ignored() {
    let message = refused("sqlite:///t.db?key_flie=/path/key");
    assert!(message.contains("`key_flie`"), "{message}");
    assert!(message.contains("key_file"), "{message}");
}

#[test]
fn unknown_duplicated_and_malformed_parameters_are_refused_by_name() {
    for (url, named) in [
        ("sqlite:///t.db?bogus=1", "`bogus`"),
        ("sqlite:///t.db?busy_timeout=5", "`busy_timeout`"),
        ("sqlite:///t.db?prefix=p", "`prefix`"),
        (
            "sqlite:///t.db?synchronous=full&synchronous=normal",
            "`synchronous`",
        ),
        ("sqlite:///t.db?key_file=/a&key_file=/b", "`key_file`"),
        ("sqlite:///t.db?busy_timeout_ms=soon", "`busy_timeout_ms`"),
        ("sqlite:///t.db?busy_timeout_ms=0", "`busy_timeout_ms`"),
        ("sqlite:///t.db?busy_timeout_ms=-1", "`busy_timeout_ms`"),
        ("sqlite:///t.db?timeout_ms=0", "`timeout_ms`"),
        ("sqlite:///t.db?timeout_ms=1.5", "`timeout_ms`"),
        ("sqlite:///t.db?synchronous=off", "`synchronous`"),
        ("sqlite:///t.db?synchronous=", "`synchronous`"),
        ("sqlite:///t.db?max_value_size=lots", "`max_value_size`"),
        ("sqlite:///t.db?max_value_size=0", "`max_value_size`"),
        (
            "sqlite:///t.db?sweep_interval_ms=never",
            "`sweep_interval_ms`",
        ),
        ("sqlite:///t.db?key_file=", "`key_file`"),
        ("sqlite:///t.db?key_file=%zz", "`key_file`"),
        ("sqlite:///t.db?key_file=/k&passphrase_env=V", "key_file"),
        (
            "sqlite:///t.db?passphrase_env=TOKEN_STORE_SQLITE_CONFIG_TEST_UNSET",
            "passphrase_env",
        ),
        (
            "sqlite:///t.db?passphrase_file=/nonexistent/pass",
            "passphrase",
        ),
    ] {
        let message = refused(url);
        assert!(message.contains(named), "{url}: {message}");
    }
}

#[test]
fn other_urls_are_refused() {
    assert!(refused("sqlite://").contains("needs a path"));
    assert!(refused("redis://127.0.0.1:6379").contains("not an sqlite:// URL"));
}

#[test]
fn builders_set_every_field() {
    let c = SqliteConfig::new("/t.db")
        .with_busy_timeout(Duration::from_millis(10))
        .with_synchronous(Synchronous::Normal)
        .with_max_value_size(7)
        .with_sweep_interval(Duration::from_secs(9))
        .with_timeout(Duration::from_secs(3))
        .with_key(KeySource::passphrase("hunter2"));
    assert_eq!(c.busy_timeout, Duration::from_millis(10));
    assert_eq!(c.synchronous, Synchronous::Normal);
    assert_eq!(c.max_value_size, 7);
    assert_eq!(c.sweep_interval, Duration::from_secs(9));
    assert_eq!(c.common.timeout, Some(Duration::from_secs(3)));
    assert!(!format!("{c:?}").contains("hunter2"));
}
