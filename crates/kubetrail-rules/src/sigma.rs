//! Sigma rules for Kubernetes audit logs (`logsource: {product: kubernetes, service: audit}`)
//! converted into kubetrail rule files (`kubetrail rules import-sigma`, `docs/sigma.md`).
//!
//! A conversion is exact or refused: a rule whose meaning kubetrail cannot say exactly (a
//! field audit events do not have, a modifier or condition without an equivalent, a
//! case-insensitive match on a field whose values may be written in any case) is refused with
//! the construct, the file and the line, never turned into a weaker rule. Sigma v2
//! correlations of type `event_count` and `value_count` become thresholds, `temporal_ordered` and
//! `temporal` sequences (in order, or in any order). Every converted rule
//! carries a firing and a quiet inline test made from its condition and checked by running
//! them, and keeps the Sigma rule's author and license in its title and description, as the
//! Detection Rule License asks. Pure: text in, rule files' text out.

mod detection;
mod fields;
mod regex;
mod synth;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kubetrail_query::{Field, parse_duration_micros};
use serde::Serialize;
use serde_yaml_ng::Value;

use crate::rule::{RuleSet, SourceFile};
use crate::spec::{Mitre, Severity};
use detection::{Converter, FieldRef, Node};
use synth::{Tests, Threshold};

/// How the conversion reads fields, beyond the audit event's own names.
#[derive(Debug, Clone, Default)]
pub struct SigmaOptions {
    /// Sigma field name → kubetrail field, for rules that name a field audit events do not
    /// have but whose meaning kubetrail knows (`hostPath` → `pod.hostPath`).
    pub fields: Vec<(String, String)>,
}

impl SigmaOptions {
    /// Adds a mapping written `SIGMA=KUBETRAIL`, refusing a kubetrail field that does not
    /// exist.
    pub fn map_field(&mut self, mapping: &str) -> Result<(), String> {
        let Some((sigma, kubetrail)) = mapping.split_once('=') else {
            return Err(format!(
                "{mapping:?}: write a field mapping as SIGMA=KUBETRAIL (hostPath=pod.hostPath)"
            ));
        };
        let (sigma, kubetrail) = (sigma.trim(), kubetrail.trim());
        if sigma.is_empty() {
            return Err(format!("{mapping:?}: the Sigma field name is empty"));
        }
        Field::resolve(kubetrail, 0).map_err(|e| format!("{mapping:?}: {}", e.message))?;
        self.fields.push((sigma.to_owned(), kubetrail.to_owned()));
        Ok(())
    }
}

/// A converted rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigmaRule {
    /// The kubetrail id (`sigma-` and the title).
    pub id: String,
    /// The file the Sigma rule came from.
    pub file: String,
    /// The Sigma rule's title.
    pub title: String,
    /// The kubetrail rule file.
    pub yaml: String,
}

/// A Sigma rule that was not converted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigmaRefused {
    /// The file.
    pub file: String,
    /// The Sigma rule's title (the file's name when it has none).
    pub title: String,
    /// What could not be converted, each at its line.
    pub problems: Vec<SigmaProblem>,
}

impl fmt::Display for SigmaRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}: {:?}: {}",
                self.file, problem.line, self.title, problem.refusal
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for SigmaRefused {}

/// One reason a rule is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigmaProblem {
    /// The 1-based line in the file.
    pub line: usize,
    /// What.
    pub refusal: SigmaRefusal,
}

/// What kubetrail cannot convert exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigmaRefusal {
    /// The document is not a Sigma rule kubetrail reads.
    #[error("{0}")]
    Document(String),
    /// Not a Kubernetes audit rule.
    #[error(
        "the logsource {0} is not Kubernetes audit events (product: kubernetes, service: audit)"
    )]
    Logsource(String),
    /// A field Kubernetes audit events do not have.
    #[error("{hint}")]
    Field {
        /// The Sigma field name.
        field: String,
        /// Why, and what the rule may mean.
        hint: String,
    },
    /// A modifier without an exact equivalent.
    #[error("the modifier `{name}` is not supported: {why}")]
    Modifier {
        /// The modifier.
        name: String,
        /// Why not.
        why: String,
    },
    /// A value that cannot be matched exactly (letter case, wildcards, types).
    #[error("`{field}`: {why}")]
    Value {
        /// The field and its modifiers as written.
        field: String,
        /// Why not.
        why: String,
    },
    /// A condition form without an exact equivalent.
    #[error("condition `{condition}`: {why}")]
    Condition {
        /// The condition as written.
        condition: String,
        /// Why not.
        why: String,
    },
    /// Another correlation construct without an equivalent.
    #[error("correlation: {0}")]
    Correlation(String),
    /// No inline tests could be made.
    #[error("no inline tests could be made from the condition: {0}")]
    Tests(String),
    /// The converted rule does not load (a limit of the query language, say).
    #[error("the converted rule does not load: {0}")]
    Load(String),
    /// Two rules would get one id.
    #[error("its kubetrail id `{id}` is already made from {other}; retitle one of the rules")]
    DuplicateId {
        /// The id.
        id: String,
        /// The file of the other rule.
        other: String,
    },
}

