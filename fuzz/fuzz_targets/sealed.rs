//! Sealed values: `Cipher::open` on bytes that were not sealed by this key (forged, truncated,
//! another store's) fails with `Malformed` or `Authentication`, never panics, never opens.
//! The first byte picks the associated data and whether the cipher is bound to a store id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_store_core::backend::Cipher;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, sealed)) = data.split_first() else {
        return;
    };
    let mut cipher = Cipher::from_master(&[0x42; 32]);
    if selector & 1 == 1 {
        cipher = cipher.bound_to_store(b"fuzz-store-id-16");
    }
    let aad: &[u8] = if selector & 2 == 2 { b"token:k" } else { b"" };
    // A forgery that opens would be a broken AEAD: the fuzzer cannot produce a valid tag.
    assert!(cipher.open(aad, sealed).is_err(), "forged bytes opened");
    // What this cipher sealed opens again, whatever the plaintext.
    let sealed = cipher.seal(aad, sealed).expect("seal");
    assert_eq!(
        cipher.open(aad, &sealed).expect("open").as_slice(),
        &data[1..]
    );
});
