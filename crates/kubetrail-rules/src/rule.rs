//! Rules, compiled and assembled into a set: the bundled pack first, then user directories,
//! where a file with a pack rule's `id` replaces it and an `override:` file disables it,
//! changes its severity or adds exemptions without copying it. A bad file is a [`Problem`]
//! with its file and line and is left out; the other rules load.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use kubetrail_event::{AuditEvent, Stage};
use kubetrail_query::{Field, Matcher, parse, parse_duration_micros};

use crate::exemption::Exemption;
use crate::spec::{
    DefaultsSpec, ExemptionSpec, FileSpec, Mitre, OverrideSpec, RuleSpec, Severity, TestsSpec,
    key_line,
};

include!(concat!(env!("OUT_DIR"), "/pack.rs"));

/// The most events a threshold may ask for: its window holds them per group.
pub const MAX_THRESHOLD_COUNT: u64 = 100_000;

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
    /// The condition as written.
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
        let matcher = match parse(&spec.condition) {
            Ok(query) if !query.pipes.is_empty() => {
                self.problem(
                    &file.name,
                    at("condition"),
                    Some(&id),
                    "a condition is a search only: write windowed counts as `threshold:`".into(),
                );
                None
            }
            Ok(query) => Matcher::new(&query).ok(),
            Err(e) => {
                let message = format!("condition: {}", e.render(&spec.condition));
                self.problem(&file.name, at("condition"), Some(&id), message);
                None
            }
        };
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
            condition: spec.condition,
            matcher: matcher?,
            stages,
            exemptions,
            default_exemptions: spec.default_exemptions,
            threshold,
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
        let field = |name: &str| {
            Field::resolve(name, 0)
                .ok()
                .filter(|f| !f.is_search_only())
                .ok_or_else(|| format!("{name:?} is not a field a group can be made of"))
        };
        let by = match spec
            .by
            .iter()
            .map(|n| field(n))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(by) => by,
            Err(message) => return fail(format!("by: {message}")),
        };
        let distinct = match spec.distinct.as_deref().map(field).transpose() {
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
