//! The URL grammar of [`RedisConfig::from_url`] (tabled in the crate docs).

use redis::IntoConnectionInfo;
use token_store_core::backend::percent_decode;
use token_store_core::layers::CommonOptions;
use token_store_core::{BackendKind, Error, QueryParams, Result, StoreUrl};

use super::{RedisConfig, TlsFiles, Topology, host_of};

pub(super) fn parse(url: &StoreUrl) -> Result<RedisConfig> {
    let mut config = match url.kind() {
        BackendKind::Redis => standalone_from(url)?,
        BackendKind::RedisCluster => cluster_from(url)?,
        BackendKind::RedisSentinel => sentinel_from(url)?,
        _ => return Err(Error::config(format!("{url} is not a Redis store URL"))),
    };
    let mut params = url.params()?;
    let common = CommonOptions::from_params(&mut params)?;
    if let Some(prefix) = params.prefix()? {
        config.prefix = prefix;
    }
    if let Some(files) = tls_files(&mut params)? {
        if !url.is_tls() {
            return Err(Error::config(format!(
                "{url}: ca, cert and key are TLS options: use a rediss:// URL"
            )));
        }
        config.tls = Some(files);
    }
    if let Some(limit) = common.timeout {
        config = config.with_timeout(limit);
    }
    if let Some(key) = common.key {
        config = config.with_key(key);
    }
    if let Some(limit) = params.millis("connect_timeout_ms")? {
        config.connect_timeout = limit;
    }
    if let Some(limit) = params.millis("response_timeout_ms")? {
        config.response_timeout = limit;
    }
    if let Some(max) = params.parse::<usize>("max_value_size", "a number of bytes")? {
        if max == 0 {
            return Err(Error::config(format!(
                "{url}: `max_value_size` must be more than 0"
            )));
        }
        config.max_value_size = max;
    }
    params.finish()?;
    Ok(config)
}

fn tls_files(params: &mut QueryParams) -> Result<Option<TlsFiles>> {
    let files = TlsFiles {
        ca: params.path("ca")?,
        cert: params.path("cert")?,
        key: params.path("key")?,
    };
    Ok(Some(files).filter(|f| !f.is_empty()))
}

/// `redis://[user:pass@]host[:port][/db]`, checked here so a malformed one fails at
/// configuration time, not at the first connect.
fn standalone_from(url: &StoreUrl) -> Result<RedisConfig> {
    let body = url.body();
    if body.is_empty() {
        return Err(Error::config(format!("{url}: needs a host")));
    }
    let node = format!("{}://{body}", node_scheme(url));
    node.as_str()
        .into_connection_info()
        .map_err(|e| Error::Config {
            message: format!("{url}: not a Redis server address"),
            source: Some(Box::new(e)),
        })?;
    Ok(RedisConfig::standalone(node))
}

/// `redis+cluster://[user:pass@]host:port,host:port[/]`: each seed node gets the userinfo.
fn cluster_from(url: &StoreUrl) -> Result<RedisConfig> {
    let (userinfo, rest) = split_userinfo(url.body());
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !path.is_empty() {
        return Err(Error::config(format!(
            "{url}: a cluster has no database number (nothing may follow the hosts)"
        )));
    }
    let nodes = host_list(hosts)
        .map(|h| format!("{}://{userinfo}{h}/", node_scheme(url)))
        .collect::<Vec<_>>();
    if nodes.is_empty() {
        return Err(Error::config(format!(
            "{url}: needs seed nodes, e.g. {}://host:port,host:port",
            url.scheme()
        )));
    }
    for node in &nodes {
        node.as_str()
            .into_connection_info()
            .map_err(|e| Error::Config {
                message: format!("{url}: `{}` is not a host:port", host_of(node)),
                source: Some(Box::new(e)),
            })?;
    }
    Ok(RedisConfig::cluster(nodes))
}

/// `redis+sentinel://[user:pass@]host:port,host:port/master[/db]`: the userinfo is the
/// master's (sentinels are reached without it).
fn sentinel_from(url: &StoreUrl) -> Result<RedisConfig> {
    let (userinfo, rest) = split_userinfo(url.body());
    let mut segments = rest.split('/');
    let hosts = segments.next().unwrap_or_default();
    let master = segments.next().unwrap_or_default();
    let db =
        match segments.next().filter(|s| !s.is_empty()) {
            Some(d) => d.parse::<i64>().ok().filter(|d| *d >= 0).ok_or_else(|| {
                Error::config(format!("{url}: the database `{d}` is not a number"))
            })?,
            None => 0,
        };
    if segments.any(|s| !s.is_empty()) {
        return Err(Error::config(format!(
            "{url}: nothing may follow the database number"
        )));
    }
    if master.is_empty() {
        return Err(Error::config(format!(
            "{url}: needs a master name, e.g. {}://host:port,host:port/mymaster",
            url.scheme()
        )));
    }
    let sentinels: Vec<String> = host_list(hosts).map(|h| format!("redis://{h}/")).collect();
    if sentinels.is_empty() {
        return Err(Error::config(format!("{url}: needs sentinel addresses")));
    }
    let (username, password) = parse_userinfo(userinfo)?;
    Ok(RedisConfig::with_topology(Topology::Sentinel {
        sentinels,
        master: decode(master)?,
        tls: url.is_tls(),
        db,
        username,
        password,
    }))
}

fn node_scheme(url: &StoreUrl) -> &'static str {
    if url.is_tls() { "rediss" } else { "redis" }
}

fn host_list(hosts: &str) -> impl Iterator<Item = &str> {
    hosts.split(',').map(str::trim).filter(|h| !h.is_empty())
}

/// Splits `user:pass@rest` into (`user:pass@`, `rest`) at the last `@` (a password may hold
/// one); the `@` stays with the userinfo so it can be pasted back in front of each host.
fn split_userinfo(body: &str) -> (&str, &str) {
    let authority_end = body.find('/').unwrap_or(body.len());
    match body[..authority_end].rfind('@') {
        Some(i) => (&body[..=i], &body[i + 1..]),
        None => ("", body),
    }
}

fn parse_userinfo(userinfo: &str) -> Result<(Option<String>, Option<String>)> {
    let Some(info) = userinfo.strip_suffix('@') else {
        return Ok((None, None));
    };
    let (user, pass) = match info.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (info, None),
    };
    let user = decode(user)?.trim().to_owned();
    let pass = pass.map(decode).transpose()?;
    Ok((Some(user).filter(|u| !u.is_empty()), pass))
}

fn decode(s: &str) -> Result<String> {
    percent_decode(s).ok_or_else(|| Error::config("invalid percent-encoding in the store URL"))
}
