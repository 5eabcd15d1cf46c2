//! `kubetrail policy`: check, evaluate, lint, simulate and recommend audit policies.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use kubetrail_event::{DecodeOptions, Decoded, Decoder};
use kubetrail_policy::{
    Evaluation, Evaluator, Finding, LintSeverity, Loaded, Profile, RequestAttributes, Severity,
    Simulation, Simulator, User, Volume, lint, load,
};
use serde_json::{Value, json};

use crate::cat::DecodeArgs;
use crate::input::{DecodeHandler, Input, decode_input};
use crate::output::{Diagnostics, Outcome, StdoutSink};

/// Check, evaluate, lint and simulate audit policies exactly as kube-apiserver evaluates them.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file with kube-apiserver's rules and messages, with line numbers.
    Check(CheckArgs),
    /// Evaluate a policy for request attributes or audit events (JSON lines).
    Eval(EvalArgs),
    /// Point out leaks, dead rules and volume problems, with a fix for each.
    Lint(LintArgs),
    /// Replay recorded audit logs through a policy: what it keeps, drops and costs.
    Simulate(SimulateArgs),
    /// Print a commented, ready-to-use policy.
    Recommend(RecommendArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The policy file (YAML or JSON).
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The policy file.
    #[arg(long)]
    pub policy: PathBuf,
    /// JSON lines of request attributes (`{"user":{"name":…,"groups":[…]},"verb":…,
    /// "namespace":…,"apiGroup":…,"resource":…,"subresource":…,"name":…,
    /// "resourceRequest":true,"path":…}`) or audit events in any input format; `-` is stdin.
    #[arg(long, default_value = "-")]
    pub requests: PathBuf,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// The policy file.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = ReportOutput::Text)]
    pub output: ReportOutput,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The candidate policy.
    #[arg(long)]
    pub policy: PathBuf,
    /// Recorded audit logs (any input format, gzip too); `-` is stdin.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = ReportOutput::Text)]
    pub output: ReportOutput,
    #[command(flatten)]
    pub decode: DecodeArgs,
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// Which policy: `minimal` (metadata, lowest volume), `security` (changes with request
    /// bodies), `debugging` (changes with request and response bodies).
    #[arg(long, value_enum, default_value_t = ProfileArg::Security)]
    pub profile: ProfileArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProfileArg {
    Minimal,
    Security,
    Debugging,
}

/// `--output` of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportOutput {
    /// For people.
    Text,
    /// One JSON document.
    Json,
}

pub fn run(command: &PolicyCommand) -> Result<Outcome> {
    match command {
        PolicyCommand::Check(args) => check(args),
        PolicyCommand::Eval(args) => eval(args),
        PolicyCommand::Lint(args) => run_lint(args),
        PolicyCommand::Simulate(args) => simulate(args),
        PolicyCommand::Recommend(args) => {
            let profile = match args.profile {
                ProfileArg::Minimal => Profile::Minimal,
                ProfileArg::Security => Profile::Security,
                ProfileArg::Debugging => Profile::Debugging,
            };
            let mut sink = StdoutSink::new();
            sink.write(profile.policy_yaml().as_bytes())?;
            sink.flush()?;
            Ok(Outcome::Clean)
        }
    }
}

/// Loads a policy file, printing its problems as `FILE:LINE: severity: message`; fails when
/// kube-apiserver would refuse it.
pub fn load_file(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read policy file {}", path.display()))?;
    let print = |d: &kubetrail_policy::Diagnostic| {
        let severity = match d.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        match d.line {
            Some(line) => eprintln!("{}:{line}: {severity}: {}", path.display(), d.message),
            None => eprintln!("{}: {severity}: {}", path.display(), d.message),
        }
    };
    match load(&text) {
        Ok(loaded) => {
            loaded.warnings.iter().for_each(print);
            Ok(loaded)
        }
        Err(e) => {
            e.diagnostics.iter().for_each(print);
            bail!(
                "{}: kube-apiserver would refuse this policy ({} errors)",
                path.display(),
                e.diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .count()
            )
        }
    }
}

