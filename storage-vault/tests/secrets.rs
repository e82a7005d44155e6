//! Credentials are never printed (issue 20, item 1): a `secret_id` or token in the URL, or a
//! token in `VAULT_TOKEN`, appears in no `Debug` or `Display` of the configuration and in no
//! error, from parsing to a failed open. Needs no server: nothing listens on port 1.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use token_store_core::{Error, StoreUrl};
use token_store_vault::VaultConfig;

const SECRETS: [&str; 3] = ["S3CR3T-ID", "T0KEN-IN-URL", "T0KEN-FROM-ENV"];

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}: {text}");
    }
}

fn error_text(e: &Error) -> String {
    let mut text = format!("{e} / {e:?}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(" / {s} / {s:?}"));
        source = s.source();
    }
    text
}

fn env(name: &str) -> Option<String> {
    (name == "VAULT_TOKEN").then(|| "T0KEN-FROM-ENV".to_owned())
}

#[tokio::test]
async fn no_credential_in_debug_display_or_errors() {
    // AppRole with the secret id in the URL: the config, the URL, and the failed open.
    let url = StoreUrl::parse("vault://127.0.0.1:1/?role_id=R&secret_id=S3CR3T-ID").unwrap();
    assert_clean("the URL", &format!("{url} {url:?}"));
    let config = VaultConfig::from_url_with_env(&url, env).unwrap();
    assert_clean("Debug of the config", &format!("{config:?}"));
    assert_clean("Display of the config", &config.to_string());
    let opened = token_store_vault::open(config).await;
    let e = opened.expect_err("nothing listens on port 1");
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert_clean("the error of a failed open", &error_text(&e));
    let e = token_store_vault::open_url(&url).await.unwrap_err();
    assert_clean("the error of a failed open_url", &error_text(&e));

    // A token from VAULT_TOKEN: open sends nothing until the first call (the encryption
    // header read), which fails.
    let url = StoreUrl::parse("vault://127.0.0.1:1/?prefix=p").unwrap();
    let config = VaultConfig::from_url_with_env(&url, env).unwrap();
    assert_clean("Debug of the config", &format!("{config:?}"));
    assert_clean("Display of the config", &config.to_string());
    let raw = token_store_vault::VaultStore::open(&config).await.unwrap();
    assert_clean("Debug of the store", &format!("{raw:?}"));
    let e = token_store_vault::open(config).await.unwrap_err();
    assert_clean("the error of a failed open", &error_text(&e));

    // A token in the URL is refused, and the refusal does not repeat it.
    for raw in [
        "vault://127.0.0.1:1/?token=T0KEN-IN-URL",
        "vault://127.0.0.1:1/?token=T0KEN-IN-URL&role_id=R&secret_id=S3CR3T-ID",
        "vault://127.0.0.1:1/?secret_id=S3CR3T-ID&typo=1",
        "vault://127.0.0.1:1/?secret_id=S3CR3T-ID&secret_id=S3CR3T-ID",
    ] {
        let url = StoreUrl::parse(raw).unwrap();
        let e = VaultConfig::from_url_with_env(&url, env).unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{raw}: {e:?}");
        assert_clean("a configuration error", &error_text(&e));
        let e = token_store_vault::open_url(&url).await.unwrap_err();
        assert_clean("a configuration error", &error_text(&e));
    }
}
