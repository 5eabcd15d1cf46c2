//! The rule file format, as written: one YAML document per file, either a rule (`id:`) or an
//! override of a rule defined elsewhere (`override:`), plus the pack's `defaults.yaml`. Every
//! key is documented in `docs/detections.md`; unknown keys are errors, so a typo never makes a
//! rule silently weaker.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth recording, not worth reading alone.
    Info,
    /// Unusual; read in context.
    Low,
    /// Suspicious; look at it today.
    Medium,
    /// Likely an attack step or a dangerous change; look at it now.
    High,
    /// An attack in progress or cluster takeover.
    Critical,
}

impl Severity {
    /// The name used in files, output and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses a name as written in files and flags.
    pub fn parse(name: &str) -> Option<Severity> {
        [
            Severity::Info,
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// MITRE ATT&CK ids of what a rule detects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mitre {
    /// Tactic ids (`TA0004`).
    #[serde(default)]
    pub tactics: Vec<String>,
    /// Technique or sub-technique ids (`T1611`, `T1552.007`).
    #[serde(default)]
    pub techniques: Vec<String>,
}

/// A rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique id: lower-case letters, digits and `-`.
    pub id: String,
    /// One line for people.
    pub title: String,
    /// What it catches, why it matters, and its known benign causes.
    pub description: String,
    /// How bad a finding is.
    pub severity: Severity,
    /// ATT&CK ids.
    #[serde(default)]
    pub mitre: Mitre,
    /// The detection intents (`docs/detections.md`) the rule covers, e.g. `W1`.
    #[serde(default)]
    pub intents: Vec<String>,
    /// The search in kubetrail's query language an event must match. Required, except in a
    /// sequence rule, where it is optional and every step must match it as well as its own.
    #[serde(default)]
    pub condition: Option<String>,
    /// Which stages of a request are evaluated; default `ResponseComplete` and `Panic`, so a
    /// request is judged once, with its outcome.
    #[serde(default)]
    pub stages: Vec<String>,
    /// Events the rule must not report, whatever the condition says.
    #[serde(default)]
    pub exemptions: Vec<ExemptionSpec>,
    /// Whether the pack's default exemptions (control plane, managed-cloud identities, probes)
    /// apply; default true.
    #[serde(default = "yes")]
    pub default_exemptions: bool,
    /// Report a group once it has this many matching events (or distinct values) within a
    /// window, instead of every event.
    #[serde(default)]
    pub threshold: Option<ThresholdSpec>,
    /// Report an event whose values of some fields were never seen together before, once a
    /// learning period is over (`docs/detections-stateful.md`).
    #[serde(default)]
    pub first_seen: Option<FirstSeenSpec>,
    /// Report the last of several ordered steps done by the same someone (or to the same
    /// something) within a span (`docs/detections-stateful.md`).
    #[serde(default)]
    pub sequence: Option<SequenceSpec>,
    /// Whether the rule runs; default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Links for people (the anchors' rules, advisories).
    #[serde(default)]
    pub references: Vec<String>,
    /// Events that must fire and events that must not.
    #[serde(default)]
    pub tests: TestsSpec,
}

fn yes() -> bool {
    true
}

/// A windowed count or distinct count per group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    /// How far back events count (`10m`).
    pub window: String,
    /// The fields whose values make the group (`[user]`, `[ip]`); none is one group.
    #[serde(default)]
    pub by: Vec<String>,
    /// Fire when the group has at least this many events (or distinct values).
    pub count: u64,
    /// Count distinct values of this field instead of events (`name`: different objects).
    #[serde(default)]
    pub distinct: Option<String>,
}

/// A first-seen rule: the tuple of `fields` values of each matching event is remembered, and
/// an event whose tuple is new is reported once the learning period is over.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstSeenSpec {
    /// The fields whose values make the tuple (`[user, ns]`, `[user, client]`).
    pub fields: Vec<String>,
    /// How long, in event time from the first event the engine saw, tuples are only learned
    /// (`14d`).
    pub learning: String,
}

/// A sequence rule: ordered steps joined by field values, all within a span.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    /// The longest time from the first step to the last (`5m`).
    pub within: String,
    /// The fields whose values must be equal in every step (`[user]`); a step may name its
    /// own list instead, with as many fields, read in the same order.
    #[serde(default)]
    pub by: Vec<String>,
    /// The steps, in the order they must happen (2 to 5).
    pub steps: Vec<StepSpec>,
    /// Whether the steps must happen in the order listed (default true). False: every step,
    /// in any order, by distinct events within the span (Sigma's `temporal` correlation).
    #[serde(default = "yes")]
    pub ordered: bool,
}

/// One step of a sequence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// A short name for explanations (`rbac-change`); `step N` by default.
    #[serde(default)]
    pub name: Option<String>,
    /// The search an event must match to be this step.
    pub condition: String,
    /// The join fields of this step, when they differ from the sequence's `by`.
    #[serde(default)]
    pub by: Option<Vec<String>>,
}