/// What a conversion made.
#[derive(Debug, Clone, Default)]
pub struct SigmaImport {
    /// Converted rules, in the order of the input.
    pub rules: Vec<SigmaRule>,
    /// Refused rules, in the order of the input.
    pub refused: Vec<SigmaRefused>,
    /// Rules only counted by correlations (not converted on their own, as Sigma's `generate`
    /// says by default): (file, title).
    pub correlated_only: Vec<(String, String)>,
}

/// Converts the Sigma rules of `files` (each may hold several YAML documents; correlations
/// find the rules they count by `name` or `id` across all files).
pub fn import_sigma(files: &[SourceFile], options: &SigmaOptions) -> SigmaImport {
    let mut import = SigmaImport::default();
    let mut documents = Vec::new();
    for file in files {
        for (start, text) in split_documents(&file.text) {
            match serde_yaml_ng::from_str::<Value>(text) {
                Ok(Value::Null) => {}
                Ok(value) => documents.push(Document {
                    file: &file.name,
                    lines: Lines::new(text, start),
                    value,
                }),
                Err(e) => import.refused.push(SigmaRefused {
                    file: file.name.clone(),
                    title: file.name.clone(),
                    problems: vec![SigmaProblem {
                        line: start + e.location().map_or(1, |l| l.line()) - 1,
                        refusal: SigmaRefusal::Document(format!("not YAML: {e}")),
                    }],
                }),
            }
        }
    }
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for (index, document) in documents.iter().enumerate() {
        if document.value.get("detection").is_some() {
            for key in ["name", "id"] {
                if let Some(name) = document.value.get(key).and_then(Value::as_str) {
                    by_name.entry(name.to_owned()).or_insert(index);
                }
            }
        }
    }
    let mut counted = BTreeSet::new();
    for document in &documents {
        let Some(correlation) = document.value.get("correlation") else {
            continue;
        };
        if correlation.get("generate").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        for name in names(correlation.get("rules")) {
            if let Some(index) = by_name.get(&name) {
                counted.insert(*index);
            }
        }
    }
    let converted: Vec<Option<Result<RuleParts, Vec<SigmaProblem>>>> = documents
        .iter()
        .map(|d| {
            d.value
                .get("detection")
                .is_some()
                .then(|| rule_parts(d, options))
        })
        .collect();
    let mut made: Vec<Result<SigmaRule, SigmaRefused>> = Vec::new();
    for (index, document) in documents.iter().enumerate() {
        let title = document.title();
        let refused = |problems: Vec<SigmaProblem>| SigmaRefused {
            file: document.file.to_owned(),
            title: title.clone(),
            problems,
        };
        let result = if let Some(parts) = &converted[index] {
            if counted.contains(&index) {
                import
                    .correlated_only
                    .push((document.file.to_owned(), title.clone()));
                continue;
            }
            match parts {
                Ok(parts) => emit(&Plan::single(parts)).map_err(|p| refused(vec![p])),
                Err(problems) => Err(refused(problems.clone())),
            }
        } else if let Some(correlation) = document.value.get("correlation") {
            correlation_plan(
                document,
                correlation,
                &documents,
                &by_name,
                &converted,
                options,
            )
            .and_then(|plan| emit(&plan))
            .map_err(|p| refused(vec![p]))
        } else {
            let what = if document.value.get("filter").is_some() {
                "Sigma filter documents (`filter:`) are not supported: write the filter into the rule's condition or as a kubetrail exemption".to_owned()
            } else if let Some(action) = document.value.get("action").and_then(Value::as_str) {
                format!("`action: {action}` (Sigma v1 rule collections) is not supported")
            } else {
                "a document with neither `detection:` nor `correlation:` is not a Sigma rule"
                    .to_owned()
            };
            Err(refused(vec![SigmaProblem {
                line: document.lines.first,
                refusal: SigmaRefusal::Document(what),
            }]))
        };
        made.push(result);
    }
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for result in made {
        match result {
            Ok(rule) => {
                if let Some(other) = ids.get(&rule.id) {
                    import.refused.push(SigmaRefused {
                        file: rule.file.clone(),
                        title: rule.title.clone(),
                        problems: vec![SigmaProblem {
                            line: 1,
                            refusal: SigmaRefusal::DuplicateId {
                                id: rule.id.clone(),
                                other: other.clone(),
                            },
                        }],
                    });
                } else {
                    ids.insert(rule.id.clone(), rule.file.clone());
                    import.rules.push(rule);
                }
            }
            Err(refused) => import.refused.push(refused),
        }
    }
    import
}

