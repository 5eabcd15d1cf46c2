//! The transforms every event goes through before it is stored or printed, whatever its
//! source: exclusion filters, the audit policy filter, then redaction (on by default). One type
//! so `import`, the tailer and the webhook can never disagree about what is kept.

use kubetrail_event::{AuditEvent, Redactor};
use kubetrail_policy::{Applied, Evaluator, apply_policy};
use kubetrail_query::Matcher;

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
    /// Events are filtered and down-levelled as this audit policy says.
    pub policy: Option<Evaluator>,
    /// Credentials are removed (None: redaction off).
    pub redactor: Option<Redactor>,
}

impl Transforms {
    /// Applies the transforms to an event from `cluster`.
    pub fn apply(&self, event: &mut AuditEvent<'_>, cluster: &str) -> Verdict {
        if self.exclude.iter().any(|m| m.matches(event, cluster)) {
            return Verdict::Excluded;
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
