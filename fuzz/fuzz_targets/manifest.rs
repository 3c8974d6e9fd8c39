//! The manifest parser, on an arbitrary file.
#![no_main]

use tether_gitops::manifest::{Limits, ManifestFile, parse};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let file = ManifestFile {
        path: "fuzz.yaml".into(),
        bytes: data.to_vec(),
    };
    let _ = parse(&[file], &Limits::default());
});
