//! `kubetrail import`, `query`, `sql` and `store stats`: the embedded store from the command line.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::Array;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kubetrail_event::{DecodeOptions, Decoded, Timestamp};
use kubetrail_pipeline::ingest::now_micros;
use kubetrail_pipeline::{Transforms, Verdict};
use kubetrail_query::{CompileOptions, DataFusionDialect, QueryLimits, compile, parse_with};
use kubetrail_store::quarantine::{Quarantine, Quarantined};
use kubetrail_store::{
    Appended, CompactionOptions, EventWriter, QueryEngine, Retention, StoreError, WriterOptions,
    output,
};
use serde::Serialize;

use crate::cat::{DecodeArgs, FilterArgs, RedactArgs};
use crate::input::{DecodeHandler, Input, decode_input};
use crate::output::{Diagnostics, Outcome, StdoutSink};

/// Where the store lives.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// The data directory.
    #[arg(long, env = "KUBETRAIL_DATA", default_value = "kubetrail-data")]
    pub data: PathBuf,
}

/// Import audit logs into the store.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Files to import (every input format, gzip too); `-` or nothing reads standard input.
    pub files: Vec<PathBuf>,
    /// The cluster the events come from (stored in the `cluster` column).
    #[arg(long, default_value = "")]
    pub cluster: String,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub decode: DecodeArgs,
    #[command(flatten)]
    pub redact: RedactArgs,
}

/// Output formats of query results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResultOutput {
    /// An aligned table.
    Table,
    /// One JSON object per row.
    Json,
    /// CSV with a header.
    Csv,
}

/// A time range, common to every command that reads the store.
#[derive(Debug, Args)]
pub struct TimeRangeArgs {
    /// Only events of the last DURATION (`15m`, `1h`, `7d`).
    #[arg(long, value_name = "DURATION", conflicts_with = "from")]
    pub since: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Only events before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
}

impl TimeRangeArgs {
    pub fn range(&self) -> Result<(Option<i64>, Option<i64>)> {
        let time = |flag: &str, text: &str| {
            Timestamp::parse(text)
                .map(|t| t.as_micros())
                .with_context(|| {
                    format!("--{flag} {text:?} is not an RFC 3339 time (2026-03-02T08:00:00Z)")
                })
        };
        let from = match (&self.since, &self.from) {
            (Some(since), _) => {
                let span = kubetrail_server::units::parse_duration_flag(since)
                    .with_context(|| format!("--since {since:?}"))?;
                Some(now_micros() - span)
            }
            (None, Some(from)) => Some(time("from", from)?),
            (None, None) => None,
        };
        let to = self.to.as_deref().map(|t| time("to", t)).transpose()?;
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            bail!("the time range is empty: --from must be before --to");
        }
        Ok((from, to))
    }
}

/// Store, range and cluster: what the investigations read.
#[derive(Debug, Args)]
pub struct ScopeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub time: TimeRangeArgs,
    /// Only events of this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
}

impl ScopeArgs {
    /// Report options with `limit` rows per ranked table.
    pub fn options(&self, limit: usize) -> Result<kubetrail_report::ReportOptions> {
        let (from_micros, to_micros) = self.time.range()?;
        Ok(kubetrail_report::ReportOptions {
            from_micros,
            to_micros,
            cluster: self.cluster.clone(),
            limit,
        })
    }
}

/// Search the store with the query language.
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The query, e.g. `code:403 | stats count() by user` (docs/query-language.md).
    #[arg(default_value = "")]
    pub query: String,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = ResultOutput::Table)]
    pub output: ResultOutput,
    /// Rows of event results without `| limit`.
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    /// Print the SQL the query compiles to, with its parameters, instead of running it.
    #[arg(long)]
    pub explain: bool,
    #[command(flatten)]
    pub time: TimeRangeArgs,
}

