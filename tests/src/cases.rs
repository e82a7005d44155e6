//! The named cases. Each gets a fresh store and returns Passed, NotApplicable or Failed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use token_store_core::{
    AuthState, ClientKey, ClientRegistration, Error, KeyKind, ListFilter, Precondition, PutOptions,
    Query, RawStore, StorageKey, TokenKey, TokenRecord, TokenStore,
};

use crate::secrets::{counter, counter_value, secret};
use crate::{BoxFuture, Instance, Outcome};

type CaseResult = std::result::Result<Outcome, String>;
type Case = fn(Instance) -> BoxFuture<'static, Outcome>;

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// `?` for store calls inside a case: the error becomes the failure message.
trait OrFail<T> {
    fn or_fail(self, what: &str) -> std::result::Result<T, String>;
}

impl<T> OrFail<T> for token_store_core::Result<T> {
    fn or_fail(self, what: &str) -> std::result::Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|i: Instance| -> BoxFuture<'static, Outcome> {
            Box::pin(async move {
                match $name(i).await {
                    Ok(o) => o,
                    Err(msg) => Outcome::Failed(msg),
                }
            })
        }) as Case)),*]
    };
}

pub(crate) fn all() -> Vec<(&'static str, Case)> {
    cases![
        missing_key_reads_none,
        round_trip_every_field,
        unknown_fields_survive_a_write_back,
        overwrite_changes_value_and_version,
        version_is_stable_between_writes,
        delete_removes,
        list_filters_and_isolates_users,
        list_pages,
        kinds_do_not_mix,
        odd_keys_round_trip,
        invalid_keys_are_rejected,
        value_sizes_up_to_the_maximum,
        if_absent_creates_once,
        if_version_detects_stale_writers,
        conditional_delete,
        create_after_delete,
        concurrent_read_modify_write_loses_no_update,
        persistence_across_reopen,
        ttl_expires_records,
        client_registrations_round_trip,
        pkce_state_is_taken_once_under_concurrency,
        pkce_state_expires,
        secrets_are_redacted_in_debug_and_errors,
    ]
}

fn full_record(tag: &str) -> TokenRecord {
    let mut r = TokenRecord::new(secret(format!("access-{tag}-eyJhbGciOi")))
        .with_refresh_token(secret(format!("refresh-{tag}")))
        .with_scopes(["read", "write"]);
    r.expires_at = Some(1_900_000_000.25);
    r.refresh_expires_at = Some(2_000_000_000.5);
    r.resource = Some("https://mcp.example.com/mcp".into());
    r.authorization_server = Some("https://auth.example.com".into());
    r.id_token = Some(secret(format!("id-{tag}")).into());
    r.client_id = Some("client-1".into());
    r.metadata.insert("server_name".into(), json!("demo"));
    r.metadata
        .insert("nested".into(), json!({"a": [1, 2, 3], "ü": null}));
    r
}

fn key(user: &str, resource: &str) -> TokenKey {
    TokenKey::new(user, resource, Some("https://auth.example.com"), ["read"])
}

fn token_store(i: &Instance) -> TokenStore {
    i.token_store()
}

async fn missing_key_reads_none(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let k = key("nobody", "https://none.example");
    check!(
        s.get(&k).await.or_fail("get")?.is_none(),
        "a missing key read as present"
    );
    let deleted = s.delete(&k, Precondition::Any).await.or_fail("delete")?;
    check!(!deleted, "deleting a missing key reported a deletion");
    Ok(Outcome::Passed)
}

async fn round_trip_every_field(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let k = key("alice", "https://mcp.example.com/mcp");
    let record = full_record("rt");
    let v = s.put(&k, &record, Precondition::Any).await.or_fail("put")?;
    let got = s.get(&k).await.or_fail("get")?.ok_or("record vanished")?;
    check!(
        got.value == record,
        "read back differs: {:?} vs {:?}",
        got.value,
        record
    );
    check!(
        got.version == v,
        "get version {} != put version {}",
        got.version,
        v
    );
    Ok(Outcome::Passed)
}

