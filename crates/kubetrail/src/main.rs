//! The `kubetrail` binary: command-line parsing and wiring of the library crates.
//!
//! Exit status: 0 success; 1 fatal error; 2 usage error; 3 completed, but bad input was
//! skipped; 4 a check found errors (see `output.rs`).

mod cat;
mod input;
mod monitor;
mod output;
mod policy;
mod quarantine;
mod rbac;
mod report;
mod rules;
mod send;
mod serve;
mod store;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kubetrail collects, keeps, searches, analyzes and alerts on Kubernetes API-server audit logs.
#[derive(Debug, Parser)]
#[command(
    name = "kubetrail",
    version,
    about,
    after_help = "Exit status: 0 success; 1 fatal error; 2 usage error; 3 completed, but bad input was skipped (reported on stderr); 4 a check found errors (policy lint, status of an unhealthy server)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive audit events from API servers (webhook, log files) and keep them in the store.
    Serve(serve::ServeArgs),
    /// Show a running server's sources, counters and health.
    Status(serve::StatusArgs),
    /// Send audit logs to a webhook as kube-apiserver does (batches, retries); also a load generator.
    Send(send::SendArgs),
    /// Print the events of audit logs, normalized to audit.k8s.io/v1, one per line.
    Cat(cat::CatArgs),
    /// Import audit logs into the store (every input format; duplicates skipped).
    Import(store::ImportArgs),
    /// Search the store with the query language.
    Query(store::QueryArgs),
    /// Answer an operator's question: auth failures, anonymous access, latency, changes, one object's history, a rollout, top talkers.
    Report(report::ReportArgs),
    /// RBAC advice from what was observed: least-privilege roles for a subject, the rules refused requests lack.
    Rbac {
        #[command(subcommand)]
        command: rbac::RbacCommand,
    },
    /// Run SQL against the store's `events` table.
    Sql(store::SqlArgs),
    /// Manage the store.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Check, evaluate, lint and simulate audit policies as kube-apiserver evaluates them.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Monitors: check their files, test them against stored history.
    Monitor {
        #[command(subcommand)]
        command: monitor::MonitorCommand,
    },
    /// Detection rules: list them, run their inline tests, hunt in files or stored history.
    Rules {
        #[command(subcommand)]
        command: rules::RulesCommand,
    },
    /// Bad input kept aside by serve and import (too deep, not JSON, …): list, show, replay.
    Quarantine {
        #[command(subcommand)]
        command: quarantine::QuarantineCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Status(args) => serve::status(args),
        Command::Send(args) => send::send(args),
        Command::Cat(args) => cat::run(args),
        Command::Policy { command } => policy::run(command),
        Command::Import(args) => store::import(args),
        Command::Query(args) => store::query(args),
        Command::Sql(args) => store::sql(args),
        Command::Report(args) => report::report(args),
        Command::Rbac { command } => rbac::run(command),
        Command::Store { command } => store::store(command),
        Command::Quarantine { command } => quarantine::run(command),
        Command::Monitor { command } => monitor::run(command),
        Command::Rules { command } => rules::run(command),
    };
    match result {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => {
            eprintln!("kubetrail: {error:#}");
            ExitCode::from(output::EXIT_FATAL)
        }
    }
}