/// Run SQL against the `events` table.
#[derive(Debug, Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The statement, e.g. `SELECT verb, count(*) FROM events GROUP BY verb`.
    pub sql: String,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = ResultOutput::Table)]
    pub output: ResultOutput,
}

/// Manage the store.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Events, bytes on disk, partitions and time range of the store.
    Stats(DataArgs),
    /// Merge small segments into larger ones (a running `serve` does this by itself).
    Compact(DataArgs),
    /// Delete data past the retention limits (a running `serve` does this by itself).
    Prune(PruneArgs),
}

/// Retention limits.
#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Delete days that ended longer ago than this (`30d`, `12h`).
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Delete the oldest data until the table takes at most this much (`10GiB`, `500MB`).
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
}

impl PruneArgs {
    pub fn retention(&self) -> Result<Retention> {
        if self.max_age.is_none() && self.max_size.is_none() {
            bail!("say what to keep: --max-age DURATION and/or --max-size SIZE");
        }
        Ok(Retention {
            max_age_micros: self
                .max_age
                .as_deref()
                .map(kubetrail_server::units::parse_duration_flag)
                .transpose()?,
            max_bytes: self
                .max_size
                .as_deref()
                .map(kubetrail_server::units::parse_size)
                .transpose()?,
        })
    }
}

/// Counts of an import.
#[derive(Debug, Default, Serialize)]
struct ImportSummary {
    imported: u64,
    duplicates: u64,
    excluded: u64,
    #[serde(rename = "droppedByPolicy")]
    dropped_by_policy: u64,
    redacted: u64,
    skipped: BTreeMap<&'static str, u64>,
    quarantined: u64,
    bytes: u64,
}

struct ImportRun<'a> {
    writer: EventWriter,
    cluster: &'a str,
    transforms: Transforms,
    summary: ImportSummary,
    diagnostics: Diagnostics,
    input_name: String,
    /// Whether the input's events go through the WAL: only when the input cannot be read again
    /// (stdin, a pipe). A file's events are stored when their segments are committed, and an
    /// interrupted import of files is finished by running it again.
    logged: bool,
    error: Option<StoreError>,
    progress: Option<ProgressBar>,
    started: Instant,
    ingest_micros: i64,
    /// Skipped input is kept in the store's quarantine (`kubetrail quarantine list`).
    quarantine: Quarantine,
    bad: Vec<Quarantined>,
}

impl ImportRun<'_> {
    /// Writes the skipped input gathered so far to the quarantine.
    fn quarantine_bad_input(&mut self) -> Result<()> {
        let added = self
            .quarantine
            .add(&self.bad)
            .context("cannot write bad input to the quarantine")?;
        self.bad.clear();
        self.summary.quarantined += added.kept;
        if added.dropped > 0 {
            eprintln!(
                "kubetrail: the quarantine is at its size limit: {} bad inputs were not kept",
                added.dropped
            );
        }
        Ok(())
    }
}

/// Bad inputs gathered before they are written to the quarantine (one fsync for them all).
const QUARANTINE_BATCH: usize = 1000;

/// The quarantine's size limit for `import` (as `serve`'s default, `quarantine.maxSize`).
const IMPORT_QUARANTINE_BYTES: u64 = 256 << 20;