/// One YAML document of a file.
struct Document<'f> {
    file: &'f str,
    lines: Lines<'f>,
    value: Value,
}

impl Document<'_> {
    fn title(&self) -> String {
        self.value
            .get("title")
            .and_then(Value::as_str)
            .map_or_else(|| self.file.to_owned(), one_line)
    }

    fn text(&self, key: &str) -> Option<String> {
        match self.value.get(key)? {
            Value::String(s) => Some(s.trim().to_owned()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn list(&self, key: &str) -> Vec<String> {
        names(self.value.get(key))
    }

    fn problem(&self, key: &str, refusal: SigmaRefusal) -> SigmaProblem {
        SigmaProblem {
            line: self.lines.key(key, self.lines.first),
            refusal,
        }
    }
}

/// Strings of a list (or a lone string).
fn names(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.trim().to_owned()],
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.trim().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The lines of one document, for problems: where a key is written.
pub(crate) struct Lines<'t> {
    lines: Vec<&'t str>,
    /// The 1-based line of the document's first line in its file.
    first: usize,
}

impl<'t> Lines<'t> {
    /// The lines of `text`, whose first line is line `first` of its file.
    pub(crate) fn new(text: &'t str, first: usize) -> Lines<'t> {
        Lines {
            lines: text.lines().collect(),
            first,
        }
    }

    /// The line of the first `key:` at or after line `after` (both lines of the file), or
    /// `after` when there is none.
    pub(crate) fn key(&self, key: &str, after: usize) -> usize {
        let skip = after.saturating_sub(self.first);
        self.lines
            .iter()
            .enumerate()
            .skip(skip)
            .find(|(_, line)| {
                let line = line.trim_start();
                let line = line.strip_prefix("- ").unwrap_or(line).trim_start();
                [key.to_owned(), format!("'{key}'"), format!("\"{key}\"")]
                    .iter()
                    .any(|k| {
                        line.strip_prefix(k.as_str())
                            .is_some_and(|rest| rest.trim_start().starts_with(':'))
                    })
            })
            .map_or(after, |(i, _)| i + self.first)
    }
}

/// The documents of a YAML text, split at `---` lines: (first line, text).
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare == "..." {
            out.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = number + 2;
        }
        offset += line.len();
    }
    out.push((start_line, &text[start..]));
    out
}

/// The converted parts of a Sigma rule with a detection.
#[derive(Clone)]
struct RuleParts {
    meta: Meta,
    condition: Node,
}

/// What a Sigma rule says about itself.
#[derive(Debug, Clone)]
struct Meta {
    file: String,
    /// The line of `detection:` or `correlation:`, where problems of the whole rule are.
    line: usize,
    title: String,
    sigma_id: Option<String>,
    description: String,
    author: Option<String>,
    status: Option<String>,
    date: Option<String>,
    modified: Option<String>,
    license: Option<String>,
    references: Vec<String>,
    falsepositives: Vec<String>,
    tags: Vec<String>,
    level: Option<Severity>,
}

fn meta(document: &Document<'_>) -> Result<Meta, SigmaProblem> {
    let Some(title) = document.text("title").filter(|t| !t.is_empty()) else {
        return Err(document.problem(
            "title",
            SigmaRefusal::Document("a Sigma rule without `title:`".into()),
        ));
    };
    let level = match document.text("level") {
        None => None,
        Some(level) => Some(match level.to_ascii_lowercase().as_str() {
            "informational" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            other => {
                return Err(document.problem(
                    "level",
                    SigmaRefusal::Document(format!(
                        "the level {other:?} is not informational, low, medium, high or critical"
                    )),
                ));
            }
        }),
    };
    let line = ["detection", "correlation"]
        .iter()
        .find(|k| document.value.get(**k).is_some())
        .map_or(document.lines.first, |k| {
            document.lines.key(k, document.lines.first)
        });
    Ok(Meta {
        file: document.file.to_owned(),
        line,
        title: one_line(&title),
        sigma_id: document.text("id"),
        description: document.text("description").unwrap_or_default(),
        author: document.text("author").map(|a| one_line(&a)),
        status: document.text("status"),
        date: document.text("date"),
        modified: document.text("modified"),
        license: document.text("license"),
        references: document.list("references"),
        falsepositives: document.list("falsepositives"),
        tags: document.list("tags"),
        level,
    })
}

