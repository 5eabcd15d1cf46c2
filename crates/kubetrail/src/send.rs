//! `kubetrail send`: deliver audit logs to a kubetrail server (or any audit webhook) the way
//! kube-apiserver's webhook backend does: `EventList` batches of 400 events, `POST`ed as
//! `application/json` with `?timeout=30s`, every non-2xx answer or transport error retried with
//! exponential backoff, and the batch dropped after the last attempt.
//!
//! It serves three jobs: moving old log files into a running server, checking a webhook setup
//! end to end before pointing an API server at it, and load testing. For the last,
//! `--duration` repeats the input with fresh auditIDs (so the server stores every pass instead
//! of deduplicating it), `--rate` paces the offered load open-loop, and the summary reports
//! acknowledged events per second and acknowledgement latency percentiles. With `--rate`,
//! latency counts from the moment a batch was due, not from when it left, so a client that
//! falls behind does not hide the server's slowness (coordinated omission).
//!
//! Decoding and batch building run on their own thread; requests are sent from a
//! single-threaded runtime, so the sender itself needs little CPU next to the server it tests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::ProgressBar;
use kubetrail_event::{Decoded, Timestamp};
use kubetrail_pipeline::ingest::now_micros;
use memchr::memmem;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

use crate::cat::DecodeArgs;
use crate::input::{DecodeHandler, Input, decode_input, progress_bar};
use crate::output::{Diagnostics, Outcome, StdoutSink};
use crate::serve::client_tls;

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Audit logs to send, in any format `import` reads (`-` for standard input).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The webhook URL; a path token (`…/audit/<token>`) works as for an API server.
    #[arg(
        long,
        default_value = "http://127.0.0.1:7420/audit",
        env = "KUBETRAIL_WEBHOOK_URL"
    )]
    url: String,
    /// Bearer token. Unlike kube-apiserver, which sends credentials only to https URLs, it is
    /// sent to http URLs too.
    #[arg(long, env = "KUBETRAIL_WEBHOOK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate to verify an https server with (PEM).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Events per request (kube-apiserver's --audit-webhook-batch-max-size).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Offer at most this many events per second (paced open-loop).
    #[arg(long, value_name = "EVENTS_PER_SECOND", value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Load testing: keep sending for this long (e.g. 60s), repeating the input; each pass
    /// replaces the first 8 characters of every auditID with the pass number, so the server
    /// stores the repeats instead of discarding them as duplicates.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Move every event's timestamps so that the input starts now (each pass of `--duration`
    /// again): recorded traffic replayed as live traffic, for monitors and demos.
    #[arg(long)]
    pub now: bool,
    /// Attempts per batch before it is dropped (kube-apiserver makes 5).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    attempts: u32,
    /// Wait after the first failed attempt; each later wait is 1.5 times longer, and a
    /// longer `Retry-After` from the server wins (kube-apiserver starts at 10s).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    initial_backoff: Duration,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    decode: DecodeArgs,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    kubetrail_server::units::parse_duration_flag(text)
        .map(|micros| Duration::from_micros(micros.unsigned_abs()))
        .map_err(|e| e.to_string())
}

/// One request body ready to send.
struct Prepared {
    body: Vec<u8>,
    events: u32,
    /// Where each event's auditID starts in `body` (only IDs of at least 8 bytes).
    id_offsets: Vec<usize>,
    /// Where each timestamp value (`requestReceivedTimestamp`, `stageTimestamp`) starts in
    /// `body` and its time, µs (only the API server's fixed-width MicroTime), for `--now`.
    time_offsets: Vec<(usize, i64)>,
}

/// The API server's MicroTime, `2026-03-02T08:00:00.123456Z`: always this wide.
const MICRO_TIME_LEN: usize = 27;

impl Prepared {
    /// The body for repeat number `pass` (0 = as read), its timestamps moved by `shift` µs.
    fn for_pass(&self, pass: u64, shift: i64) -> Vec<u8> {
        let mut body = self.body.clone();
        if pass > 0 {
            let stamp = format!("{:08x}", pass % (1 << 32));
            for &at in &self.id_offsets {
                body[at..at + 8].copy_from_slice(stamp.as_bytes());
            }
        }
        if shift != 0 {
            let mut text = Vec::with_capacity(MICRO_TIME_LEN);
            for &(at, micros) in &self.time_offsets {
                text.clear();
                Timestamp::from_micros(micros + shift).write_micro_time(&mut text);
                if text.len() == MICRO_TIME_LEN {
                    body[at..at + MICRO_TIME_LEN].copy_from_slice(&text);
                }
            }
        }
        body
    }
}