impl DecodeHandler for ImportRun<'_> {
    fn decoded(&mut self, decoded: Decoded<'_>) {
        match decoded {
            Decoded::Event(mut event, _) => {
                if self.error.is_some() {
                    return;
                }
                match self.transforms.apply(&mut event, self.cluster) {
                    Verdict::Excluded => {
                        self.summary.excluded += 1;
                        return;
                    }
                    Verdict::DroppedByPolicy => {
                        self.summary.dropped_by_policy += 1;
                        return;
                    }
                    Verdict::Keep { redacted } => {
                        self.summary.redacted += u64::from(redacted);
                    }
                }
                let appended = if self.logged {
                    self.writer.append(&event, self.cluster, self.ingest_micros)
                } else {
                    self.writer
                        .append_unlogged(&event, self.cluster, self.ingest_micros)
                };
                match appended {
                    Ok(Appended::Accepted) => self.summary.imported += 1,
                    Ok(Appended::Duplicate) => self.summary.duplicates += 1,
                    Err(e) => self.error = Some(e),
                }
            }
            Decoded::Skipped(mut skip) => {
                *self
                    .summary
                    .skipped
                    .entry(skip.reason.as_str())
                    .or_default() += 1;
                self.diagnostics.skipped(&self.input_name, &skip);
                let input = skip.input.take();
                self.bad.push(Quarantined {
                    source: "import",
                    cluster: self.cluster.to_owned(),
                    location: self.input_name.clone(),
                    line: Some(skip.line),
                    offset: skip.offset,
                    item: skip.item,
                    reason: skip.reason.as_str().to_owned(),
                    message: skip.message,
                    size: input.as_ref().map_or(0, |i| i.len() as u64),
                    input,
                });
                if self.bad.len() >= QUARANTINE_BATCH
                    && let Err(e) = self.quarantine_bad_input()
                {
                    self.diagnostics.input_failed(&e);
                }
            }
            Decoded::Ignored { .. } => {}
        }
    }

    fn progress(&mut self, bytes: u64) {
        self.summary.bytes += bytes;
        if let Some(bar) = &self.progress {
            bar.inc(bytes);
            let rate =
                self.summary.imported as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{} events, {rate:.0} events/s",
                self.summary.imported
            ));
        }
    }
}