async fn unknown_fields_survive_a_write_back(i: Instance) -> CaseResult {
    let sk = key("u", "https://x.example").storage_key();
    let foreign = format!(
        r#"{{"access_token":"{}","refresh_token":null,"scopes":[],"expires_at":null,"token_type":"Bearer","resource":null,"authorization_server":null,"obtained_at":1.5,"metadata":{{}},"from_the_future":{{"k":[1]}}}}"#,
        secret("at")
    );
    i.store
        .write(&sk, foreign.as_bytes(), &PutOptions::default())
        .await
        .or_fail("raw put")?;
    let s = token_store(&i);
    let k = TokenKey::from_storage_key(&sk).ok_or("key")?;
    let mut got = s.get(&k).await.or_fail("get")?.ok_or("absent")?;
    got.value.scopes.push("new".into());
    s.put(&k, &got.value, Precondition::IfVersion(got.version))
        .await
        .or_fail("write back")?;
    let raw = i
        .store
        .read(&sk)
        .await
        .or_fail("raw get")?
        .ok_or("absent")?;
    let v: serde_json::Value = serde_json::from_slice(&raw.value).map_err(|e| e.to_string())?;
    check!(v["from_the_future"]["k"][0] == 1, "unknown field lost: {v}");
    check!(v["scopes"][0] == "new", "update lost: {v}");
    Ok(Outcome::Passed)
}

async fn overwrite_changes_value_and_version(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let k = key("bob", "https://mcp.example.com/mcp");
    let v1 = s
        .put(&k, &full_record("one"), Precondition::Any)
        .await
        .or_fail("put 1")?;
    let v2 = s
        .put(&k, &full_record("two"), Precondition::Any)
        .await
        .or_fail("put 2")?;
    check!(v1 != v2, "overwrite kept version {v1}");
    let got = s.get(&k).await.or_fail("get")?.ok_or("absent")?;
    check!(
        got.value.access_token.expose().contains("two"),
        "old value read after overwrite"
    );
    Ok(Outcome::Passed)
}

async fn version_is_stable_between_writes(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let k = key("carol", "https://mcp.example.com/mcp");
    s.put(&k, &full_record("a"), Precondition::Any)
        .await
        .or_fail("put")?;
    let a = s.get(&k).await.or_fail("get 1")?.ok_or("absent")?.version;
    let b = s.get(&k).await.or_fail("get 2")?.ok_or("absent")?.version;
    check!(a == b, "two reads gave versions {a} and {b}");
    // The same bytes written again must still be a new version where versions are stamped,
    // and must at least keep CAS working where they are digests of the bytes.
    let same = s.get(&k).await.or_fail("get 3")?.ok_or("absent")?.value;
    s.put(&k, &same, Precondition::IfVersion(a.clone()))
        .await
        .or_fail("cas same bytes")?;
    Ok(Outcome::Passed)
}

async fn delete_removes(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let k = key("dave", "https://mcp.example.com/mcp");
    s.put(&k, &full_record("d"), Precondition::Any)
        .await
        .or_fail("put")?;
    check!(
        s.delete(&k, Precondition::Any).await.or_fail("delete")?,
        "delete reported nothing deleted"
    );
    check!(
        s.get(&k).await.or_fail("get")?.is_none(),
        "deleted record still readable"
    );
    let page = s.list(&Query::default()).await.or_fail("list")?;
    check!(
        page.keys.is_empty(),
        "deleted key still listed: {:?}",
        page.keys
    );
    Ok(Outcome::Passed)
}

