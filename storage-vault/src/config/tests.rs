use std::os::unix::fs::PermissionsExt as _;

use secrecy::ExposeSecret as _;

use super::*;

fn parse(url: &str, env: &[(&str, &str)]) -> Result<VaultConfig> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    VaultConfig::from_url_with_env(&StoreUrl::parse(url).unwrap(), move |n| {
        env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
    })
}

fn config_error(url: &str, env: &[(&str, &str)]) -> String {
    match parse(url, env) {
        Err(e @ Error::Config { .. }) => e.to_string(),
        other => panic!("{url}: expected a configuration error, got {other:?}"),
    }
}

/// A passphrase file as core accepts one: a regular file of ours, mode 0600.
fn passphrase_file() -> PathBuf {
    let mut random = [0u8; 8];
    token_store_core::backend::fill_random(&mut random).unwrap();
    let path = std::env::temp_dir().join(format!(
        "vault-config-test-{}",
        token_store_core::backend::hex(&random)
    ));
    std::fs::write(&path, "a passphrase\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn url_forms() {
    let c = parse(
        "vault://bao.internal:8300/kv/team?prefix=apps/x",
        &[("VAULT_TOKEN", "t")],
    )
    .unwrap();
    assert_eq!(c.address.as_str(), "http://bao.internal:8300/");
    assert_eq!((c.mount.as_str(), c.prefix.as_str()), ("kv/team", "apps/x"));
    assert!(matches!(c.auth, Auth::Token(_)));
    assert_eq!(c.common.timeout, Some(DEFAULT_TIMEOUT));
    assert!(c.common.key.is_none());

    let c = parse(
        "vaults://bao.internal",
        &[("BAO_TOKEN", "t"), ("VAULT_CACERT", "/ca.pem")],
    )
    .unwrap();
    assert_eq!(c.address.as_str(), "https://bao.internal:8200/");
    assert_eq!(
        (c.mount.as_str(), c.prefix.as_str()),
        (DEFAULT_MOUNT, DEFAULT_PREFIX)
    );
    assert_eq!(c.ca_cert, Some(PathBuf::from("/ca.pem")));

    let c = parse(
        "vault://",
        &[
            ("VAULT_ADDR", "https://v.example:8200"),
            ("VAULT_NAMESPACE", "team-a"),
            ("VAULT_ROLE_ID", "rid"),
            ("VAULT_SECRET_ID", "sid"),
        ],
    )
    .unwrap();
    assert_eq!(c.address.as_str(), "https://v.example:8200/");
    assert_eq!(c.namespace.as_deref(), Some("team-a"));
    assert!(matches!(c.auth, Auth::AppRole { .. }));

    let c = parse(
        "vault://[::1]:8200/?prefix=/&timeout_ms=250",
        &[("VAULT_TOKEN", "t")],
    )
    .unwrap();
    assert_eq!(c.prefix, "");
    assert_eq!(c.common.timeout, Some(Duration::from_millis(250)));
    assert_eq!(c.to_string(), "vault://[::1]:8200/secret?prefix=/");
}

#[test]
fn credentials_in_order() {
    let env = [
        ("VAULT_TOKEN", "env-token"),
        ("OTHER", "other-token"),
        ("VAULT_ROLE_ID", "env-role"),
        ("VAULT_SECRET_ID", "env-secret"),
        ("SID", "sid-from-var"),
    ];
    let secret_of = |c: VaultConfig| match c.auth {
        Auth::AppRole {
            mount,
            role_id,
            secret_id,
        } => format!(
            "{mount} {} {}",
            role_id.expose_secret(),
            secret_id.expose_secret()
        ),
        Auth::Token(t) => t.expose_secret().to_owned(),
    };
    // token_env= wins over an AppRole in the environment: the URL says what it wants.
    assert_eq!(
        secret_of(parse("vault://h?token_env=OTHER", &env).unwrap()),
        "other-token"
    );
    assert_eq!(
        secret_of(parse("vault://h", &env).unwrap()),
        "approle env-role env-secret"
    );
    assert_eq!(
        secret_of(
            parse(
                "vault://h?role_id=R&secret_id_env=SID&approle_mount=ar",
                &env
            )
            .unwrap()
        ),
        "ar R sid-from-var"
    );
    assert_eq!(
        secret_of(parse("vault://h", &env[..2]).unwrap()),
        "env-token"
    );
}

/// Every parameter of the grammar, with a valid value.
#[test]
fn every_parameter_is_accepted() {
    let file = passphrase_file();
    let env = [("TOK", "t"), ("SID", "s")];
    let common = "prefix=a/b&namespace=ns%2Fchild&ca=~/ca.pem&timeout_ms=1500";
    for (credentials, key) in [
        ("token_env=TOK", "key_file=/k".to_owned()),
        (
            "role_id=R&secret_id_env=SID&approle_mount=ar",
            format!("passphrase_file={}", file.display()),
        ),
        // Any variable that is set will do for the passphrase here.
        ("role_id=R&secret_id=S", "passphrase_env=PATH".to_owned()),
    ] {
        let url = format!("vaults://h:1/kv?{common}&{credentials}&{key}");
        let c = parse(&url, &env).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!((c.mount.as_str(), c.prefix.as_str()), ("kv", "a/b"));
        assert_eq!(c.namespace.as_deref(), Some("ns/child"));
        assert!(
            c.ca_cert
                .as_ref()
                .is_some_and(|p| p.ends_with("ca.pem") && p.is_absolute())
        );
        assert_eq!(c.common.timeout, Some(Duration::from_millis(1500)));
        assert!(c.common.key.is_some(), "{url}");
        assert_eq!(
            c.to_string(),
            "vaults://h:1/kv?prefix=a/b&namespace=ns%2Fchild"
        );
    }
    let _ = std::fs::remove_file(file);
}

/// Unknown, duplicated and malformed parameters: a configuration error naming the parameter.
#[test]
fn bad_parameters_are_named() {
    let env = [("VAULT_TOKEN", "t")];
    let unknown = config_error("vault://h?prefx=a", &env);
    assert!(
        unknown.contains("`prefx`") && unknown.contains("prefix"),
        "{unknown}"
    );
    for name in [
        "prefix",
        "namespace",
        "ca",
        "timeout_ms",
        "token_env",
        "role_id",
        "secret_id",
        "secret_id_env",
        "approle_mount",
        "key_file",
        "passphrase_file",
        "passphrase_env",
    ] {
        let twice = config_error(&format!("vault://h?{name}=1&{name}=1"), &env);
        assert!(
            twice.contains(&format!("`{name}` is given twice")),
            "{twice}"
        );
        let encoding = config_error(&format!("vault://h?{name}=%zz"), &env);
        assert!(encoding.contains(&format!("`{name}`")), "{encoding}");
        let empty = config_error(&format!("vault://h?{name}="), &env);
        assert!(
            empty.contains(&format!("`{name}` needs a value")),
            "{empty}"
        );
    }
    for (url, name) in [
        ("vault://h?timeout_ms=soon", "timeout_ms"),
        ("vault://h?timeout_ms=0", "timeout_ms"),
        ("vault://h?prefix=a%20b", "prefix"),
        ("vault://h?prefix=../x", "prefix"),
        (
            "vault://h?approle_mount=a?b&role_id=r&secret_id=s",
            "approle_mount",
        ),
        ("vault://h?token_env=UNSET", "token_env"),
        ("vault://h?role_id=r&secret_id_env=UNSET", "secret_id_env"),
        (
            "vault://h?passphrase_env=TOKEN_STORE_SURELY_UNSET",
            "passphrase_env",
        ),
        ("vault://h?key_file=/k&passphrase_env=PATH", "key_file"),
        ("vault://h?secret_id=s&secret_id_env=SID", "secret_id_env"),
        ("vault://h?token_env=VAULT_TOKEN&role_id=r", "token_env"),
        ("vault://h/a%20b", "mount"),
    ] {
        let e = config_error(url, &env);
        assert!(e.contains(name), "{url}: {e}");
    }
    let e = config_error("vault://h?passphrase_file=/no/such/file", &env);
    assert!(e.contains("/no/such/file"), "{e}");
}

#[test]
fn bad_urls_are_config_errors_not_panics() {
    for (url, env) in [
        ("vault://bad host:99", vec![("VAULT_TOKEN", "t")]),
        ("vault://h:notaport", vec![("VAULT_TOKEN", "t")]),
        ("vault://h/../x", vec![("VAULT_TOKEN", "t")]),
        ("vault://h", vec![]),
        ("vault://", vec![("VAULT_TOKEN", "t")]),
        (
            "vault://",
            vec![("VAULT_TOKEN", "t"), ("VAULT_ADDR", "not a url")],
        ),
        (
            "vaults://",
            vec![("VAULT_TOKEN", "t"), ("VAULT_ADDR", "http://h:1")],
        ),
        ("vault://u:pw@h", vec![("VAULT_TOKEN", "t")]),
        ("vault://h?secret_id=s", vec![("VAULT_TOKEN", "t")]),
        ("vault://h?role_id=r", vec![]),
        ("vault://h?token=hvs.X", vec![("VAULT_TOKEN", "t")]),
        ("redis://h", vec![("VAULT_TOKEN", "t")]),
    ] {
        config_error(url, &env);
    }
}

#[test]
fn debug_and_display_show_no_credential() {
    let secrets = ["ROLE-X", "SECRET-X", "TOKEN-X", "ENV-SECRET-X", "PASS@WORD"];
    let configs = [
        parse("vault://h?role_id=ROLE-X&secret_id=SECRET-X", &[]).unwrap(),
        parse("vault://h", &[("VAULT_TOKEN", "TOKEN-X")]).unwrap(),
        parse(
            "vaults://h?role_id=ROLE-X&secret_id_env=S",
            &[("S", "ENV-SECRET-X")],
        )
        .unwrap(),
    ];
    for c in &configs {
        let text = format!("{c:?} {c}");
        for secret in secrets {
            assert!(!text.contains(secret), "{text}");
        }
    }
    let errors = [
        config_error("vault://h?token=TOKEN-X", &[]),
        config_error("vault://h?secret_id=SECRET-X&prefx=1", &[]),
        config_error(
            "vault://h?secret_id=SECRET-X",
            &[("VAULT_TOKEN", "TOKEN-X")],
        ),
        config_error(
            "vault://",
            &[("VAULT_TOKEN", "t"), ("VAULT_ADDR", "http://u:PASS@WORD@h")],
        ),
        config_error(
            "vault://",
            &[
                ("VAULT_TOKEN", "t"),
                ("VAULT_ADDR", "http://u:PASS@WORD@h:x"),
            ],
        ),
    ];
    for e in errors {
        for secret in secrets {
            assert!(!e.contains(secret), "{e}");
        }
    }
}

#[test]
fn fields_set_by_hand_are_checked_at_open() {
    let mut c = VaultConfig::new("http://h:8200", Auth::token("t")).unwrap();
    c.validate().unwrap();
    c.prefix = "a/../b".into();
    assert!(matches!(c.validate(), Err(Error::Config { .. })));
    let mut c = VaultConfig::new("http://h:8200", Auth::approle("r", "s")).unwrap();
    if let Auth::AppRole { mount, .. } = &mut c.auth {
        *mount = "app?role".into();
    }
    assert!(matches!(c.validate(), Err(Error::Config { .. })));
}

#[test]
fn reclamation_settings() {
    let env = [("VAULT_TOKEN", "t")];
    let c = parse("vault://h", &env).unwrap();
    assert_eq!(
        (c.reclaim_after, c.reclaim_in_listings),
        (DEFAULT_RECLAIM_AFTER, true)
    );
    let c = parse(
        "vault://h?reclaim_after_ms=90000&reclaim_in_listings=false",
        &env,
    )
    .unwrap();
    assert_eq!(
        (c.reclaim_after, c.reclaim_in_listings),
        (Duration::from_secs(90), false)
    );
    for (url, named) in [
        ("vault://h?reclaim_after_ms=0", "reclaim_after_ms"),
        ("vault://h?reclaim_after_ms=soon", "reclaim_after_ms"),
        ("vault://h?reclaim_in_listings=maybe", "reclaim_in_listings"),
    ] {
        let message = config_error(url, &env);
        assert!(message.contains(named), "{url}: {message}");
    }
    let c = VaultConfig::new("http://h:1", Auth::token("t")).unwrap();
    assert!(c.clone().with_reclaim_after(Duration::ZERO).is_err());
    let c = c
        .with_reclaim_after(Duration::from_secs(5))
        .unwrap()
        .with_reclaim_in_listings(false);
    assert_eq!(c.reclaim_after, Duration::from_secs(5));
    assert!(!c.reclaim_in_listings);
}
