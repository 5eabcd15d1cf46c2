//! Fuzzes the `kubetrail serve` configuration parser: any text parses or is refused with a
//! message, never a crash (YAML anchors and aliases included).
#![no_main]

use kubetrail_server::ServeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = ServeConfig::parse(text);
    }
});
