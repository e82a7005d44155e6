//! Record JSON: whatever bytes sit at a token, client or state key, the typed layer's decoder
//! (`serde_json` into the record types) returns a record or an error, never panics; and a record
//! it accepts survives its own write-back unchanged (what a read-modify-write does).
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_store_core::{AuthState, ClientRegistration, TokenRecord};

fn round_trips<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq>(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let written = serde_json::to_vec(&value).expect("a decoded record serializes");
        let back: T = serde_json::from_slice(&written).expect("a written record decodes");
        assert!(back == value, "a record changed on write-back");
    }
}

fuzz_target!(|data: &[u8]| {
    round_trips::<TokenRecord>(data);
    round_trips::<ClientRegistration>(data);
    round_trips::<AuthState>(data);
});