pub fn import(args: &ImportArgs) -> Result<Outcome> {
    let inputs: Vec<Input> = if args.files.is_empty() {
        vec![Input::Stdin]
    } else {
        args.files.iter().map(|f| Input::from_arg(f)).collect()
    };
    let writer = open_writer(&args.data.data)?;
    report_recovery(&writer);
    let progress = std::io::stderr().is_terminal().then(|| {
        let total: u64 = inputs.iter().filter_map(Input::size).sum();
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} [{elapsed_precise}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let mut run = ImportRun {
        writer,
        cluster: &args.cluster,
        transforms: Transforms {
            redactor: args.redact.redactor()?,
            exclude: args.filter.exclusions()?,
            policy: args.filter.policy()?,
            ..Transforms::default()
        },
        summary: ImportSummary::default(),
        diagnostics: Diagnostics::new(args.decode.error_limit),
        input_name: String::new(),
        logged: true,
        error: None,
        progress,
        started: Instant::now(),
        ingest_micros: now_micros(),
        quarantine: Quarantine::open(&args.data.data, IMPORT_QUARANTINE_BYTES)
            .context("cannot open the quarantine")?,
        bad: Vec::new(),
    };
    let options = DecodeOptions {
        keep_skipped_input: true,
        ..args.decode.options()
    };
    for input in &inputs {
        run.input_name = input.name();
        run.logged = !input.is_rereadable();
        let result = decode_input(input, &options, &mut run);
        run.quarantine_bad_input()?;
        if run.error.is_none()
            && let Err(e) = run.writer.commit()
        {
            run.error = Some(e);
        }
        if let Some(e) = run.error.take() {
            bail!(
                "import stopped: {e}\nevents read from stdin or a pipe before this point are kept and stored when the store is next opened; run the import again after fixing this (duplicates are skipped)"
            );
        }
        if let Err(e) = result {
            run.diagnostics.input_failed(&e);
        }
    }
    run.writer.close().map_err(|e| {
        anyhow::anyhow!(
            "import stopped: {e}\nrun it again after fixing this (duplicates are skipped)"
        )
    })?;
    if let Some(bar) = &run.progress {
        bar.finish_and_clear();
    }
    let elapsed = run.started.elapsed().as_secs_f64();
    eprintln!(
        "imported {} events ({} duplicates, {} excluded, {} dropped by policy, {} redacted, {} skipped, {} quarantined) in {elapsed:.1}s, {:.0} events/s",
        run.summary.imported,
        run.summary.duplicates,
        run.summary.excluded,
        run.summary.dropped_by_policy,
        run.summary.redacted,
        run.summary.skipped.values().sum::<u64>(),
        run.summary.quarantined,
        run.summary.imported as f64 / elapsed.max(1e-3),
    );
    let mut sink = StdoutSink::new();
    let mut line = serde_json::to_vec(&run.summary)?;
    line.push(b'\n');
    sink.write(&line)?;
    sink.flush()?;
    Ok(run.diagnostics.finish())
}

fn open_writer(data: &Path) -> Result<EventWriter> {
    EventWriter::open(data, WriterOptions::default())
        .with_context(|| format!("cannot open the store in {}", data.display()))
}

/// Tells the operator what opening the store found after a crash or damage.
pub fn report_recovery(writer: &EventWriter) {
    let recovery = writer.recovery();
    for (path, reason) in &recovery.quarantined {
        eprintln!(
            "kubetrail: {}: damaged segment moved to quarantine/: {reason}",
            path.display()
        );
    }
    for damage in &recovery.wal_damage {
        eprintln!(
            "kubetrail: {}: byte {}: {} ({} bytes skipped)",
            damage.file.display(),
            damage.offset,
            damage.reason,
            damage.skipped_bytes
        );
    }
    if recovery.unreadable_records > 0 {
        eprintln!(
            "kubetrail: {} write-ahead log records held no readable event and were dropped",
            recovery.unreadable_records
        );
    }
    if recovery.replayed > 0 {
        eprintln!(
            "kubetrail: recovered {} accepted events from the write-ahead log ({} were already stored)",
            recovery.replayed, recovery.replayed_duplicates
        );
    }
}

fn print_results(
    batches: &[arrow::array::RecordBatch],
    format: ResultOutput,
    empty_hint: &str,
) -> Result<Outcome> {
    let mut sink = StdoutSink::new();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    match format {
        ResultOutput::Table => {
            if rows == 0 {
                eprintln!("no results{empty_hint}");
            } else {
                sink.write(output::table(batches)?.as_bytes())?;
                let noun = if rows == 1 { "row" } else { "rows" };
                sink.write(format!("\n{rows} {noun}\n").as_bytes())?;
            }
        }
        ResultOutput::Json => sink.write(&output::json_lines(batches)?)?,
        ResultOutput::Csv => sink.write(&output::csv(batches)?)?,
    }
    sink.flush()?;
    Ok(Outcome::Clean)
}

pub fn open_engine(data: &Path) -> Result<QueryEngine> {
    QueryEngine::open(data).map_err(|e| match e {
        StoreError::Missing(_) => anyhow::anyhow!("{e}"),
        other => anyhow::anyhow!("cannot open the store in {}: {other}", data.display()),
    })
}

/// The limits of queries run from the command line: the query language's own (nesting,
/// terms, values), but no cap on rows or buckets: the user asking is the only one waiting.
fn cli_limits() -> QueryLimits {
    QueryLimits {
        max_rows: u64::MAX,
        max_buckets: u64::MAX,
        ..QueryLimits::default()
    }
}

pub fn query(args: &QueryArgs) -> Result<Outcome> {
    let limits = cli_limits();
    let parsed = parse_with(&args.query, &limits)
        .map_err(|e| anyhow::anyhow!("the query has a mistake:\n{}", e.render(&args.query)))?;
    let (from_micros, to_micros) = args.time.range()?;
    let options = CompileOptions {
        from_micros,
        to_micros,
        cluster: None,
        default_limit: args.limit,
        limits,
        now_micros: None,
    };
    let compiled = compile(&parsed, &DataFusionDialect, &options)
        .map_err(|e| anyhow::anyhow!("the query has a mistake:\n{}", e.render(&args.query)))?;
    if args.explain {
        let mut sink = StdoutSink::new();
        sink.write(format!("{}\n", compiled.sql).as_bytes())?;
        for (i, p) in compiled.params.iter().enumerate() {
            sink.write(format!("${} = {p:?}\n", i + 1).as_bytes())?;
        }
        sink.flush()?;
        return Ok(Outcome::Clean);
    }
    let engine = open_engine(&args.data.data)?;
    let batches = engine
        .query(&compiled)
        .map_err(|e| anyhow::anyhow!("query failed: {e}"))?;
    let hint = if from_micros.is_some() || to_micros.is_some() {
        " in this time range (widen --since/--from/--to, or `kubetrail store stats` shows the stored range)"
    } else {
        ""
    };
    print_results(&batches, args.output, hint)
}

pub fn sql(args: &SqlArgs) -> Result<Outcome> {
    let engine = open_engine(&args.data.data)?;
    let batches = engine
        .sql(&args.sql, Vec::new())
        .map_err(|e| anyhow::anyhow!("SQL failed: {e}"))?;
    print_results(&batches, args.output, "")
}

/// What `store stats` prints.
#[derive(Debug, Serialize)]
struct StoreStats {
    events: i64,
    bytes_on_disk: u64,
    segments: usize,
    wal_bytes: u64,
    partitions: Vec<String>,
    first_event: Option<String>,
    last_event: Option<String>,
}

pub fn store(command: &StoreCommand) -> Result<Outcome> {
    match command {
        StoreCommand::Compact(data) => {
            let mut writer = open_writer(&data.data)?;
            report_recovery(&writer);
            writer.sync()?;
            let report = writer.compact(CompactionOptions::default())?;
            writer.close()?;
            eprintln!(
                "merged {} segments into {} ({} rows rewritten)",
                report.merged_segments, report.written_segments, report.rows
            );
            Ok(Outcome::Clean)
        }
        StoreCommand::Prune(args) => {
            let retention = args.retention()?;
            let mut writer = open_writer(&args.data.data)?;
            report_recovery(&writer);
            writer.sync()?;
            let report = writer.prune(retention, now_micros())?;
            writer.close()?;
            eprintln!(
                "deleted {} segments ({} bytes){}",
                report.deleted_segments,
                report.deleted_bytes,
                if report.deleted_partitions.is_empty() {
                    String::new()
                } else {
                    format!("; days removed: {}", report.deleted_partitions.join(", "))
                }
            );
            Ok(Outcome::Clean)
        }
        StoreCommand::Stats(data) => {
            let engine = open_engine(&data.data)?;
            let segments = kubetrail_store::segments(&data.data)?;
            let bytes_on_disk = dir_size(&data.data);
            let mut partitions: Vec<String> = segments
                .iter()
                .filter_map(|s| {
                    s.parent()?
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .collect();
            partitions.dedup();
            let batches = engine.sql(
                "SELECT COUNT(*) AS events, CAST(MIN(time) AS VARCHAR) AS first, CAST(MAX(time) AS VARCHAR) AS last FROM events",
                Vec::new(),
            )?;
            let batch = batches
                .first()
                .context("the store returned no statistics")?;
            let text = |i: usize| {
                let column =
                    arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8)
                        .ok()?;
                let strings = column
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()?;
                (!strings.is_empty() && !strings.is_null(0)).then(|| strings.value(0).to_owned())
            };
            let events = batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .map_or(0, |a| a.value(0));
            let stats = StoreStats {
                events,
                bytes_on_disk,
                segments: segments.len(),
                wal_bytes: dir_size(&data.data.join("wal")),
                partitions,
                first_event: text(1),
                last_event: text(2),
            };
            let mut sink = StdoutSink::new();
            sink.write(&serde_json::to_vec_pretty(&stats)?)?;
            sink.write(b"\n")?;
            sink.flush()?;
            Ok(Outcome::Clean)
        }
    }
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_size(&p)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
