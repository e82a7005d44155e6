//! Markdown tables of measured operations.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::ops::OpRow;
use crate::stats::{fmt_rate, fmt_ratio, fmt_us};

/// The operations measured on one backend, beside its raw client.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendOps {
    /// The backend's name in tables (`"redis"`, `"file (encrypted)"`, ...).
    pub backend: String,
    /// The store URL, passwords hidden.
    pub url: String,
    /// What the raw column measures, if anything.
    pub raw_label: Option<String>,
    /// One row per operation; empty when the backend was not run.
    pub rows: Vec<OpRow>,
    /// Why the backend was not run, or a remark.
    pub note: Option<String>,
}

/// The operations table: one line per backend and operation, with the raw client's numbers
/// and the ratio of the medians.
pub fn ops_table(backends: &[BackendOps]) -> String {
    let mut out = String::new();
    out.push_str(
        "| backend | operation | p50 | p99 | ops/s | raw p50 | raw p99 | ours/raw p50 | ours − raw p50 |\n",
    );
    out.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for b in backends {
        if b.rows.is_empty() {
            let why = b.note.as_deref().unwrap_or("not run");
            let _ = writeln!(out, "| {} | {why} | | | | | | | |", b.backend);
            continue;
        }
        for (n, row) in b.rows.iter().enumerate() {
            let name = if n == 0 { b.backend.as_str() } else { "" };
            let (raw50, raw99, delta) = match row.raw {
                Some(r) => (
                    fmt_us(r.p50_us),
                    fmt_us(r.p99_us),
                    fmt_delta(row.ours.p50_us - r.p50_us),
                ),
                None => ("–".to_owned(), "–".to_owned(), "–".to_owned()),
            };
            let ratio = row
                .ratio_p50()
                .map_or_else(|| "–".to_owned(), |r| format!("{r:.2}"));
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {raw50} | {raw99} | {ratio} | {delta} |",
                row.op,
                fmt_us(row.ours.p50_us),
                fmt_us(row.ours.p99_us),
                fmt_rate(row.ours.ops_per_sec),
            );
        }
    }
    out
}

/// Ours as bytes against the byte floor, beside the typed rows: the storage layer's own
/// ratio, without the record's JSON on either side.
pub fn bytes_table(backends: &[BackendOps]) -> String {
    let mut out = String::new();
    out.push_str("| backend | operation | ours (typed) | typed floor | ours/typed floor | ours as bytes | byte floor | bytes/byte floor |\n");
    out.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for b in backends {
        let mut first = true;
        for row in &b.rows {
            let (Some(raw), Some(bytes), Some(raw_bytes)) = (row.raw, row.bytes, row.raw_bytes)
            else {
                continue;
            };
            let name = if first { b.backend.as_str() } else { "" };
            first = false;
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} | {} | {} |",
                row.op,
                fmt_us(row.ours.p50_us),
                fmt_us(raw.p50_us),
                fmt_ratio(row.ours.p50_us, raw.p50_us),
                fmt_us(bytes.p50_us),
                fmt_us(raw_bytes.p50_us),
                fmt_ratio(bytes.p50_us, raw_bytes.p50_us),
            );
        }
    }
    out
}

fn fmt_delta(us: f64) -> String {
    if us < 0.0 {
        format!("−{}", fmt_us(-us))
    } else {
        format!("+{}", fmt_us(us))
    }
}

/// The table `tokenstore bench` prints: the typed API only.
pub fn store_table(rows: &[OpRow]) -> String {
    let mut out = String::new();
    out.push_str("| operation | samples | p50 | p99 | ops/s |\n");
    out.push_str("| --- | ---: | ---: | ---: | ---: |\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            row.op,
            row.ours.samples,
            fmt_us(row.ours.p50_us),
            fmt_us(row.ours.p99_us),
            fmt_rate(row.ours.ops_per_sec),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Op;
    use crate::stats::Summary;

    #[test]
    fn tables_render() {
        let s = Summary {
            samples: 10,
            p50_us: 20.0,
            p99_us: 40.0,
            mean_us: 22.0,
            ops_per_sec: 45_454.0,
        };
        let rows = vec![OpRow {
            op: Op::GetHit,
            ours: s,
            raw: Some(Summary { p50_us: 10.0, ..s }),
            bytes: Some(Summary { p50_us: 16.0, ..s }),
            raw_bytes: Some(Summary { p50_us: 8.0, ..s }),
        }];
        let t = ops_table(&[
            BackendOps {
                backend: "redis".into(),
                url: "redis://x".into(),
                raw_label: Some("GET".into()),
                rows: rows.clone(),
                note: None,
            },
            BackendOps {
                backend: "vault".into(),
                url: String::new(),
                raw_label: None,
                rows: vec![],
                note: Some("not run: TOKEN_STORE_TEST_VAULT_ADDR unset".into()),
            },
        ]);
        assert!(t.contains("| redis | get hit | 20.0 µs | 40.0 µs | 45.5k | 10.0 µs | 40.0 µs | 2.00 | +10.0 µs |"), "{t}");
        assert!(t.contains("| vault | not run"), "{t}");
        assert!(store_table(&rows).contains("| get hit | 10 |"));
        let b = bytes_table(&[BackendOps {
            backend: "redis".into(),
            url: String::new(),
            raw_label: None,
            rows,
            note: None,
        }]);
        assert!(
            b.contains("| redis | get hit | 20.0 µs | 10.0 µs | 2.00 | 16.0 µs | 8.0 µs | 2.00 |"),
            "{b}"
        );
    }
}
