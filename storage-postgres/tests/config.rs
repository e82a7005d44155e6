//! The `postgres://` URL grammar and the configuration: every parameter accepted with valid
//! values; unknown, duplicated and malformed parameters refused with `Error::Config` naming
//! them; passwords never shown. Against the real servers: passwords from the URL, an
//! environment variable and a private file, wrong credentials, and every `sslmode`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use token_store_core::{Error, KeySource, Precondition, StoreUrl, TokenKey, TokenRecord};
use token_store_postgres::{Host, Password, PostgresConfig, PostgresStore, SslMode, TargetSession};

fn parse(raw: &str) -> Result<PostgresConfig, Error> {
    PostgresConfig::from_url(&StoreUrl::parse(raw)?)
}

fn config_error(raw: &str) -> String {
    match parse(raw) {
        Err(Error::Config { message, .. }) => message,
        other => panic!("{raw}: expected a Config error, got {other:?}"),
    }
}

#[test]
fn every_parameter_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let raw = format!(
        "postgresql://app:p%40ss@db1:6432,[::1]:5433,%2Ftmp%2Fpg/tokens?schema=mcp&table=tok_ens\
         &sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=/etc/c.pem&sslkey=/etc/k.pem\
         &target_session_attrs=any&application_name=agent&connect_timeout_ms=100\
         &statement_timeout_ms=200&pool_size=3&pool_timeout_ms=300&max_value_size=4096\
         &sweep_interval_ms=500&timeout_ms=600&key_file={}",
        key.display()
    );
    let c = parse(&raw).unwrap();
    assert_eq!(c.user, "app");
    assert!(matches!(&c.password, Some(Password::Given(p)) if p.expose() == "p@ss"));
    assert_eq!(
        c.hosts,
        vec![
            Host::Tcp {
                name: "db1".into(),
                port: 6432
            },
            Host::Tcp {
                name: "::1".into(),
                port: 5433
            },
            Host::Unix {
                dir: "/tmp/pg".into(),
                port: 5432
            },
        ]
    );
    assert_eq!(c.dbname.as_deref(), Some("tokens"));
    assert_eq!((c.schema.as_str(), c.table.as_str()), ("mcp", "tok_ens"));
    assert_eq!(c.ssl_mode, SslMode::VerifyFull);
    assert_eq!(c.ssl_root_cert.as_deref(), Some("/etc/ca.pem".as_ref()));
    assert_eq!(
        c.ssl_client_cert,
        Some(("/etc/c.pem".into(), "/etc/k.pem".into()))
    );
    assert_eq!(c.target_session, TargetSession::Any);
    assert_eq!(c.application_name, "agent");
    assert_eq!(c.connect_timeout, Duration::from_millis(100));
    assert_eq!(c.statement_timeout, Duration::from_millis(200));
    assert_eq!(c.pool_size, 3);
    assert_eq!(c.pool_timeout, Duration::from_millis(300));
    assert_eq!(c.max_value_size, 4096);
    assert_eq!(c.sweep_interval, Duration::from_millis(500));
    assert_eq!(c.common.timeout, Some(Duration::from_millis(600)));
    assert!(matches!(&c.common.key, Some(KeySource::KeyFile(p)) if *p == key));

    // The other password and key sources, and every sslmode and target.
    let c = parse("postgres://app@db/x?password_env=PGPASSWORD&passphrase_env=HOME").unwrap();
    assert!(matches!(&c.password, Some(Password::Env(v)) if v == "PGPASSWORD"));
    assert!(matches!(&c.common.key, Some(KeySource::Passphrase(_))));
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "correct horse\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = parse(&format!(
        "postgres://app@db/x?password_file=/run/pw&passphrase_file={}",
        pass.display()
    ))
    .unwrap();
    assert!(matches!(&c.password, Some(Password::File(p)) if p.as_os_str() == "/run/pw"));
    assert!(c.common.key.is_some());
    for (name, mode) in [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ] {
        let c = parse(&format!("postgres://app@db/x?sslmode={name}")).unwrap();
        assert_eq!(c.ssl_mode, mode);
        assert_eq!(mode.name(), name);
    }
    let c =
        parse("postgres://app@db/x?target_session_attrs=read-write&sslrootcert=system").unwrap();
    assert_eq!(c.target_session, TargetSession::ReadWrite);
    assert_eq!(c.ssl_root_cert, None);

    // Defaults.
    let c = parse("postgres://app@db").unwrap();
    assert_eq!(c.dbname, None);
    assert_eq!(
        c.hosts,
        vec![Host::Tcp {
            name: "db".into(),
            port: 5432
        }]
    );
    assert_eq!(
        (c.schema.as_str(), c.table.as_str()),
        ("public", "token_store")
    );
    assert_eq!(c.ssl_mode, SslMode::Prefer);
    assert_eq!(c.target_session, TargetSession::ReadWrite);
    assert_eq!(
        c.common.timeout,
        Some(token_store_postgres::DEFAULT_TIMEOUT)
    );
    assert_eq!(
        c.to_string(),
        "postgres://app@db:5432/app?schema=public&table=token_store"
    );
}