async fn list_filters_and_isolates_users(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let keys = [
        key("alice", "https://a.example/mcp"),
        key("alice", "https://b.example/mcp"),
        key("bob", "https://a.example/mcp"),
        key("alice:evil", "https://a.example/mcp"),
    ];
    for (n, k) in keys.iter().enumerate() {
        s.put(k, &full_record(&n.to_string()), Precondition::Any)
            .await
            .or_fail("put")?;
    }
    let all = s.list(&Query::default()).await.or_fail("list all")?;
    check!(all.keys.len() == 4, "list all gave {} keys", all.keys.len());
    let alice = s
        .list(&Query::new(ListFilter::user("alice")))
        .await
        .or_fail("list alice")?;
    let want: HashSet<_> = keys[..2].iter().cloned().collect();
    let got: HashSet<_> = alice.keys.iter().cloned().collect();
    check!(got == want, "alice's keys: {:?}", alice.keys);
    let filter = ListFilter::user("alice").with_resource("https://b.example/mcp");
    let one = s.list(&Query::new(filter)).await.or_fail("list alice+b")?;
    check!(one.keys == vec![keys[1].clone()], "alice+b: {:?}", one.keys);
    let mut by_resource = ListFilter::all();
    by_resource.resource = Some("https://a.example/mcp".into());
    let res = s
        .list(&Query::new(by_resource))
        .await
        .or_fail("list by resource")?;
    check!(res.keys.len() == 3, "by resource: {:?}", res.keys);
    Ok(Outcome::Passed)
}

async fn list_pages(i: Instance) -> CaseResult {
    let s = token_store(&i);
    for n in 0..25 {
        let k = key(&format!("user{n:02}"), "https://p.example");
        s.put(
            &k,
            &TokenRecord::new(secret(format!("t{n}"))),
            Precondition::Any,
        )
        .await
        .or_fail("put")?;
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .list(&Query::default().with_limit(10).after(cursor))
            .await
            .or_fail("list page")?;
        check!(page.keys.len() <= 10, "page of {}", page.keys.len());
        seen.extend(page.keys);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
        check!(seen.len() <= 25, "paging does not end");
    }
    let unique: HashSet<_> = seen.iter().collect();
    check!(
        seen.len() == 25 && unique.len() == 25,
        "paging gave {} keys, {} unique",
        seen.len(),
        unique.len()
    );
    Ok(Outcome::Passed)
}

async fn kinds_do_not_mix(i: Instance) -> CaseResult {
    let s = token_store(&i);
    s.put(
        &key("k", "https://k.example"),
        &TokenRecord::new(secret("t")),
        Precondition::Any,
    )
    .await
    .or_fail("put token")?;
    s.put_client(
        &ClientKey::new("https://k.example"),
        &ClientRegistration::new("c"),
        Precondition::Any,
    )
    .await
    .or_fail("put client")?;
    s.save_state("st", &AuthState::new(secret("v")), Duration::from_secs(60))
        .await
        .or_fail("save state")?;
    let tokens = s.list(&Query::default()).await.or_fail("list")?;
    check!(
        tokens.keys.len() == 1,
        "token list has other kinds: {:?}",
        tokens.keys
    );
    let clients = s.list_clients().await.or_fail("list clients")?;
    check!(clients.keys.len() == 1, "client list: {:?}", clients.keys);
    Ok(Outcome::Passed)
}

