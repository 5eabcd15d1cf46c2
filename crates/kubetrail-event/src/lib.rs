//! Kubernetes audit events: the `audit.k8s.io` model, the envelopes events arrive in, the
//! streaming parser, normalization of every API version to v1, and the fields kubetrail derives.
//!
//! Every path into kubetrail (file import, the log tailer, the webhook receiver, policy
//! simulation) decodes through [`Decoder`], so they all read the same inputs the same way and
//! report bad input the same way. This crate does no IO: callers hand it bytes.
//!
//! ```
//! use kubetrail_event::{Decoded, Decoder, DecodeOptions};
//!
//! let line = br#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods?limit=500","verb":"list","user":{"username":"alice"},"objectRef":{"resource":"pods","namespace":"default","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-07-23T14:47:51.123456Z","stageTimestamp":"2026-07-23T14:47:51.130001Z"}
//! "#;
//! let mut decoder = Decoder::new(DecodeOptions::default());
//! let mut users = Vec::new();
//! let mut out = |decoded: Decoded<'_>| {
//!     if let Decoded::Event(event, _) = decoded {
//!         users.push((event.user.username.to_string(), event.derived.latency_micros));
//!     }
//! };
//! decoder.feed(line, &mut out);
//! decoder.finish(&mut out);
//! assert_eq!(users, [("alice".to_string(), Some(6545))]);
//! ```

mod client;
mod decode;
mod derived;
mod error;
pub mod json;
mod model;
mod normalize;
mod redact;
mod ser;
mod time;
mod wire;

pub use client::Client;
pub use decode::{
    DEFAULT_MAX_DEPTH, DecodeOptions, Decoded, Decoder, InputFormat, NESTING_ANNOTATION, Origin,
};
pub use derived::{CodeClass, Derived, UserKind};
pub use error::{IgnoreReason, Skip, SkipReason};
pub use model::{
    AuditEvent, AuthenticationMetadata, Level, ObjectReference, RawJson, ResponseStatus, Stage,
    Str, UserInfo,
};
pub use redact::{REDACTED, REDACTED_ANNOTATION, RedactionConfig, RedactionConfigError, Redactor};
pub use ser::{JsonOptions, write_event_json};
pub use time::Timestamp;