fn check(args: &CheckArgs) -> Result<Outcome> {
    let loaded = load_file(&args.file)?;
    let mut sink = StdoutSink::new();
    sink.write(
        format!(
            "{}: valid audit.k8s.io/v1 policy with {} rules{}\n",
            args.file.display(),
            loaded.policy.rules.len(),
            if loaded.warnings.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} warnings: kube-apiserver would ignore the fields named above)",
                    loaded.warnings.len()
                )
            }
        )
        .as_bytes(),
    )?;
    sink.flush()?;
    Ok(Outcome::Clean)
}

fn evaluation_json(e: &Evaluation) -> Value {
    json!({
        "level": e.level.as_str(),
        "omitStages": e.omit_stages.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "omitManagedFields": e.omit_managed_fields,
        "rule": e.rule,
    })
}

/// Request attributes in the policy vectors' `request` format.
fn attributes_from_json(v: &Value) -> Result<RequestAttributes<'_>> {
    let text = |key: &str| -> Result<std::borrow::Cow<'_, str>> {
        match &v[key] {
            Value::Null => Ok("".into()),
            Value::String(s) => Ok(s.as_str().into()),
            other => bail!("field `{key}` must be a string, not {other}"),
        }
    };
    let user = match &v["user"] {
        Value::Null => None,
        Value::Object(u) => Some(User {
            name: u
                .get("name")
                .and_then(Value::as_str)
                .context("field `user.name` must be a string")?
                .into(),
            groups: match u.get("groups") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(groups)) => groups
                    .iter()
                    .map(|g| {
                        g.as_str()
                            .map(Into::into)
                            .context("`user.groups` must be strings")
                    })
                    .collect::<Result<_>>()?,
                Some(_) => bail!("field `user.groups` must be an array"),
            },
        }),
        _ => bail!("field `user` must be an object or null"),
    };
    Ok(RequestAttributes {
        user,
        verb: text("verb")?,
        namespace: text("namespace")?,
        api_group: text("apiGroup")?,
        api_version: text("apiVersion")?,
        resource: text("resource")?,
        subresource: text("subresource")?,
        name: text("name")?,
        resource_request: v["resourceRequest"]
            .as_bool()
            .context("field `resourceRequest` must be true or false")?,
        path: text("path")?,
    })
}

fn eval(args: &EvalArgs) -> Result<Outcome> {
    let loaded = load_file(&args.policy)?;
    let evaluator = Evaluator::new(&loaded.policy);
    let input = Input::from_arg(&args.requests);
    let reader: Box<dyn Read> = match &input {
        Input::Stdin => Box::new(std::io::stdin().lock()),
        Input::File(path) => Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        ),
    };
    let name = input.name();
    let mut sink = StdoutSink::new();
    let mut diagnostics = Diagnostics::new(100);
    let mut out = Vec::new();
    for (index, line) in std::io::BufReader::new(reader).lines().enumerate() {
        let line_no = index as u64 + 1;
        let line = line.with_context(|| format!("cannot read {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                diagnostics.problem(&name, line_no, &format!("invalid JSON: {e}"));
                continue;
            }
        };
        if value.get("resourceRequest").is_some() {
            match attributes_from_json(&value) {
                Ok(attributes) => {
                    let e = evaluator.evaluate(&attributes);
                    serde_json::to_writer(&mut out, &evaluation_json(&e))?;
                    out.push(b'\n');
                }
                Err(e) => diagnostics.problem(&name, line_no, &format!("{e:#}")),
            }
            continue;
        }
        // Anything else is read as audit events, in whatever envelope.
        let mut decoder = Decoder::new(DecodeOptions::default());
        let mut handle = |d: Decoded<'_>| match d {
            Decoded::Event(event, _) => {
                let e = evaluator.evaluate(&RequestAttributes::from_event(&event));
                let mut v = evaluation_json(&e);
                v["auditID"] = json!(event.audit_id);
                v["stage"] = json!(event.stage.as_str());
                v["recordedLevel"] = json!(event.level.as_str());
                let _ = serde_json::to_writer(&mut out, &v);
                out.push(b'\n');
            }
            Decoded::Skipped(skip) => diagnostics.problem(
                &name,
                line_no,
                &format!("{}: {}", skip.reason, skip.message),
            ),
            Decoded::Ignored { .. } => {}
        };
        decoder.feed(line.as_bytes(), &mut handle);
        decoder.finish(&mut handle);
        if out.len() > 1 << 16 {
            sink.write(&out)?;
            out.clear();
        }
    }
    sink.write(&out)?;
    sink.flush()?;
    Ok(diagnostics.finish())
}

