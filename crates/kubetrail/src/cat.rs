//! `kubetrail cat`: decode inputs and print normalized events, a table, or counts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use kubetrail_event::{
    AuditEvent, DecodeOptions, Decoded, InputFormat, JsonOptions, RedactionConfig, Redactor,
    write_event_json,
};
use kubetrail_policy::{Applied, Evaluator, apply_policy};
use kubetrail_query::Matcher;
use serde::Serialize;

use crate::input::{DecodeHandler, Input, decode_input, progress_bar};
use crate::output::{Diagnostics, Outcome, StdoutSink};

/// Print the events of audit logs, normalized to audit.k8s.io/v1, one per line.
#[derive(Debug, Args)]
pub struct CatArgs {
    /// Files to read (plain or gzip); `-` or nothing reads standard input.
    pub files: Vec<PathBuf>,
    /// Output: `json` (one event a line) or `table` (for people).
    #[arg(long, short, value_enum, default_value_t = CatOutput::Json)]
    pub output: CatOutput,
    /// Print one JSON object with counts instead of the events.
    #[arg(long)]
    pub stats: bool,
    /// Add kubetrail's derived fields to each JSON event under `_kubetrail`.
    #[arg(long)]
    pub derived: bool,
    #[command(flatten)]
    pub decode: DecodeArgs,
    #[command(flatten)]
    pub redact: RedactArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Keeping selectively: the filters every path that takes in events offers.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Keep events as this audit policy would have logged them: drop what it does not log and
    /// omitted stages, strip bodies above its levels, omit managedFields.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Drop events matching this search (repeatable), e.g.
    /// `--exclude 'user:system:kube-scheduler verb:update resource:leases'`.
    #[arg(long, value_name = "QUERY")]
    pub exclude: Vec<String>,
}

impl FilterArgs {
    /// The compiled `--exclude` searches.
    pub fn exclusions(&self) -> Result<Vec<Matcher>> {
        self.exclude
            .iter()
            .map(|q| {
                Matcher::parse(q)
                    .map_err(|e| anyhow::anyhow!("--exclude has a mistake:\n{}", e.render(q)))
            })
            .collect()
    }

    /// The `--policy` evaluator.
    pub fn policy(&self) -> Result<Option<Evaluator>> {
        self.policy
            .as_deref()
            .map(|path| Ok(Evaluator::new(&crate::policy::load_file(path)?.policy)))
            .transpose()
    }
}

/// Redaction of credentials, on by default wherever events leave kubetrail.
#[derive(Debug, Args)]
pub struct RedactArgs {
    /// Print events as they are, credentials included (redaction is on by default: Secret
    /// values, TokenReview/TokenRequest tokens, bearer tokens, JWTs, private keys, …).
    #[arg(long)]
    pub no_redact: bool,
    /// Also redact the value at this path (repeatable): `requestObject.spec.password`,
    /// `responseObject.items.*.data`, `annotations.example.com/token`; `*` is any key.
    #[arg(long, value_name = "PATH")]
    pub redact_path: Vec<String>,
    /// Also redact matches of this regular expression in every string (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub redact_pattern: Vec<String>,
}

impl RedactArgs {
    /// The redactor to apply, or None with `--no-redact`.
    pub fn redactor(&self) -> Result<Option<Redactor>> {
        if self.no_redact {
            return Ok(None);
        }
        let config = RedactionConfig {
            paths: self.redact_path.clone(),
            patterns: self.redact_pattern.clone(),
        };
        Ok(Some(Redactor::new(&config)?))
    }
}

/// How to read inputs; shared by every command that reads audit logs.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Force the input format instead of detecting it.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Skip events larger than this many bytes.
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    pub max_event_size: usize,
    /// Skip events whose JSON nests deeper than this many levels (the API server accepts
    /// request bodies 10,000 deep, which an event holds one level down).
    #[arg(long, default_value_t = kubetrail_event::DEFAULT_MAX_DEPTH, value_name = "LEVELS")]
    pub max_depth: usize,
    /// Print at most this many bad-input messages (0: all); the rest are only counted.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub error_limit: u64,
}