fn rule_parts(
    document: &Document<'_>,
    options: &SigmaOptions,
) -> Result<RuleParts, Vec<SigmaProblem>> {
    let meta = meta(document).map_err(|p| vec![p])?;
    let logsource = document.value.get("logsource");
    let field = |key: &str| {
        logsource
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    if field("product").as_deref() != Some("kubernetes")
        || field("service").as_deref() != Some("audit")
    {
        let shown = logsource
            .and_then(|l| serde_yaml_ng::to_string(l).ok())
            .map_or_else(|| "(none)".to_owned(), |s| format!("{{{}}}", one_line(&s)));
        return Err(vec![
            document.problem("logsource", SigmaRefusal::Logsource(shown)),
        ]);
    }
    let mut converter = Converter {
        extra_fields: &options.fields,
        lines: &document.lines,
        problems: Vec::new(),
    };
    let detection = document.value.get("detection").unwrap_or(&Value::Null);
    match converter.detection(detection) {
        Some(condition) => Ok(RuleParts { meta, condition }),
        None => Err(converter.problems),
    }
}

/// A rule to write: a Sigma rule alone, or a correlation of Sigma rules.
struct Plan {
    /// The Sigma rule, or the correlation, that names and describes it.
    meta: Meta,
    /// The rules a correlation counts.
    counted: Vec<Meta>,
    condition: Node,
    threshold: Option<ThresholdPlan>,
    sequence: Option<SequencePlan>,
}

/// A temporal correlation: the rules it names are the steps of a sequence.
struct SequencePlan {
    kind: String,
    timespan: String,
    by: Vec<FieldRef>,
    /// The conditions of the rules named, in the order named.
    steps: Vec<Node>,
    /// The names of the rules named, for the steps' names.
    names: Vec<String>,
    ordered: bool,
}

struct ThresholdPlan {
    kind: String,
    timespan: String,
    window: i64,
    by: Vec<String>,
    count: u64,
    distinct: Option<FieldRef>,
}

impl Plan {
    fn single(parts: &RuleParts) -> Plan {
        Plan {
            meta: parts.meta.clone(),
            counted: Vec::new(),
            condition: parts.condition.clone(),
            threshold: None,
            sequence: None,
        }
    }

    fn severity(&self) -> Severity {
        self.meta
            .level
            .or_else(|| self.counted.iter().filter_map(|m| m.level).max())
            .unwrap_or(Severity::Medium)
    }

    fn tags(&self) -> Vec<&str> {
        let own: Vec<&str> = self.meta.tags.iter().map(String::as_str).collect();
        if !own.is_empty() {
            return own;
        }
        let mut all: Vec<&str> = Vec::new();
        for tag in self.counted.iter().flat_map(|m| &m.tags) {
            if !all.contains(&tag.as_str()) {
                all.push(tag);
            }
        }
        all
    }

    fn authors(&self) -> Vec<&str> {
        let mut authors: Vec<&str> = Vec::new();
        for author in std::iter::once(&self.meta)
            .chain(&self.counted)
            .filter_map(|m| m.author.as_deref())
        {
            if !authors.contains(&author) {
                authors.push(author);
            }
        }
        authors
    }

    fn id(&self) -> String {
        let mut slug = String::from("sigma-");
        for c in self.meta.title.chars() {
            if c.is_ascii_alphanumeric() {
                slug.push(c.to_ascii_lowercase());
            } else if !slug.ends_with('-') {
                slug.push('-');
            }
        }
        slug.truncate(100);
        slug.trim_end_matches('-').to_owned()
    }

    fn title(&self) -> String {
        let authors = self.authors();
        if authors.is_empty() {
            format!("{} (Sigma rule)", self.meta.title)
        } else {
            format!("{} (Sigma rule by {})", self.meta.title, authors.join("; "))
        }
    }

    fn description(&self) -> String {
        let mut text = self.meta.description.trim().to_owned();
        if text.is_empty() {
            text = self.meta.title.clone();
        }
        if let Some(t) = &self.threshold {
            let what = match &t.distinct {
                Some(field) => format!("{} distinct values of `{}`", t.count, field.name),
                None => format!("{} events", t.count),
            };
            let per = if t.by.is_empty() {
                String::new()
            } else {
                format!(" per {}", t.by.join(", "))
            };
            let rules: Vec<String> = self
                .counted
                .iter()
                .map(|m| {
                    let mut rule = format!("\"{}\"", m.title);
                    if let Some(id) = &m.sigma_id {
                        rule.push_str(&format!(" (id {id})"));
                    }
                    rule
                })
                .collect();
            text.push_str(&format!(
                "\n\nA Sigma {} correlation: at least {what} within {}{per}, of events matching the Sigma rule(s) {}.",
                t.kind,
                t.timespan,
                rules.join(", ")
            ));
        }
        if let Some(sequence) = &self.sequence {
            let rules: Vec<String> = self
                .counted
                .iter()
                .map(|m| format!("\"{}\"", m.title))
                .collect();
            let by: Vec<&str> = sequence.by.iter().map(|f| f.name.as_str()).collect();
            text.push_str(&format!(
                "\n\nA Sigma {} correlation: events matching the Sigma rules {}, {}, with the same {}, within {}.",
                sequence.kind,
                rules.join(", "),
                if sequence.ordered { "in that order" } else { "in any order" },
                by.join(", "),
                sequence.timespan
            ));
        }
        let falsepositives: Vec<&String> = std::iter::once(&self.meta)
            .chain(&self.counted)
            .flat_map(|m| &m.falsepositives)
            .collect();
        if !falsepositives.is_empty() {
            text.push_str(&format!(
                "\n\nFalse positives named by the Sigma rule: {}.",
                falsepositives
                    .iter()
                    .map(|f| f.trim_end_matches('.'))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        let mut origin = format!(
            "\n\nConverted by `kubetrail rules import-sigma` from the Sigma rule \"{}\"",
            self.meta.title
        );
        let mut details = Vec::new();
        if let Some(id) = &self.meta.sigma_id {
            details.push(format!("id {id}"));
        }
        if let Some(status) = &self.meta.status {
            details.push(format!("status {status}"));
        }
        if let Some(date) = &self.meta.date {
            details.push(format!("dated {date}"));
        }
        if let Some(modified) = &self.meta.modified {
            details.push(format!("modified {modified}"));
        }
        if !details.is_empty() {
            origin.push_str(&format!(" ({})", details.join(", ")));
        }
        origin.push_str(&format!(" in {}", self.meta.file));
        let authors = self.authors();
        if !authors.is_empty() {
            origin.push_str(&format!(", written by {}", authors.join("; ")));
        }
        origin.push('.');
        match &self.meta.license {
            Some(license) => origin.push_str(&format!(" The rule's license: {license}.")),
            None => origin.push_str(
                " Sigma rules of the SigmaHQ repository are licensed under the Detection Rule License (DRL) 1.1 (https://github.com/SigmaHQ/Detection-Rule-License), which requires keeping the author's name with the rule and with the findings it reports (it is in the rule's title).",
            ),
        }
        if self.meta.level.is_none() && self.counted.iter().all(|m| m.level.is_none()) {
            origin.push_str(" The Sigma rule gives no level: medium is assumed.");
        }
        let (_, others) = mitre(&self.tags());
        if !others.is_empty() {
            origin.push_str(&format!(" Other Sigma tags: {}.", others.join(", ")));
        }
        text.push_str(&origin);
        text
    }

    fn references(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for reference in std::iter::once(&self.meta)
            .chain(&self.counted)
            .flat_map(|m| &m.references)
        {
            if !all.contains(reference) {
                all.push(reference.clone());
            }
        }
        all
    }

    /// The stages the rule judges: those with an outcome (a request is judged once it is
    /// answered, and a long-running one also when it starts), or all of them when the Sigma
    /// rule itself looks at the stage.
    fn stages(&self) -> Vec<&'static str> {
        if self.condition.mentions("stage") {
            vec![
                "RequestReceived",
                "ResponseStarted",
                "ResponseComplete",
                "Panic",
            ]
        } else {
            vec!["ResponseStarted", "ResponseComplete", "Panic"]
        }
    }
}

/// The ATT&CK ids of Sigma tags, and the tags that are neither tactics nor techniques.
fn mitre(tags: &[&str]) -> (Mitre, Vec<String>) {
    const TACTICS: &[(&str, &str)] = &[
        ("reconnaissance", "TA0043"),
        ("resource_development", "TA0042"),
        ("initial_access", "TA0001"),
        ("execution", "TA0002"),
        ("persistence", "TA0003"),
        ("privilege_escalation", "TA0004"),
        ("defense_evasion", "TA0005"),
        ("credential_access", "TA0006"),
        ("discovery", "TA0007"),
        ("lateral_movement", "TA0008"),
        ("collection", "TA0009"),
        ("exfiltration", "TA0010"),
        ("command_and_control", "TA0011"),
        ("impact", "TA0040"),
    ];
    let mut out = Mitre::default();
    let mut others = Vec::new();
    for tag in tags {
        let lower = tag.to_ascii_lowercase();
        let Some(name) = lower.strip_prefix("attack.") else {
            others.push((*tag).to_owned());
            continue;
        };
        let technique = name.strip_prefix('t').filter(|rest| {
            let mut parts = rest.split('.');
            parts
                .next()
                .is_some_and(|p| p.len() == 4 && p.chars().all(|c| c.is_ascii_digit()))
                && parts.all(|p| p.len() == 3 && p.chars().all(|c| c.is_ascii_digit()))
        });
        if let Some(technique) = technique {
            let id = format!("T{technique}");
            if !out.techniques.contains(&id) {
                out.techniques.push(id);
            }
            continue;
        }
        let name = name.replace('-', "_");
        match TACTICS.iter().find(|(n, _)| *n == name) {
            Some((_, id)) => {
                if !out.tactics.iter().any(|t| t == id) {
                    out.tactics.push((*id).to_owned());
                }
            }
            None => others.push((*tag).to_owned()),
        }
    }
    (out, others)
}

fn correlation_plan(
    document: &Document<'_>,
    correlation: &Value,
    documents: &[Document<'_>],
    by_name: &BTreeMap<String, usize>,
    converted: &[Option<Result<RuleParts, Vec<SigmaProblem>>>],
    options: &SigmaOptions,
) -> Result<Plan, SigmaProblem> {
    let at = |key: &str| document.lines.key(key, document.lines.first);
    let fail = |key: &str, refusal: SigmaRefusal| SigmaProblem {
        line: at(key),
        refusal,
    };
    let meta = meta(document)?;
    let kind = correlation
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match kind {
        "event_count" | "value_count" | "temporal" | "temporal_ordered" => {}
        other => {
            return Err(fail(
                "type",
                SigmaRefusal::Correlation(format!(
                    "the type {other:?} is not a Sigma correlation type (event_count, value_count, temporal, temporal_ordered)"
                )),
            ));
        }
    }
    if correlation.get("aliases").is_some() {
        return Err(fail(
            "aliases",
            SigmaRefusal::Correlation(
                "`aliases` (a field named differently in each rule) is not supported".into(),
            ),
        ));
    }
    let rules = names(correlation.get("rules"));
    if rules.is_empty() {
        return Err(fail(
            "rules",
            SigmaRefusal::Correlation("`rules:` names no rule".into()),
        ));
    }
    let mut counted = Vec::new();
    let mut conditions = Vec::new();
    let mut names_counted = Vec::new();
    for name in &rules {
        let Some(index) = by_name.get(name) else {
            let chained = documents.iter().any(|d| {
                d.value.get("correlation").is_some()
                    && ["name", "id"]
                        .iter()
                        .any(|k| d.value.get(*k).and_then(Value::as_str) == Some(name.as_str()))
            });
            let why = if chained {
                format!(
                    "`rules:` names the correlation {name:?}: chains of correlations are not supported"
                )
            } else {
                format!(
                    "`rules:` names {name:?}, which no rule given defines (by `name` or `id`): give its file too"
                )
            };
            return Err(fail("rules", SigmaRefusal::Correlation(why)));
        };
        match &converted[*index] {
            Some(Ok(parts)) => {
                counted.push(parts.meta.clone());
                conditions.push(parts.condition.clone());
                names_counted.push(name.clone());
            }
            Some(Err(problems)) => {
                let first = problems
                    .first()
                    .map(|p| format!("line {}: {}", p.line, p.refusal))
                    .unwrap_or_default();
                return Err(fail(
                    "rules",
                    SigmaRefusal::Correlation(format!(
                        "it counts the rule {:?} ({}), which cannot be converted: {first}",
                        documents[*index].title(),
                        documents[*index].file
                    )),
                ));
            }
            None => unreachable!("names index rules with a detection"),
        }
    }
    let mut by = Vec::new();
    let mut by_fields = Vec::new();
    for field in names(correlation.get("group-by")) {
        let mapping = fields::map_field(&field, &options.fields).map_err(|hint| {
            fail(
                "group-by",
                SigmaRefusal::Field {
                    field: field.clone(),
                    hint,
                },
            )
        })?;
        by_fields.push(FieldRef {
            name: mapping.kubetrail.clone(),
            field: mapping.field,
        });
        by.push(mapping.kubetrail);
    }
    let timespan = correlation
        .get("timespan")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some(window) = parse_duration_micros(&timespan).filter(|w| *w > 0) else {
        return Err(fail(
            "timespan",
            SigmaRefusal::Correlation(format!(
                "the timespan {timespan:?} is not a duration such as 30s, 10m, 1h or 1d"
            )),
        ));
    };
    if kind.starts_with("temporal") {
        let sequence = temporal_plan(
            kind,
            timespan,
            by_fields,
            conditions.clone(),
            names_counted,
            correlation,
            &fail,
        )?;
        return Ok(Plan {
            meta,
            counted,
            condition: Node::Or(conditions),
            threshold: None,
            sequence: Some(sequence),
        });
    }
    let Some(condition) = correlation.get("condition").and_then(Value::as_mapping) else {
        return Err(fail(
            "condition",
            SigmaRefusal::Correlation("`condition:` is not a mapping such as {gte: 10}".into()),
        ));
    };
    let mut count = None;
    let mut distinct = None;
    for (key, value) in condition {
        let key = key.as_str().unwrap_or_default();
        match key {
            "gte" | "gt" => {
                let Some(n) = value.as_u64() else {
                    return Err(fail(
                        "condition",
                        SigmaRefusal::Correlation(format!("`{key}` is not a whole number")),
                    ));
                };
                count = Some(if key == "gt" { n + 1 } else { n.max(1) });
            }
            "field" => {
                let Some(name) = value.as_str() else {
                    return Err(fail(
                        "condition",
                        SigmaRefusal::Correlation("`field` is not a field name".into()),
                    ));
                };
                let mapping = fields::map_field(name, &options.fields).map_err(|hint| {
                    fail(
                        "field",
                        SigmaRefusal::Field {
                            field: name.to_owned(),
                            hint,
                        },
                    )
                })?;
                distinct = Some(FieldRef {
                    name: mapping.kubetrail,
                    field: mapping.field,
                });
            }
            other => {
                return Err(fail(
                    "condition",
                    SigmaRefusal::Correlation(format!(
                        "the condition `{other}`: kubetrail's thresholds report a group once it reaches a count (gte, gt); a count at most, below or exactly N cannot be written"
                    )),
                ));
            }
        }
    }
    let Some(count) = count else {
        return Err(fail(
            "condition",
            SigmaRefusal::Correlation("`condition:` has no `gte` or `gt`".into()),
        ));
    };
    match (kind, &distinct) {
        ("value_count", None) => {
            return Err(fail(
                "condition",
                SigmaRefusal::Correlation(
                    "a value_count correlation needs `field:` in its condition".into(),
                ),
            ));
        }
        ("event_count", Some(_)) => {
            return Err(fail(
                "condition",
                SigmaRefusal::Correlation(
                    "an event_count correlation counts events, not the values of `field:`".into(),
                ),
            ));
        }
        _ => {}
    }
    Ok(Plan {
        meta,
        counted,
        condition: if conditions.len() == 1 {
            conditions.remove(0)
        } else {
            Node::Or(conditions)
        },
        threshold: Some(ThresholdPlan {
            kind: kind.to_owned(),
            timespan,
            window,
            by,
            count,
            distinct,
        }),
        sequence: None,
    })
}

/// A temporal correlation as a sequence: its rules are the steps (2 to 5), joined by its
/// `group-by` (required: a sequence joins events on fields), within its timespan. Its
/// condition, when given, must ask for every rule (`gte` of their number).
fn temporal_plan(
    kind: &str,
    timespan: String,
    by: Vec<FieldRef>,
    steps: Vec<Node>,
    names: Vec<String>,
    correlation: &Value,
    fail: &dyn Fn(&str, SigmaRefusal) -> SigmaProblem,
) -> Result<SequencePlan, SigmaProblem> {
    let refuse = |key: &str, why: String| fail(key, SigmaRefusal::Correlation(why));
    if by.is_empty() {
        return Err(refuse(
            "group-by",
            format!(
                "a {kind} correlation without `group-by` would join unrelated events: kubetrail's sequences join on fields"
            ),
        ));
    }
    if !(2..=crate::rule::MAX_SEQUENCE_STEPS).contains(&steps.len()) {
        return Err(refuse(
            "rules",
            format!(
                "a {kind} correlation becomes a sequence of 2 to {} rules; it names {}",
                crate::rule::MAX_SEQUENCE_STEPS,
                steps.len()
            ),
        ));
    }
    if let Some(condition) = correlation.get("condition") {
        let every = condition
            .as_mapping()
            .filter(|m| m.len() == 1)
            .and_then(|m| m.get("gte"))
            .and_then(Value::as_u64)
            == Some(steps.len() as u64);
        if !every {
            return Err(refuse(
                "condition",
                format!(
                    "a {kind} correlation is written as a sequence of all its rules: its condition can only be `gte: {}`",
                    steps.len()
                ),
            ));
        }
    }
    Ok(SequencePlan {
        kind: kind.to_owned(),
        timespan,
        by,
        steps,
        names,
        ordered: kind == "temporal_ordered",
    })
}

/// The rule file's keys other than its tests, in the order people read them.
#[derive(Serialize)]
struct RuleHead<'a> {
    id: &'a str,
    title: &'a str,
    description: &'a str,
    severity: Severity,
    #[serde(skip_serializing_if = "MitreOut::is_empty")]
    mitre: MitreOut<'a>,
    stages: &'a [&'static str],
    default_exemptions: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threshold: Option<ThresholdOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<SequenceOut<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    references: &'a [String],
}

#[derive(Serialize)]
struct ThresholdOut<'a> {
    window: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    by: &'a [String],
    count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    distinct: Option<&'a str>,
}

#[derive(Serialize)]
struct SequenceOut<'a> {
    within: &'a str,
    by: Vec<&'a str>,
    ordered: bool,
    steps: Vec<StepOut<'a>>,
}

