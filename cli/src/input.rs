//! Strict input: URLs, scopes and token JSON are checked before anything is written, and a
//! refusal says what was wrong without quoting a value that could be a token.

use serde_json::{Map, Value};
use token_store::{RECORD_SCHEMA, TokenKey, TokenRecord, canonical_url};

use crate::exit::{CliResult, Failure};
use crate::out::clean;

/// Checks that `raw` (given as `what`, e.g. `--server`) is an absolute http or https URL
/// with a host and no credentials.
pub(crate) fn http_url(what: &str, raw: &str) -> CliResult<url::Url> {
    let shown = clean(raw);
    let url = url::Url::parse(raw.trim())
        .map_err(|e| Failure::usage(format!("{what} \"{shown}\" is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Failure::usage(format!(
            "{what} \"{shown}\" has the scheme {}; only http and https are accepted",
            clean(url.scheme())
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Failure::usage(format!("{what} \"{shown}\" has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Failure::usage(format!(
            "{what} must not carry a user name or password"
        )));
    }
    Ok(url)
}

/// Checks one scope against RFC 6749 section 3.3: printable ASCII without space, `"` or `\`.
pub(crate) fn scope(what: &str, scope: &str) -> CliResult<()> {
    let ok = !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Failure::usage(format!(
            "{what} \"{}\" is not a scope: RFC 6749 allows printable ASCII without spaces, '\"' or '\\'",
            clean(scope)
        )))
    }
}

/// Splits space-separated scope arguments and checks each.
pub(crate) fn scopes(args: &[String]) -> CliResult<Vec<String>> {
    let mut out = Vec::new();
    for s in args
        .iter()
        .flat_map(|a| a.split(' '))
        .filter(|s| !s.is_empty())
    {
        scope("--scope", s)?;
        out.push(s.to_owned());
    }
    Ok(out)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What a known field must hold.
#[derive(Clone, Copy)]
enum Expect {
    /// A non-empty string without white space or control characters.
    Token,
    /// The same, or null.
    OptToken,
    /// A non-empty string.
    Text,
    /// A non-empty string, or null.
    OptText,
    /// An http(s) URL, or null.
    OptUrl,
    /// A number of seconds (non-negative).
    Time,
    /// The same, or null.
    OptTime,
    /// A non-negative integer.
    Count,
    /// The same, or null.
    OptCount,
    /// A JSON object.
    Object,
    /// An array of scope strings.
    ScopeList,
    /// One string of space-separated scopes (an OAuth token response's `scope`).
    ScopeString,
}

/// Every field of mcp-agent's token record and of an OAuth token response that `put` knows,
/// with its type. Fields not listed are kept as they are, never coerced.
const FIELDS: &[(&str, Expect)] = &[
    ("access_token", Expect::Token),
    ("refresh_token", Expect::OptToken),
    ("id_token", Expect::OptToken),
    ("token_type", Expect::Text),
    ("scopes", Expect::ScopeList),
    ("scope", Expect::ScopeString),
    ("expires_at", Expect::OptTime),
    ("expires_in", Expect::Count),
    ("refresh_expires_at", Expect::OptTime),
    ("obtained_at", Expect::Time),
    ("resource", Expect::OptUrl),
    ("authorization_server", Expect::OptUrl),
    ("metadata", Expect::Object),
    ("client_id", Expect::OptText),
    ("token_store_schema", Expect::OptCount),
];

fn check_field(name: &str, expect: Expect, v: &Value) -> CliResult<()> {
    let wrong = |wanted: &str| {
        Failure::usage(format!(
            "field \"{name}\" must be {wanted}, not {}",
            type_name(v)
        ))
    };
    let nullable = matches!(
        expect,
        Expect::OptToken | Expect::OptText | Expect::OptUrl | Expect::OptTime | Expect::OptCount
    );
    if v.is_null() {
        return if nullable {
            Ok(())
        } else {
            Err(wrong(match expect {
                Expect::Token => "a non-empty string",
                Expect::Text => "a non-empty string",
                Expect::Time => "a number of seconds",
                Expect::Count => "a non-negative integer (seconds)",
                Expect::Object => "an object",
                Expect::ScopeList => "an array of scope strings",
                _ => "a space-separated string of scopes",
            }))
        };
    }
    match expect {
        Expect::Token | Expect::OptToken => {
            let Some(s) = v.as_str() else {
                return Err(wrong("a string"));
            };
            if s.trim().is_empty() {
                return Err(Failure::usage(format!("field \"{name}\" is empty")));
            }
            if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Failure::usage(format!(
                    "field \"{name}\" holds white space or control characters, which no token has"
                )));
            }
        }
        Expect::Text | Expect::OptText => match v.as_str() {
            Some(s) if !s.trim().is_empty() => {}
            Some(_) => return Err(Failure::usage(format!("field \"{name}\" is empty"))),
            None => return Err(wrong("a string")),
        },
        Expect::OptUrl => {
            let Some(s) = v.as_str() else {
                return Err(wrong("a URL string"));
            };
            http_url(&format!("field \"{name}\""), s)?;
        }
        Expect::Time | Expect::OptTime => match v.as_f64() {
            Some(t) if t >= 0.0 => {}
            Some(_) => {
                return Err(Failure::usage(format!(
                    "field \"{name}\" is negative; it is a time in Unix seconds"
                )));
            }
            None => return Err(wrong("a number (Unix seconds)")),
        },
        Expect::Count | Expect::OptCount => {
            if v.as_u64().is_none() {
                return Err(wrong("a non-negative integer"));
            }
        }
        Expect::Object => {
            if !v.is_object() {
                return Err(wrong("an object"));
            }
        }
        Expect::ScopeList => {
            let Some(items) = v.as_array() else {
                return Err(wrong("an array of scope strings"));
            };
            for item in items {
                let Some(s) = item.as_str() else {
                    return Err(Failure::usage(format!(
                        "field \"{name}\" must hold strings, not {}",
                        type_name(item)
                    )));
                };
                scope(&format!("an entry of \"{name}\""), s)?;
            }
        }
        Expect::ScopeString => {
            let Some(s) = v.as_str() else {
                return Err(wrong("a space-separated string of scopes"));
            };
            for part in s.split(' ').filter(|p| !p.is_empty()) {
                scope(&format!("a scope in \"{name}\""), part)?;
            }
        }
    }
    Ok(())
}

