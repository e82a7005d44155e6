//! Prints the reliability table (RELIABILITY.md) of a test run's report file:
//!
//! ```text
//! cargo run -p token-store-conformance --example reliability_table -- target/conformance-report.txt
//! ```
//!
//! Without an argument it reads the file `TOKEN_STORE_CONFORMANCE_REPORT` names.

fn main() {
    let path = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("TOKEN_STORE_CONFORMANCE_REPORT"));
    let Some(path) = path else {
        eprintln!("usage: reliability_table REPORT_FILE (or set TOKEN_STORE_CONFORMANCE_REPORT)");
        std::process::exit(2);
    };
    match std::fs::read_to_string(&path) {
        Ok(report) => print!("{}", token_store_conformance::summary::table(&report)),
        Err(e) => {
            eprintln!("cannot read {}: {e}", std::path::Path::new(&path).display());
            std::process::exit(1);
        }
    }
}
