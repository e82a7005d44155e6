//! Access to the real services `scripts/services.sh` starts. Tests read their addresses from
//! environment variables; a missing one fails the test under `CI=true` (a missing service
//! is a failure there, never a silent skip) and is reported as "not run" locally.

/// Whether this is a CI run (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The value of `var`. `None` (after printing "not run: VAR unset") when it is unset
/// locally; a panic naming the variable under CI.
pub fn require(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if in_ci() => panic!(
            "{var} is unset under CI=true: the service it names was not started (eval \"$(scripts/services.sh start)\")"
        ),
        _ => {
            println!(
                "not run: {var} unset (start services with: eval \"$(scripts/services.sh start)\")"
            );
            None
        }
    }
}

/// A unique name for isolating one test's data (a prefix, a path, a directory).
pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 6];
    token_store_core::backend::fill_random(&mut b).unwrap_or_else(|e| panic!("random: {e}"));
    format!(
        "{prefix}-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}
