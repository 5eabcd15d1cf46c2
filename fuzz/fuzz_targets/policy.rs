//! Fuzzes the audit policy loader (YAML or JSON, with the API server's validation): any text
//! loads or is refused with diagnostics; a loaded policy evaluates and lints.
#![no_main]

use kubetrail_policy::{Evaluator, lint, load};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(loaded) = load(text) {
        let _ = lint(&loaded);
        let _ = Evaluator::new(&loaded.policy);
    }
});
