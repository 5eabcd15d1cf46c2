//! `kubetrail serve` (the long-running collector) and `kubetrail status` (asks a running one).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use kubetrail_pipeline::tail::StartAt;
use kubetrail_server::config::{ClusterConfig, TailConfig, TlsConfig};
use kubetrail_server::{ServeConfig, Server};

use crate::output::{Outcome, StdoutSink};

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Where files seen on the very first start are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartAtArg {
    /// Existing content too.
    Beginning,
    /// Only new lines.
    End,
}

/// Receive audit events from API servers and keep them in the store.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A YAML configuration file (docs/examples/kubetrail.yaml lists every option).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data directory [default: ./kubetrail-data].
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
    /// Address of the HTTP port [default: 127.0.0.1:7420].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// A cluster allowed to send webhooks, with its token (repeatable). Prefer `tokenFile` in
    /// the configuration file in production: flags are visible in the process list.
    #[arg(long = "webhook-token", value_name = "CLUSTER=TOKEN")]
    pub webhook_tokens: Vec<String>,
    /// A token accepted by the HTTP API (repeatable; env KUBETRAIL_API_TOKEN). Without any, a
    /// token is generated on the first start and kept in `<data>/api-token`.
    #[arg(long = "api-token", value_name = "TOKEN", env = "KUBETRAIL_API_TOKEN")]
    pub api_tokens: Vec<String>,
    /// A file or glob to tail (repeatable): the API server's `--audit-log-path`, with its
    /// rotated names (`/var/log/kubernetes/audit/audit*.log*`).
    #[arg(long = "tail", value_name = "PATH_OR_GLOB")]
    pub tail: Vec<String>,
    /// The cluster name stamped on events of `--tail` files.
    #[arg(long, default_value = "")]
    pub tail_cluster: String,
    /// Where to start in files seen on the very first start.
    #[arg(long, value_enum)]
    pub start_at: Option<StartAtArg>,
    /// PEM certificate for TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: require client certificates signed by it (mTLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// A directory of monitor files (docs/monitors.md), read again when they change.
    #[arg(long, value_name = "DIR")]
    pub monitors: Option<PathBuf>,
    /// A directory or file of detection rules and overrides, loaded after the bundled pack
    /// (docs/detections.md); repeatable.
    #[arg(long = "rules", value_name = "DIR")]
    pub rules: Vec<PathBuf>,
    /// Do not run detection rules.
    #[arg(long)]
    pub no_detections: bool,
    /// kubetrail's address as people reach it, for the links in notifications.
    #[arg(long, value_name = "URL", env = "KUBETRAIL_EXTERNAL_URL")]
    pub external_url: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl ServeArgs {
    fn config(&self) -> Result<ServeConfig> {
        let mut config = match &self.config {
            Some(path) => ServeConfig::load(path)?,
            None => ServeConfig::default(),
        };
        if let Some(data) = &self.data {
            config.data = Some(data.clone());
        }
        if let Some(listen) = &self.listen {
            config.listen = listen.clone();
        }
        for pair in &self.webhook_tokens {
            let Some((cluster, token)) = pair.split_once('=') else {
                bail!("--webhook-token {pair:?}: expected CLUSTER=TOKEN");
            };
            config.webhook.clusters.push(ClusterConfig {
                name: cluster.to_owned(),
                token: Some(token.to_owned()),
                token_file: None,
                client_cert_cn: None,
            });
        }
        config.api.tokens.extend(self.api_tokens.iter().cloned());
        if !self.tail.is_empty() {
            config.tail.push(TailConfig {
                paths: self.tail.clone(),
                cluster: self.tail_cluster.clone(),
                start_at: match self.start_at {
                    Some(StartAtArg::End) => StartAt::End,
                    _ => StartAt::Beginning,
                },
            });
        }
        if let Some(dir) = &self.monitors {
            if !dir.is_dir() {
                bail!("--monitors {}: not a directory", dir.display());
            }
            config.monitoring.dir = Some(dir.clone());
        }
        if let Some(url) = &self.external_url {
            config.monitoring.external_url = Some(url.clone());
        }
        config.detections.rules.extend(self.rules.iter().cloned());
        if self.no_detections {
            config.detections.enabled = false;
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls = Some(TlsConfig {
                cert_file: cert.clone(),
                key_file: key.clone(),
                client_ca_file: self.tls_client_ca.clone(),
            });
        }
        Ok(config)
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUBETRAIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub fn serve(args: &ServeArgs) -> Result<Outcome> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    restart_with_fixed_mmap_threshold();
    init_logging(args.log_format);
    let config = args.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        let server = Server::start(config.clone(), PathBuf::from("kubetrail-data")).await?;
        print_banner(&config, &server);
        server.run(shutdown).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Outcome::Clean)
}