#[test]
fn unknown_duplicated_and_malformed_parameters_are_refused_by_name() {
    for (raw, names) in [
        (
            "postgres://app@db/x?key_flie=/k",
            &["`key_flie`", "key_file", "sslmode"][..],
        ),
        (
            "postgres://app@db/x?password=pw",
            &["`password`", "password_file"],
        ),
        (
            "postgres://app@db/x?table=a&table=b",
            &["`table` is given twice"],
        ),
        (
            "postgres://app@db/x?schema=%zz",
            &["malformed percent-encoding", "`schema`"],
        ),
        (
            "postgres://app@db/x?sslmode=allow",
            &["`sslmode`", "verify-full"],
        ),
        (
            "postgres://app@db/x?target_session_attrs=primary",
            &["`target_session_attrs`"],
        ),
        ("postgres://app@db/x?pool_size=x", &["`pool_size`"]),
        ("postgres://app@db/x?pool_size=0", &["`pool_size`"]),
        (
            "postgres://app@db/x?max_value_size=0",
            &["`max_value_size`"],
        ),
        (
            "postgres://app@db/x?connect_timeout_ms=0",
            &["`connect_timeout_ms`", "more than 0"],
        ),
        (
            "postgres://app@db/x?statement_timeout_ms=-1",
            &["`statement_timeout_ms`"],
        ),
        (
            "postgres://app@db/x?pool_timeout_ms=1.5",
            &["`pool_timeout_ms`"],
        ),
        (
            "postgres://app@db/x?sweep_interval_ms=",
            &["`sweep_interval_ms` needs a value"],
        ),
        ("postgres://app@db/x?timeout_ms=0", &["`timeout_ms`"]),
        (
            "postgres://app@db/x?application_name=",
            &["`application_name` needs a value"],
        ),
        ("postgres://app@db/x?sslcert=/c.pem", &["sslcert", "sslkey"]),
        ("postgres://app@db/x?table=Tokens", &["table name `Tokens`"]),
        (
            "postgres://app@db/x?schema=a%22b",
            &["schema name `a\\\"b`"],
        ),
        (
            "postgres://app@db/x?table=a_very_long_table_name_that_goes_past_the_limit_of_48",
            &["table name"],
        ),
        (
            "postgres://app:pw@db/x?password_env=PW",
            &["give the password one way"],
        ),
        (
            "postgres://app@db/x?key_file=/k&passphrase_env=HOME",
            &["one of key_file"],
        ),
        ("postgres://db/x", &["name the role"]),
        ("postgres://app@db:0/x", &["port `0`"]),
        (
            "postgres://app@db/x?a=1&b=2",
            &["unknown parameters `a`, `b`"],
        ),
    ] {
        let message = config_error(raw);
        for name in names {
            assert!(message.contains(name), "{raw}: {message}");
        }
    }
}

#[test]
fn passwords_never_show() {
    let secret = "pw-s3cr3t-9f2c";
    for raw in [
        format!("postgres://app:{secret}@db/x"),
        format!("postgresql://app:{secret}@db/x?sslmode=verify-full&table=t"),
        format!("postgres://app:{secret}@db1,db2:6432/x?unknown=1"),
        format!("postgres://app:{secret}@db/x?pool_size=0"),
        format!("postgres://app:p/{secret}@db/x"),
        format!("postgres://app:p?{secret}@db/x"),
    ] {
        let url = StoreUrl::parse(&raw).unwrap();
        // Only this crate's output: core's `StoreUrl` redaction cannot tell where a password
        // with an unencoded `/` or `?` ends (the last two URLs), which is why this crate
        // refuses them without quoting them.
        let shown = match PostgresConfig::from_url(&url) {
            Ok(c) => format!("{c} {c:?} {:?}", c.password),
            Err(e) => format!("{e} {e:?}"),
        };
        assert!(!shown.contains(secret), "{raw}: {shown}");
    }
    let c = PostgresConfig::new("app").with_password(token_store_core::Secret::new(secret));
    assert!(!format!("{c} {c:?}").contains(secret));
    assert!(format!("{c:?}").contains("Given([REDACTED])"));
}

fn without_password(url: &str, password: &str) -> String {
    url.replacen(&format!(":{password}@"), "@", 1)
}

