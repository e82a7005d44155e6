//! Storage keys: `StorageKey::decode` on any string (a foreign key under our prefix, a listing
//! of a shared namespace) returns a key or `None`, never panics; a key it accepts encodes back to
//! exactly the input (one spelling per key, so a listing never yields aliases).
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_store_core::{StorageKey, TokenKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(key) = StorageKey::decode(text) {
        assert_eq!(
            key.encode(),
            text,
            "decode accepted a non-canonical spelling"
        );
        let _ = key.validate();
        if let Some(token) = TokenKey::from_storage_key(&key) {
            let _ = token.storage_key();
        }
    }
});
