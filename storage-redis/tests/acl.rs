//! The ACL recipe of the crate docs, checked against the real servers: a Redis user limited
//! to one prefix (`~prefix:*`) and to the commands the backend sends passes the whole
//! conformance suite, on one server, on the cluster and behind Sentinel, and can neither read
//! nor write a key outside its prefix.

// Test code (helpers included) states its expectations with unwrap/expect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, ServerErrorKind, cmd};
use token_store_conformance::{Instance, run, services};
use token_store_core::{Error, Precondition, StoreUrl, TokenKey, TokenRecord, TokenStore};
use token_store_redis::{RedisConfig, RedisStore};

/// The recipe's commands (crate docs, "Trust model of a shared prefix").
const COMMANDS: &[&str] = &[
    "+get",
    "+getrange",
    "+strlen",
    "+exists",
    "+set",
    "+del",
    "+scan",
    "+evalsha",
    "+script|load",
    "+ping",
];
/// What a cluster adds: the slot map, for routing and for listing every master.
const CLUSTER_COMMANDS: &[&str] = &["+cluster|slots"];
/// What Sentinel adds: the client checks the master's role after asking the sentinels.
const SENTINEL_COMMANDS: &[&str] = &["+role"];

/// A user created on some servers for one test, deleted again when dropped.
struct AclUser {
    name: String,
    password: String,
    root: String,
    nodes: Vec<String>,
}

impl AclUser {
    async fn create(nodes: Vec<String>, extra: &[&str]) -> Self {
        let name = services::unique("ts-acl");
        let password = services::unique("pw");
        let root = common::prefix();
        for node in &nodes {
            let mut c = connect(node).await;
            let mut setuser = cmd("ACL");
            setuser
                .arg("SETUSER")
                .arg(&name)
                .arg("reset")
                .arg("on")
                .arg(format!(">{password}"))
                .arg(format!("~{root}:*"))
                .arg("resetchannels")
                .arg("-@all")
                .arg(COMMANDS)
                .arg(extra);
            let _: () = setuser.query_async(&mut c).await.unwrap();
            // The user must be able to load the scripts itself (EVALSHA answers NOSCRIPT).
            let _: () = cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut c)
                .await
                .unwrap();
        }
        AclUser {
            name,
            password,
            root,
            nodes,
        }
    }

    /// `host:port` with this user's credentials, for a node URL's authority.
    fn userinfo(&self) -> String {
        format!("{}:{}@", self.name, self.password)
    }

    /// A fresh prefix inside the user's key pattern.
    fn prefix(&self) -> String {
        format!("{}:{}", self.root, services::unique("case"))
    }
}

impl Drop for AclUser {
    fn drop(&mut self) {
        for node in &self.nodes {
            let port = node.rsplit(':').next().unwrap_or_default();
            let port = port.trim_end_matches('/');
            let _ = std::process::Command::new("redis-cli")
                .args(["-p", port, "ACL", "DELUSER", &self.name])
                .output();
        }
    }
}

async fn connect(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn with_userinfo(node: &str, userinfo: &str) -> String {
    node.replacen("://", &format!("://{userinfo}"), 1)
}

fn is_noperm(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm)
}

/// The suite through `open_url` as the restricted user, each case under a fresh prefix
/// inside the user's pattern.
async fn suite_as(
    user: &AclUser,
    backend: &str,
    url_of: impl Fn(&str) -> String + Send + Sync + 'static,
) {
    let user_prefix = {
        let root = user.root.clone();
        move || format!("{root}:{}", services::unique("case"))
    };
    let url_of = std::sync::Arc::new(url_of);
    let report = run(backend, move || {
        let url = StoreUrl::parse(&url_of(&user_prefix())).unwrap();
        async move {
            let open = move || {
                let url = url.clone();
                async move { Ok(token_store_redis::open_url(&url).await?.raw().clone()) }
            };
            let store = open().await?;
            Ok(Instance::with_reopen(store, open))
        }
    })
    .await;
    report.assert_ok();
}

