//! Kubernetes audit policies, evaluated exactly as kube-apiserver evaluates them: loading with the
//! API server's strict-then-lenient decoding and validation messages (with the line of every
//! problem), the request attributes the policy checker sees, first-match evaluation, and the tools
//! built on them: lint, simulate, recommended policies.
//!
//! Pure: no IO. The conformance tests run every case of the upstream checker tests
//! (`tests/data/policy-vectors`).

mod apply;
mod attributes;
mod eval;
mod lint;
mod load;
mod recommend;
mod simulate;
pub mod yaml;

pub use apply::{Applied, apply_policy};
pub use attributes::{RequestAttributes, User, parse_path};
pub use eval::{Evaluation, Evaluator, StageSet, rule_matches};
pub use lint::{Finding, LintSeverity, lint};
pub use load::{Diagnostic, GroupResources, LoadError, Loaded, Policy, PolicyRule, Severity, load};
pub use recommend::Profile;
pub use simulate::{RuleVolume, Simulation, Simulator, Volume};
