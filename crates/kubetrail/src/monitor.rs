//! `kubetrail monitor`: check monitor files, and test them against stored history before they
//! go live (`docs/monitors.md`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use clap::{Args, Subcommand, ValueEnum};
use kubetrail_alert::evaluate::{Transition, backtest};
use kubetrail_alert::spec::{Definitions, load_file};
use kubetrail_alert::{format_value, rfc3339};

use crate::output::{Outcome, StdoutSink};
use crate::store::{DataArgs, TimeRangeArgs, open_engine};

#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Validate monitor files: every problem with its file, line, key and fix.
    Check(CheckArgs),
    /// Replay stored history through monitors and print every transition they would have made.
    Test(TestArgs),
    /// Ask a running server for its monitors, their state and their alerts.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The running server's URL.
    #[arg(long, default_value = "http://127.0.0.1:7420", env = "KUBETRAIL_URL")]
    pub url: String,
    /// The API token [default: the one in <data>/api-token].
    #[arg(long, env = "KUBETRAIL_API_TOKEN")]
    pub token: Option<String>,
    /// CA certificate to verify an https server with (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Monitor files (a list of monitors, one monitor, or a serve config with `monitors:` and `channels:`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Output of `monitor test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransitionOutput {
    /// One line per transition.
    Table,
    /// One JSON object per transition: monitor, group, state, at, value.
    Json,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Monitor files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// The range replayed (default: everything stored). History before it warms the monitors up.
    #[command(flatten)]
    pub time: TimeRangeArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: TransitionOutput,
    /// Monitors evaluated at once (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(command: &MonitorCommand) -> Result<Outcome> {
    match command {
        MonitorCommand::Check(args) => check(args),
        MonitorCommand::Test(args) => test(args),
        MonitorCommand::Status(args) => status(args),
    }
}

