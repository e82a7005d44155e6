use super::*;
use token_store_core::Error;

fn parse(u: &str) -> RedisConfig {
    RedisConfig::from_url(&StoreUrl::parse(u).unwrap()).unwrap()
}

/// The `Error::Config` message for a URL that must be refused.
fn refused(u: &str) -> String {
    match RedisConfig::from_url(&StoreUrl::parse(u).unwrap()) {
        Err(Error::Config { message, .. }) => message,
        other => panic!("{u} gave {other:?}, not Error::Config"),
    }
}

#[test]
fn every_parameter_is_read_with_valid_values() {
    let dir = std::env::temp_dir();
    let key_file = dir.join("redis-config-test.key");
    let c = parse(&format!(
        "rediss://:hunter2@localhost:6380/2?prefix=p:q&ca=/ca.pem&cert=/c.pem&key=/k.pem\
         &timeout_ms=700&connect_timeout_ms=300&response_timeout_ms=400\
         &max_value_size=4096&key_file={}",
        key_file.display()
    ));
    assert_eq!(
        c.topology,
        Topology::Standalone {
            url: "rediss://:hunter2@localhost:6380/2".into()
        }
    );
    assert_eq!(c.prefix, "p:q");
    assert_eq!(
        c.tls,
        Some(
            TlsFiles::new()
                .with_ca("/ca.pem")
                .with_client_cert("/c.pem", "/k.pem")
        )
    );
    assert_eq!(c.common.timeout, Some(Duration::from_millis(700)));
    assert_eq!(c.connect_timeout, Duration::from_millis(300));
    assert_eq!(c.response_timeout, Duration::from_millis(400));
    assert_eq!(c.max_value_size, 4096);
    assert!(matches!(c.common.key, Some(KeySource::KeyFile(ref p)) if *p == key_file));

    // Set for every test process by the workspace's .cargo/config.toml.
    let c = parse("redis://h/?passphrase_env=TOKEN_STORE_FIXTURE_PASSPHRASE");
    assert!(matches!(c.common.key, Some(KeySource::Passphrase(_))));
    let passphrase_file = dir.join(format!("redis-config-test-{}.pass", std::process::id()));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&passphrase_file)
            .unwrap();
        f.write_all(b"correct horse\n").unwrap();
    }
    let c = parse(&format!(
        "redis+sentinel://s:1/m?passphrase_file={}",
        passphrase_file.display()
    ));
    assert!(matches!(c.common.key, Some(KeySource::Passphrase(_))));
    std::fs::remove_file(&passphrase_file).unwrap();

    // Defaults: the per-call limit is on unless changed.
    let c = parse("redis://h:1");
    assert_eq!(c.prefix, DEFAULT_PREFIX);
    assert_eq!(c.common.timeout, Some(DEFAULT_TIMEOUT));
    assert!(c.common.key.is_none() && c.tls.is_none());
    // A short call limit caps the client's own timeouts.
    let c = parse("redis://h/?timeout_ms=250");
    assert_eq!(c.connect_timeout, Duration::from_millis(250));
    assert_eq!(c.response_timeout, Duration::from_millis(250));
}

#[test]
fn a_mistyped_key_file_is_refused_not_ignored() {
    let message = refused("redis://127.0.0.1:6379/?key_flie=/path/key");
    assert!(message.contains("`key_flie`"), "{message}");
    assert!(message.contains("key_file"), "{message}");
}

#[test]
fn unknown_duplicated_and_malformed_parameters_are_refused_by_name() {
    for (url, named) in [
        ("redis://h/?bogus=1", "`bogus`"),
        ("redis+cluster://a:1,b:2/?prefix=x&nope=2", "`nope`"),
        ("redis+sentinel://s:1/m?timeout=5", "`timeout`"),
        ("redis://h/?prefix=a&prefix=b", "`prefix`"),
        ("redis://h/?timeout_ms=a&prefix=b", "`timeout_ms`"),
        ("redis://h/?timeout_ms=0", "`timeout_ms`"),
        ("redis://h/?connect_timeout_ms=-1", "`connect_timeout_ms`"),
        (
            "redis://h/?response_timeout_ms=1.5",
            "`response_timeout_ms`",
        ),
        ("redis://h/?max_value_size=lots", "`max_value_size`"),
        ("redis://h/?max_value_size=0", "`max_value_size`"),
        ("redis://h/?prefix=", "`prefix`"),
        ("redis://h/?prefix=%zz", "`prefix`"),
        ("rediss://h/?ca=", "`ca`"),
        ("redis://h/?key_file=/k&passphrase_env=V", "key_file"),
        (
            "redis://h/?passphrase_env=TOKEN_STORE_REDIS_CONFIG_TEST_UNSET",
            "passphrase_env",
        ),
    ] {
        let message = refused(url);
        assert!(message.contains(named), "{url}: {message}");
    }
}

#[test]
fn malformed_addresses_are_refused() {
    for (url, says) in [
        ("redis://", "needs a host"),
        ("redis://h/?ca=/x", "rediss://"),
        ("redis+cluster://", "needs seed nodes"),
        ("redis+cluster://a:1/3", "no database"),
        ("redis+cluster://a:notaport", "host:port"),
        ("redis+sentinel://s1:1", "master name"),
        ("redis+sentinel:///m", "sentinel addresses"),
        ("redis+sentinel://s1:1/m/x", "not a number"),
        ("redis+sentinel://s1:1/m/0/extra", "nothing may follow"),
        ("redis://h:99999999/", "not a Redis server address"),
    ] {
        let message = refused(url);
        assert!(message.contains(says), "{url}: {message}");
    }
    let message = refused("vault://h/");
    assert!(message.contains("not a Redis store URL"), "{message}");
}

#[test]
fn cluster_and_sentinel_urls() {
    let c = parse("redis+cluster://:pw@a:7000,b:7001/?prefix=x");
    assert_eq!(
        c.topology,
        Topology::Cluster {
            nodes: vec!["redis://:pw@a:7000/".into(), "redis://:pw@b:7001/".into()]
        }
    );
    assert!(!c.topology.uses_tls());
    assert!(parse("rediss+cluster://a:1").topology.uses_tls());
    let s = parse("redis+sentinel://user:s3cret@s1:26379,s2:26380/mymaster/3");
    match &s.topology {
        Topology::Sentinel {
            sentinels,
            master,
            db,
            username,
            password,
            tls,
        } => {
            assert_eq!(sentinels.len(), 2);
            assert_eq!(master, "mymaster");
            assert_eq!(*db, 3);
            assert_eq!(username.as_deref(), Some("user"));
            assert_eq!(password.as_deref(), Some("s3cret"));
            assert!(!tls);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.to_string(), "redis+sentinel://s1:26379,s2:26380/mymaster");
}

#[test]
fn debug_and_display_hide_secrets() {
    // TOKEN_STORE_FIXTURE_SECRET is set by the workspace's .cargo/config.toml.
    for url in [
        "redis://u:hunter2@h/?passphrase_env=TOKEN_STORE_FIXTURE_SECRET",
        "redis+cluster://:hunter2@a:1,b:2",
        "redis+sentinel://u:hunter2@s:1/m",
    ] {
        let c = parse(url);
        for text in [format!("{c:?}"), c.to_string()] {
            assert!(
                !text.contains("hunter2") && !text.contains("PASSPHRASE-XYZ"),
                "{text}"
            );
        }
    }
}