const LIST_HEAD: &[u8] =
    br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#;
const LIST_TAIL: &[u8] = b"]}\n";

/// Builds `EventList` bodies from decoded events and hands each to the sender as soon as it
/// fills, so large inputs stream; when repeating, also keeps them for the later passes.
struct Batcher<'a> {
    batch: u32,
    current: Prepared,
    tx: &'a mpsc::Sender<(Vec<u8>, u32)>,
    /// Bodies kept for repeated passes (`--duration`), None when sending once.
    kept: Option<Vec<Prepared>>,
    /// False once the sender stopped listening (its deadline passed).
    open: bool,
    diagnostics: Diagnostics,
    input_name: String,
    id_key: memmem::Finder<'static>,
    /// Bytes read, on a terminal, for large inputs.
    progress: Option<ProgressBar>,
    events_read: u64,
    /// `--now`: timestamps are moved so that each pass starts now.
    now: bool,
    received_key: memmem::Finder<'static>,
    stage_key: memmem::Finder<'static>,
    /// The first event's time, µs.
    first_time: Option<i64>,
    /// The move of the first pass, µs.
    shift: Option<i64>,
}

fn empty_list() -> Prepared {
    Prepared {
        body: LIST_HEAD.to_vec(),
        events: 0,
        id_offsets: Vec::new(),
        time_offsets: Vec::new(),
    }
}

impl Batcher<'_> {
    /// Closes the current body and hands it over.
    fn send_current(&mut self) {
        if self.current.events == 0 || !self.open {
            return;
        }
        let mut full = std::mem::replace(&mut self.current, empty_list());
        full.body.extend_from_slice(LIST_TAIL);
        let events = full.events;
        // Sending once needs no copy: the body itself goes.
        let shift = self.shift.unwrap_or(0);
        let body = match &mut self.kept {
            Some(kept) => {
                let body = full.for_pass(0, shift);
                kept.push(full);
                body
            }
            None if shift != 0 => full.for_pass(0, shift),
            None => full.body,
        };
        self.open = self.tx.blocking_send((body, events)).is_ok();
    }
}

impl DecodeHandler for Batcher<'_> {
    fn decoded(&mut self, decoded: Decoded<'_>) {
        match decoded {
            Decoded::Event(event, _) if self.open => {
                let raw = event.raw.as_str().as_bytes();
                let body = &mut self.current.body;
                if self.current.events > 0 {
                    body.push(b',');
                }
                let start = body.len();
                body.extend_from_slice(raw);
                let id = event.audit_id.as_bytes();
                if id.len() >= 8
                    && let Some(key) = self.id_key.find(raw)
                    && let Some(value) = memmem::find(&raw[key..], id)
                {
                    self.current.id_offsets.push(start + key + value);
                }
                if self.now {
                    for key in [&self.received_key, &self.stage_key] {
                        let Some(found) = key.find(raw) else { continue };
                        let at = found + key.needle().len();
                        let Some(text) = raw.get(at..at + MICRO_TIME_LEN) else {
                            continue;
                        };
                        let Some(time) = std::str::from_utf8(text).ok().and_then(Timestamp::parse)
                        else {
                            continue;
                        };
                        let micros = time.as_micros();
                        let first = *self.first_time.get_or_insert(micros);
                        self.shift.get_or_insert(now_micros() - first);
                        self.current.time_offsets.push((start + at, micros));
                    }
                }
                self.current.events += 1;
                self.events_read += 1;
                if self.current.events == self.batch {
                    self.send_current();
                }
            }
            Decoded::Skipped(skip) => self.diagnostics.skipped(&self.input_name, &skip),
            Decoded::Event(..) | Decoded::Ignored { .. } => {}
        }
    }

    fn progress(&mut self, bytes: u64) {
        if let Some(bar) = &self.progress {
            bar.inc(bytes);
            bar.set_message(format!("{} events read", self.events_read));
        }
    }
}

