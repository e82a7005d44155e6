//! What commands print: a [`Report`] rendered as text or as one `--json` document, text from
//! stores escaped before it reaches a terminal, secrets redacted unless `--reveal`.

use std::io::IsTerminal;

use serde_json::{Value, json};
use token_store::Secret;

use crate::exit::Code;

/// The version of every `--json` document's schema (`schema_version`); raised only when a
/// field changes meaning or disappears (new fields may appear in any version).
pub(crate) const JSON_SCHEMA_VERSION: u32 = 1;

/// A command's outcome: its text form, its JSON form and its exit code (not every non-zero
/// code is an error: `status` exits 10 when a login is needed, `import` 4 when records
/// were skipped).
pub(crate) struct Report {
    pub(crate) text: String,
    pub(crate) json: Value,
    pub(crate) code: Code,
    /// Printed to stderr as `warning: ...` in text mode; `warnings` in JSON.
    pub(crate) warnings: Vec<String>,
    /// The text goes to stderr: stdout carries data (`export --output -`).
    pub(crate) text_on_stderr: bool,
}

impl Report {
    pub(crate) fn new(text: String, json: Value) -> Self {
        Report {
            text,
            json,
            code: Code::Ok,
            warnings: Vec::new(),
            text_on_stderr: false,
        }
    }

    pub(crate) fn on_stderr(mut self) -> Self {
        self.text_on_stderr = true;
        self
    }

    pub(crate) fn with_code(mut self, code: Code) -> Self {
        self.code = code;
        self
    }

    pub(crate) fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }
}

/// The JSON document of a report: the common envelope, then the command's own fields.
pub(crate) fn envelope(command: &str, code: Code, body: Value, warnings: &[String]) -> Value {
    let mut doc = json!({
        "schema_version": JSON_SCHEMA_VERSION,
        "command": command,
        "exit_code": code.number(),
    });
    if let (Value::Object(doc), Value::Object(body)) = (&mut doc, body) {
        doc.extend(body);
        if !warnings.is_empty() {
            doc.insert("warnings".to_owned(), json!(warnings));
        }
    }
    doc
}

/// The JSON document of a failure.
pub(crate) fn error_document(command: &str, code: Code, message: &str) -> Value {
    json!({
        "schema_version": JSON_SCHEMA_VERSION,
        "command": command,
        "exit_code": code.number(),
        "error": {"kind": code.kind(), "message": message},
    })
}

/// Text from a store (keys, locations, reasons, metadata names) as it may reach a terminal:
/// control characters escaped, so a foreign key holding ESC sequences cannot clear the screen
/// or fake output.
pub(crate) fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The error and its sources on one line, escaped.
pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    clean(&line.replace('\n', " "))
}

/// `text` quoted for a POSIX shell, so a printed command can be pasted as it is.
pub(crate) fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%+,-./:=@_~".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", clean(text).replace('\'', r"'\''"))
    }
}

/// A secret for a human: the preview, or the whole value with `--reveal`.
pub(crate) fn show(secret: &Secret, reveal: bool) -> String {
    if reveal {
        clean(secret.expose())
    } else {
        clean(&secret.preview())
    }
}

/// A secret in JSON: always its length and preview, its value only with `--reveal`.
pub(crate) fn secret_json(secret: Option<&Secret>, reveal: bool) -> Value {
    match secret {
        None => Value::Null,
        Some(s) => json!({
            "length": s.expose().chars().count(),
            "preview": s.preview(),
            "value": if reveal { Value::String(s.expose().to_owned()) } else { Value::Null },
        }),
    }
}

/// A progress bar on stderr when it is a terminal, a hidden one otherwise (scripts and logs
/// get no control sequences).
pub(crate) fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} {bar:40} {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

/// A spinner on stderr when it is a terminal (for work of unknown length), hidden otherwise.
pub(crate) fn spinner(what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A duration in seconds as a person reads it: `1h 02m`, `4m 05s`, `12s`.
pub(crate) fn human_seconds(secs: f64) -> String {
    let sign = if secs < 0.0 { "-" } else { "" };
    let s = secs.abs().round() as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let body = if d > 0 {
        format!("{d}d {h:02}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {sec:02}s")
    } else {
        format!("{sec}s")
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_a_shell() {
        assert_eq!(shell_quote("a%3Ab:c"), "a%3Ab:c");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a\x1bb"), r"'a\u{1b}b'");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_seconds(59.4), "59s");
        assert_eq!(human_seconds(3725.0), "1h 02m");
        assert_eq!(human_seconds(-125.0), "-2m 05s");
        assert_eq!(human_seconds(2.0 * 86_400.0 + 3600.0), "2d 01h");
    }
}
