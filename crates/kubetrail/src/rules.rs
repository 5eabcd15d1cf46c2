//! `kubetrail rules`: list the detection rules, run their inline tests, and hunt with them in
//! audit log files or over the store's history (`docs/detections.md`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use kubetrail_alert::detect::read_rule_files;
use kubetrail_alert::history::scan_store;
use kubetrail_event::Decoded;
use kubetrail_rules::{Engine, Finding, RuleSet, Severity, run_inline_tests};
use serde::Serialize;

use crate::cat::DecodeArgs;
use crate::input::{DecodeHandler, Input, decode_input};
use crate::output::{Diagnostics, Outcome, StdoutSink};
use crate::store::{DataArgs, TimeRangeArgs, open_engine};

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// List the rules (the bundled pack and your directories): id, severity, ATT&CK ids, title.
    List(ListArgs),
    /// Run every rule's inline tests: events that must fire and events that must not.
    Test(TestArgs),
    /// Report what the rules find in audit log files, or over the store's history.
    Run(RunArgs),
    /// Convert Sigma rules for Kubernetes audit logs into rule files, exactly or not at all
    /// (`docs/sigma.md`).
    ImportSigma(ImportSigmaArgs),
}

/// Where rules come from.
#[derive(Debug, Args)]
pub struct RuleSources {
    /// A directory (read recursively) or file of rules that extend or override the bundled
    /// pack; repeatable, later ones win.
    #[arg(long = "rules", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Leave the bundled pack out.
    #[arg(long)]
    pub no_pack: bool,
}

