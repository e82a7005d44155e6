//! Benchmarks of token-store backends (filled by the benchmark issue).
