//! Why a piece of input did not become an event.
//!
//! Bad input is never fatal: the decoder reports a [`Skip`] (something that should have been an
//! event and is broken) or an [`Ignored`] (well-formed input that is not audit data, such as
//! klog lines a container runtime captured next to the events) and carries on with the next
//! line or document.

use std::fmt;

/// The class of a skipped piece of input; the stable names are used in stats and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// The text is not JSON.
    InvalidJson,
    /// The bytes are not UTF-8.
    InvalidUtf8,
    /// Valid JSON, but not an audit event (a GKE LogEntry, a core/v1 Event, `{"kind":0}`).
    NotAnEvent,
    /// An audit event with a missing or malformed field.
    InvalidEvent,
    /// The input ended in the middle of an event.
    Truncated,
    /// An event (or line) larger than the configured limit.
    TooLarge,
    /// An event whose JSON nests deeper than the configured limit.
    TooDeep,
    /// A container-runtime or cloud envelope that is malformed.
    InvalidEnvelope,
}

impl SkipReason {
    /// Every reason, in reporting order.
    pub const ALL: [SkipReason; 8] = [
        SkipReason::InvalidJson,
        SkipReason::InvalidUtf8,
        SkipReason::NotAnEvent,
        SkipReason::InvalidEvent,
        SkipReason::Truncated,
        SkipReason::TooLarge,
        SkipReason::TooDeep,
        SkipReason::InvalidEnvelope,
    ];

    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::InvalidJson => "invalid-json",
            SkipReason::InvalidUtf8 => "invalid-utf8",
            SkipReason::NotAnEvent => "not-an-event",
            SkipReason::InvalidEvent => "invalid-event",
            SkipReason::Truncated => "truncated",
            SkipReason::TooLarge => "too-large",
            SkipReason::TooDeep => "too-deep",
            SkipReason::InvalidEnvelope => "invalid-envelope",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A piece of input that should have held an event and could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {message}")]
pub struct Skip {
    /// The 1-based line where the bad input starts.
    pub line: u64,
    /// Its class.
    pub reason: SkipReason,
    /// What is wrong, in words.
    pub message: String,
    /// Where the bad line starts in the input, in bytes from where decoding began, when the
    /// input is read as lines.
    pub offset: Option<u64>,
    /// The bad input itself — the event, or the line or document it was in — when the decoder
    /// was asked to keep it ([`DecodeOptions::keep_skipped_input`](crate::DecodeOptions)), so
    /// it can be quarantined and replayed; at most `max_event_bytes` of it.
    pub input: Option<Vec<u8>>,
    /// The index of the item it is in an `EventList` or an Azure batch.
    pub item: Option<usize>,
}

impl Skip {
    /// Whether the skip is about one event (inside a well-formed document) rather than the
    /// document as a whole: a receiver stores the document's other events and keeps this one
    /// aside instead of refusing everything.
    pub fn is_event_level(&self) -> bool {
        matches!(
            self.reason,
            SkipReason::InvalidEvent | SkipReason::TooDeep | SkipReason::TooLarge
        ) || self.item.is_some()
    }
}

/// Well-formed input that carries no audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IgnoreReason {
    /// A container-runtime line that is not JSON or was written to stderr (klog output of an
    /// API server that logs audit events to stdout).
    ContainerOutput,
    /// An Azure diagnostic record of a category other than `kube-audit`/`kube-audit-admin`.
    AzureCategory,
    /// A blank line.
    Blank,
}

impl IgnoreReason {
    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::ContainerOutput => "container-output",
            IgnoreReason::AzureCategory => "azure-other-category",
            IgnoreReason::Blank => "blank",
        }
    }
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a JSON object could not be turned into an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub reason: SkipReason,
    pub message: String,
}

impl Rejection {
    pub fn not_an_event(message: impl Into<String>) -> Self {
        Rejection {
            reason: SkipReason::NotAnEvent,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Rejection {
            reason: SkipReason::InvalidEvent,
            message: message.into(),
        }
    }
}
