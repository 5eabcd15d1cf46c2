//! Rules, compiled and assembled into a set: the bundled pack first, then user directories,
//! where a file with a pack rule's `id` replaces it and an `override:` file disables it,
//! changes its severity or adds exemptions without copying it. A bad file is a [`Problem`]
//! with its file and line and is left out; the other rules load.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use kubetrail_event::{AuditEvent, Stage};
use kubetrail_query::{Expr, Field, Matcher, Query, parse, parse_duration_micros};

use crate::exemption::Exemption;
use crate::spec::{
    DefaultsSpec, ExemptionSpec, FileSpec, FirstSeenSpec, Mitre, OverrideSpec, RuleSpec,
    SequenceSpec, Severity, TestsSpec, key_line,
};

include!(concat!(env!("OUT_DIR"), "/pack.rs"));

/// The most events a threshold may ask for: its window holds them per group.
pub const MAX_THRESHOLD_COUNT: u64 = 100_000;

/// The longest learning period of a first-seen rule.
pub const MAX_LEARNING: i64 = 366 * 86_400 * 1_000_000;

/// The longest span of a sequence rule: partial sequences are held in memory that long.
pub const MAX_SEQUENCE_SPAN: i64 = 86_400 * 1_000_000;

/// The most steps a sequence may have.
pub const MAX_SEQUENCE_STEPS: usize = 5;

/// The most fields a first-seen tuple or a sequence join may have.
pub const MAX_KEY_FIELDS: usize = 5;

/// A rule file's text and the name problems call it by.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// A path, or `pack:PATH` for the bundled pack.
    pub name: String,
    /// The YAML.
    pub text: String,
}

/// Where a rule comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file (`pack:workload/privileged-container.yaml` for the pack).
    pub file: String,
    /// Whether it is the bundled pack's.
    pub bundled: bool,
}

/// A problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: String,
    /// The 1-based line.
    pub line: usize,
    /// The rule, when known.
    pub rule: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(rule) = &self.rule {
            write!(f, "{rule}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A windowed count per group.
#[derive(Debug, Clone)]
pub struct Threshold {
    /// The window, µs.
    pub window: i64,
    /// The group's fields.
    pub by: Vec<Field>,
    /// At least this many events (or distinct values).
    pub count: u64,
    /// Count distinct values of this field.
    pub distinct: Option<Field>,
}

/// A first-seen rule's tuple and learning period.
#[derive(Debug, Clone)]
pub struct FirstSeen {
    /// The fields whose values make the tuple.
    pub fields: Vec<Field>,
    /// The learning period, µs.
    pub learning: i64,
}

/// A sequence rule's steps and span.
#[derive(Debug, Clone)]
pub struct Sequence {
    /// The longest time from the first step to the last, µs.
    pub within: i64,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Whether the steps must happen in order; when false, all of them in any order.
    pub ordered: bool,
}

/// One step of a sequence.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its name in explanations.
    pub name: String,
    /// Its condition as written (without the rule's common condition).
    pub condition: String,
    /// Its condition and the rule's common condition, compiled.
    pub matcher: Matcher,
    /// The join fields, as many in every step.
    pub by: Vec<Field>,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its id.
    pub id: String,
    /// One line.
    pub title: String,
    /// What, why, benign causes.
    pub description: String,
    /// Severity (after overrides).
    pub severity: Severity,
    /// ATT&CK ids.
    pub mitre: Arc<Mitre>,
    /// Detection intents covered.
    pub intents: Vec<String>,
    /// Links.
    pub references: Vec<String>,
    /// The condition as written; for a sequence rule, the search any of its steps matches
    /// (`(common) ((step 1) OR (step 2))`), so a store can be asked for what the rule looks at.
    pub condition: String,
    /// The condition, compiled.
    pub matcher: Matcher,
    /// The stages evaluated.
    pub stages: Vec<Stage>,
    /// The rule's own exemptions and those added by overrides.
    pub exemptions: Vec<Exemption>,
    /// Whether the default exemptions apply.
    pub default_exemptions: bool,
    /// The windowed count, for threshold rules.
    pub threshold: Option<Threshold>,
    /// The tuple and learning period, for first-seen rules.
    pub first_seen: Option<FirstSeen>,
    /// The steps, for sequence rules.
    pub sequence: Option<Sequence>,
    /// Whether it runs.
    pub enabled: bool,
    /// Its inline tests.
    pub tests: TestsSpec,
    /// Where it was defined.
    pub origin: Origin,
}

impl Rule {
    /// Whether the rule looks at an event of this stage.
    pub fn evaluates(&self, stage: Stage) -> bool {
        self.stages.contains(&stage)
    }

    /// Whether an exemption (its own, or a default one when it takes them) covers `event`.
    pub fn exempts(&self, defaults: &[Exemption], event: &AuditEvent<'_>, cluster: &str) -> bool {
        self.exemptions.iter().any(|e| e.covers(event, cluster))
            || (self.default_exemptions && defaults.iter().any(|e| e.covers(event, cluster)))
    }
}

/// Every rule loaded, the default exemptions, and every problem.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// The rules, by id order.
    pub rules: Vec<Rule>,
    /// Exemptions every rule gets unless it says `default_exemptions: false`.
    pub defaults: Vec<Exemption>,
    /// Problems found while loading.
    pub problems: Vec<Problem>,
}

