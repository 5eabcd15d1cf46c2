//! The normalized audit event: `audit.k8s.io/v1` `Event` with every field, whatever version
//! or envelope it was read from.
//!
//! Strings borrow from the input buffer whenever the JSON text needs no unescaping, so parsing a
//! log line allocates little. `requestObject`, `responseObject`, unknown fields and the whole
//! original event are kept as the exact JSON text they arrived as ([`RawJson`]): kubetrail never
//! re-serializes a body, so nothing drifts (number formats, key order, escapes).
//! [`AuditEvent::into_owned`] detaches an event from its buffer when it must outlive it.

use std::borrow::Cow;
use std::fmt;

use crate::derived::Derived;
use crate::time::Timestamp;

/// A string that borrows from the input when it can.
pub type Str<'a> = Cow<'a, str>;

/// The exact JSON text of a value as it appeared in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJson<'a>(pub Cow<'a, str>);

impl RawJson<'_> {
    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Detaches the text from the input buffer.
    pub fn into_owned(self) -> RawJson<'static> {
        RawJson(Cow::Owned(self.0.into_owned()))
    }
}

/// How much of a request the policy asked the API server to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Not recorded (never seen in emitted events).
    None,
    /// Request metadata only.
    Metadata,
    /// Metadata and the request body.
    Request,
    /// Metadata, request and response bodies.
    RequestResponse,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 4] = [
        Level::None,
        Level::Metadata,
        Level::Request,
        Level::RequestResponse,
    ];

    /// The name the API writes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }

    /// Parses the name the API writes (case-sensitive, as the API server is).
    pub fn parse(name: &str) -> Option<Self> {
        Level::ALL.into_iter().find(|l| l.as_str() == name)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The point in a request's life at which an event was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// As soon as the audit handler received the request.
    RequestReceived,
    /// Response headers sent (long-running requests, failed authentication).
    ResponseStarted,
    /// The response is complete.
    ResponseComplete,
    /// The handler panicked.
    Panic,
}

impl Stage {
    /// Every stage, in request order.
    pub const ALL: [Stage; 4] = [
        Stage::RequestReceived,
        Stage::ResponseStarted,
        Stage::ResponseComplete,
        Stage::Panic,
    ];

    /// The name the API writes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }

    /// Parses the name the API writes (case-sensitive).
    pub fn parse(name: &str) -> Option<Self> {
        Stage::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `authentication.k8s.io/v1` UserInfo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo<'a> {
    /// `username`; empty for requests that failed authentication.
    pub username: Str<'a>,
    /// `uid`.
    pub uid: Str<'a>,
    /// `groups`, in the order the authenticator gave them.
    pub groups: Vec<Str<'a>>,
    /// `extra`, key order as written (the API server sorts keys).
    pub extra: Vec<(Str<'a>, Vec<Str<'a>>)>,
}

impl UserInfo<'_> {
    fn into_owned(self) -> UserInfo<'static> {
        UserInfo {
            username: own(self.username),
            uid: own(self.uid),
            groups: self.groups.into_iter().map(own).collect(),
            extra: self
                .extra
                .into_iter()
                .map(|(k, v)| (own(k), v.into_iter().map(own).collect()))
                .collect(),
        }
    }
}

/// `authenticationMetadata` (Kubernetes 1.35+, constrained impersonation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthenticationMetadata<'a> {
    /// The verb that allowed constrained impersonation, e.g. `impersonate:user-info`.
    pub impersonation_constraint: Str<'a>,
}

/// `objectRef`: the object a resource request addressed.
///
/// `api_group` and `api_version` are always in the v1 form: the group alone (empty for the core
/// group) and the bare version, also for v1alpha1 input, which joined them as `group/version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectReference<'a> {
    /// `resource`, e.g. `pods`.
    pub resource: Str<'a>,
    /// `namespace`; empty for cluster-scoped objects.
    pub namespace: Str<'a>,
    /// `name`; empty for list, watch, create with generateName, deletecollection.
    pub name: Str<'a>,
    /// `uid`.
    pub uid: Str<'a>,
    /// `apiGroup`; empty for the core group.
    pub api_group: Str<'a>,
    /// `apiVersion`, e.g. `v1`.
    pub api_version: Str<'a>,
    /// `resourceVersion`.
    pub resource_version: Str<'a>,
    /// `subresource`, e.g. `status`, `log`, `exec`, `eviction`.
    pub subresource: Str<'a>,
}

impl ObjectReference<'_> {
    fn into_owned(self) -> ObjectReference<'static> {
        ObjectReference {
            resource: own(self.resource),
            namespace: own(self.namespace),
            name: own(self.name),
            uid: own(self.uid),
            api_group: own(self.api_group),
            api_version: own(self.api_version),
            resource_version: own(self.resource_version),
            subresource: own(self.subresource),
        }
    }
}

/// `responseStatus`: the subset of `meta/v1 Status` the API server copies into events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseStatus<'a> {
    /// `status`: `Success` or `Failure`, only for Status responses.
    pub status: Str<'a>,
    /// `message`.
    pub message: Str<'a>,
    /// `reason`, e.g. `Forbidden`, `NotFound`.
    pub reason: Str<'a>,
    /// `details`, kept as written.
    pub details: Option<RawJson<'a>>,
    /// `code`: the HTTP status code.
    pub code: Option<i32>,
}