#[derive(Serialize)]
struct StepOut<'a> {
    name: &'a str,
    condition: &'a str,
}

/// ATT&CK ids as written in a rule file, without empty lists.
#[derive(Serialize)]
struct MitreOut<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tactics: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    techniques: &'a [String],
}

impl MitreOut<'_> {
    fn is_empty(&self) -> bool {
        self.tactics.is_empty() && self.techniques.is_empty()
    }
}

/// Writes, tests and checks one rule.
fn emit(plan: &Plan) -> Result<SigmaRule, SigmaProblem> {
    let id = plan.id();
    let title = plan.title();
    let description = plan.description();
    let (mitre, _) = mitre(&plan.tags());
    let stages = plan.stages();
    let condition = plan.condition.render();
    let references = plan.references();
    let header = {
        let mut header = format!(
            "# Converted by `kubetrail rules import-sigma` from the Sigma rule \"{}\" in {}",
            plan.meta.title, plan.meta.file
        );
        if let Some(id) = &plan.meta.sigma_id {
            header.push_str(&format!(" (id {id})"));
        }
        header.push_str(".\n");
        let authors = plan.authors();
        if !authors.is_empty() {
            header.push_str(&format!("# Author: {}.\n", authors.join("; ")));
        }
        header.push_str(match &plan.meta.license {
            Some(_) => "# License: as the Sigma rule states it, in the description.\n",
            None => "# SigmaHQ's rules are licensed under the Detection Rule License (DRL) 1.1,\n# https://github.com/SigmaHQ/Detection-Rule-License: keep the author named with the rule\n# and with its findings.\n",
        });
        header
    };
    // The rule file with `tests`: its condition, threshold and sequence as given.
    let write_rule = |condition: Option<&str>,
                      threshold: Option<ThresholdOut<'_>>,
                      sequence: Option<SequenceOut<'_>>,
                      tests: &Tests|
     -> String {
        let head = RuleHead {
            id: &id,
            title: &title,
            description: &description,
            severity: plan.severity(),
            mitre: MitreOut {
                tactics: &mitre.tactics,
                techniques: &mitre.techniques,
            },
            stages: &stages,
            default_exemptions: false,
            condition,
            threshold,
            sequence,
            references: &references,
        };
        let mut yaml = header.clone();
        yaml.push_str(&serde_yaml_ng::to_string(&head).unwrap_or_default());
        yaml.push_str("tests:\n");
        for (kind, cases) in [("fire", &tests.fire), ("quiet", &tests.quiet)] {
            yaml.push_str(&format!("  {kind}:\n"));
            for case in cases {
                yaml.push_str(&format!("    - {case}\n"));
            }
        }
        yaml
    };
    let step_conditions: Vec<String> = plan
        .sequence
        .iter()
        .flat_map(|s| s.steps.iter().map(Node::render))
        .collect();
    let sequence_out = || {
        plan.sequence.as_ref().map(|s| SequenceOut {
            within: &s.timespan,
            by: s.by.iter().map(|f| f.name.as_str()).collect(),
            ordered: s.ordered,
            steps: s
                .names
                .iter()
                .zip(&step_conditions)
                .map(|(name, condition)| StepOut { name, condition })
                .collect(),
        })
    };
    let write = |tests: &Tests, with_threshold: bool| -> String {
        let threshold = plan
            .threshold
            .as_ref()
            .filter(|_| with_threshold)
            .map(|t| ThresholdOut {
                window: &t.timespan,
                by: &t.by,
                count: t.count,
                distinct: t.distinct.as_ref().map(|d| d.name.as_str()),
            });
        match plan.sequence {
            Some(_) => write_rule(None, None, sequence_out(), tests),
            None => write_rule(Some(&condition), threshold, None, tests),
        }
    };
    let problem = |refusal: SigmaRefusal| SigmaProblem {
        line: plan.meta.line,
        refusal,
    };
    let untested = RuleSet::load(
        false,
        &[SourceFile {
            name: id.clone(),
            text: write(
                &Tests {
                    fire: Vec::new(),
                    quiet: Vec::new(),
                },
                true,
            ),
        }],
    );
    if let Some(p) = untested.problems.first() {
        return Err(problem(SigmaRefusal::Load(p.message.clone())));
    }
    let threshold = plan.threshold.as_ref().map(|t| Threshold {
        count: t.count,
        window: t.window,
        distinct: t.distinct.as_ref(),
    });
    let tests = match &plan.sequence {
        Some(sequence) => synth::synthesize_sequence(
            &sequence.steps,
            &sequence.by,
            &|n, tests| write_rule(Some(&step_conditions[n]), None, None, tests),
            &|tests| write(tests, true),
        ),
        None => synth::synthesize(&plan.condition, threshold.as_ref(), &write),
    }
    .map_err(|why| problem(SigmaRefusal::Tests(why)))?;
    Ok(SigmaRule {
        id: id.clone(),
        file: plan.meta.file.clone(),
        title: plan.meta.title.clone(),
        yaml: write(&tests, true),
    })
}