/// glibc's allocator variable that fixes the size from which allocations get their own mapping.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_VAR: &str = "MALLOC_MMAP_THRESHOLD_";

/// The server's large buffers (a hand-off's column builders and their sorted copy, tens of MiB,
/// made and freed every 25,000 events) should get their own mappings, given back to the system
/// when freed. glibc raises its mmap threshold after each such free (up to 32 MiB), so they soon
/// come from the per-thread heaps instead, which keep what is freed: under overload the peak RSS
/// was 463–510 MiB, and 370–393 MiB with the threshold fixed at 8 MiB, at the same throughput
/// (`bench/serve.sh`). The threshold can only be fixed from the environment (the code has no
/// `unsafe` for `mallopt`), so `serve` starts itself again with it set, in the same process (`exec`)
/// — unless the variable is already set, which also lets an operator choose another value.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn restart_with_fixed_mmap_threshold() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(MMAP_THRESHOLD_VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let error = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(MMAP_THRESHOLD_VAR, (8u32 << 20).to_string())
        .exec();
    // `exec` returns only when it failed: serve all the same, with glibc's adaptive threshold.
    eprintln!(
        "kubetrail: cannot restart with {MMAP_THRESHOLD_VAR} set ({error}); memory under load may peak higher"
    );
}

fn print_banner(config: &ServeConfig, server: &Server) {
    let scheme = if server.is_tls() { "https" } else { "http" };
    let addr = server.local_addr();
    let data = config
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from("kubetrail-data"));
    let mut lines = vec![format!(
        "kubetrail listening on {scheme}://{addr} (data: {})",
        data.display()
    )];
    if config.webhook.clusters.is_empty() {
        lines.push(format!(
            "  webhook: POST {scheme}://{addr}/audit (no tokens configured: unauthenticated, loopback only)"
        ));
    } else {
        for cluster in &config.webhook.clusters {
            lines.push(format!(
                "  webhook for cluster {:?}: POST {scheme}://{addr}/audit/<token> or Authorization: Bearer <token> (https)",
                cluster.name
            ));
        }
    }
    for tail in &config.tail {
        lines.push(format!("  tailing: {}", tail.paths.join(", ")));
    }
    lines.push(format!(
        "  point an API server at it: --audit-webhook-config-file with a kubeconfig whose server is {scheme}://{addr}/audit/<token> (docs/serve.md)"
    ));
    let token = match server.api_token_file() {
        Some(file) => format!("$(cat {})", file.display()),
        None => "<api token>".to_owned(),
    };
    let login = match server.api_token_file() {
        Some(file) => format!("log in with the token in {}", file.display()),
        None => "log in with an api.tokens or api.viewerTokens token".to_owned(),
    };
    lines.push(format!("  UI: {scheme}://{addr}/ ({login}; docs/ui.md)"));
    lines.push(format!(
        "  API: curl -H \"Authorization: Bearer {token}\" '{scheme}://{addr}/api/v1/search?q=code:403' (docs/api.md)"
    ));
    lines.push(format!(
        "  health: {scheme}://{addr}/readyz  metrics: {scheme}://{addr}/metrics  status: kubetrail status --url {scheme}://{addr}"
    ));
    eprintln!("{}", lines.join("\n"));
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled, so a signal arriving right after the banner is not lost (it
/// would otherwise kill the process without flushing).
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Ask a running server how it is doing.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The server's URL.
    #[arg(long, default_value = "http://127.0.0.1:7420", env = "KUBETRAIL_URL")]
    pub url: String,
    /// Print the raw JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// CA certificate to verify an https server with (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

pub fn status(args: &StatusArgs) -> Result<Outcome> {
    let url = format!("{}/api/v1/status", args.url.trim_end_matches('/'));
    // reqwest is built without a default crypto provider: the workspace uses ring everywhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body: serde_json::Value = runtime
        .block_on(async {
            let mut builder =
                reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
            if url.starts_with("https://") {
                builder = builder.use_preconfigured_tls(client_tls(args.ca_cert.as_ref())?);
            }
            let client = builder.build()?;
            let response = client.get(&url).send().await?;
            let status = response.status();
            if !status.is_success() {
                bail!("{url} answered {status}");
            }
            Ok::<_, anyhow::Error>(response.json().await?)
        })
        .with_context(|| format!("cannot reach kubetrail at {}", args.url))?;
    let mut sink = StdoutSink::new();
    if args.json {
        sink.write(&serde_json::to_vec_pretty(&body)?)?;
        sink.write(b"\n")?;
    } else {
        sink.write(render_status(&body).as_bytes())?;
    }
    sink.flush()?;
    let healthy = body["healthy"].as_bool().unwrap_or(false);
    // An unhealthy server is a failed check, like a lint error.
    Ok(if healthy {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// POSTs JSON to a running server's API with its token and returns the JSON answer; an answer
/// other than 2xx is an error carrying the server's message.
pub(crate) fn post_json(
    url: &str,
    token: &str,
    body: &serde_json::Value,
    ca_cert: Option<&PathBuf>,
) -> Result<serde_json::Value> {
    api_json(reqwest::Method::POST, url, token, Some(body), ca_cert)
}

/// The API token: the one given, else the one the server generated in `<data>/api-token`.
pub(crate) fn api_token(token: Option<&String>, data: &std::path::Path) -> Result<String> {
    if let Some(token) = token {
        return Ok(token.clone());
    }
    let path = data.join("api-token");
    Ok(std::fs::read_to_string(&path)
        .with_context(|| {
            format!(
                "no --token given and {} cannot be read (the server generates it on its first start)",
                path.display()
            )
        })?
        .trim()
        .to_owned())
}

/// Sends a request to a running server's API with its token and returns the JSON answer; an
/// answer other than 2xx is an error carrying the server's message.
pub(crate) fn api_json(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<&serde_json::Value>,
    ca_cert: Option<&PathBuf>,
) -> Result<serde_json::Value> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(600));
        if url.starts_with("https://") {
            builder = builder.use_preconfigured_tls(client_tls(ca_cert)?);
        }
        let mut request = builder.build()?.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!(
                "{url} answered {status}: {}",
                answer["error"].as_str().unwrap_or("")
            );
        }
        Ok(answer)
    })
}