/// An exemption: the event is not reported when every key given holds. Values of the text
/// keys may use `*` wildcards.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExemptionSpec {
    /// Why this is exempt: shown by `kubetrail rules list` and kept for reviewers.
    #[serde(default)]
    pub reason: String,
    /// The authenticated user name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user: Vec<String>,
    /// The authenticated user's kind: `human`, `serviceaccount`, `node`, `controlplane`,
    /// `anonymous`, `unauthenticated`. Like every identity key, it judges who made the
    /// request, not whom the request impersonates: a person acting `--as` a controller is
    /// still a person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_kind: Vec<String>,
    /// The authenticated user as a service account, `namespace:name` (`kube-system:*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serviceaccount: Vec<String>,
    /// One of the user's groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<String>,
    /// The namespace of the object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace: Vec<String>,
    /// The name of the object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<String>,
    /// Images: exempt when every container image of the pod spec is one of them (registry and
    /// repository normalized; a tag or digest, when given, must match too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image: Vec<String>,
    /// The request path starts with one of these (`/healthz`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uri_prefix: Vec<String>,
    /// The cluster the event came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster: Vec<String>,
    /// The user agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_agent: Vec<String>,
    /// A source IP in one of these networks (`10.0.0.0/8`, `192.0.2.7`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ip: Vec<String>,
    /// Any search in the query language, for what the typed keys cannot say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// The inline tests of a rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestsSpec {
    /// Cases the rule must report.
    #[serde(default)]
    pub fire: Vec<TestCase>,
    /// Cases the rule must not report.
    #[serde(default)]
    pub quiet: Vec<TestCase>,
}

/// One test case: an event (the keys given are laid over a default event, see
/// `docs/detections.md`), an event repeated `repeat` times, `every` apart, where `{i}` in
/// any string is replaced by the repetition's number, or a sequence of events in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TestCase {
    /// A repeated event.
    Repeated {
        /// How many times.
        repeat: u64,
        /// Time between two events (`1s` by default).
        #[serde(default)]
        every: Option<String>,
        /// The event.
        event: Value,
    },
    /// Events in order, of which the last is judged.
    Sequence(SequenceCase),
    /// One event.
    Event(Value),
}

/// A test case of events in order, 1s apart: the last one must be reported (`fire`) or not
/// (`quiet`); what the earlier ones report is not judged. An element `{wait: 6m}` moves the
/// clock on instead of being an event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceCase {
    /// History given to the engine to learn from (`Engine::learn`) before the sequence, on the
    /// same clock; for a first-seen rule the learning period is over when the sequence starts.
    #[serde(default)]
    pub learn: Vec<Value>,
    /// The events evaluated, in order.
    pub sequence: Vec<Value>,
}

/// A change to a rule defined elsewhere (the pack, or an earlier directory), without copying it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideSpec {
    /// The id of the rule.
    #[serde(rename = "override")]
    pub rule: String,
    /// Switch it off or on.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// A new severity.
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Exemptions added to the rule's own.
    #[serde(default)]
    pub exemptions: Vec<ExemptionSpec>,
}

/// The pack's `defaults.yaml`: exemptions every rule gets unless it says
/// `default_exemptions: false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSpec {
    /// The default exemptions.
    pub default_exemptions: Vec<ExemptionSpec>,
}

/// What one file holds.
#[derive(Debug, Clone)]
pub enum FileSpec {
    /// A rule.
    Rule(Box<RuleSpec>),
    /// An override.
    Override(OverrideSpec),
    /// Default exemptions.
    Defaults(DefaultsSpec),
}

impl FileSpec {
    /// Reads one file; the error carries the line and column when the YAML reader knows them.
    pub fn parse(text: &str) -> Result<FileSpec, (usize, String)> {
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| (line_of(&e), e.to_string()))?;
        let has = |key: &str| value.get(key).is_some();
        let result = if has("override") {
            serde_yaml_ng::from_str(text).map(FileSpec::Override)
        } else if has("default_exemptions") && !has("id") {
            serde_yaml_ng::from_str(text).map(FileSpec::Defaults)
        } else if has("id") {
            serde_yaml_ng::from_str(text).map(|r| FileSpec::Rule(Box::new(r)))
        } else {
            return Err((
                1,
                "a rule file is a mapping with `id:` (a rule) or `override:` (a change to a rule)"
                    .to_owned(),
            ));
        };
        result.map_err(|e| (line_of(&e), e.to_string()))
    }
}

fn line_of(error: &serde_yaml_ng::Error) -> usize {
    error.location().map_or(1, |l| l.line())
}

/// The 1-based line of the top-level `key:` in a YAML text, for problems found after parsing
/// (a condition that does not parse); 1 when not found.
pub fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|line| {
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map_or(1, |i| i + 1)
}