async fn odd_keys_round_trip(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let long_url = format!("https://long.example/{}", "p".repeat(2048));
    let odd = [
        crate::exact_token_key(
            "ünïcødé 用户 🦀".into(),
            "https://exämple.com/ü path/%41:x".into(),
            Some("https://as.example/a:b/c%2F".into()),
            "a b:c d/e %".into(),
        ),
        crate::exact_token_key(":/%  ".into(), "::".into(), None, String::new()),
        crate::exact_token_key("..".into(), "/".into(), Some("*".into()), "?#[]".into()),
        crate::exact_token_key(
            "u".repeat(512),
            long_url.clone(),
            Some(long_url),
            "s".into(),
        ),
    ];
    for (n, k) in odd.iter().enumerate() {
        let rec = TokenRecord::new(secret(format!("odd-{n}")));
        s.put(k, &rec, Precondition::Any)
            .await
            .or_fail(&format!("put odd key {n}"))?;
        let got = s
            .get(k)
            .await
            .or_fail("get")?
            .ok_or(format!("odd key {n} vanished"))?;
        check!(
            got.value.access_token.expose() == secret(format!("odd-{n}")),
            "odd key {n} read another record"
        );
    }
    let listed: HashSet<_> = s
        .list(&Query::default())
        .await
        .or_fail("list")?
        .keys
        .into_iter()
        .collect();
    let want: HashSet<_> = odd.iter().cloned().collect();
    check!(listed == want, "listing odd keys gave {:?}", listed);
    let only = s
        .list(&Query::new(ListFilter::user(":/%  ")))
        .await
        .or_fail("filtered list")?;
    check!(
        only.keys == vec![odd[1].clone()],
        "filter on an odd user: {:?}",
        only.keys
    );
    Ok(Outcome::Passed)
}

async fn invalid_keys_are_rejected(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let bad = crate::exact_token_key("nul\0inside".into(), "r".into(), None, String::new());
    match s
        .put(&bad, &TokenRecord::new(secret("t")), Precondition::Any)
        .await
    {
        Err(Error::InvalidKey { .. }) => {}
        other => return Err(format!("NUL in a key gave {other:?}")),
    }
    let huge = key(&"x".repeat(token_store_core::MAX_ENCODED_KEY_LEN + 1), "r");
    match s
        .put(&huge, &TokenRecord::new(secret("t")), Precondition::Any)
        .await
    {
        Err(Error::InvalidKey { .. }) => {}
        other => return Err(format!("an oversized key gave {other:?}")),
    }
    Ok(Outcome::Passed)
}

async fn value_sizes_up_to_the_maximum(i: Instance) -> CaseResult {
    let max = i.store.capabilities().max_value_size;
    let sk = StorageKey::single(KeyKind::Meta, "sizes").map_err(|e| e.to_string())?;
    for size in [0usize, 1, 1024, 64 * 1024, max] {
        if size > max {
            continue;
        }
        let value: Vec<u8> = (0..size).map(|n| (n % 251) as u8).collect();
        i.store
            .write(&sk, &value, &PutOptions::default())
            .await
            .or_fail(&format!("put {size} bytes"))?;
        let got = i.store.read(&sk).await.or_fail("get")?.ok_or("absent")?;
        check!(
            got.value.as_slice() == value.as_slice(),
            "{size}-byte value changed"
        );
    }
    let over = vec![7u8; max + 1];
    match i.store.write(&sk, &over, &PutOptions::default()).await {
        Err(Error::TooLarge { .. }) => {}
        other => {
            return Err(format!(
                "{} bytes (over the maximum) gave {other:?}",
                max + 1
            ));
        }
    }
    Ok(Outcome::Passed)
}

async fn if_absent_creates_once(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let k = key("erin", "https://mcp.example.com/mcp");
    let v = s
        .put(&k, &full_record("1"), Precondition::IfAbsent)
        .await
        .or_fail("create")?;
    match s.put(&k, &full_record("2"), Precondition::IfAbsent).await {
        Err(Error::Conflict { current, .. }) => {
            check!(current == Some(v), "conflict names version {current:?}");
        }
        other => return Err(format!("second create gave {other:?}")),
    }
    let got = s.get(&k).await.or_fail("get")?.ok_or("absent")?;
    check!(
        got.value.access_token.expose().contains("-1-"),
        "the failed create wrote"
    );
    Ok(Outcome::Passed)
}

