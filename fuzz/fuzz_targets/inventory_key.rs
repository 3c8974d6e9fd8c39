//! Inventory keys: anything decodes without a panic, and what decodes
//! encodes back to a valid ConfigMap key that decodes the same.
#![no_main]

use tether_gitops::inventory::ObjRef;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(object) = ObjRef::decode(text) {
        let key = object.encode();
        // Idempotent from the first decode on: encode then decode again.
        if let Some(again) = ObjRef::decode(&key) {
            assert_eq!(again.encode(), key);
        }
    }
});