/// Decodes the inputs on the calling thread and hands bodies to the sender; when `repeat`,
/// then hands out passes with fresh auditIDs until the sender stops listening.
fn produce(args: &SendArgs, repeat: bool, tx: &mpsc::Sender<(Vec<u8>, u32)>) -> Result<Outcome> {
    let mut batcher = Batcher {
        batch: args.batch,
        current: empty_list(),
        tx,
        kept: repeat.then(Vec::new),
        open: true,
        diagnostics: Diagnostics::new(args.decode.error_limit),
        input_name: String::new(),
        id_key: memmem::Finder::new(b"\"auditID\"").into_owned(),
        progress: None,
        events_read: 0,
        now: args.now,
        received_key: memmem::Finder::new(b"\"requestReceivedTimestamp\":\"").into_owned(),
        stage_key: memmem::Finder::new(b"\"stageTimestamp\":\"").into_owned(),
        first_time: None,
        shift: None,
    };
    let inputs: Vec<Input> = args.files.iter().map(|f| Input::from_arg(f)).collect();
    batcher.progress = progress_bar(&inputs);
    let options = args.decode.options();
    for input in &inputs {
        batcher.input_name = input.name();
        if let Err(e) = decode_input(input, &options, &mut batcher) {
            batcher.diagnostics.input_failed(&e);
        }
        if !batcher.open {
            break;
        }
    }
    batcher.send_current();
    if let Some(bar) = batcher.progress.take() {
        bar.finish_and_clear();
    }
    let Some(kept) = batcher.kept.take().filter(|_| batcher.open) else {
        return Ok(batcher.diagnostics.finish());
    };
    if kept.is_empty() {
        bail!("the inputs hold no events to send");
    }
    'passes: for pass in 1.. {
        let shift = match batcher.first_time {
            Some(first) if args.now => now_micros() - first,
            _ => 0,
        };
        for prepared in &kept {
            if tx
                .blocking_send((prepared.for_pass(pass, shift), prepared.events))
                .is_err()
            {
                break 'passes;
            }
        }
    }
    Ok(batcher.diagnostics.finish())
}

/// What happened to the requests.
#[derive(Debug, Default, Serialize)]
struct Summary {
    url: String,
    events_sent: u64,
    events_acknowledged: u64,
    /// Events of batches dropped after their last attempt.
    events_dropped: u64,
    /// As the server reported them (kubetrail answers with its counts).
    events_stored: u64,
    duplicates: u64,
    requests: u64,
    /// Answers by HTTP status; transport failures under "error".
    answers: BTreeMap<String, u64>,
    retries: u64,
    seconds: f64,
    acknowledged_per_second: f64,
    offered_per_second: Option<u64>,
    /// Acknowledgement latency of delivered batches, milliseconds.
    latency_ms: Latency,
    #[serde(skip)]
    latencies: Vec<f64>,
}

#[derive(Debug, Default, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

pub fn send(args: &SendArgs) -> Result<Outcome> {
    // reqwest is built without a default crypto provider: the workspace uses ring everywhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = webhook_url(&args.url)?;
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.concurrency as usize);
    if url.starts_with("https://") {
        builder = builder.use_preconfigured_tls(client_tls(args.ca_cert.as_ref())?);
    }
    let client = builder.build()?;
    let (tx, rx) = mpsc::channel(2 * args.concurrency as usize);
    let repeat = args.duration.is_some();
    let summary = std::thread::scope(|scope| {
        // The producer owns the sender: the channel closes when the input ends.
        let producer = scope.spawn(move || produce(args, repeat, &tx));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let summary = runtime.block_on(deliver_all(args, client, url, rx));
        let decoded = producer
            .join()
            .map_err(|_| anyhow::anyhow!("the input reader panicked"))??;
        Ok::<_, anyhow::Error>((summary, decoded))
    });
    let (mut summary, decoded) = summary?;
    finish_latency(&mut summary);
    print_summary(&summary, args.json)?;
    if summary.events_dropped > 0 && !repeat {
        bail!(
            "{} events were not delivered after {} attempts each",
            summary.events_dropped,
            args.attempts
        );
    }
    Ok(decoded)
}

/// kube-apiserver's client appends the attempt timeout; do the same so servers see what they
/// will see from a real API server.
fn webhook_url(url: &str) -> Result<String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("--url must start with http:// or https://, not {url:?}");
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}timeout=30s"))
}