async fn if_version_detects_stale_writers(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let k = key("frank", "https://mcp.example.com/mcp");
    let v1 = s
        .put(&k, &full_record("1"), Precondition::Any)
        .await
        .or_fail("put")?;
    let v2 = s
        .put(&k, &full_record("2"), Precondition::IfVersion(v1.clone()))
        .await
        .or_fail("cas with the current version")?;
    match s
        .put(&k, &full_record("3"), Precondition::IfVersion(v1))
        .await
    {
        Err(Error::Conflict { current, .. }) => {
            check!(
                current == Some(v2.clone()),
                "conflict names {current:?}, not {v2}"
            );
        }
        other => return Err(format!("stale cas gave {other:?}")),
    }
    let got = s.get(&k).await.or_fail("get")?.ok_or("absent")?;
    check!(
        got.value.access_token.expose().contains("-2-"),
        "stale write landed"
    );
    let missing = key("nobody", "https://mcp.example.com/mcp");
    match s
        .put(&missing, &full_record("x"), Precondition::IfVersion(v2))
        .await
    {
        Err(Error::Conflict { current: None, .. }) => {}
        other => return Err(format!("cas on an absent record gave {other:?}")),
    }
    check!(
        s.get(&missing).await.or_fail("get")?.is_none(),
        "cas on an absent record wrote"
    );
    Ok(Outcome::Passed)
}

async fn conditional_delete(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let k = key("gina", "https://mcp.example.com/mcp");
    let v1 = s
        .put(&k, &full_record("1"), Precondition::Any)
        .await
        .or_fail("put")?;
    let v2 = s
        .put(&k, &full_record("2"), Precondition::Any)
        .await
        .or_fail("put")?;
    match s.delete(&k, Precondition::IfVersion(v1)).await {
        Err(Error::Conflict { .. }) => {}
        other => return Err(format!("stale delete gave {other:?}")),
    }
    check!(
        s.get(&k).await.or_fail("get")?.is_some(),
        "stale delete deleted"
    );
    check!(
        s.delete(&k, Precondition::IfVersion(v2))
            .await
            .or_fail("delete current")?,
        "delete with the current version deleted nothing"
    );
    check!(
        s.get(&k).await.or_fail("get")?.is_none(),
        "record survived its delete"
    );
    Ok(Outcome::Passed)
}

async fn create_after_delete(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let k = key("hank", "https://mcp.example.com/mcp");
    let old = s
        .put(&k, &full_record("1"), Precondition::IfAbsent)
        .await
        .or_fail("create")?;
    s.delete(&k, Precondition::Any).await.or_fail("delete")?;
    let new = s
        .put(&k, &full_record("2"), Precondition::IfAbsent)
        .await
        .or_fail("re-create")?;
    // A holder of the old version must not be able to overwrite the new record (ABA).
    check!(
        old != new,
        "re-created record got the deleted record's version {old}: a stale CAS could overwrite it"
    );
    Ok(Outcome::Passed)
}

async fn concurrent_read_modify_write_loses_no_update(i: Instance) -> CaseResult {
    const TASKS: usize = 64;
    let k = key("counter", "https://mcp.example.com/mcp");
    let s: Arc<dyn RawStore> = i.store.clone();
    TokenStore::from_arc(s.clone())
        .put(&k, &TokenRecord::new(counter(0)), Precondition::Any)
        .await
        .or_fail("init")?;
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let s = s.clone();
        let k = k.clone();
        handles.push(tokio::spawn(async move {
            for _attempt in 0..10_000 {
                let cur = TokenStore::from_arc(s.clone())
                    .get(&k)
                    .await?
                    .ok_or_else(|| Error::invalid_input("gone"))?;
                let n = counter_value(cur.value.access_token.expose()).unwrap_or(u64::MAX - 1);
                let next = TokenRecord::new(counter(n + 1));
                match TokenStore::from_arc(s.clone())
                    .put(&k, &next, Precondition::IfVersion(cur.version))
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) if e.is_conflict() => tokio::task::yield_now().await,
                    Err(e) => return Err(e),
                }
            }
            Err(Error::invalid_input("no progress after 10000 attempts"))
        }));
    }
    for h in handles {
        h.await.map_err(|e| e.to_string())?.or_fail("task")?;
    }
    let end = TokenStore::from_arc(s.clone())
        .get(&k)
        .await
        .or_fail("get")?
        .ok_or("absent")?;
    check!(
        counter_value(end.value.access_token.expose()) == Some(TASKS as u64),
        "{TASKS} increments ended at {:?}",
        counter_value(end.value.access_token.expose())
    );
    Ok(Outcome::Passed)
}