impl ResponseStatus<'_> {
    fn into_owned(self) -> ResponseStatus<'static> {
        ResponseStatus {
            status: own(self.status),
            message: own(self.message),
            reason: own(self.reason),
            details: self.details.map(RawJson::into_owned),
            code: self.code,
        }
    }
}

/// One Kubernetes audit event, normalized to the `audit.k8s.io/v1` shape.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent<'a> {
    /// The `apiVersion` the event declared, if any (`audit.k8s.io/v1beta1`, …). Many real events,
    /// especially from the v1beta1 era, carry none. The normalized event is always v1.
    pub source_api_version: Option<Str<'a>>,
    /// `level`.
    pub level: Level,
    /// `auditID`: shared by every stage of one request.
    pub audit_id: Str<'a>,
    /// `stage`.
    pub stage: Stage,
    /// `requestURI`: path and query string.
    pub request_uri: Str<'a>,
    /// `verb`: the Kubernetes verb, or the lower-cased HTTP method for non-resource requests.
    pub verb: Str<'a>,
    /// `user`: the authenticated identity (before impersonation).
    pub user: UserInfo<'a>,
    /// `impersonatedUser`.
    pub impersonated_user: Option<UserInfo<'a>>,
    /// `authenticationMetadata` (1.35+).
    pub authentication_metadata: Option<AuthenticationMetadata<'a>>,
    /// `sourceIPs`; only the last entry can be trusted.
    pub source_ips: Vec<Str<'a>>,
    /// `userAgent`.
    pub user_agent: Option<Str<'a>>,
    /// `objectRef`; absent for non-resource requests.
    pub object_ref: Option<ObjectReference<'a>>,
    /// `responseStatus`; absent at `RequestReceived`.
    pub response_status: Option<ResponseStatus<'a>>,
    /// `requestObject`, exactly as written.
    pub request_object: Option<RawJson<'a>>,
    /// `responseObject`, exactly as written.
    pub response_object: Option<RawJson<'a>>,
    /// `requestReceivedTimestamp` (from v1beta1 `timestamp` when the event lacks it).
    pub request_received_timestamp: Option<Timestamp>,
    /// `stageTimestamp` (from v1beta1 `metadata.creationTimestamp` when the event lacks it).
    pub stage_timestamp: Option<Timestamp>,
    /// `annotations`, in the order written.
    pub annotations: Vec<(Str<'a>, Str<'a>)>,
    /// Top-level fields this version of kubetrail does not know, with their JSON text.
    pub unknown_fields: Vec<(Str<'a>, RawJson<'a>)>,
    /// The complete original event as it arrived (after unwrapping any envelope).
    pub raw: RawJson<'a>,
    /// Fields kubetrail derives from the event, computed once when it is decoded.
    pub derived: Derived<'a>,
}

impl<'a> AuditEvent<'a> {
    /// The value of annotation `key`, if present.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// The HTTP status code, if the event has one.
    pub fn code(&self) -> Option<i32> {
        self.response_status.as_ref().and_then(|s| s.code)
    }

    /// The time the event is filed under: when the request was received, else the stage time.
    pub fn time(&self) -> Option<Timestamp> {
        self.request_received_timestamp.or(self.stage_timestamp)
    }

    /// Replaces the original text with the event as it now is, after a transform changed it
    /// (redaction, policy filtering): the old text must not survive the change.
    pub fn rebuild_raw(&mut self) {
        let mut raw = Vec::with_capacity(self.raw.as_str().len());
        crate::ser::write_event_json(self, crate::ser::JsonOptions::default(), &mut raw);
        raw.pop();
        self.raw = RawJson(Cow::Owned(
            String::from_utf8(raw).expect("the JSON writer emits UTF-8"),
        ));
    }

    /// Detaches the event from the buffer it was parsed from.
    pub fn into_owned(self) -> AuditEvent<'static> {
        AuditEvent {
            source_api_version: self.source_api_version.map(own),
            level: self.level,
            audit_id: own(self.audit_id),
            stage: self.stage,
            request_uri: own(self.request_uri),
            verb: own(self.verb),
            user: self.user.into_owned(),
            impersonated_user: self.impersonated_user.map(UserInfo::into_owned),
            authentication_metadata: self
                .authentication_metadata
                .map(|m| AuthenticationMetadata {
                    impersonation_constraint: own(m.impersonation_constraint),
                }),
            source_ips: self.source_ips.into_iter().map(own).collect(),
            user_agent: self.user_agent.map(own),
            object_ref: self.object_ref.map(ObjectReference::into_owned),
            response_status: self.response_status.map(ResponseStatus::into_owned),
            request_object: self.request_object.map(RawJson::into_owned),
            response_object: self.response_object.map(RawJson::into_owned),
            request_received_timestamp: self.request_received_timestamp,
            stage_timestamp: self.stage_timestamp,
            annotations: self
                .annotations
                .into_iter()
                .map(|(k, v)| (own(k), own(v)))
                .collect(),
            unknown_fields: self
                .unknown_fields
                .into_iter()
                .map(|(k, v)| (own(k), v.into_owned()))
                .collect(),
            raw: self.raw.into_owned(),
            derived: self.derived.into_owned(),
        }
    }
}

pub(crate) fn own(s: Str<'_>) -> Str<'static> {
    Cow::Owned(s.into_owned())
}