async fn deliver_all(
    args: &SendArgs,
    client: reqwest::Client,
    url: String,
    mut rx: mpsc::Receiver<(Vec<u8>, u32)>,
) -> Summary {
    let summary = Arc::new(Mutex::new(Summary {
        url: args.url.clone(),
        offered_per_second: args.rate,
        ..Summary::default()
    }));
    let slots = Arc::new(Semaphore::new(args.concurrency as usize));
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let mut offered: u64 = 0;
    while let Some((body, events)) = rx.recv().await {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let due = match args.rate {
            Some(rate) => {
                let due = started + Duration::from_secs_f64(offered as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        offered += u64::from(events);
        let attempt = Attempt {
            client: client.clone(),
            url: url.clone(),
            token: args.token.clone(),
            attempts: args.attempts,
            initial_backoff: args.initial_backoff,
        };
        let summary = summary.clone();
        let due = if args.rate.is_some() {
            due
        } else {
            Instant::now()
        };
        tokio::spawn(async move {
            attempt.deliver(body, events, due, &summary).await;
            drop(slot);
        });
    }
    drop(rx);
    // Every slot back means every request finished.
    let _ = slots.acquire_many(args.concurrency).await;
    let mut summary = std::mem::take(&mut *summary.lock().unwrap_or_else(|e| e.into_inner()));
    summary.events_sent = offered;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.acknowledged_per_second = summary.events_acknowledged as f64 / summary.seconds;
    summary
}

struct Attempt {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
    attempts: u32,
    initial_backoff: Duration,
}

impl Attempt {
    async fn deliver(&self, body: Vec<u8>, events: u32, due: Instant, summary: &Mutex<Summary>) {
        let body = bytes::Bytes::from(body);
        let mut backoff = self.initial_backoff;
        for attempt in 1..=self.attempts {
            let mut request = self
                .client
                .post(&self.url)
                .header("Content-Type", "application/json")
                .header("Accept", "application/json, */*")
                .body(body.clone());
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let result = request.send().await;
            let (answer, retry_after, counts) = match result {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let counts = if status.is_success() {
                        response.json::<serde_json::Value>().await.ok()
                    } else {
                        None
                    };
                    (status.as_u16().to_string(), retry_after, counts)
                }
                Err(_) => ("error".to_owned(), None, None),
            };
            let delivered = answer.starts_with('2');
            {
                let mut s = summary.lock().unwrap_or_else(|e| e.into_inner());
                s.requests += 1;
                *s.answers.entry(answer).or_default() += 1;
                if delivered {
                    s.events_acknowledged += u64::from(events);
                    s.latencies.push(due.elapsed().as_secs_f64() * 1000.0);
                    if let Some(counts) = counts {
                        s.events_stored += counts["accepted"].as_u64().unwrap_or(0);
                        s.duplicates += counts["duplicates"].as_u64().unwrap_or(0);
                    }
                    return;
                }
                if attempt == self.attempts {
                    s.events_dropped += u64::from(events);
                    return;
                }
                s.retries += 1;
            }
            let wait = retry_after.map_or(backoff, |r| r.max(backoff));
            tokio::time::sleep(wait).await;
            backoff = backoff.mul_f64(1.5);
        }
    }
}

fn finish_latency(summary: &mut Summary) {
    let latencies = &mut summary.latencies;
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
        (latencies[index] * 10.0).round() / 10.0
    };
    summary.latency_ms = Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
    };
}

fn print_summary(summary: &Summary, json: bool) -> Result<()> {
    let mut sink = StdoutSink::new();
    if json {
        let mut line = serde_json::to_vec(summary).context("cannot encode the summary")?;
        line.push(b'\n');
        sink.write(&line)?;
    } else {
        let answers: Vec<String> = summary
            .answers
            .iter()
            .map(|(status, n)| format!("{status}: {n}"))
            .collect();
        let offered = summary
            .offered_per_second
            .map(|r| format!(" (offered {r} events/s)"))
            .unwrap_or_default();
        let text = format!(
            "sent {} events in {} requests to {} over {:.1}s{offered}\n\
             acknowledged {} events ({:.0} events/s); stored {} new, {} duplicates; dropped after the last attempt {}; retries {}\n\
             answers: {}\n\
             acknowledgement latency: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms\n",
            summary.events_sent,
            summary.requests,
            summary.url,
            summary.seconds,
            summary.events_acknowledged,
            summary.acknowledged_per_second,
            summary.events_stored,
            summary.duplicates,
            summary.events_dropped,
            summary.retries,
            answers.join(", "),
            summary.latency_ms.p50,
            summary.latency_ms.p90,
            summary.latency_ms.p99,
            summary.latency_ms.max,
        );
        sink.write(text.as_bytes())?;
    }
    sink.flush()
}
