//! `kubetrail report NAME`: the investigations of `kubetrail-report` from the command line.

use anyhow::Result;
use clap::{Args, ValueEnum};
use kubetrail_report::{REPORTS, run};
use kubetrail_store::output;

use crate::output::{Outcome, StdoutSink};
use crate::store::{ScopeArgs, open_engine};

#[derive(Debug, Args)]
#[command(after_help = report_list())]
pub struct ReportArgs {
    /// The report (listed below).
    pub name: String,
    /// The object of `object` and `rollout`: RESOURCE/NAMESPACE/NAME, or RESOURCE/NAME for a
    /// cluster-scoped one (`pods/search/api-7d9f-x2x`, `deployments/checkout/frontend`).
    pub object: Option<String>,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Rows per ranked table.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Output format: tables for terminals, or one JSON document.
    #[arg(long, short, value_enum, default_value_t = ReportOutput::Table)]
    pub output: ReportOutput,
}

/// Output formats of reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportOutput {
    /// Findings and aligned tables.
    Table,
    /// One JSON object with every section's rows.
    Json,
}

fn report_list() -> String {
    let mut text = String::from("Reports:\n");
    for (name, description) in REPORTS {
        text.push_str(&format!("  {name:<14} {description}\n"));
    }
    text
}

pub fn report(args: &ReportArgs) -> Result<Outcome> {
    let options = args.scope.options(args.limit)?;
    // An unknown name needs no store to be told so.
    kubetrail_report::find(&args.name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = open_engine(&args.scope.data.data)?;
    let report = run(&engine, &args.name, args.object.as_deref(), &options)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut sink = StdoutSink::new();
    match args.output {
        ReportOutput::Json => {
            let mut text = serde_json::to_vec_pretty(&report.to_json()?)?;
            text.push(b'\n');
            sink.write(&text)?;
        }
        ReportOutput::Table => {
            let mut text = format!(
                "{}\n{} to {}\n",
                report.title,
                kubetrail_report::format_micros(report.from_micros),
                kubetrail_report::format_micros(report.to_micros)
            );
            for finding in &report.findings {
                text.push_str(&format!("* {finding}\n"));
            }
            for section in &report.sections {
                text.push_str(&format!("\n{}\n", section.title));
                if section.rows() == 0 {
                    text.push_str("(none)\n");
                } else {
                    text.push_str(&output::table(&section.batches)?);
                    text.push('\n');
                }
            }
            sink.write(text.as_bytes())?;
        }
    }
    sink.flush()?;
    Ok(Outcome::Clean)
}