impl RuleSet {
    /// The bundled pack's files.
    pub fn pack() -> Vec<SourceFile> {
        PACK.iter()
            .map(|(path, text)| SourceFile {
                name: format!("pack:{path}"),
                text: (*text).to_owned(),
            })
            .collect()
    }

    /// Loads the pack (when `with_pack`), then `user` files in order.
    pub fn load(with_pack: bool, user: &[SourceFile]) -> RuleSet {
        let pack = if with_pack {
            RuleSet::pack()
        } else {
            Vec::new()
        };
        let mut loader = Loader::default();
        for (file, bundled) in pack
            .iter()
            .map(|f| (f, true))
            .chain(user.iter().map(|f| (f, false)))
        {
            loader.file(file, bundled);
        }
        loader.finish()
    }

    /// The enabled rules.
    pub fn enabled(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| r.enabled)
    }
}

#[derive(Default)]
struct Loader {
    rules: BTreeMap<String, Rule>,
    overrides: Vec<(OverrideSpec, String, usize)>,
    defaults: Vec<Exemption>,
    problems: Vec<Problem>,
}

/// Resolves a field whose values can key a group, a tuple or a join: any field but the
/// search-only ones (the pod view, query parameters), as for a query's `by`.
fn key_field(name: &str) -> Result<Field, String> {
    Field::resolve(name, 0)
        .ok()
        .filter(|f| !f.is_search_only())
        .ok_or_else(|| format!("{name:?} is not a field a group can be made of"))
}

fn key_fields(names: &[String]) -> Result<Vec<Field>, String> {
    names.iter().map(|n| key_field(n)).collect()
}

impl Loader {
    fn problem(&mut self, file: &str, line: usize, rule: Option<&str>, message: String) {
        self.problems.push(Problem {
            file: file.to_owned(),
            line,
            rule: rule.map(str::to_owned),
            message,
        });
    }

    fn file(&mut self, file: &SourceFile, bundled: bool) {
        let spec = match FileSpec::parse(&file.text) {
            Ok(spec) => spec,
            Err((line, message)) => return self.problem(&file.name, line, None, message),
        };
        match spec {
            FileSpec::Rule(spec) => {
                if let Some(rule) = self.rule(*spec, file, bundled) {
                    if let Some(previous) = self.rules.get(&rule.id)
                        && previous.origin.bundled == bundled
                    {
                        let message = format!(
                            "the rule {} is already defined in {}: ids must be unique",
                            rule.id, previous.origin.file
                        );
                        self.problem(&file.name, key_line(&file.text, "id"), None, message);
                        return;
                    }
                    self.rules.insert(rule.id.clone(), rule);
                }
            }
            FileSpec::Override(spec) => {
                let line = key_line(&file.text, "override");
                self.overrides.push((spec, file.name.clone(), line));
            }
            FileSpec::Defaults(DefaultsSpec { default_exemptions }) => {
                let line = key_line(&file.text, "default_exemptions");
                for spec in default_exemptions {
                    match Exemption::compile(&spec) {
                        Ok(e) => self.defaults.push(e),
                        Err(message) => self.problem(&file.name, line, None, message),
                    }
                }
            }
        }
    }