/// The user cannot read or write outside its prefix, through the store or by hand.
async fn confined(user: &AclUser, node: &str, outside: RedisConfig) {
    let mut c = connect(&with_userinfo(node, &user.userinfo())).await;
    let outside_key = format!("{}-outside:k", user.root);
    for attempt in [
        cmd("GET").arg(&outside_key).clone(),
        cmd("SET").arg(&outside_key).arg("x").clone(),
        cmd("DEL").arg(&outside_key).clone(),
        cmd("KEYS").arg("*").clone(),
        cmd("FLUSHDB").clone(),
        cmd("EVAL").arg("return 1").arg(0).clone(),
    ] {
        let got: Result<redis::Value, _> = attempt.query_async(&mut c).await;
        match got {
            Err(e) if is_noperm(&e) => {}
            other => panic!("{attempt:?} as the restricted user gave {other:?}"),
        }
    }
    // Opening reads the prefix's encryption header: refused at once.
    match token_store_redis::open(outside.clone()).await {
        Err(Error::PermissionDenied { .. }) => {}
        other => panic!("opening a store outside the prefix gave {other:?}"),
    }
    let store = TokenStore::new(RedisStore::open(&outside).await.unwrap());
    let key = TokenKey::for_server("https://outside.example");
    match store
        .put(&key, &TokenRecord::new("t"), Precondition::Any)
        .await
    {
        Err(Error::PermissionDenied { .. }) => {}
        other => panic!("a put outside the prefix gave {other:?}"),
    }
    match store.get(&key).await {
        Err(Error::PermissionDenied { .. }) => {}
        other => panic!("a get outside the prefix gave {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_recipe_standalone() {
    let Some(url) = services::require("TOKEN_STORE_TEST_REDIS_URL") else {
        return;
    };
    let user = AclUser::create(vec![url.clone()], &[]).await;
    let node = with_userinfo(&url, &user.userinfo());
    let suite_node = node.clone();
    suite_as(&user, "redis-acl", move |prefix| {
        format!("{suite_node}?prefix={prefix}")
    })
    .await;
    let outside = RedisConfig::standalone(&node).with_prefix(format!("{}-outside", user.root));
    confined(&user, &url, outside).await;
    // The user's own prefix works for the typed API end to end.
    let store = token_store_redis::open(RedisConfig::standalone(&node).with_prefix(user.prefix()))
        .await
        .unwrap();
    let key = TokenKey::for_server("https://inside.example");
    store
        .put(&key, &TokenRecord::new("t"), Precondition::IfAbsent)
        .await
        .unwrap();
    assert!(store.get(&key).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_recipe_cluster() {
    let Some(urls) = services::require("TOKEN_STORE_TEST_REDIS_CLUSTER_URLS") else {
        return;
    };
    let nodes: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let user = AclUser::create(nodes.clone(), CLUSTER_COMMANDS).await;
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| {
            n.trim_start_matches("redis://")
                .trim_end_matches('/')
                .to_owned()
        })
        .collect();
    let base = format!("redis+cluster://{}{}/", user.userinfo(), hosts.join(","));
    let suite_base = base.clone();
    suite_as(&user, "redis-cluster-acl", move |prefix| {
        format!("{suite_base}?prefix={prefix}")
    })
    .await;
    let authed: Vec<String> = nodes
        .iter()
        .map(|n| with_userinfo(n, &user.userinfo()))
        .collect();
    let outside = RedisConfig::cluster(authed).with_prefix(format!("{}-outside", user.root));
    confined(&user, &nodes[0], outside).await;
}

/// The data nodes behind Sentinel (master and replicas), so the user exists wherever a
/// failover may put the master.
async fn sentinel_data_nodes(sentinel_url: &str) -> Vec<String> {
    let first = sentinel_url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split([',', '/']).next())
        .unwrap();
    let master = sentinel_url.rsplit('/').next().unwrap();
    let mut s = connect(&format!("redis://{first}/")).await;
    let (host, port): (String, String) = cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut s)
        .await
        .unwrap();
    let mut nodes = vec![format!("redis://{host}:{port}/")];
    let replicas: Vec<std::collections::HashMap<String, String>> = cmd("SENTINEL")
        .arg("replicas")
        .arg(master)
        .query_async(&mut s)
        .await
        .unwrap();
    for r in replicas {
        nodes.push(format!("redis://{}:{}/", r["ip"], r["port"]));
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_recipe_sentinel() {
    let Some(url) = services::require("TOKEN_STORE_TEST_REDIS_SENTINEL_URL") else {
        return;
    };
    let data_nodes = sentinel_data_nodes(&url).await;
    let user = AclUser::create(data_nodes.clone(), SENTINEL_COMMANDS).await;
    let authed = with_userinfo(&url, &user.userinfo());
    let suite_url = authed.clone();
    suite_as(&user, "redis-sentinel-acl", move |prefix| {
        format!("{suite_url}?prefix={prefix}")
    })
    .await;
    let outside = StoreUrl::parse(&format!("{authed}?prefix={}-outside", user.root)).unwrap();
    confined(
        &user,
        &data_nodes[0],
        RedisConfig::from_url(&outside).unwrap(),
    )
    .await;
}