impl RuleSources {
    /// Loads the rules; problems are printed, and make the load fail when `strict`.
    fn load(&self, extra: &[PathBuf], strict: bool) -> Result<RuleSet> {
        let paths: Vec<PathBuf> = self.dirs.iter().chain(extra).cloned().collect();
        let files = read_rule_files(&paths)?;
        let set = RuleSet::load(!self.no_pack, &files);
        for problem in &set.problems {
            eprintln!("kubetrail: {problem}");
        }
        if strict && !set.problems.is_empty() {
            bail!("{} problem(s) in rule files", set.problems.len());
        }
        Ok(set)
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RulesOutput {
    /// Aligned lines for people.
    Table,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub sources: RuleSources,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: RulesOutput,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Directories or files of rules to test with the pack (none: the bundled pack alone).
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub sources: RuleSources,
    /// Print every case, not only failures.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Audit log files (every input format, gzip too; `-` is standard input). Without files,
    /// the store's history is searched.
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub sources: RuleSources,
    #[command(flatten)]
    pub data: DataArgs,
    /// The range of history searched (default: everything stored).
    #[command(flatten)]
    pub time: TimeRangeArgs,
    /// Only these rules (repeatable).
    #[arg(long = "rule", value_name = "ID")]
    pub only: Vec<String>,
    /// Only findings of at least this severity: info, low, medium, high, critical.
    #[arg(long, value_name = "SEVERITY", default_value = "info")]
    pub min_severity: String,
    /// The cluster events of files come from.
    #[arg(long, default_value = "")]
    pub cluster: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: RulesOutput,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

pub fn run(command: &RulesCommand) -> Result<Outcome> {
    match command {
        RulesCommand::List(args) => list(args),
        RulesCommand::Test(args) => test(args),
        RulesCommand::Run(args) => hunt(args),
        RulesCommand::ImportSigma(args) => import_sigma(args),
    }
}

#[derive(Serialize)]
struct RuleListing<'r> {
    id: &'r str,
    title: &'r str,
    severity: Severity,
    mitre: &'r kubetrail_rules::Mitre,
    intents: &'r [String],
    condition: &'r str,
    threshold: Option<String>,
    enabled: bool,
    file: &'r str,
    exemptions: Vec<&'r kubetrail_rules::ExemptionSpec>,
}

fn list(args: &ListArgs) -> Result<Outcome> {
    let set = args.sources.load(&[], false)?;
    let mut out = StdoutSink::new();
    for rule in &set.rules {
        match args.output {
            RulesOutput::Json => {
                let listing = RuleListing {
                    id: &rule.id,
                    title: &rule.title,
                    severity: rule.severity,
                    mitre: &rule.mitre,
                    intents: &rule.intents,
                    condition: &rule.condition,
                    threshold: rule.threshold.as_ref().map(|t| {
                        format!(
                            "{} {} within {}s by {}",
                            t.count,
                            t.distinct.as_ref().map_or("events".to_owned(), |f| format!(
                                "distinct {}",
                                f.display_name()
                            )),
                            t.window / 1_000_000,
                            t.by.iter()
                                .map(|f| f.display_name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }),
                    enabled: rule.enabled,
                    file: &rule.origin.file,
                    exemptions: rule.exemptions.iter().map(|e| e.spec.as_ref()).collect(),
                };
                let mut line = serde_json::to_vec(&listing)?;
                line.push(b'\n');
                out.write(&line)?;
            }
            RulesOutput::Table => {
                let line = format!(
                    "{:<44} {:<8} {:<24} {}{}\n",
                    rule.id,
                    rule.severity,
                    rule.mitre.techniques.join(","),
                    rule.title,
                    if rule.enabled { "" } else { "  (disabled)" }
                );
                out.write(line.as_bytes())?;
            }
        }
    }
    out.flush()?;
    Ok(if set.problems.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Skipped
    })
}

fn test(args: &TestArgs) -> Result<Outcome> {
    let set = args.sources.load(&args.paths, false)?;
    let mut out = StdoutSink::new();
    let (mut passed, mut failed) = (0, 0);
    for rule in &set.rules {
        let mut failures = Vec::new();
        if rule.tests.fire.is_empty() || rule.tests.quiet.is_empty() {
            failures.push("needs at least one `fire` and one `quiet` test".to_owned());
        }
        let results = run_inline_tests(rule, &set.defaults);
        for result in &results {
            if let Some(failure) = &result.failure {
                failures.push(format!("{}[{}]: {failure}", result.expect, result.index));
            } else if args.verbose {
                let detail = result
                    .findings
                    .first()
                    .map(|f| format!(" ({})", f.explanation))
                    .unwrap_or_default();
                out.write(
                    format!(
                        "ok    {} {}[{}]{detail}\n",
                        rule.id, result.expect, result.index
                    )
                    .as_bytes(),
                )?;
            }
        }
        if failures.is_empty() {
            passed += 1;
        } else {
            failed += 1;
            for failure in failures {
                out.write(
                    format!("FAIL  {} ({}): {failure}\n", rule.id, rule.origin.file).as_bytes(),
                )?;
            }
        }
    }
    out.write(
        format!(
            "{passed} rules passed, {failed} failed, {} problems in rule files\n",
            set.problems.len()
        )
        .as_bytes(),
    )?;
    out.flush()?;
    Ok(if failed == 0 && set.problems.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// Prints findings as they come, and counts them.
struct FindingPrinter {
    out: StdoutSink,
    output: RulesOutput,
    min_severity: Severity,
    by_rule: BTreeMap<String, u64>,
}

impl FindingPrinter {
    fn print(&mut self, findings: &mut Vec<Finding>) -> Result<()> {
        for finding in findings.drain(..) {
            if finding.severity < self.min_severity {
                continue;
            }
            *self.by_rule.entry(finding.rule.clone()).or_default() += 1;
            let line = match self.output {
                RulesOutput::Json => {
                    let mut line = serde_json::to_vec(&finding)?;
                    line.push(b'\n');
                    line
                }
                RulesOutput::Table => {
                    let object = match (finding.namespace.as_str(), finding.name.as_str()) {
                        ("", name) => name.to_owned(),
                        (ns, name) => format!("{ns}/{name}"),
                    };
                    format!(
                        "{} {:<8} {:<36} {:<28} {:<6} {:<24} {:<24} {}\n",
                        finding.time,
                        finding.severity,
                        finding.rule,
                        finding.user,
                        finding.verb,
                        finding.resource,
                        object,
                        finding.explanation
                    )
                    .into_bytes()
                }
            };
            self.out.write(&line)?;
        }
        Ok(())
    }
}

fn hunt(args: &RunArgs) -> Result<Outcome> {
    let Some(min_severity) = Severity::parse(&args.min_severity) else {
        bail!(
            "--min-severity: {:?} is not a severity (info, low, medium, high, critical)",
            args.min_severity
        );
    };
    let mut set = args.sources.load(&[], false)?;
    if !args.only.is_empty() {
        for id in &args.only {
            if !set.rules.iter().any(|r| &r.id == id) {
                bail!("--rule: no rule has the id {id:?} (`kubetrail rules list` shows them)");
            }
        }
        set.rules.retain(|r| args.only.contains(&r.id));
    }
    let mut engine = Engine::new(&set);
    let mut printer = FindingPrinter {
        out: StdoutSink::new(),
        output: args.output,
        min_severity,
        by_rule: BTreeMap::new(),
    };
    let (events, outcome) = if args.files.is_empty() {
        hunt_store(args, &set, &mut engine, &mut printer)?
    } else {
        hunt_files(args, &mut engine, &mut printer)?
    };
    printer.out.flush()?;
    let total: u64 = printer.by_rule.values().sum();
    eprintln!(
        "{total} findings from {events} events ({} rules){}",
        engine.len(),
        if printer.by_rule.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                printer
                    .by_rule
                    .iter()
                    .map(|(rule, n)| format!("{rule} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    Ok(outcome)
}

fn hunt_files(
    args: &RunArgs,
    engine: &mut Engine,
    printer: &mut FindingPrinter,
) -> Result<(u64, Outcome)> {
    struct Handler<'a> {
        engine: &'a mut Engine,
        printer: &'a mut FindingPrinter,
        diagnostics: &'a mut Diagnostics,
        input: String,
        cluster: &'a str,
        events: u64,
        findings: Vec<Finding>,
        failed: Option<anyhow::Error>,
    }
    impl DecodeHandler for Handler<'_> {
        fn decoded(&mut self, decoded: Decoded<'_>) {
            match decoded {
                Decoded::Event(event, _) => {
                    self.events += 1;
                    let time = event.time().map_or(0, |t| t.as_micros());
                    self.engine
                        .evaluate(&event, self.cluster, time, &mut self.findings);
                    if !self.findings.is_empty()
                        && self.failed.is_none()
                        && let Err(e) = self.printer.print(&mut self.findings)
                    {
                        self.failed = Some(e);
                    }
                }
                Decoded::Skipped(skip) => self.diagnostics.skipped(&self.input, &skip),
                Decoded::Ignored { .. } => {}
            }
        }
        fn progress(&mut self, _bytes: u64) {}
    }
    let options = args.decode.options();
    let mut diagnostics = Diagnostics::new(args.decode.error_limit);
    let mut events = 0;
    for path in &args.files {
        let input = Input::from_arg(path);
        let mut handler = Handler {
            engine,
            printer,
            diagnostics: &mut diagnostics,
            input: input.name(),
            cluster: &args.cluster,
            events: 0,
            findings: Vec::new(),
            failed: None,
        };
        let result = decode_input(&input, &options, &mut handler);
        events += handler.events;
        if let Some(e) = handler.failed {
            return Err(e);
        }
        if let Err(e) = result {
            diagnostics.input_failed(&e);
        }
    }
    Ok((events, diagnostics.finish()))
}

/// Reads the store oldest first, only events some rule may look at (a superset on cheap
/// columns, [`Engine::search_filter`], so the store skips what no rule looks at), and
/// evaluates the rules on them in order. First-seen rules learn from the start of the range on.
fn hunt_store(
    args: &RunArgs,
    set: &RuleSet,
    engine: &mut Engine,
    printer: &mut FindingPrinter,
) -> Result<(u64, Outcome)> {
    if set.enabled().next().is_none() {
        return Ok((0, Outcome::Clean));
    }
    let store = open_engine(&args.data.data)?;
    let (from_micros, to_micros) = args.time.range()?;
    if let Some(from) = from_micros {
        engine.history_starts_at(from);
    }
    let filter = engine.search_filter();
    let mut findings = Vec::new();
    let events = scan_store(
        &store,
        filter,
        from_micros,
        to_micros,
        |event, cluster, time| {
            engine.evaluate(event, cluster, time, &mut findings);
            printer.print(&mut findings).map_err(std::io::Error::other)
        },
    )?;
    let _ = std::io::stderr().flush();
    Ok((events, Outcome::Clean))
}

#[derive(Debug, Args)]
pub struct ImportSigmaArgs {
    /// Sigma rule files, or directories (every `.yml`/`.yaml` below them); correlations find
    /// the rules they count among all of them.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write each rule to DIR/<id>.yaml instead of printing them all, `---` between them.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Read a Sigma field as a kubetrail field (repeatable), for a rule naming a field audit
    /// events lack when you know what it means: `--field hostPath=pod.hostPath`.
    #[arg(long = "field", value_name = "SIGMA=KUBETRAIL")]
    pub fields: Vec<String>,
}

/// Converts Sigma rules; refused rules are reported, with every construct that could not be
/// converted, and make the exit status 3.
fn import_sigma(args: &ImportSigmaArgs) -> Result<Outcome> {
    let mut options = kubetrail_rules::SigmaOptions::default();
    for mapping in &args.fields {
        if let Err(e) = options.map_field(mapping) {
            bail!("--field {e}");
        }
    }
    let files = read_rule_files(&args.files)?;
    let import = kubetrail_rules::import_sigma(&files, &options);
    for refused in &import.refused {
        for line in refused.to_string().lines() {
            eprintln!("kubetrail: refused: {line}");
        }
    }
    let mut out = StdoutSink::new();
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for rule in &import.rules {
                let path = dir.join(format!("{}.yaml", rule.id));
                std::fs::write(&path, &rule.yaml)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        None => {
            for (i, rule) in import.rules.iter().enumerate() {
                if i > 0 {
                    out.write(b"---\n")?;
                }
                out.write(rule.yaml.as_bytes())?;
            }
        }
    }
    out.flush()?;
    eprintln!(
        "{} rules converted, {} refused{}",
        import.rules.len(),
        import.refused.len(),
        match import.correlated_only.len() {
            0 => String::new(),
            n => format!(", {n} only counted by correlations"),
        }
    );
    Ok(if import.refused.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Skipped
    })
}
