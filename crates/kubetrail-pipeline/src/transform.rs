//! The transforms every event goes through before it is stored or printed, whatever its
//! source: the traffic metrics (which count every event), exclusion filters, the audit policy
//! filter, then redaction (on by default). One type so `import`, the tailer and the webhook
//! can never disagree about what is kept.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kubetrail_event::{AuditEvent, Redactor};
use kubetrail_policy::{Applied, Evaluator, apply_policy};
use kubetrail_query::Matcher;

use crate::audit_metrics::AuditMetrics;

/// A named exclusion filter of the server: the events it matches are dropped, except a
/// sample of `keep_per_10k` in 10,000 (chosen by auditID, so every stage of a request gets
/// the same fate). It can be switched off and on at runtime (`PUT /api/v1/exclusions/NAME`):
/// capture everything during an outage, drop the noise again after.
#[derive(Debug)]
pub struct Exclusion {
    /// Its name.
    pub name: String,
    /// Its query.
    pub query: String,
    /// The compiled query.
    pub matcher: Matcher,
    /// Matching events kept, per 10,000.
    pub keep_per_10k: u32,
    /// Whether it applies.
    pub enabled: AtomicBool,
    /// Events it matched while enabled.
    pub matched: AtomicU64,
    /// Events it dropped.
    pub excluded: AtomicU64,
}

impl Exclusion {
    fn sampled_in(&self, event: &AuditEvent<'_>) -> bool {
        if self.keep_per_10k == 0 {
            return false;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        event.audit_id.as_ref().hash(&mut hasher);
        (hasher.finish() % 10_000) < u64::from(self.keep_per_10k)
    }
}

/// What happened to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it; `redacted` when credentials were removed.
    Keep {
        /// Credentials were removed.
        redacted: bool,
    },
    /// An exclusion query matched.
    Excluded,
    /// The audit policy drops it (level None or an omitted stage).
    DroppedByPolicy,
}

/// The configured transforms.
#[derive(Default)]
pub struct Transforms {
    /// Events matching any of these are dropped.
    pub exclude: Vec<Matcher>,
    /// The server's named exclusion filters, with sampling and a runtime switch.
    pub exclusions: Vec<Exclusion>,
    /// Traffic metrics, counted before anything is dropped.
    pub metrics: Option<Arc<AuditMetrics>>,
    /// Events are filtered and down-levelled as this audit policy says.
    pub policy: Option<Evaluator>,
    /// Credentials are removed (None: redaction off).
    pub redactor: Option<Redactor>,
}

impl Transforms {
    /// Applies the transforms to an event from `cluster`.
    pub fn apply(&self, event: &mut AuditEvent<'_>, cluster: &str) -> Verdict {
        if let Some(metrics) = &self.metrics {
            metrics.record(event, cluster);
        }
        if self.exclude.iter().any(|m| m.matches(event, cluster)) {
            return Verdict::Excluded;
        }
        for exclusion in &self.exclusions {
            if exclusion.enabled.load(Ordering::Relaxed)
                && exclusion.matcher.matches(event, cluster)
            {
                exclusion.matched.fetch_add(1, Ordering::Relaxed);
                if !exclusion.sampled_in(event) {
                    exclusion.excluded.fetch_add(1, Ordering::Relaxed);
                    return Verdict::Excluded;
                }
            }
        }
        if let Some(policy) = &self.policy
            && apply_policy(policy, event) != Applied::Kept
        {
            return Verdict::DroppedByPolicy;
        }
        let redacted = self
            .redactor
            .as_ref()
            .is_some_and(|redactor| redactor.redact(event) > 0);
        Verdict::Keep { redacted }
    }
}