fn status(args: &StatusArgs) -> Result<Outcome> {
    let token = crate::serve::api_token(args.token.as_ref(), &args.data.data)?;
    let url = format!("{}/api/v1/monitors", args.url.trim_end_matches('/'));
    let answer = crate::serve::api_json(
        reqwest::Method::GET,
        &url,
        &token,
        None,
        args.ca_cert.as_ref(),
    )?;
    let mut sink = StdoutSink::new();
    if args.json {
        sink.write(&serde_json::to_vec_pretty(&answer)?)?;
        sink.write(b"\n")?;
        sink.flush()?;
        return Ok(Outcome::Clean);
    }
    let monitors = answer["monitors"].as_array().cloned().unwrap_or_default();
    let mut firing = false;
    for m in &monitors {
        let alerts = m["alerts"].as_array().cloned().unwrap_or_default();
        let health = match m["health"].as_str().unwrap_or("?") {
            "error" => format!("error: {}", m["message"].as_str().unwrap_or("")),
            "capped" => format!("capped ({} groups)", m["groups"]),
            other if m["no_data"] == true => format!("{other}, no data"),
            other => match m["behind_micros"].as_i64().filter(|b| *b > 0) {
                Some(behind) => format!(
                    "{other}, {} behind the watermark",
                    kubetrail_alert::format_duration(behind / 1_000_000 * 1_000_000)
                ),
                None => other.to_owned(),
            },
        };
        let enabled = if m["enabled"] == false {
            " (disabled)"
        } else {
            ""
        };
        sink.write(
            format!(
                "{}{enabled}: {health}; next window ends {}; {} alert(s)\n",
                m["name"].as_str().unwrap_or("?"),
                m["next_evaluation"].as_str().unwrap_or("?"),
                alerts.len()
            )
            .as_bytes(),
        )?;
        for a in &alerts {
            firing |= a["state"] == "firing";
            let group = a["group"]
                .as_object()
                .map(|g| {
                    g.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let level = a["level"]
                .as_str()
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            sink.write(
                format!(
                    "  {}{level} since {} value {}  {group}\n",
                    a["state"].as_str().unwrap_or("?"),
                    a["since"].as_str().unwrap_or("?"),
                    a["value"]
                )
                .as_bytes(),
            )?;
        }
    }
    for problem in answer["problems"].as_array().into_iter().flatten() {
        eprintln!("left out: {}", problem.as_str().unwrap_or(""));
    }
    if let Some(failed) = answer["failedNotifications"].as_u64().filter(|n| *n > 0) {
        eprintln!(
            "{failed} notification(s) refused by their channel, kept in <data>/monitors/outbox/failed/ (the server's log has each answer)"
        );
    }
    if monitors.is_empty() {
        sink.write(b"no monitors (define them under monitors: in the serve config, with --monitors DIR, or POST /api/v1/monitors)\n")?;
    }
    sink.flush()?;
    Ok(if firing {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

/// Reads every file; problems are printed on stderr.
fn load(files: &[PathBuf]) -> Definitions {
    let mut all = Definitions::default();
    for file in files {
        all.extend(load_file(file));
    }
    if !all.monitors.iter().all(|m| m.notify.is_empty()) || !all.channels.is_empty() {
        all.check_channels();
    }
    for problem in &all.problems {
        eprintln!("{problem}");
    }
    all
}

fn check(args: &CheckArgs) -> Result<Outcome> {
    let defs = load(&args.files);
    let mut sink = StdoutSink::new();
    sink.write(
        format!(
            "{} monitor(s) and {} channel(s) valid, {} problem(s)\n",
            defs.monitors.len(),
            defs.channels.len(),
            defs.problems.len()
        )
        .as_bytes(),
    )?;
    sink.flush()?;
    Ok(if defs.problems.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

fn test(args: &TestArgs) -> Result<Outcome> {
    let defs = load(&args.files);
    if defs.monitors.is_empty() {
        bail!("no valid monitor to test");
    }
    let engine = open_engine(&args.data.data)?;
    let (from, to) = args.time.range()?;
    let (from, to) = match (from, to) {
        (Some(from), Some(to)) => (from, to),
        (from, to) => {
            let (first, last) = stored_range(&engine)?;
            (from.unwrap_or(first), to.unwrap_or(last + 1))
        }
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let monitors: Vec<Arc<_>> = defs.monitors.into_iter().map(Arc::new).collect();
    let durations: std::collections::HashMap<String, bool> = monitors
        .iter()
        .map(|m| {
            let duration = kubetrail_alert::evaluate::MonitorEval::new(m.clone(), from)
                .is_ok_and(|e| e.duration_value);
            (m.name.clone(), duration)
        })
        .collect();
    let (transitions, errors) = backtest(&engine, &monitors, from, to, threads);
    let mut sink = StdoutSink::new();
    for t in &transitions {
        let line = match args.output {
            TransitionOutput::Json => serde_json::to_string(t)?,
            TransitionOutput::Table => table_line(t, durations[&t.monitor]),
        };
        sink.write(line.as_bytes())?;
        sink.write(b"\n")?;
    }
    sink.flush()?;
    eprintln!(
        "{} transition(s) of {} monitor(s) from {} to {}",
        transitions.len(),
        monitors.len(),
        rfc3339::format(from),
        rfc3339::format(to)
    );
    for (monitor, error) in &errors {
        eprintln!("{monitor}: evaluation failed: {error}");
    }
    Ok(if errors.is_empty() && defs.problems.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

fn table_line(t: &Transition, duration: bool) -> String {
    let group = t
        .group
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let state = match (t.state, t.level) {
        (kubetrail_alert::state::Change::Firing, Some(level)) => {
            format!(
                "firing:{}",
                serde_json::to_value(level)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("")
            )
        }
        (state, _) => serde_json::to_value(state)
            .unwrap_or_default()
            .as_str()
            .unwrap_or("")
            .to_owned(),
    };
    let value = t
        .value
        .map_or("-".to_owned(), |v| format_value(v, duration));
    let threshold = t.threshold.map_or(String::new(), |v| {
        format!(" (threshold {})", format_value(v, duration))
    });
    format!(
        "{}  {:<24} {:<14} value {value}{threshold}  {group}",
        rfc3339::format(t.at),
        t.monitor,
        state
    )
}

/// The times of the first and last stored events.
fn stored_range(engine: &kubetrail_store::QueryEngine) -> Result<(i64, i64)> {
    let batches = engine
        .sql(
            "SELECT CAST(MIN(time) AS TIMESTAMP(6)) AS first, CAST(MAX(time) AS TIMESTAMP(6)) AS last FROM events",
            Vec::new(),
        )
        .map_err(|e| anyhow::anyhow!("reading the stored range: {e}"))?;
    let batch = batches.first().filter(|b| b.num_rows() > 0);
    let value = |column: usize| -> Option<i64> {
        let array = cast(batch?.column(column), &DataType::Int64).ok()?;
        let array = array.as_primitive::<Int64Type>();
        (!array.is_null(0)).then(|| array.value(0))
    };
    match (value(0), value(1)) {
        (Some(first), Some(last)) => Ok((first, last)),
        _ => bail!("the store is empty: import audit logs first (kubetrail import FILE)"),
    }
}
