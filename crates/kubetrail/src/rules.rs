//! `kubetrail rules`: list the detection rules, run their inline tests, and hunt with them in
//! audit log files or over the store's history (`docs/detections.md`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use arrow::array::{Array, StringArray, StringViewArray, TimestampMicrosecondArray};
use clap::{Args, Subcommand, ValueEnum};
use kubetrail_event::{DecodeOptions, Decoded, Decoder};
use kubetrail_query::{
    CompileOptions, DataFusionDialect, Expr, Query, QueryLimits, SearchCursor, compile_scan, parse,
};
use kubetrail_rules::{Engine, Finding, RuleSet, Severity, SourceFile, run_inline_tests};
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
        let mut files = Vec::new();
        for dir in self.dirs.iter().chain(extra) {
            read_rule_files(dir, &mut files)?;
        }
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

/// Reads `path` (a file, or every `.yaml`/`.yml` file below a directory, in name order).
fn read_rule_files(path: &Path, files: &mut Vec<SourceFile>) -> Result<()> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if metadata.is_file() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        files.push(SourceFile {
            name: path.display().to_string(),
            text,
        });
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() || entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            read_rule_files(&entry, files)?;
        }
    }
    Ok(())
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

/// Events per page read from the store.
const PAGE: u64 = 20_000;

/// Reads the store oldest first, only the events some rule's condition matches (one search of
/// the conditions' alternatives, so the store skips what no rule looks at), and evaluates the
/// rules on them in order.
fn hunt_store(
    args: &RunArgs,
    set: &RuleSet,
    engine: &mut Engine,
    printer: &mut FindingPrinter,
) -> Result<(u64, Outcome)> {
    let store = open_engine(&args.data.data)?;
    let (from_micros, to_micros) = args.time.range()?;
    let mut alternatives = Vec::new();
    let mut everything = false;
    for rule in set.enabled() {
        match parse(&rule.condition)?.filter {
            Some(filter) => alternatives.push(filter),
            None => everything = true,
        }
    }
    if alternatives.is_empty() && !everything {
        return Ok((0, Outcome::Clean));
    }
    let query = Query {
        filter: (!everything).then_some(Expr::Or(alternatives)),
        pipes: Vec::new(),
    };
    let options = CompileOptions {
        from_micros,
        to_micros,
        cluster: None,
        default_limit: PAGE,
        limits: QueryLimits::default(),
        now_micros: None,
    };
    let mut cursor: Option<SearchCursor> = None;
    let mut events = 0;
    let mut findings = Vec::new();
    loop {
        let compiled = compile_scan(&query, &DataFusionDialect, &options, cursor.as_ref(), PAGE);
        let batches = store.query(&compiled)?;
        let mut rows = 0;
        for batch in &batches {
            let column = |i: usize| batch.column(i).as_any();
            let (Some(times), Some(ids), Some(stages), Some(clusters), Some(originals)) = (
                column(0).downcast_ref::<TimestampMicrosecondArray>(),
                column(1).downcast_ref::<StringArray>(),
                column(2).downcast_ref::<StringArray>(),
                column(3).downcast_ref::<StringArray>(),
                column(4).downcast_ref::<StringViewArray>(),
            ) else {
                bail!("the store answered unexpected columns");
            };
            for row in 0..batch.num_rows() {
                rows += 1;
                let time = times.value(row);
                let cluster = clusters.value(row);
                let mut decoder = Decoder::new(DecodeOptions::default());
                let mut out = |decoded: Decoded<'_>| {
                    if let Decoded::Event(event, _) = decoded {
                        engine.evaluate(&event, cluster, time, &mut findings);
                    }
                };
                decoder.feed(originals.value(row).as_bytes(), &mut out);
                decoder.finish(&mut out);
                printer.print(&mut findings)?;
                cursor = Some(SearchCursor {
                    time_micros: time,
                    audit_id: ids.value(row).to_owned(),
                    stage: stages.value(row).to_owned(),
                });
            }
        }
        events += rows;
        if rows < PAGE {
            break;
        }
    }
    let _ = std::io::stderr().flush();
    Ok((events, Outcome::Clean))
}
