//! Detections over Kubernetes audit events: the rule format, typed exemptions, the bundled
//! rule pack, the engine that evaluates rules on events one by one (stateless rules and
//! windowed counts per group), and the inline tests every rule carries
//! (`docs/detections.md`).
//!
//! Conditions are searches of kubetrail's query language, evaluated in memory by
//! [`kubetrail_query::Matcher`], so a rule means on the live stream exactly what the same
//! search means in the store. Pure: no IO; callers hand in rule files' texts and events.

mod engine;
mod exemption;
mod image;
mod inline_test;
mod rule;
mod spec;

pub use engine::{Engine, Finding, MAX_GROUPS};
pub use exemption::Exemption;
pub use image::ImageRef;
pub use inline_test::{CaseResult, run as run_inline_tests};
pub use rule::{MAX_THRESHOLD_COUNT, Origin, Problem, Rule, RuleSet, SourceFile, Threshold};
pub use spec::{ExemptionSpec, Mitre, Severity};
