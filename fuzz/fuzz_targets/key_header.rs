//! Key headers: a stored `KeyHeader` (JSON another writer may have tampered with) decodes or
//! fails, and unlocking it with a key file's raw key or a passphrase returns a cipher or a typed
//! error, never panics. Argon2id parameters are the header's own only when they are tiny (the
//! store refuses huge ones itself, `KeyHeader::unlock` with m up to 1 GiB would be a slow
//! target, not a finding); larger ones are clamped before the passphrase unlock.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_store_core::KeySource;
use token_store_core::backend::KeyHeader;

fuzz_target!(|data: &[u8]| {
    let Ok(mut header) = serde_json::from_slice::<KeyHeader>(data) else {
        return;
    };
    let raw = KeySource::Raw(zeroize::Zeroizing::new([7u8; 32]));
    let _ = header.unlock("fuzz", &raw);
    if let Some(p) = header.params.as_mut() {
        p.m_kib = p.m_kib.min(64);
        p.t = p.t.min(2);
        p.p = p.p.min(2);
    }
    let passphrase = KeySource::Passphrase("fuzz passphrase".to_owned().into());
    let _ = header.unlock("fuzz", &passphrase);
});
