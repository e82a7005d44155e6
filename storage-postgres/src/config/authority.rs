//! The part of a `postgres://` URL before the query: `user[:password]@host[:port][,...][/db]`.
//!
//! Parsed here rather than by `tokio_postgres::Config`'s URL parser, which would refuse the
//! store's own parameters (`schema`, `table`, `key_file`, ...), and so that no error ever
//! echoes the text of the authority: a password that was not percent-encoded may be in it.

use std::path::PathBuf;

use token_store_core::backend::percent_decode;
use token_store_core::{Error, Result, Secret, StoreUrl};

use super::{DEFAULT_PORT, Host};

/// What the authority and path of a URL name.
pub(crate) struct Authority {
    pub(crate) user: Option<String>,
    pub(crate) password: Option<Secret>,
    pub(crate) hosts: Vec<Host>,
    pub(crate) dbname: Option<String>,
}

fn malformed(what: &str) -> Error {
    Error::config(format!("postgres URL: {what}"))
}

/// Splits `url` (a `postgres://` or `postgresql://` URL) into its parts.
pub(crate) fn parse(url: &StoreUrl) -> Result<Authority> {
    let raw = url.as_str();
    let after_scheme = &raw[url.scheme().len() + 1..];
    let rest = after_scheme
        .strip_prefix("//")
        .ok_or_else(|| malformed("it must start with postgres:// or postgresql://"))?;
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, q),
        None => (rest, ""),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => before_query.split_at(i),
        None => (before_query, ""),
    };
    refuse_unencoded_password(authority, path, query)?;
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, password) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            let user = decode(user, "the user name")?;
            let password = match password.filter(|p| !p.is_empty()) {
                // Never echoed: a malformed escape is reported without the text around it.
                Some(p) => Some(Secret::new(percent_decode(p).ok_or_else(|| {
                    malformed("the password is not valid percent-encoding")
                })?)),
                None => None,
            };
            (Some(user).filter(|u| !u.is_empty()), password)
        }
    };
    let hosts = hosts
        .split(',')
        .map(parse_host)
        .collect::<Result<Vec<Host>>>()?;
    let dbname = match path.strip_prefix('/') {
        Some(db) if !db.is_empty() => Some(decode(db, "the database name")?),
        _ => None,
    };
    Ok(Authority {
        user,
        password,
        hosts,
        dbname,
    })
}

/// A `/`, `?` or `#`... inside a password must be percent-encoded. When it is not, the URL
/// splits in the wrong place, and the rest of the password would end up where errors and
/// logs show text (a host, a path, a parameter name): refuse such a URL without quoting it.
fn refuse_unencoded_password(authority: &str, path: &str, query: &str) -> Result<()> {
    if authority.contains('@') {
        return Ok(());
    }
    let in_path = path.contains('@');
    let in_query_name = query.split('&').any(|pair| {
        pair.split('=')
            .next()
            .is_some_and(|name| name.contains('@'))
    });
    if in_path || in_query_name {
        return Err(malformed(
            "an `@` follows a `/` or `?` that ends the host part: percent-encode `/`, `?` and `@` in the user name and password (%2F, %3F, %40)",
        ));
    }
    Ok(())
}

fn decode(text: &str, what: &str) -> Result<String> {
    percent_decode(text).ok_or_else(|| malformed(&format!("{what} is not valid percent-encoding")))
}

/// `name[:port]`, `[v6]:port`, or a percent-encoded absolute path: a Unix-socket directory.
fn parse_host(text: &str) -> Result<Host> {
    let (name, port) = if let Some(v6) = text.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| malformed("an IPv6 host lacks its closing `]`"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| malformed("text after an IPv6 host's `]` must be `:port`"))?,
            ),
        };
        (addr.to_owned(), port)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (decode(h, "a host name")?, Some(p)),
            None => (decode(text, "a host name")?, None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            malformed(&format!(
                "the port `{}` is not a number from 1 to 65535",
                p.escape_debug()
            ))
        })?,
    };
    if name.is_empty() {
        return Err(malformed(
            "name a host (for a Unix socket, its directory percent-encoded: %2Fvar%2Frun%2Fpostgresql)",
        ));
    }
    Ok(if name.starts_with('/') {
        Host::Unix {
            dir: PathBuf::from(name),
            port,
        }
    } else {
        Host::Tcp { name, port }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(raw: &str) -> Authority {
        parse(&StoreUrl::parse(raw).unwrap()).unwrap()
    }

    #[test]
    fn users_passwords_hosts_and_databases() {
        let a =
            parts("postgres://app:p%40ss%2Fw%3Ard@db1:6432,[::1],%2Ftmp%2Fpg:5433/tok%20ens?x=1");
        assert_eq!(a.user.as_deref(), Some("app"));
        assert_eq!(a.password.as_ref().map(Secret::expose), Some("p@ss/w:rd"));
        assert_eq!(
            a.hosts,
            vec![
                Host::Tcp {
                    name: "db1".into(),
                    port: 6432
                },
                Host::Tcp {
                    name: "::1".into(),
                    port: 5432
                },
                Host::Unix {
                    dir: "/tmp/pg".into(),
                    port: 5433
                },
            ]
        );
        assert_eq!(a.dbname.as_deref(), Some("tok ens"));
        // A raw `@` in the password: the userinfo ends at the last `@`.
        let a = parts("postgresql://app:p@ss@db/x");
        assert_eq!(a.password.as_ref().map(Secret::expose), Some("p@ss"));
        let a = parts("postgres://db");
        assert!(a.user.is_none() && a.password.is_none() && a.dbname.is_none());
    }

    #[test]
    fn malformed_urls_are_refused_without_echoing_a_password() {
        for raw in [
            "postgres://app:pa/ss@db/x",
            "postgres://app:pa?ss@db/x",
            "postgres://app:s3cr%zz@db/x",
            "postgres://app@db:99999/x",
            "postgres://app@db:x/x",
            "postgres://app@/x",
            "postgres://app@[::1/x",
            "postgres:db",
        ] {
            let err = match parse(&StoreUrl::parse(raw).unwrap()) {
                Ok(_) => panic!("{raw} parsed"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.starts_with("configuration: postgres URL:"),
                "{raw}: {err}"
            );
            for secret in ["ss@db", "s3cr"] {
                assert!(!err.contains(secret), "{raw}: {err}");
            }
        }
    }
}