async fn persistence_across_reopen(i: Instance) -> CaseResult {
    let Some(reopen) = i.reopen.clone() else {
        return Ok(Outcome::NotApplicable("not persistent".into()));
    };
    let k = key("ivy", "https://mcp.example.com/mcp");
    let rec = full_record("p");
    let v = i
        .token_store()
        .put(&k, &rec, Precondition::Any)
        .await
        .or_fail("put")?;
    let ck = ClientKey::new("https://auth.example.com");
    i.token_store()
        .put_client(
            &ck,
            &ClientRegistration::new("cid").with_secret(secret("cs")),
            Precondition::Any,
        )
        .await
        .or_fail("put client")?;
    drop(i);
    let again = reopen().await.or_fail("reopen")?;
    let got = TokenStore::from_arc(again.clone())
        .get(&k)
        .await
        .or_fail("get")?
        .ok_or("lost on reopen")?;
    check!(got.value == rec, "changed on reopen");
    check!(got.version == v, "version changed on reopen");
    let c = TokenStore::from_arc(again.clone())
        .get_client(&ck)
        .await
        .or_fail("get client")?
        .ok_or("client lost")?;
    check!(
        c.value.client_secret.map(|s| s.expose() == secret("cs")) == Some(true),
        "client secret lost"
    );
    Ok(Outcome::Passed)
}