async fn round_trip(config: PostgresConfig) -> Result<(), Error> {
    let store = token_store_postgres::open(config).await?;
    let key = TokenKey::for_server("https://config.example/mcp");
    store
        .put(&key, &TokenRecord::new("at"), Precondition::Any)
        .await?;
    assert!(store.get(&key).await?.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_from_the_url_the_environment_and_a_file() {
    let Some(url) = common::plain_url() else {
        return;
    };
    let password =
        token_store_conformance::services::require("TOKEN_STORE_TEST_POSTGRES_PASSWORD").unwrap();
    let schema = common::ident("cfg");
    let bare = common::with_params(
        &without_password(&url, &password),
        &format!("schema={schema}"),
    );
    let with = |extra: &str| parse(&common::with_params(&bare, extra)).unwrap();
    let _drop =
        common::DropSchema(parse(&common::with_params(&url, &format!("schema={schema}"))).unwrap());

    // In the URL, through open_url.
    let full = StoreUrl::parse(&common::with_params(
        &url,
        &format!("schema={schema}&table=a"),
    ))
    .unwrap();
    let store = token_store_postgres::open_url(&full).await.unwrap();
    assert_eq!(store.backend(), "postgres");
    // From the environment (read at open): the services export the password in a variable
    // already (`set_var` is unsafe in a multi-threaded test binary).
    round_trip(with(
        "password_env=TOKEN_STORE_TEST_POSTGRES_PASSWORD&table=b",
    ))
    .await
    .unwrap();
    let missing = round_trip(with("password_env=TOKEN_STORE_TEST_PG_UNSET_VAR&table=b")).await;
    assert!(
        matches!(&missing, Err(Error::Config { message, .. }) if message.contains("TOKEN_STORE_TEST_PG_UNSET_VAR")),
        "{missing:?}"
    );
    // From a private file; a file others can read is refused.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    round_trip(with(&format!("password_file={}&table=c", file.display())))
        .await
        .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = round_trip(with(&format!("password_file={}&table=c", file.display()))).await;
    assert!(open.is_err_and(|e| e.to_string().contains("chmod 600")));
    // Wrong or no password: refused login, no secret in the error.
    let wrong =
        with("table=d").with_password(token_store_core::Secret::new(format!("{password}x")));
    let denied = PostgresStore::open(&wrong).await;
    assert!(
        matches!(&denied, Err(Error::PermissionDenied { .. })),
        "{denied:?}"
    );
    assert!(!format!("{denied:?}").contains(&password));
    let none = PostgresStore::open(&with("table=d")).await;
    assert!(none.is_err(), "no password");
    // A database that does not exist is a configuration error.
    let nodb = parse(&common::with_params(
        &url.replace("/tokenstore", "/no_such_db"),
        "table=e",
    ))
    .unwrap();
    let missing_db = PostgresStore::open(&nodb).await;
    assert!(
        matches!(&missing_db, Err(Error::Config { message, .. }) if message.contains("3D000")),
        "{missing_db:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_against_the_tls_server() {
    let Some(tls_url) = common::tls_url() else {
        return;
    };
    let schema = common::ident("tls");
    // The TLS URL carries sslmode=verify-full&sslrootcert=CA.
    let base = parse(&common::with_params(&tls_url, &format!("schema={schema}"))).unwrap();
    let _drop = common::DropSchema(base.clone());
    let ca = base.ssl_root_cert.clone().unwrap();
    let with = |mode: SslMode, ca: Option<&std::path::Path>| {
        let mut c = base
            .clone()
            .with_ssl_mode(mode)
            .with_table(common::ident("t"));
        c.ssl_root_cert = ca.map(Into::into);
        c
    };
    // Encrypted and checked against the test CA.
    round_trip(with(SslMode::VerifyFull, Some(&ca)))
        .await
        .unwrap();
    round_trip(with(SslMode::VerifyCa, Some(&ca)))
        .await
        .unwrap();
    round_trip(with(SslMode::Require, Some(&ca))).await.unwrap();
    // Encrypted, not checked.
    round_trip(with(SslMode::Require, None)).await.unwrap();
    round_trip(with(SslMode::Prefer, None)).await.unwrap();
    // The test CA is not in the system trust store: refused, not retryable.
    let untrusted = round_trip(with(SslMode::VerifyFull, None)).await;
    assert!(
        matches!(&untrusted, Err(Error::Config { .. })),
        "{untrusted:?}"
    );
    // The server accepts TLS only.
    let plain = round_trip(with(SslMode::Disable, None)).await;
    assert!(
        matches!(&plain, Err(Error::PermissionDenied { .. })),
        "{plain:?}"
    );
    // A name the certificate does not carry (the server's address written as the IPv4-mapped
    // IPv6 one is not available here): verify-ca accepts what verify-full refuses, shown
    // with a CA file that does not sign the server's certificate instead.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-newkey",
            "rsa:2048",
            "-days",
            "1",
            "-subj",
            "/CN=other-ca",
            "-keyout",
        ])
        .arg(dir.path().join("other.key"))
        .arg("-out")
        .arg(&other_ca)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull, SslMode::Require] {
        let wrong = round_trip(with(mode, Some(&other_ca))).await;
        assert!(
            matches!(&wrong, Err(Error::Config { .. })),
            "{mode:?}: {wrong:?}"
        );
    }
    // Mutual TLS: the certificate role logs in with its certificate, not without.
    if let Some(mtls) = common::mtls() {
        let _drop = common::DropSchema(mtls.clone());
        round_trip(mtls.clone().with_table("m")).await.unwrap();
        let mut bare = mtls.with_table("m");
        bare.ssl_client_cert = None;
        let refused = round_trip(bare).await;
        assert!(
            matches!(&refused, Err(Error::PermissionDenied { .. })),
            "{refused:?}"
        );
    }
}
