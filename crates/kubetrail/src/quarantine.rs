//! `kubetrail quarantine`: the bad input `serve` and `import` kept aside instead of dropping it
//! or stopping (an event nested deeper than the limit, a line that is not JSON): list it, show
//! one entry with its input, and replay entries through a running server once the cause is
//! fixed (a raised limit, a newer kubetrail).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use kubetrail_store::quarantine::{QuarantineEntry, quarantined, quarantined_entry};

use crate::output::{Outcome, StdoutSink};
use crate::store::DataArgs;

/// Bad input kept aside by `serve` and `import`.
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Every entry still in quarantine, oldest first: why, and where it came from.
    List(ListArgs),
    /// One entry with its input (`--input`: only the input, as it came).
    Show(ShowArgs),
    /// Send entries through a running server again, with its current limits; entries stored
    /// this time leave the quarantine.
    Replay(ReplayArgs),
}

/// Output formats of `quarantine list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListOutput {
    /// One line per entry.
    Table,
    /// One JSON object per entry (without the input).
    Json,
}

/// `quarantine list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = ListOutput::Table)]
    pub output: ListOutput,
}

/// `quarantine show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The entry's id (from `quarantine list`).
    pub id: String,
    /// Print only the input, byte for byte (to save it, or to import it elsewhere).
    #[arg(long)]
    pub input: bool,
}

/// `quarantine replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The entries to replay.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<String>,
    /// Replay every entry.
    #[arg(long)]
    pub all: bool,
    /// The running server's URL.
    #[arg(long, default_value = "http://127.0.0.1:7420", env = "KUBETRAIL_URL")]
    pub url: String,
    /// The API token [default: the one in <data>/api-token].
    #[arg(long, env = "KUBETRAIL_API_TOKEN")]
    pub token: Option<String>,
    /// CA certificate to verify an https server with (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

pub fn run(command: &QuarantineCommand) -> Result<Outcome> {
    match command {
        QuarantineCommand::List(args) => list(args),
        QuarantineCommand::Show(args) => show(args),
        QuarantineCommand::Replay(args) => replay(args),
    }
}

fn list(args: &ListArgs) -> Result<Outcome> {
    let entries = quarantined(&args.data.data).context("cannot read the quarantine")?;
    let mut sink = StdoutSink::new();
    match args.output {
        ListOutput::Json => {
            for mut entry in entries {
                entry.input.clear();
                let mut line = serde_json::to_vec(&entry)?;
                line.push(b'\n');
                sink.write(&line)?;
            }
        }
        ListOutput::Table => {
            if entries.is_empty() {
                eprintln!("the quarantine is empty");
            } else {
                sink.write(b"ID  QUARANTINED  SOURCE  REASON  WHERE  SIZE  MESSAGE\n")?;
            }
            for entry in &entries {
                let message: String = entry.message.chars().take(100).collect();
                sink.write(
                    format!(
                        "{}  {}  {}  {}  {}  {}  {message}\n",
                        entry.id,
                        entry.quarantined_at,
                        entry.source,
                        entry.reason,
                        place(entry),
                        entry.size
                    )
                    .as_bytes(),
                )?;
            }
        }
    }
    sink.flush()?;
    Ok(Outcome::Clean)
}

/// Where an entry came from: `file:line (byte offset)`, with its item in an EventList.
fn place(entry: &QuarantineEntry) -> String {
    let mut place = entry.location.clone();
    if let Some(line) = entry.line {
        place.push_str(&format!(":{line}"));
    }
    if let Some(offset) = entry.offset {
        place.push_str(&format!(" (byte {offset})"));
    }
    if let Some(item) = entry.item {
        place.push_str(&format!(" item {item}"));
    }
    place
}

fn show(args: &ShowArgs) -> Result<Outcome> {
    let Some(entry) =
        quarantined_entry(&args.data.data, &args.id).context("cannot read the quarantine")?
    else {
        bail!(
            "no entry {:?} in the quarantine of {} (replayed entries leave it)",
            args.id,
            args.data.data.display()
        );
    };
    let mut sink = StdoutSink::new();
    if args.input {
        match entry.input_bytes() {
            Some(input) => sink.write(&input)?,
            None => bail!(
                "entry {} was kept without its input (the quarantine was near its size limit)",
                entry.id
            ),
        }
    } else {
        sink.write(&serde_json::to_vec_pretty(&entry)?)?;
        sink.write(b"\n")?;
    }
    sink.flush()?;
    Ok(Outcome::Clean)
}

fn replay(args: &ReplayArgs) -> Result<Outcome> {
    let token = crate::serve::api_token(args.token.as_ref(), &args.data.data)?;
    let body = if args.all {
        serde_json::json!({"all": true})
    } else {
        serde_json::json!({"ids": args.ids})
    };
    let url = format!(
        "{}/api/v1/quarantine/replay",
        args.url.trim_end_matches('/')
    );
    let answer: serde_json::Value =
        crate::serve::post_json(&url, &token, &body, args.ca_cert.as_ref())
            .with_context(|| format!("cannot replay through the server at {}", args.url))?;
    let mut sink = StdoutSink::new();
    let mut failed = false;
    for replayed in answer["replayed"].as_array().into_iter().flatten() {
        let outcome = replayed["outcome"].as_str().unwrap_or("?");
        failed |= !matches!(outcome, "stored" | "duplicate" | "filtered");
        let reason = replayed["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        sink.write(
            format!(
                "{} {outcome}{reason}\n",
                replayed["id"].as_str().unwrap_or("?")
            )
            .as_bytes(),
        )?;
    }
    sink.flush()?;
    Ok(if failed {
        Outcome::Skipped
    } else {
        Outcome::Clean
    })
}