async fn ttl_expires_records(i: Instance) -> CaseResult {
    if !i.store.capabilities().ttl {
        return Ok(Outcome::NotApplicable("no TTL support".into()));
    }
    let s = token_store(&i);
    let short = key("ttl", "https://short.example");
    let forever = key("ttl", "https://forever.example");
    let opts = PutOptions::new(Precondition::Any).with_ttl(Some(Duration::from_secs(1)));
    s.put_with(&short, &TokenRecord::new(secret("s")), &opts)
        .await
        .or_fail("put ttl")?;
    s.put(&forever, &TokenRecord::new(secret("f")), Precondition::Any)
        .await
        .or_fail("put")?;
    check!(
        s.get(&short).await.or_fail("get")?.is_some(),
        "expired at once"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    check!(
        s.get(&short).await.or_fail("get")?.is_none(),
        "still readable after its TTL"
    );
    check!(
        s.get(&forever).await.or_fail("get")?.is_some(),
        "a record without TTL expired"
    );
    // An expired record is absent for conditional writes too.
    s.put_with(
        &short,
        &TokenRecord::new(secret("s2")),
        &PutOptions::new(Precondition::IfAbsent),
    )
    .await
    .or_fail("create over an expired record")?;
    Ok(Outcome::Passed)
}

async fn client_registrations_round_trip(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let ck = ClientKey::new("https://Auth.Example.com/").with_application("my-app");
    let mut reg = ClientRegistration::new("client-123").with_secret(secret("client-xyz"));
    reg.redirect_uris = vec!["http://127.0.0.1:8765/callback".into()];
    reg.extra.insert("client_name".into(), json!("My App"));
    let v = s
        .put_client(&ck, &reg, Precondition::IfAbsent)
        .await
        .or_fail("put")?;
    let got = s.get_client(&ck).await.or_fail("get")?.ok_or("absent")?;
    check!(
        got.value == reg && got.version == v,
        "registration changed: {:?}",
        got.value
    );
    let listed = s.list_clients().await.or_fail("list")?;
    check!(
        listed.keys == vec![ck.clone()],
        "clients listed: {:?}",
        listed.keys
    );
    check!(
        s.delete_client(&ck, Precondition::IfVersion(v))
            .await
            .or_fail("delete")?,
        "not deleted"
    );
    check!(
        s.get_client(&ck).await.or_fail("get")?.is_none(),
        "deleted client readable"
    );
    Ok(Outcome::Passed)
}

async fn pkce_state_is_taken_once_under_concurrency(i: Instance) -> CaseResult {
    let s: Arc<dyn RawStore> = i.store.clone();
    for round in 0..5 {
        let state = format!("csrf-{round}");
        TokenStore::from_arc(s.clone())
            .save_state(
                &state,
                &AuthState::new(secret("verifier")),
                Duration::from_secs(60),
            )
            .await
            .or_fail("save")?;
        let mut handles = Vec::new();
        for _ in 0..16 {
            let s = s.clone();
            let state = state.clone();
            handles.push(tokio::spawn(async move {
                TokenStore::from_arc(s.clone()).take_state(&state).await
            }));
        }
        let mut taken = 0;
        for h in handles {
            if h.await
                .map_err(|e| e.to_string())?
                .or_fail("take")?
                .is_some()
            {
                taken += 1;
            }
        }
        check!(taken == 1, "round {round}: state taken {taken} times");
    }
    Ok(Outcome::Passed)
}

async fn pkce_state_expires(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let mut auth = AuthState::new(secret("verifier-1"));
    auth.requested_scopes = vec!["read".into()];
    s.save_state("a", &auth, Duration::from_secs(60))
        .await
        .or_fail("save")?;
    let got = s
        .take_state("a")
        .await
        .or_fail("take")?
        .ok_or("state missing")?;
    check!(got == auth, "state changed");
    check!(
        s.take_state("a").await.or_fail("take 2")?.is_none(),
        "taken twice"
    );
    s.save_state("b", &auth, Duration::from_secs(1))
        .await
        .or_fail("save")?;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    check!(
        s.take_state("b").await.or_fail("take")?.is_none(),
        "expired state returned"
    );
    s.save_state("c", &auth, Duration::from_millis(10))
        .await
        .or_fail("save")?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.purge_expired_states().await.or_fail("purge")?;
    let left = i
        .store
        .scan(KeyKind::State, &ListFilter::all())
        .await
        .or_fail("list")?;
    check!(left.is_empty(), "purge left {} states", left.len());
    Ok(Outcome::Passed)
}

async fn secrets_are_redacted_in_debug_and_errors(i: Instance) -> CaseResult {
    let s = token_store(&i);
    let k = key("leak", "https://mcp.example.com/mcp");
    let rec = full_record("LEAKCHECK");
    let v = s.put(&k, &rec, Precondition::Any).await.or_fail("put")?;
    let got = s.get(&k).await.or_fail("get")?.ok_or("absent")?;
    let raw = i
        .store
        .read(&k.storage_key())
        .await
        .or_fail("raw get")?
        .ok_or("absent")?;
    let err = s
        .put(&k, &rec, Precondition::IfAbsent)
        .await
        .err()
        .ok_or("no conflict")?;
    let reg = ClientRegistration::new("c").with_secret(secret("client-LEAKCHECK"));
    let texts = [
        format!("{got:?}"),
        format!("{raw:?}"),
        format!("{err} {err:?}"),
        format!("{reg:?}"),
        format!("{:?}", i.store),
        format!("{v:?}"),
    ];
    for t in texts {
        let leaks = crate::secrets::find_leaks(&t, &["LEAKCHECK".to_owned()]);
        check!(leaks.is_empty(), "a secret leaked: {leaks:?}");
    }
    Ok(Outcome::Passed)
}
