//! The whole rule pack evaluated on its own: events per second per core of `Engine::evaluate`
//! over decoded events held in memory (decoding is measured apart, as every source pays it
//! anyway). Target (issue: detections): ≥ 300,000 events/s per core.
//!
//! Run: `cargo bench -p kubetrail-rules --bench pack [-- FILE]`; FILE is an audit log (JSON
//! lines, gzip too) — `bench/detections.sh` passes 1M generated events; without it, the
//! repository's generated log of 200k events is used.

use std::io::Read;
use std::time::{Duration, Instant};

use kubetrail_event::{AuditEvent, DecodeOptions, Decoded, Decoder};
use kubetrail_rules::{Engine, RuleSet};

fn main() {
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/data/generated/backtest.log.gz"
            )
            .to_owned()
        });
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .expect("gzip");
        out
    } else {
        raw
    };

    let start = Instant::now();
    let mut events: Vec<AuditEvent<'static>> = Vec::new();
    let mut decoder = Decoder::new(DecodeOptions::default());
    let mut out = |d: Decoded<'_>| {
        if let Decoded::Event(e, _) = d {
            events.push((*e).into_owned());
        }
    };
    decoder.feed(&bytes, &mut out);
    decoder.finish(&mut out);
    let decode_rate = events.len() as f64 / start.elapsed().as_secs_f64();
    let times: Vec<i64> = events
        .iter()
        .map(|e| e.time().map_or(0, |t| t.as_micros()))
        .collect();

    let set = RuleSet::load(true, &[]);
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    let mut best = 0f64;
    let mut findings_per_pass = 0usize;
    for _ in 0..3 {
        let mut engine = Engine::new(&set);
        let mut findings = Vec::new();
        let mut found = 0usize;
        let mut evaluated = 0u64;
        let start = Instant::now();
        while evaluated < events.len() as u64 || start.elapsed() < Duration::from_secs(2) {
            for (event, time) in events.iter().zip(&times) {
                engine.evaluate(std::hint::black_box(event), "", *time, &mut findings);
                found += findings.len();
                findings.clear();
            }
            evaluated += events.len() as u64;
            if evaluated == events.len() as u64 {
                findings_per_pass = found;
            }
        }
        best = best.max(evaluated as f64 / start.elapsed().as_secs_f64());
    }
    let target = 300_000f64;
    println!(
        "rule pack: {} rules over {} events of {path} ({findings_per_pass} findings per pass)",
        set.enabled().count(),
        events.len()
    );
    println!("decode alone:        {decode_rate:>12.0} events/s (one core)");
    println!(
        "pack evaluation:     {best:>12.0} events/s per core, target {target:.0}: {} ({:.2}× the target; {:.2}× decoding)",
        if best >= target { "met" } else { "NOT met" },
        best / target,
        best / decode_rate
    );
}
