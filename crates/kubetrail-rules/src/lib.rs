//! Detections over Kubernetes audit events: the rule format, typed exemptions, the bundled
//! rule pack, the engine that evaluates rules on events one by one (stateless rules, windowed
//! counts per group, first-seen tuples after a learning period, short sequences), the inline
//! tests every rule carries (`docs/detections.md`), and the conversion of Sigma rules
//! (`docs/sigma.md`).
//!
//! Conditions are searches of kubetrail's query language, evaluated in memory by
//! [`kubetrail_query::Matcher`], so a rule means on the live stream exactly what the same
//! search means in the store. Pure: no IO; callers hand in rule files' texts and events.

mod engine;
mod exemption;
mod image;
mod inline_test;
mod rule;
mod sigma;
mod spec;

pub use engine::{Engine, Finding, MAX_GROUPS, MAX_PARTIAL_SEQUENCES, MAX_TUPLES};
pub use exemption::Exemption;
pub use image::ImageRef;
pub use inline_test::{CaseResult, run as run_inline_tests};
pub use rule::{
    FirstSeen, MAX_THRESHOLD_COUNT, Origin, Problem, Rule, RuleSet, Sequence, SourceFile, Step,
    Threshold,
};
pub use sigma::{
    SigmaImport, SigmaOptions, SigmaProblem, SigmaRefusal, SigmaRefused, SigmaRule, import_sigma,
};
pub use spec::{ExemptionSpec, Mitre, Severity};