/// Parses `put`'s input strictly into the record to store under `key`.
///
/// Every known field must have its type (wrong types are refused, never dropped); an OAuth
/// token response's `expires_in` (a non-negative integer) becomes `expires_at` and its
/// `scope` becomes `scopes`; `resource` and `authorization_server` are filled from the key
/// as mcp-agent writes them, and refused when they name another server.
pub(crate) fn parse_record(text: &str, key: &TokenKey) -> CliResult<TokenRecord> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Failure::usage(format!(
            "input is not JSON: {}",
            token_store::backend::json_error_summary(&e)
        ))
    })?;
    let Value::Object(mut fields) = value else {
        return Err(Failure::usage(format!(
            "input must be a JSON object (a token record or token response), not {}",
            type_name(&value)
        )));
    };
    if !fields.contains_key("access_token") {
        return Err(Failure::usage("field \"access_token\" is missing"));
    }
    for (name, expect) in FIELDS {
        if let Some(v) = fields.get(*name) {
            check_field(name, *expect, v)?;
        }
    }
    let present = |fields: &Map<String, Value>, name: &str| {
        fields.get(name).is_some_and(|v| match v {
            Value::Null => false,
            Value::Array(a) => !a.is_empty(),
            _ => true,
        })
    };
    if present(&fields, "expires_in") && present(&fields, "expires_at") {
        return Err(Failure::usage(
            "both \"expires_in\" and \"expires_at\" are given; give one",
        ));
    }
    if present(&fields, "scope") && present(&fields, "scopes") {
        return Err(Failure::usage(
            "both \"scope\" and \"scopes\" are given; give one",
        ));
    }
    let expires_in = fields.remove("expires_in").and_then(|v| v.as_u64());
    let scope = fields.remove("scope");
    let mut record: TokenRecord = serde_json::from_value(Value::Object(fields)).map_err(|e| {
        Failure::usage(format!(
            "input is not a token record: {}",
            token_store::backend::json_error_summary(&e)
        ))
    })?;
    if let Some(secs) = expires_in {
        record.expires_at = Some(record.obtained_at + secs as f64);
    }
    if let Some(Value::String(s)) = scope {
        record.scopes = s
            .split(' ')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
    }
    if record.token_store_schema.is_none() {
        record.token_store_schema = Some(RECORD_SCHEMA);
    }
    fill_from_key(&mut record, key)?;
    Ok(record)
}