pub(crate) fn client_tls(ca: Option<&PathBuf>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("cannot read {}", ca.display()))?
        {
            roots.add(cert.with_context(|| format!("{}", ca.display()))?)?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn render_status(body: &serde_json::Value) -> String {
    let server = &body["server"];
    let ingest = &body["ingest"];
    let tail = &body["tail"];
    let mut out = String::new();
    let health = if body["healthy"].as_bool().unwrap_or(false) {
        "healthy".to_owned()
    } else {
        format!(
            "NOT HEALTHY: {}",
            body["lastError"].as_str().unwrap_or("shutting down")
        )
    };
    out.push_str(&format!(
        "kubetrail {} on {}{} — {health}, up {}s\n  data: {}\n",
        server["version"].as_str().unwrap_or("?"),
        server["listen"].as_str().unwrap_or("?"),
        if server["mtls"].as_bool() == Some(true) {
            " (TLS, client certificates required)"
        } else if server["tls"].as_bool() == Some(true) {
            " (TLS)"
        } else {
            ""
        },
        body["uptimeSeconds"],
        server["data"].as_str().unwrap_or("?"),
    ));
    out.push_str(&format!(
        "\nStore\n  accepted {}  duplicates {}  queued {}  not yet queryable {}  group commits {}  refused busy {}\n",
        ingest["accepted"], ingest["duplicates"], ingest["queuedEvents"], ingest["storeLagEvents"], ingest["commits"], ingest["busyRejections"],
    ));
    out.push_str(&format!(
        "  last accepted: {}\n",
        ingest["lastAcceptedAt"].as_str().unwrap_or("never")
    ));
    out.push_str("\nWebhook\n");
    let clusters: Vec<&str> = server["webhookClusters"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "  clusters: {}\n",
        if clusters.is_empty() {
            "(none: unauthenticated on loopback)".to_owned()
        } else {
            clusters.join(", ")
        }
    ));
    if let Some(counts) = body["webhook"].as_object() {
        for (key, value) in counts {
            out.push_str(&format!("  {key}: {value}\n"));
        }
    }
    let quarantine = &body["quarantine"];
    let reasons: Vec<String> = quarantine["byReason"]
        .as_object()
        .map(|r| r.iter().map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "\nQuarantine (bad input kept aside: kubetrail quarantine list)\n  since start {}{}  not kept (size limit) {}  on disk {} bytes\n",
        quarantine["quarantined"],
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        quarantine["dropped"],
        quarantine["bytes"],
    ));
    out.push_str(&format!(
        "\nFiles\n  events {}  skipped lines {}  filtered {}\n",
        tail["events"], tail["skippedLines"], tail["filtered"]
    ));
    for file in tail["files"].as_array().into_iter().flatten() {
        let offset = file["offset"].as_u64().unwrap_or(0);
        let size = file["size"].as_u64().unwrap_or(0);
        let lag = if file["gzip"].as_bool() == Some(true) {
            "gzip".to_owned()
        } else {
            format!("lag {} bytes", size.saturating_sub(offset))
        };
        out.push_str(&format!(
            "  {}  offset {offset}  size {size}  {lag}\n",
            file["path"].as_str().unwrap_or("?")
        ));
    }
    out
}