fn run_lint(args: &LintArgs) -> Result<Outcome> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read policy file {}", args.file.display()))?;
    let loaded = match load(&text) {
        Ok(loaded) => loaded,
        Err(e) => {
            for d in &e.diagnostics {
                let line = d.line.map_or(String::new(), |l| format!("{l}:"));
                let severity = match d.severity {
                    Severity::Warning => "warning",
                    Severity::Error => "error",
                };
                eprintln!("{}:{line} {severity}: {}", args.file.display(), d.message);
                if let Some(fix) = fix_for_load_error(&d.message) {
                    eprintln!("  fix: {fix}");
                }
            }
            bail!(
                "{}: kube-apiserver would refuse this policy; fix the errors above first",
                args.file.display()
            );
        }
    };
    let findings = lint(&loaded);
    let mut sink = StdoutSink::new();
    match args.output {
        ReportOutput::Json => {
            let items: Vec<Value> = findings.iter().map(finding_json).collect();
            sink.write(&serde_json::to_vec_pretty(&json!({ "findings": items }))?)?;
            sink.write(b"\n")?;
        }
        ReportOutput::Text => {
            for f in &findings {
                let line = f.line.map_or(String::new(), |l| format!("{l}:"));
                sink.write(format!("{}:{line} {f}\n", args.file.display()).as_bytes())?;
            }
            let errors = findings
                .iter()
                .filter(|f| f.severity == LintSeverity::Error)
                .count();
            sink.write(
                format!(
                    "{}: {} findings ({errors} errors)\n",
                    args.file.display(),
                    findings.len()
                )
                .as_bytes(),
            )?;
        }
    }
    sink.flush()?;
    if findings.iter().any(|f| f.severity == LintSeverity::Error) {
        Ok(Outcome::Findings)
    } else {
        Ok(Outcome::Clean)
    }
}

/// A fix for the load errors people make most.
fn fix_for_load_error(message: &str) -> Option<String> {
    if let Some(rest) = message.split("resources.group: Invalid value: \"").nth(1) {
        let group = rest.split('"').next()?;
        if let Some((name, _)) = group.split_once('/') {
            return Some(format!(
                "write the API group without its version: group: \"{name}\""
            ));
        }
    }
    if message.contains("unknown group version field") {
        return Some("use `apiVersion: audit.k8s.io/v1` (v1beta1 and v1alpha1 were removed in Kubernetes 1.24)".to_owned());
    }
    if message.contains("0 rules") {
        return Some("add at least one rule, e.g. `rules: [{level: Metadata}]`".to_owned());
    }
    None
}

fn finding_json(f: &Finding) -> Value {
    json!({
        "code": f.code,
        "severity": f.severity.as_str(),
        "rule": f.rule,
        "line": f.line,
        "message": f.message,
        "fix": f.fix,
    })
}

/// Feeds decoded events to the simulator.
struct SimulateRun {
    simulator: Simulator,
    diagnostics: Diagnostics,
    input_name: String,
}

impl DecodeHandler for SimulateRun {
    fn decoded(&mut self, decoded: Decoded<'_>) {
        match decoded {
            Decoded::Event(event, _) => self.simulator.observe(&event),
            Decoded::Skipped(skip) => self.diagnostics.skipped(&self.input_name, &skip),
            Decoded::Ignored { .. } => {}
        }
    }

    fn progress(&mut self, _bytes: u64) {}
}

fn simulate(args: &SimulateArgs) -> Result<Outcome> {
    let loaded = load_file(&args.policy)?;
    let mut run = SimulateRun {
        simulator: Simulator::new(&loaded.policy),
        diagnostics: Diagnostics::new(args.decode.error_limit),
        input_name: String::new(),
    };
    let options = args.decode.options();
    for log in &args.logs {
        let input = Input::from_arg(log);
        run.input_name = input.name();
        if let Err(e) = decode_input(&input, &options, &mut run) {
            run.diagnostics.input_failed(&e);
        }
    }
    let result = run.simulator.finish();
    if result.recorded.events == 0 {
        bail!("no audit events in the logs given: nothing to simulate");
    }
    let mut sink = StdoutSink::new();
    match args.output {
        ReportOutput::Json => {
            sink.write(&serde_json::to_vec_pretty(&simulation_json(
                &result, &loaded,
            ))?)?;
            sink.write(b"\n")?;
        }
        ReportOutput::Text => sink.write(simulation_text(&result, &loaded).as_bytes())?,
    }
    sink.flush()?;
    Ok(run.diagnostics.finish())
}

