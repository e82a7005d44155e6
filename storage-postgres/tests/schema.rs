//! The schema on a real server: created once by concurrent first opens, recorded in the
//! metadata table, and every table that is not token-store's refused before anything is
//! written to it: a table of the same name without our metadata, metadata of another
//! application, other columns, a newer schema version, metadata without its table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use token_store_core::{Error, KeyKind, PutOptions, RawStore, StorageKey};
use token_store_postgres::{PostgresConfig, PostgresStore, SCHEMA_VERSION};

fn refused(r: Result<PostgresStore, Error>, want: &str) {
    match r {
        Err(Error::Config { message, .. }) => {
            assert!(message.contains(want), "{message}");
            println!("refused: {message}");
        }
        other => panic!("expected a Config error containing {want:?}, got {other:?}"),
    }
}

async fn setup(config: &PostgresConfig, sql: &str) {
    let admin = common::raw_client(config).await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\"; SET search_path = \"{}\"; {sql}",
            config.schema, config.schema
        ))
        .await
        .unwrap();
}

async fn count(config: &PostgresConfig, sql: &str) -> i64 {
    let admin = common::raw_client(config).await;
    admin.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_opens_migrate_once() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let config = config.with_table("fresh");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let config = config.clone();
        tasks.push(tokio::spawn(
            async move { PostgresStore::open(&config).await },
        ));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let meta = format!("\"{}\".fresh_meta", config.schema);
    let admin = common::raw_client(&config).await;
    let row = admin
        .query_one(
            &format!("SELECT application, schema_version FROM {meta}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "token-store");
    assert_eq!(row.get::<_, i32>(1), SCHEMA_VERSION);
    assert_eq!(
        count(&config, &format!("SELECT count(*) FROM {meta}")).await,
        1
    );
    // The indexes the listings and the sweep use are there.
    let indexes = count(
        &config,
        &format!(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = '{}' AND tablename = 'fresh'",
            config.schema
        ),
    )
    .await;
    assert_eq!(indexes, 4, "primary key, user, resource and expiry indexes");
    // Opening again changes nothing.
    PostgresStore::open(&config).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_table_is_refused() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let config = config.with_table("orders");
    setup(&config, "CREATE TABLE orders (id serial PRIMARY KEY, item text); INSERT INTO orders(item) VALUES ('x')").await;
    refused(
        PostgresStore::open(&config).await,
        "is not a token-store table",
    );
    // Untouched: no metadata table appeared, the row is still there.
    assert_eq!(
        count(
            &config,
            &format!("SELECT count(*) FROM \"{}\".orders", config.schema)
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &config,
            &format!(
                "SELECT count(*) FROM pg_tables WHERE schemaname = '{}'",
                config.schema
            )
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_of_another_application_is_refused() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let other = config.clone().with_table("other");
    setup(
        &other,
        "CREATE TABLE other (x int); CREATE TABLE other_meta (id int PRIMARY KEY, application text, schema_version int);
         INSERT INTO other_meta VALUES (1, 'billing', 3)",
    )
    .await;
    refused(PostgresStore::open(&other).await, "belongs to \"billing\"");
    // A metadata table of another shape.
    let shaped = config.clone().with_table("shaped");
    setup(
        &shaped,
        "CREATE TABLE shaped (x int); CREATE TABLE shaped_meta (key text, value text)",
    )
    .await;
    refused(
        PostgresStore::open(&shaped).await,
        "is not token-store's metadata table",
    );
    // Metadata without its table.
    let lonely = config.clone().with_table("lonely");
    setup(
        &lonely,
        "CREATE TABLE lonely_meta (id int PRIMARY KEY, application text, schema_version int);
         INSERT INTO lonely_meta VALUES (1, 'token-store', 1)",
    )
    .await;
    refused(PostgresStore::open(&lonely).await, "is missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_columns_and_newer_schemas_are_refused() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    // Ours, then altered by someone.
    let altered = config.clone().with_table("altered");
    PostgresStore::open(&altered).await.unwrap();
    setup(&altered, "ALTER TABLE altered ADD COLUMN note text").await;
    refused(
        PostgresStore::open(&altered).await,
        "does not have token-store's columns",
    );
    // Ours, from a newer token-store.
    let newer = config.clone().with_table("newer");
    PostgresStore::open(&newer).await.unwrap();
    setup(
        &newer,
        &format!(
            "UPDATE newer_meta SET schema_version = {}",
            SCHEMA_VERSION + 1
        ),
    )
    .await;
    refused(PostgresStore::open(&newer).await, "upgrade token-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_are_swept_and_invisible() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let config = config
        .with_table("ttl")
        .with_sweep_interval(Duration::from_millis(200));
    let store = PostgresStore::open(&config).await.unwrap();
    let key = |n: u32| StorageKey::single(KeyKind::State, format!("s{n}")).unwrap();
    let short = PutOptions::default().with_ttl(Some(Duration::from_millis(300)));
    for n in 0..5 {
        store.write(&key(n), b"v", &short).await.unwrap();
    }
    store
        .write(&key(99), b"kept", &PutOptions::default())
        .await
        .unwrap();
    assert!(
        store
            .read(&key(0))
            .await
            .unwrap()
            .is_some_and(|r| r.expires_at.is_some())
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    // Expired: absent to reads and listings at once, though still in the table.
    assert!(store.read(&key(0)).await.unwrap().is_none());
    assert_eq!(
        store
            .scan(KeyKind::State, &Default::default())
            .await
            .unwrap()
            .len(),
        1
    );
    // The next write (a sweep is due) deletes them in the background.
    store
        .write(&key(99), b"kept", &PutOptions::default())
        .await
        .unwrap();
    let table = format!("\"{}\".ttl", config.schema);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = count(&config, &format!("SELECT count(*) FROM {table}")).await;
        if left == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} rows left after the sweep"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The generic plan a connection caches for a key lookup on a table of a few rows (where
/// every index costs about the same): it must be the primary key's.
async fn key_lookup_plan(config: &PostgresConfig, table: &str) -> String {
    let admin = common::raw_client(config).await;
    let t = format!("\"{}\".\"{table}\"", config.schema);
    admin
        .batch_execute(&format!(
            "SET plan_cache_mode = force_generic_plan;
             PREPARE lookup(text, bytea) AS SELECT version FROM {t}
                 WHERE kind = $1 AND id = $2 AND (expires_at IS NULL OR expires_at > now());"
        ))
        .await
        .unwrap();
    let rows = admin
        .query("EXPLAIN EXECUTE lookup('token', '\\x00')", &[])
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn write_some(store: &PostgresStore, n: usize) {
    for i in 0..n {
        let key = token_store_core::TokenKey::new(
            format!("user-{i}"),
            &format!("https://mcp-{i}.example.com/mcp"),
            None,
            ["read"],
        )
        .storage_key();
        store
            .write(&key, b"{}", &PutOptions::default())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_lookup_is_planned_on_the_primary_key_even_on_a_small_table() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let config = config.with_table("small");
    let store = PostgresStore::open(&config).await.unwrap();
    write_some(&store, 10).await;
    let plan = key_lookup_plan(&config, "small").await;
    assert!(plan.contains("small_pkey"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_table_is_migrated_to_an_index_no_key_lookup_can_take() {
    let Some(config) = common::plain() else {
        return;
    };
    let _drop = common::DropSchema(config.clone());
    let config = config.with_table("old");
    // Version 1's tables as that release created them, with a record in them.
    setup(
        &config,
        "CREATE TABLE old_meta (id integer PRIMARY KEY CHECK (id = 1), application text NOT NULL,
             schema_version integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
             migrated_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE old (kind text NOT NULL, id bytea NOT NULL, p1 text NOT NULL, p2 text NOT NULL,
             p3 text NOT NULL, p4 text NOT NULL, value bytea NOT NULL, version bigint NOT NULL,
             expires_at timestamptz, updated_at timestamptz NOT NULL, PRIMARY KEY (kind, id))
             WITH (fillfactor = 80);
         CREATE INDEX old_user_idx ON old (kind, left(p1, 200), id);
         CREATE INDEX old_resource_idx ON old (left(p2, 200), id) WHERE kind = 'token';
         CREATE INDEX old_expiry_idx ON old (expires_at) WHERE expires_at IS NOT NULL;
         INSERT INTO old_meta (id, application, schema_version) VALUES (1, 'token-store', 1);",
    )
    .await;
    let store = PostgresStore::open(&config).await.unwrap();
    write_some(&store, 10).await;
    let meta = format!("\"{}\".old_meta", config.schema);
    assert_eq!(
        count(
            &config,
            &format!("SELECT schema_version::bigint FROM {meta}")
        )
        .await,
        i64::from(SCHEMA_VERSION)
    );
    let admin = common::raw_client(&config).await;
    let def: String = admin
        .query_one(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = 'old_user_idx'",
            &[&config.schema],
        )
        .await
        .unwrap()
        .get(0);
    assert!(def.contains("(\"left\"(p1, 200), kind, id)"), "{def}");
    let plan = key_lookup_plan(&config, "old").await;
    assert!(plan.contains("old_pkey"), "{plan}");
    // The listing by user still finds every record through the reordered index.
    let listed = store
        .scan(
            KeyKind::Token,
            &token_store_core::ListFilter::user("user-3"),
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}