/// Sets the record's `resource` and `authorization_server` from the key (mcp-agent writes
/// both); a record naming another server than its key is refused.
fn fill_from_key(record: &mut TokenRecord, key: &TokenKey) -> CliResult<()> {
    match &record.resource {
        None => record.resource = Some(key.resource().to_owned()),
        Some(r) if canonical_url(r) == canonical_url(key.resource()) => {}
        Some(r) => {
            return Err(Failure::usage(format!(
                "field \"resource\" is {} but the key's server is {}",
                clean(r),
                clean(key.resource())
            )));
        }
    }
    if let Some(issuer) = key.authorization_server() {
        match &record.authorization_server {
            None => record.authorization_server = Some(issuer.to_owned()),
            Some(a) if canonical_url(a) == canonical_url(issuer) => {}
            Some(a) => {
                return Err(Failure::usage(format!(
                    "field \"authorization_server\" is {} but the key's issuer is {}",
                    clean(a),
                    clean(issuer)
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::for_server("https://mcp.example.com/mcp")
    }

    fn refused(json: &str) -> String {
        match parse_record(json, &key()) {
            Ok(_) => panic!("accepted: {json}"),
            Err(f) => f.message,
        }
    }

    #[test]
    fn wrong_types_and_empty_tokens_are_refused_without_quoting_them() {
        let m = refused(r#"{"access_token":"x","expires_in":"soon"}"#);
        assert!(
            m.contains("expires_in") && m.contains("not a string"),
            "{m}"
        );
        assert!(!m.contains("soon"), "{m}");
        assert!(refused(r#"{"access_token":""}"#).contains("empty"));
        assert!(refused(r#"{"access_token":"a","expires_in":-1}"#).contains("non-negative"));
        assert!(refused(r#"{"access_token":"a","expires_in":1.5}"#).contains("integer"));
        assert!(refused(r#"{"access_token":"a","expires_at":"later"}"#).contains("number"));
        assert!(refused(r#"{"access_token":"a","refresh_token":7}"#).contains("refresh_token"));
        assert!(refused(r#"{"access_token":"a b"}"#).contains("white space"));
        assert!(refused(r#"{"access_token":"a","scope":"read \"x\""}"#).contains("not a scope"));
        assert!(refused(r#"{"access_token":"a","scopes":["ok", 3]}"#).contains("strings"));
        assert!(refused(r#"{"access_token":"a","resource":"ftp://x/y"}"#).contains("scheme ftp"));
        assert!(refused(r#"{"refresh_token":"a"}"#).contains("missing"));
        assert!(refused(r#"["a"]"#).contains("object"));
        assert!(refused(r#"{"access_token":"a","expires_in":1,"expires_at":5}"#).contains("one"));
        let m = refused(r#"{"access_token":"a","resource":"https://other.example/mcp"}"#);
        assert!(m.contains("key's server"), "{m}");
    }

    #[test]
    fn a_token_response_becomes_a_record_and_unknown_fields_stay_as_they_are() {
        let r = parse_record(
            r#"{"access_token":"at","expires_in":60,"scope":"b a","refresh_token_expires_in":"x","vendor":{"n":1}}"#,
            &key().with_authorization_server("https://as.example/"),
        )
        .unwrap();
        let at = r.expires_at.unwrap();
        assert!((at - r.obtained_at - 60.0).abs() < 1e-6);
        assert_eq!(r.scopes, ["b", "a"]);
        assert_eq!(r.resource.as_deref(), Some("https://mcp.example.com/mcp"));
        assert_eq!(
            r.authorization_server.as_deref(),
            Some("https://as.example")
        );
        assert_eq!(
            r.extra.get("refresh_token_expires_in"),
            Some(&Value::from("x"))
        );
        assert!(r.extra.contains_key("vendor"));
        assert!(!r.extra.contains_key("expires_in") && !r.extra.contains_key("scope"));
        assert_eq!(r.token_store_schema, Some(RECORD_SCHEMA));
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        for (bad, why) in [
            ("not a url", "not a URL"),
            ("ftp://x/y", "scheme ftp"),
            ("https://user:pw@x.example/", "password"),
            ("mailto:a@b", "scheme mailto"),
        ] {
            let m = http_url("--server", bad).unwrap_err().message;
            assert!(m.contains(why), "{bad}: {m}");
        }
        assert!(http_url("--server", "http://127.0.0.1:8080/mcp").is_ok());
    }
}