impl DecodeArgs {
    pub fn options(&self) -> DecodeOptions {
        DecodeOptions {
            format: self.format.map(FormatArg::into_format),
            max_event_bytes: self.max_event_size,
            max_depth: self.max_depth.max(1),
            ..DecodeOptions::default()
        }
    }
}

/// `--format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// One event per line (log backend).
    Jsonl,
    /// Pretty-printed or concatenated JSON objects, or a JSON array.
    Json,
    /// EventList documents (webhook bodies).
    Eventlist,
    /// CRI container-runtime log lines.
    Cri,
    /// Docker json-file log lines.
    Docker,
    /// Azure/AKS diagnostic records.
    Azure,
}

impl FormatArg {
    fn into_format(self) -> InputFormat {
        match self {
            FormatArg::Jsonl => InputFormat::JsonLines,
            FormatArg::Json => InputFormat::Json,
            FormatArg::Eventlist => InputFormat::EventList,
            FormatArg::Cri => InputFormat::Cri,
            FormatArg::Docker => InputFormat::Docker,
            FormatArg::Azure => InputFormat::Azure,
        }
    }
}

/// `--output` values of `cat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CatOutput {
    /// One normalized audit.k8s.io/v1 event per line.
    Json,
    /// Aligned columns for reading in a terminal.
    Table,
}

/// The counts `--stats` prints.
#[derive(Debug, Default, Serialize)]
struct Stats {
    events: u64,
    bytes: u64,
    /// Events in which credentials were redacted.
    redacted: u64,
    /// Events `--policy` dropped, by reason.
    #[serde(rename = "droppedByPolicy", skip_serializing_if = "BTreeMap::is_empty")]
    dropped_by_policy: BTreeMap<&'static str, u64>,
    /// Events `--exclude` dropped.
    #[serde(skip_serializing_if = "is_zero")]
    excluded: u64,
    skipped: BTreeMap<&'static str, u64>,
    ignored: BTreeMap<&'static str, u64>,
    #[serde(rename = "apiVersions")]
    api_versions: BTreeMap<String, u64>,
    formats: BTreeMap<&'static str, u64>,
}

impl Stats {
    fn count_event(&mut self, event: &AuditEvent<'_>, format: InputFormat) {
        self.events += 1;
        let version = event.source_api_version.as_deref().unwrap_or("(none)");
        match self.api_versions.get_mut(version) {
            Some(n) => *n += 1,
            None => {
                self.api_versions.insert(version.to_owned(), 1);
            }
        }
        *self.formats.entry(format.as_str()).or_default() += 1;
    }
}

pub fn run(args: &CatArgs) -> Result<Outcome> {
    let inputs: Vec<Input> = if args.files.is_empty() {
        vec![Input::Stdin]
    } else {
        args.files.iter().map(|f| Input::from_arg(f)).collect()
    };
    let options = args.decode.options();
    let mut run = CatRun {
        args,
        input_name: String::new(),
        stats: Stats::default(),
        diagnostics: Diagnostics::new(args.decode.error_limit),
        sink: StdoutSink::new(),
        buf: Vec::with_capacity(OUTPUT_CHUNK * 2),
        write_error: None,
        progress: progress_bar(&inputs),
        redactor: args.redact.redactor()?,
        exclude: args.filter.exclusions()?,
        policy: args.filter.policy()?,
    };
    if args.output == CatOutput::Table && !args.stats {
        run.sink.write(table::HEADER.as_bytes())?;
    }
    for input in &inputs {
        run.input_name = input.name();
        let result = decode_input(input, &options, &mut run);
        if let Some(e) = run.write_error.take() {
            return Err(e);
        }
        run.sink.write(&run.buf)?;
        run.buf.clear();
        if let Err(e) = result {
            run.diagnostics.input_failed(&e);
        }
    }
    if let Some(bar) = &run.progress {
        bar.finish_and_clear();
    }
    if args.stats {
        let mut line = serde_json::to_vec(&run.stats)?;
        line.push(b'\n');
        run.sink.write(&line)?;
    }
    run.sink.flush()?;
    Ok(run.diagnostics.finish())
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Output is handed to stdout in pieces of about this size.
const OUTPUT_CHUNK: usize = 1 << 16;

/// The state of one `cat` invocation while inputs are decoded.
struct CatRun<'a> {
    args: &'a CatArgs,
    input_name: String,
    stats: Stats,
    diagnostics: Diagnostics,
    sink: StdoutSink,
    buf: Vec<u8>,
    write_error: Option<anyhow::Error>,
    progress: Option<ProgressBar>,
    redactor: Option<Redactor>,
    policy: Option<Evaluator>,
    exclude: Vec<Matcher>,
}