fn volume_json(v: &Volume) -> Value {
    json!({ "events": v.events, "bytes": v.bytes })
}

fn simulation_json(s: &Simulation, loaded: &Loaded) -> Value {
    json!({
        "recorded": volume_json(&s.recorded),
        "kept": volume_json(&s.kept),
        "droppedByLevel": volume_json(&s.dropped_by_level),
        "droppedByStage": volume_json(&s.dropped_by_stage),
        "downLevelled": volume_json(&s.down_levelled),
        "bodyBytesRemoved": s.body_bytes_removed,
        "upLevelled": s.up_levelled,
        "addedRequestReceivedEstimate": volume_json(&s.added_request_received),
        "unmatched": volume_json(&s.unmatched),
        "rules": s.rules.iter().zip(&loaded.policy.rules).enumerate().map(|(i, (v, rule))| json!({
            "rule": i,
            "line": rule.line,
            "level": rule.level.as_str(),
            "matched": volume_json(&v.matched),
            "kept": volume_json(&v.kept),
        })).collect::<Vec<_>>(),
        "lost": s.lost.iter().take(20).map(|(what, v)| json!({"request": what, "events": v.events, "bytes": v.bytes})).collect::<Vec<_>>(),
    })
}

fn simulation_text(s: &Simulation, loaded: &Loaded) -> String {
    use std::fmt::Write;
    let pct = |part: u64, whole: u64| {
        if whole == 0 {
            0.0
        } else {
            part as f64 * 100.0 / whole as f64
        }
    };
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let mut t = String::new();
    fn volume(t: &mut String, label: &str, v: &Volume, note: String) {
        let mb = v.bytes as f64 / 1e6;
        let _ = writeln!(t, "{label:<15} {:>10} events {mb:>10.2} MB{note}", v.events);
    }
    volume(&mut t, "recorded", &s.recorded, String::new());
    volume(
        &mut t,
        "kept",
        &s.kept,
        format!(
            "   ({:.1}% of events, {:.1}% of bytes)",
            pct(s.kept.events, s.recorded.events),
            pct(s.kept.bytes, s.recorded.bytes)
        ),
    );
    volume(&mut t, "dropped (None)", &s.dropped_by_level, String::new());
    volume(
        &mut t,
        "dropped (stage)",
        &s.dropped_by_stage,
        String::new(),
    );
    let _ = writeln!(
        t,
        "down-levelled   {:>10} events             bodies removed: {:.2} MB",
        s.down_levelled.events,
        mb(s.body_bytes_removed)
    );
    if s.up_levelled > 0 {
        let _ = writeln!(
            t,
            "up-levelled     {:>10} events             (logged above the recorded level: their bodies are not in the recording, so kept bytes are a lower bound)",
            s.up_levelled
        );
    }
    if s.added_request_received.events > 0 {
        volume(
            &mut t,
            "added",
            &s.added_request_received,
            "   (estimate: RequestReceived events the recording omitted and this policy keeps)"
                .to_owned(),
        );
    }
    let _ = writeln!(
        t,
        "\nper rule:\n  rule  line  level              matched     kept events    kept MB"
    );
    for (i, (v, rule)) in s.rules.iter().zip(&loaded.policy.rules).enumerate() {
        let _ = writeln!(
            t,
            "  {i:>4}  {:>4}  {:<16} {:>9} {:>14} {:>10.2}",
            rule.line,
            rule.level.as_str(),
            v.matched.events,
            v.kept.events,
            mb(v.kept.bytes)
        );
    }
    let _ = writeln!(
        t,
        "  none        (no rule: None)  {:>9}",
        s.unmatched.events
    );
    if !s.lost.is_empty() {
        let _ = writeln!(
            t,
            "\nwhat you would lose (dropped or down-levelled), most first:"
        );
        for (what, v) in s.lost.iter().take(15) {
            let _ = writeln!(t, "  {:>9} events  {what}", v.events);
        }
    }
    t
}
