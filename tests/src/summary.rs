//! The one-line results every suite appends to the file `TOKEN_STORE_CONFORMANCE_REPORT`
//! names, and the reliability table built from them (`RELIABILITY.md`).
//!
//! Lines are either the suite's own (`conformance[name]: ...`, `model check[name]: ...`) or
//! torture lines: `torture <test> backend=<name> key=value ...`, one per test run, e.g.
//! `torture crash backend=file rounds=200 kills=200 acked=5120 lost=0 torn=0`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

/// Appends `line` to the report file, if `TOKEN_STORE_CONFORMANCE_REPORT` is set, and prints it.
pub fn append(line: &str) {
    println!("{line}");
    let Some(path) = std::env::var_os("TOKEN_STORE_CONFORMANCE_REPORT") else {
        return;
    };
    // One write per line: parallel tests append to the same file.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// A torture line: `torture <test> backend=<backend> k=v ...`.
pub fn torture_line(test: &str, backend: &str, fields: &[(&str, String)]) -> String {
    let mut line = format!("torture {test} backend={backend}");
    for (k, v) in fields {
        let _ = write!(line, " {k}={}", v.replace(' ', "_"));
    }
    line
}

/// Appends a torture line (see [`torture_line`]).
pub fn torture(test: &str, backend: &str, fields: &[(&str, String)]) {
    append(&torture_line(test, backend, fields));
}

/// The backend families of the table, longest names first so `secret-service` is not `s...`.
const FAMILIES: &[&str] = &[
    "secret-service",
    "slots",
    "keyutils",
    "memory",
    "sqlite",
    "redis",
    "vault",
    "file",
    "postgres",
];

/// Which table row a backend variant (`redis-cluster`, `sqlite+encrypted`) belongs to.
pub fn family(backend: &str) -> &str {
    FAMILIES
        .iter()
        .find(|f| backend.starts_with(**f))
        .copied()
        .unwrap_or(backend)
}

/// Per-family totals of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    /// Conformance cases run (all variants).
    pub conformance_cases: u64,
    /// Variants the conformance suite ran on.
    pub variants: std::collections::BTreeSet<String>,
    /// Sequential model-check cases.
    pub model_cases: u64,
    /// Concurrent (linearizability) model-check cases.
    pub concurrent_cases: u64,
    /// Hostile-input cases (keys, stored bytes, decoders).
    pub hostile_cases: u64,
    /// SIGKILLs of a writing client (and of the server, where counted separately).
    pub crashes: u64,
    /// Service faults injected (stop, pause, seal, kill...).
    pub faults: u64,
    /// Acknowledged writes missing afterwards.
    pub lost: u64,
    /// Secrets found in logs, errors or Debug output.
    pub leaks: u64,
    /// Leak checks run (suite runs under TRACE capture, CLI runs).
    pub leak_checks: u64,
}

fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

fn bracket_name(line: &str, head: &str) -> Option<String> {
    let rest = line.strip_prefix(head)?.strip_prefix('[')?;
    Some(rest.split(']').next()?.to_owned())
}

/// Sums the report's lines per backend family.
pub fn rows(report: &str) -> BTreeMap<String, Row> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for line in report.lines() {
        if let Some(name) = bracket_name(line, "conformance") {
            // "conformance[x]: N cases run, ..."
            let n = line
                .split(": ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let row = rows.entry(family(&name).to_owned()).or_default();
            row.conformance_cases += n;
            row.variants.insert(name);
        } else if let Some(name) = bracket_name(line, "model check") {
            let n = line
                .split(": ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            rows.entry(family(&name).to_owned())
                .or_default()
                .model_cases += n;
        } else if let Some(rest) = line.strip_prefix("torture ") {
            let mut words = rest.split_whitespace();
            let test = words.next().unwrap_or_default();
            let Some(backend) = words.find_map(|w| w.strip_prefix("backend=")) else {
                continue;
            };
            let row = rows.entry(family(backend).to_owned()).or_default();
            let get = |n| field(line, n).unwrap_or(0);
            match test {
                "concurrent-model" => row.concurrent_cases += get("cases"),
                "hostile-keys" | "hostile-bytes" | "hostile-decoder" => {
                    row.hostile_cases += get("cases")
                }
                "crash" => {
                    row.crashes += get("kills") + get("server_kills");
                    row.lost += get("lost");
                }
                "fault" => {
                    row.faults += get("faults");
                    row.lost += get("lost");
                }
                "leak" => {
                    row.leak_checks += 1;
                    row.leaks += get("leaks");
                }
                _ => {}
            }
        }
    }
    rows
}

/// The Markdown table of [`rows`].
pub fn table(report: &str) -> String {
    let mut out = String::from(
        "| backend | variants | conformance cases | model cases (sequential + concurrent) | hostile-input cases | crashes injected | faults injected | records lost | leak checks | leaks found |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (family, r) in rows(report) {
        let variants: Vec<&str> = r.variants.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "| {family} | {} | {} | {} + {} | {} | {} | {} | {} | {} | {} |",
            variants.join(", "),
            r.conformance_cases,
            r.model_cases,
            r.concurrent_cases,
            r.hostile_cases,
            r.crashes,
            r.faults,
            r.lost,
            r.leak_checks,
            r.leaks
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sums_per_family() {
        let report = "conformance[redis-cluster]: 23 cases run, 23 passed, 0 failed, 0 not applicable; n/a: none\n\
            conformance[redis]: 23 cases run, 23 passed, 0 failed, 0 not applicable; n/a: none\n\
            model check[redis]: 256 cases passed\n\
            torture crash backend=redis rounds=200 kills=200 server_kills=10 acked=99 lost=0\n\
            torture fault backend=redis fault=sigstop faults=1 lost=0\n\
            torture leak backend=secret-service leaks=0\n";
        let rows = rows(report);
        let redis = &rows["redis"];
        assert_eq!(redis.conformance_cases, 46);
        assert_eq!(redis.model_cases, 256);
        assert_eq!(redis.crashes, 210);
        assert_eq!(redis.faults, 1);
        assert_eq!(rows["secret-service"].leak_checks, 1);
        assert!(table(report).contains("| redis | redis, redis-cluster | 46 |"));
    }
}
