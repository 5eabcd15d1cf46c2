//! `kubetrail rbac suggest|denied`: RBAC advice from the stored requests
//! (`kubetrail_report::rbac`).

use anyhow::{Result, anyhow};
use clap::{ArgGroup, Args, Subcommand};
use kubetrail_report::rbac::{Subject, SuggestOptions, denied, suggest};

use crate::output::{Outcome, StdoutSink};
use crate::report::ReportOutput;
use crate::store::{ScopeArgs, open_engine};

/// RBAC advice.
#[derive(Debug, Subcommand)]
pub enum RbacCommand {
    /// The least-privilege Roles, ClusterRole and bindings (YAML) that allow what a user or
    /// service account was observed doing.
    Suggest(SuggestArgs),
    /// Every distinct request RBAC refused (403), who made it, and the rule that would allow it.
    Denied(DeniedArgs),
}

/// Whose requests, over which range.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("subject").required(true).args(["user", "serviceaccount"])))]
pub struct SuggestArgs {
    /// The user (`alice@example.com`; `system:serviceaccount:NS:NAME` is a service account).
    #[arg(long)]
    pub user: Option<String>,
    /// The service account, as NAMESPACE:NAME.
    #[arg(long, value_name = "NAMESPACE:NAME")]
    pub serviceaccount: Option<String>,
    /// A rule naming more objects than this grants its verbs on every object instead.
    #[arg(long, default_value_t = 10)]
    pub max_resource_names: usize,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Output: YAML manifests (`kubectl apply -f -`), or JSON with per-role counts.
    #[arg(long, short, value_enum, default_value_t = SuggestOutput::Yaml)]
    pub output: SuggestOutput,
}

/// Output formats of `rbac suggest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SuggestOutput {
    /// Multi-document YAML.
    Yaml,
    /// One JSON object.
    Json,
}

/// The range of `rbac denied`.
#[derive(Debug, Args)]
pub struct DeniedArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = ReportOutput::Table)]
    pub output: ReportOutput,
}

pub fn run(command: &RbacCommand) -> Result<Outcome> {
    match command {
        RbacCommand::Suggest(args) => run_suggest(args),
        RbacCommand::Denied(args) => run_denied(args),
    }
}

fn run_suggest(args: &SuggestArgs) -> Result<Outcome> {
    let subject = match (&args.user, &args.serviceaccount) {
        (Some(user), _) => Subject::user(user),
        (None, Some(sa)) => Subject::service_account(sa),
        (None, None) => unreachable!("clap requires --user or --serviceaccount"),
    }
    .map_err(|e| anyhow!("{e}"))?;
    let options = args.scope.options(1)?;
    let engine = open_engine(&args.scope.data.data)?;
    let shape = SuggestOptions {
        max_resource_names: args.max_resource_names,
    };
    let suggestion = suggest(&engine, &subject, &options, &shape).map_err(|e| anyhow!("{e}"))?;
    let text = match args.output {
        SuggestOutput::Yaml => suggestion.to_yaml().map_err(|e| anyhow!("{e}"))?,
        SuggestOutput::Json => format!("{:#}\n", suggestion.to_json()),
    };
    let mut sink = StdoutSink::new();
    sink.write(text.as_bytes())?;
    sink.flush()?;
    Ok(Outcome::Clean)
}

fn run_denied(args: &DeniedArgs) -> Result<Outcome> {
    let options = args.scope.options(1)?;
    let engine = open_engine(&args.scope.data.data)?;
    let (denials, admission) = denied(&engine, &options).map_err(|e| anyhow!("{e}"))?;
    let mut text = String::new();
    match args.output {
        ReportOutput::Json => {
            let body = serde_json::json!({
                "denied": denials,
                "refusedByAdmission": admission,
            });
            text = format!("{body:#}\n");
        }
        ReportOutput::Table => {
            if denials.is_empty() {
                text.push_str("RBAC refused no request in this range.\n");
            }
            for d in &denials {
                let object = match (d.namespace.is_empty(), d.name.is_empty()) {
                    (_, _) if d.resource.is_empty() => d.path.clone(),
                    (true, true) => d.resource.clone(),
                    (true, false) => format!("{} {:?}", d.resource, d.name),
                    (false, true) => format!("{} in namespace {}", d.resource, d.namespace),
                    (false, false) => {
                        format!("{} {:?} in namespace {}", d.resource, d.name, d.namespace)
                    }
                };
                let group = if d.api_group.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", d.api_group)
                };
                let times = if d.requests == 1 {
                    "once".to_owned()
                } else {
                    format!("{} times", d.requests)
                };
                text.push_str(&format!(
                    "{} — {} {object}{group}: {times}, {} to {}, from {}\n",
                    d.user,
                    d.verb,
                    d.first,
                    d.last,
                    if d.source_ips.is_empty() {
                        "no source IP".to_owned()
                    } else {
                        d.source_ips.join(", ")
                    }
                ));
                if !d.reason.is_empty() {
                    text.push_str(&format!("  reason: {}\n", d.reason));
                }
                text.push_str(&format!("  allow with a {}: {}\n", d.role_kind, d.kubectl));
                if d.user == "system:anonymous" {
                    text.push_str(
                        "  (granting anything to system:anonymous opens it to everyone who can reach the API server)\n",
                    );
                }
            }
            if admission > 0 {
                text.push_str(&format!(
                    "\n{admission} more 403s were refused after RBAC allowed them (admission: Pod Security, webhooks); see `kubetrail query 'code:403 decision:allow'`.\n"
                ));
            }
        }
    }
    let mut sink = StdoutSink::new();
    sink.write(text.as_bytes())?;
    sink.flush()?;
    Ok(Outcome::Clean)
}
