//! Fuzzes the audit event decoder, which takes untrusted bytes from files, tailed logs and
//! webhook bodies (seeds nest as deep as the API server allows, and deeper). Besides not
//! crashing, it checks three properties: the way input is split into chunks never changes the
//! result, normalized output decodes back to the same output, and a redacted event is still
//! valid JSON.
#![no_main]

use std::sync::OnceLock;

use kubetrail_event::{
    DecodeOptions, Decoded, Decoder, JsonOptions, RedactionConfig, Redactor, write_event_json,
};
use libfuzzer_sys::fuzz_target;

fn redactor() -> &'static Redactor {
    static REDACTOR: OnceLock<Redactor> = OnceLock::new();
    REDACTOR.get_or_init(|| Redactor::new(&RedactionConfig::default()).unwrap())
}

/// Decodes `bytes` fed in chunks of `chunk` bytes; returns the normalized output and the
/// number of skipped pieces.
fn decode(bytes: &[u8], chunk: usize, options: &DecodeOptions) -> (Vec<u8>, usize) {
    let mut normalized = Vec::new();
    let mut skipped = 0;
    let mut out = |d: Decoded<'_>| match d {
        Decoded::Event(mut event, _) => {
            write_event_json(&event, JsonOptions::default(), &mut normalized);
            redactor().redact(&mut event);
            for text in [Some(&event.raw), event.request_object.as_ref(), event.response_object.as_ref()]
                .into_iter()
                .flatten()
            {
                // serde_json validates without recursion.
                assert!(
                    serde_json::from_str::<serde::de::IgnoredAny>(text.as_str()).is_ok(),
                    "redaction left invalid JSON: {}",
                    text.as_str()
                );
            }
        }
        Decoded::Skipped(_) => skipped += 1,
        Decoded::Ignored { .. } => {}
    };
    let mut decoder = Decoder::new(options.clone());
    for piece in bytes.chunks(chunk) {
        decoder.feed(piece, &mut out);
    }
    decoder.finish(&mut out);
    (normalized, skipped)
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, bytes)) = input.split_first() else {
        return;
    };
    let options = DecodeOptions {
        max_event_bytes: 1 << 16,
        max_document_bytes: 1 << 18,
        ..DecodeOptions::default()
    };
    let whole = decode(bytes, bytes.len().max(1), &options);
    let chunked = decode(bytes, usize::from(split % 64) + 1, &options);
    assert_eq!(whole, chunked, "chunking changed the result");
    let again = decode(&whole.0, whole.0.len().max(1), &options);
    assert_eq!(again.0, whole.0, "normalized output does not read back identically");
    assert_eq!(again.1, 0, "normalized output has bad input");
});
