//! Delivering the outbox: each channel on its own (a channel that is down never holds up the
//! others, nor ingestion), in order within a channel, with retries and backoff on connection
//! errors, timeouts, 429 and 5xx (honouring `Retry-After`), and no retry after another 4xx.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::notify::{Request, requests};
use crate::outbox::{Entry, Outbox};
use crate::spec::ChannelSpec;

/// How one request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted.
    Delivered,
    /// Try again, not before `after` (when the channel said so).
    Retry {
        /// Why.
        error: String,
        /// The channel's `Retry-After`.
        after: Option<Duration>,
    },
    /// Refused for good.
    Rejected(String),
}

/// Counters of deliveries, by channel.
#[derive(Debug, Default, Clone)]
pub struct DeliveryStats {
    /// Notifications delivered.
    pub delivered: BTreeMap<String, u64>,
    /// Failed attempts (retried).
    pub retried: BTreeMap<String, u64>,
    /// Notifications refused for good.
    pub rejected: BTreeMap<String, u64>,
    /// The last error of each channel.
    pub last_error: BTreeMap<String, String>,
}

/// The delivering side: an HTTP client, the outbox and the channels.
pub struct Deliverer {
    client: reqwest::Client,
    /// The outbox (shared with the evaluation, which adds to it).
    pub outbox: Arc<Mutex<Outbox>>,
    /// The channels, replaced on reload.
    pub channels: Arc<Mutex<BTreeMap<String, ChannelSpec>>>,
    busy: Arc<Mutex<HashSet<String>>>,
    /// Counters.
    pub stats: Arc<Mutex<DeliveryStats>>,
}

/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl Deliverer {
    /// A deliverer for `outbox` and `channels`.
    pub fn new(
        outbox: Arc<Mutex<Outbox>>,
        channels: Arc<Mutex<BTreeMap<String, ChannelSpec>>>,
    ) -> Result<Deliverer, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("kubetrail/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Deliverer {
            client,
            outbox,
            channels,
            busy: Arc::new(Mutex::new(HashSet::new())),
            stats: Arc::new(Mutex::new(DeliveryStats::default())),
        })
    }

    /// Starts delivering what is due, one task per channel that is not busy already.
    pub fn poll(&self, now: i64) {
        let entries = match self.outbox.lock().map(|o| o.entries()) {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the notification outbox");
                return;
            }
            Err(_) => return,
        };
        let mut by_channel: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for entry in entries {
            by_channel
                .entry(entry.channel.clone())
                .or_default()
                .push(entry);
        }
        for (channel, entries) in by_channel {
            // In order: the channel waits for its oldest entry.
            if entries.first().is_none_or(|e| e.next_attempt > now) {
                continue;
            }
            {
                let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
                if !busy.insert(channel.clone()) {
                    continue;
                }
            }
            let spec = self
                .channels
                .lock()
                .ok()
                .and_then(|c| c.get(&channel).cloned());
            let (client, outbox, busy, stats) = (
                self.client.clone(),
                self.outbox.clone(),
                self.busy.clone(),
                self.stats.clone(),
            );
            tokio::spawn(async move {
                deliver_channel(&client, spec, entries, &outbox, &stats).await;
                busy.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&channel);
            });
        }
    }
}

async fn deliver_channel(
    client: &reqwest::Client,
    spec: Option<ChannelSpec>,
    entries: Vec<Entry>,
    outbox: &Mutex<Outbox>,
    stats: &Mutex<DeliveryStats>,
) {
    for mut entry in entries {
        let now = crate::now_micros();
        if entry.next_attempt > now {
            return;
        }
        let Some(spec) = &spec else {
            entry.last_error = Some(format!("no channel is named {:?} any more", entry.channel));
            let _ = outbox.lock().map(|o| o.failed(&entry));
            return;
        };
        let requests = requests(spec, &entry.notification);
        let mut outcome = Outcome::Delivered;
        while entry.done < requests.len() {
            outcome = send(client, &requests[entry.done]).await;
            if outcome != Outcome::Delivered {
                break;
            }
            entry.done += 1;
        }
        let mut stats = stats.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(mut outbox) = outbox.lock() else {
            return;
        };
        let result = match outcome {
            Outcome::Delivered => {
                *stats.delivered.entry(spec.name.clone()).or_default() += 1;
                tracing::info!(channel = %spec.name, notification = %entry.notification.id, "notification delivered");
                outbox.delivered(&entry)
            }
            Outcome::Retry { error, after } => {
                entry.attempts += 1;
                let backoff = Duration::from_secs(1 << entry.attempts.min(9)).min(MAX_BACKOFF);
                let wait = after.unwrap_or(backoff).min(MAX_BACKOFF);
                entry.next_attempt = now + wait.as_micros() as i64;
                tracing::warn!(channel = %spec.name, attempts = entry.attempts, error = %error, retry_in = ?wait, "notification not delivered; will retry");
                *stats.retried.entry(spec.name.clone()).or_default() += 1;
                stats.last_error.insert(spec.name.clone(), error.clone());
                entry.last_error = Some(error);
                let result = outbox.update(&entry);
                drop(outbox);
                drop(stats);
                if let Err(e) = result {
                    tracing::warn!(error = %e, "cannot update the outbox");
                }
                return;
            }
            Outcome::Rejected(error) => {
                tracing::error!(channel = %spec.name, notification = %entry.notification.id, error = %error, "the channel refused the notification; it is kept in the outbox's failed/ and not retried");
                *stats.rejected.entry(spec.name.clone()).or_default() += 1;
                stats.last_error.insert(spec.name.clone(), error.clone());
                entry.last_error = Some(error);
                outbox.failed(&entry)
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot update the outbox");
            return;
        }
    }
}

/// Sends one request.
pub async fn send(client: &reqwest::Client, request: &Request) -> Outcome {
    match request {
        Request::Append { path, line } => {
            let path = path.clone();
            let line = line.clone();
            let written = tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                let mut bytes = line;
                bytes.push(b'\n');
                file.write_all(&bytes)?;
                file.sync_data()
            })
            .await;
            match written {
                Ok(Ok(())) => Outcome::Delivered,
                Ok(Err(e)) => Outcome::Retry {
                    error: e.to_string(),
                    after: None,
                },
                Err(e) => Outcome::Retry {
                    error: e.to_string(),
                    after: None,
                },
            }
        }
        Request::Post { url, headers, body } => {
            let mut builder = client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body.clone());
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            match builder.send().await {
                Err(e) => Outcome::Retry {
                    error: format!("{url}: {e}"),
                    after: None,
                },
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        return Outcome::Delivered;
                    }
                    let after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response.text().await.unwrap_or_default();
                    let text: String = text.chars().take(500).collect();
                    let error = format!("{url} answered {status}: {text}");
                    if status.as_u16() == 429 || status.is_server_error() {
                        Outcome::Retry { error, after }
                    } else {
                        Outcome::Rejected(error)
                    }
                }
            }
        }
    }
}
