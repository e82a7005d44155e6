//! Keychain items: the envelope decoder (version, timestamps, key, value) on whatever bytes a
//! keychain item holds (another program's item under our attributes, a torn write) decodes or
//! fails, never panics; an envelope it accepts re-encodes to bytes that decode to the same.
//!
//! The decoder is private to the keychain crate, and that crate pulls a D-Bus client and the
//! platform keychains in: the target compiles its very source file instead (it needs nothing
//! but core), so what is fuzzed is exactly what the keychain stores run.
#![no_main]

#[allow(dead_code, unreachable_pub)]
#[path = "../../storage-keychain/src/envelope.rs"]
mod envelope;

use envelope::Envelope;
use libfuzzer_sys::fuzz_target;

fn decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let envelope = Envelope::decode("fuzz", "fuzz", bytes).ok()?;
    Some(envelope.encode().to_vec())
}

fuzz_target!(|data: &[u8]| {
    if let Some(encoded) = decode(data) {
        let again = decode(&encoded).expect("a re-encoded envelope decodes");
        assert_eq!(again, encoded, "an envelope changed on re-encoding");
    }
});