    fn rule(&mut self, spec: RuleSpec, file: &SourceFile, bundled: bool) -> Option<Rule> {
        let id = spec.id.clone();
        let before = self.problems.len();
        let at = |key: &str| key_line(&file.text, key);
        if id.is_empty()
            || id.len() > 100
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            self.problem(
                &file.name,
                at("id"),
                None,
                format!("{id:?}: an id is lower-case letters, digits and `-` (at most 100)"),
            );
        }
        let stateful = [
            spec.threshold.is_some(),
            spec.first_seen.is_some(),
            spec.sequence.is_some(),
        ];
        if stateful.iter().filter(|s| **s).count() > 1 {
            self.problem(
                &file.name,
                at("id"),
                Some(&id),
                "a rule is at most one of `threshold:`, `first_seen:` and `sequence:`".into(),
            );
        }
        let sequence = spec
            .sequence
            .as_ref()
            .and_then(|s| self.sequence(s, spec.condition.as_deref(), file, &id));
        let condition = match (&sequence, &spec.condition) {
            (Some((_, condition)), _) => Some(condition.clone()),
            (None, Some(condition)) => Some(condition.clone()),
            (None, None) => {
                if spec.sequence.is_none() {
                    self.problem(
                        &file.name,
                        at("id"),
                        Some(&id),
                        "missing field `condition` (every rule but a sequence needs one)".into(),
                    );
                }
                None
            }
        };
        let matcher = condition
            .as_deref()
            .and_then(|c| self.condition(c, &file.name, at("condition"), &id));
        let stages = if spec.stages.is_empty() {
            vec![Stage::ResponseComplete, Stage::Panic]
        } else {
            let mut stages = Vec::new();
            for name in &spec.stages {
                match Stage::parse(name) {
                    Some(stage) => stages.push(stage),
                    None => self.problem(
                        &file.name,
                        at("stages"),
                        Some(&id),
                        format!("{name:?} is not a stage (RequestReceived, ResponseStarted, ResponseComplete, Panic)"),
                    ),
                }
            }
            stages
        };
        let exemptions = self.exemptions(&spec.exemptions, &file.name, at("exemptions"), &id);
        let threshold = spec
            .threshold
            .as_ref()
            .and_then(|t| self.threshold(t, &file.name, at("threshold"), &id));
        let first_seen = spec
            .first_seen
            .as_ref()
            .and_then(|f| self.first_seen(f, &file.name, at("first_seen"), &id));
        if self.problems.len() > before {
            return None;
        }
        Some(Rule {
            id,
            title: spec.title,
            description: spec.description,
            severity: spec.severity,
            mitre: Arc::new(spec.mitre),
            intents: spec.intents,
            references: spec.references,
            condition: condition?,
            matcher: matcher?,
            stages,
            exemptions,
            default_exemptions: spec.default_exemptions,
            threshold,
            first_seen,
            sequence: sequence.map(|(s, _)| s),
            enabled: spec.enabled,
            tests: spec.tests,
            origin: Origin {
                file: file.name.clone(),
                bundled,
            },
        })
    }

    fn exemptions(
        &mut self,
        specs: &[ExemptionSpec],
        file: &str,
        line: usize,
        rule: &str,
    ) -> Vec<Exemption> {
        let mut compiled = Vec::new();
        for (n, spec) in specs.iter().enumerate() {
            match Exemption::compile(spec) {
                Ok(e) => compiled.push(e),
                Err(message) => self.problem(
                    file,
                    line,
                    Some(rule),
                    format!("exemptions[{n}]: {message}"),
                ),
            }
        }
        compiled
    }

    fn threshold(
        &mut self,
        spec: &crate::spec::ThresholdSpec,
        file: &str,
        line: usize,
        rule: &str,
    ) -> Option<Threshold> {
        let mut fail = |message: String| {
            self.problems.push(Problem {
                file: file.to_owned(),
                line,
                rule: Some(rule.to_owned()),
                message: format!("threshold: {message}"),
            });
            None
        };
        let Some(window) = parse_duration_micros(&spec.window).filter(|w| *w > 0) else {
            return fail(format!(
                "window: {:?} is not a duration (`10m`, `1h`)",
                spec.window
            ));
        };
        if spec.count == 0 || spec.count > MAX_THRESHOLD_COUNT {
            return fail(format!(
                "count: {} is not between 1 and {MAX_THRESHOLD_COUNT}",
                spec.count
            ));
        }
        let by = match key_fields(&spec.by) {
            Ok(by) => by,
            Err(message) => return fail(format!("by: {message}")),
        };
        let distinct = match spec.distinct.as_deref().map(key_field).transpose() {
            Ok(d) => d,
            Err(message) => return fail(format!("distinct: {message}")),
        };
        Some(Threshold {
            window,
            by,
            count: spec.count,
            distinct,
        })
    }

    /// Compiles a condition (a rule's, or a sequence's combined one).
    fn condition(&mut self, text: &str, file: &str, line: usize, rule: &str) -> Option<Matcher> {
        match parse(text) {
            Ok(query) if !query.pipes.is_empty() => {
                self.problem(
                    file,
                    line,
                    Some(rule),
                    "a condition is a search only: write windowed counts as `threshold:`".into(),
                );
                None
            }
            Ok(query) => Matcher::new(&query).ok(),
            Err(e) => {
                let message = format!("condition: {}", e.render(text));
                self.problem(file, line, Some(rule), message);
                None
            }
        }
    }

    fn first_seen(
        &mut self,
        spec: &FirstSeenSpec,
        file: &str,
        line: usize,
        rule: &str,
    ) -> Option<FirstSeen> {
        let mut fail = |message: String| {
            self.problem(file, line, Some(rule), format!("first_seen: {message}"));
            None
        };
        let Some(learning) =
            parse_duration_micros(&spec.learning).filter(|l| (0..=MAX_LEARNING).contains(l))
        else {
            return fail(format!(
                "learning: {:?} is not a duration between 0s and 366d (`14d`)",
                spec.learning
            ));
        };
        if spec.fields.is_empty() || spec.fields.len() > MAX_KEY_FIELDS {
            return fail(format!(
                "fields: name 1 to {MAX_KEY_FIELDS} fields whose values make the tuple"
            ));
        }
        match key_fields(&spec.fields) {
            Ok(fields) => Some(FirstSeen { fields, learning }),
            Err(message) => fail(format!("fields: {message}")),
        }
    }

    /// Compiles a sequence's steps; with the rule's condition: the search any step matches.
    fn sequence(
        &mut self,
        spec: &SequenceSpec,
        common: Option<&str>,
        file: &SourceFile,
        rule: &str,
    ) -> Option<(Sequence, String)> {
        let line = key_line(&file.text, "sequence");
        let before = self.problems.len();
        let fail = |this: &mut Self, message: String| {
            this.problem(&file.name, line, Some(rule), format!("sequence: {message}"));
        };
        let within =
            parse_duration_micros(&spec.within).filter(|w| (1..=MAX_SEQUENCE_SPAN).contains(w));
        if within.is_none() {
            fail(
                self,
                format!(
                    "within: {:?} is not a duration between 1s and 24h (`5m`)",
                    spec.within
                ),
            );
        }
        if !(2..=MAX_SEQUENCE_STEPS).contains(&spec.steps.len()) {
            fail(
                self,
                format!("steps: a sequence has 2 to {MAX_SEQUENCE_STEPS} steps"),
            );
        }
        let common_expr = match common.map(parse) {
            None => None,
            Some(Ok(query)) if query.pipes.is_empty() => query.filter,
            Some(Ok(_)) => {
                fail(self, "condition: a search only, without `| …`".into());
                None
            }
            Some(Err(e)) => {
                let message = format!("condition: {}", e.render(common.unwrap_or_default()));
                self.problem(
                    &file.name,
                    key_line(&file.text, "condition"),
                    Some(rule),
                    message,
                );
                None
            }
        };
        let mut steps = Vec::new();
        let mut alternatives = Vec::new();
        for (n, step) in spec.steps.iter().enumerate() {
            let name = step
                .name
                .clone()
                .unwrap_or_else(|| format!("step {}", n + 1));
            let by = step.by.as_ref().unwrap_or(&spec.by);
            let by = match key_fields(by) {
                Ok(by) if !by.is_empty() && by.len() <= MAX_KEY_FIELDS => by,
                Ok(_) => {
                    fail(
                        self,
                        format!(
                            "steps[{n}]: name 1 to {MAX_KEY_FIELDS} join fields, in `by:` of the sequence or of the step"
                        ),
                    );
                    continue;
                }
                Err(message) => {
                    fail(self, format!("steps[{n}].by: {message}"));
                    continue;
                }
            };
            let filter = match parse(&step.condition) {
                Ok(query) if !query.pipes.is_empty() => {
                    fail(
                        self,
                        format!("steps[{n}].condition: a search only, without `| …`"),
                    );
                    continue;
                }
                Ok(query) => match query.filter {
                    Some(filter) => filter,
                    None => {
                        fail(
                            self,
                            format!("steps[{n}].condition: a step needs a condition"),
                        );
                        continue;
                    }
                },
                Err(e) => {
                    let message = format!("steps[{n}].condition: {}", e.render(&step.condition));
                    fail(self, message);
                    continue;
                }
            };
            let combined = match &common_expr {
                Some(common) => Expr::And(vec![common.clone(), filter]),
                None => filter,
            };
            let matcher = match Matcher::new(&Query {
                filter: Some(combined),
                pipes: Vec::new(),
            }) {
                Ok(m) => m,
                Err(e) => {
                    fail(self, format!("steps[{n}].condition: {}", e.message));
                    continue;
                }
            };
            alternatives.push(format!("({})", step.condition.trim()));
            steps.push(Step {
                name,
                condition: step.condition.clone(),
                matcher,
                by,
            });
        }
        if steps.windows(2).any(|w| w[0].by.len() != w[1].by.len()) {
            fail(
                self,
                "every step joins on as many fields (a step's `by:` pairs with the others' in order)".into(),
            );
        }
        if self.problems.len() > before {
            return None;
        }
        let any_step = alternatives.join(" OR ");
        let condition = match common {
            Some(common) => format!("({}) ({any_step})", common.trim()),
            None => any_step,
        };
        Some((
            Sequence {
                within: within?,
                steps,
                ordered: spec.ordered,
            },
            condition,
        ))
    }

    fn finish(mut self) -> RuleSet {
        for (spec, file, line) in std::mem::take(&mut self.overrides) {
            let exemptions = self.exemptions(&spec.exemptions, &file, line, &spec.rule);
            let Some(rule) = self.rules.get_mut(&spec.rule) else {
                let message = format!(
                    "no rule has the id {:?} (`kubetrail rules list` shows them)",
                    spec.rule
                );
                self.problem(&file, line, None, message);
                continue;
            };
            if let Some(enabled) = spec.enabled {
                rule.enabled = enabled;
            }
            if let Some(severity) = spec.severity {
                rule.severity = severity;
            }
            rule.exemptions.extend(exemptions);
        }
        RuleSet {
            rules: self.rules.into_values().collect(),
            defaults: self.defaults,
            problems: self.problems,
        }
    }
}