impl DecodeHandler for CatRun<'_> {
    fn decoded(&mut self, decoded: Decoded<'_>) {
        match decoded {
            Decoded::Event(mut event, origin) => {
                self.stats.count_event(&event, origin.format);
                if self.exclude.iter().any(|m| m.matches(&event, "")) {
                    self.stats.excluded += 1;
                    return;
                }
                if let Some(policy) = &self.policy {
                    let reason = match apply_policy(policy, &mut event) {
                        Applied::Kept => None,
                        Applied::DroppedByLevel => Some("level-none"),
                        Applied::DroppedByStage => Some("omitted-stage"),
                    };
                    if let Some(reason) = reason {
                        *self.stats.dropped_by_policy.entry(reason).or_default() += 1;
                        return;
                    }
                }
                if let Some(redactor) = &self.redactor
                    && redactor.redact(&mut event) > 0
                {
                    self.stats.redacted += 1;
                }
                if self.args.stats || self.write_error.is_some() {
                    return;
                }
                match self.args.output {
                    CatOutput::Json => {
                        let options = JsonOptions {
                            derived: self.args.derived,
                        };
                        write_event_json(&event, options, &mut self.buf);
                    }
                    CatOutput::Table => table::write_row(&event, &mut self.buf),
                }
                if self.buf.len() >= OUTPUT_CHUNK {
                    if let Err(e) = self.sink.write(&self.buf) {
                        self.write_error = Some(e);
                    }
                    self.buf.clear();
                }
            }
            Decoded::Skipped(skip) => {
                *self.stats.skipped.entry(skip.reason.as_str()).or_default() += 1;
                self.diagnostics.skipped(&self.input_name, &skip);
            }
            Decoded::Ignored { reason, .. } => {
                *self.stats.ignored.entry(reason.as_str()).or_default() += 1;
            }
        }
    }

    fn progress(&mut self, bytes: u64) {
        self.stats.bytes += bytes;
        if let Some(bar) = &self.progress {
            bar.inc(bytes);
            bar.set_message(format!("{} events", self.stats.events));
        }
    }
}

/// The `--output table` layout.
mod table {
    use super::{AuditEvent, Write};

    pub const HEADER: &str = "TIME                        STAGE             USER                                      VERB              RESOURCE                                          CODE  LATENCY   CLIENT\n";

    pub fn write_row(event: &AuditEvent<'_>, out: &mut Vec<u8>) {
        let time = event
            .time()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "-".to_owned());
        let resource = match &event.object_ref {
            Some(r) => {
                let mut s = event.derived.resource_key.clone().unwrap_or_default();
                if !r.namespace.is_empty() {
                    s.push(' ');
                    s.push_str(&r.namespace);
                }
                if !r.name.is_empty() {
                    s.push('/');
                    s.push_str(&r.name);
                }
                s
            }
            None => event.derived.path.to_string(),
        };
        let code = event.code().map_or("-".to_owned(), |c| c.to_string());
        let latency = event
            .derived
            .latency_micros
            .map_or("-".to_owned(), format_latency);
        let _ = writeln!(
            out,
            "{time:<27} {:<17} {:<41} {:<17} {:<49} {code:<5} {latency:<9} {}",
            event.stage.as_str(),
            clip(&event.derived.effective_user, 41),
            clip(&event.verb, 17),
            clip(&resource, 49),
            event.derived.client,
        );
    }

    fn format_latency(micros: i64) -> String {
        if micros >= 1_000_000 {
            format!("{:.2}s", micros as f64 / 1e6)
        } else {
            format!("{:.1}ms", micros as f64 / 1e3)
        }
    }

    fn clip(s: &str, width: usize) -> String {
        if s.chars().count() <= width {
            s.to_owned()
        } else {
            let mut clipped: String = s.chars().take(width - 1).collect();
            clipped.push('…');
            clipped
        }
    }
}
