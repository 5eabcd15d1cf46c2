//! From a captured JSON object to what it is: an audit event normalized to the v1 shape, or one
//! of the envelopes events arrive in.
//!
//! Version differences handled here (reference §1.3): v1beta1 and v1alpha1 carry `timestamp` and
//! `metadata.creationTimestamp`, which fill `requestReceivedTimestamp` and `stageTimestamp` when
//! those are absent (the API server's own conversion); v1alpha1 writes `objectRef.apiVersion` as
//! `group/version` with no `apiGroup`, split on the last `/`. Real files mix these freely (v1
//! labelled events with v1beta1 fields, events with no apiVersion at all), so the rules apply by
//! the fields present, not by the declared version.

use std::borrow::Cow;

use serde::Deserialize;
use sonic_rs::{JsonValueTrait, LazyValue};

use crate::derived::{Derived, derive, slice};
use crate::error::Rejection;
use crate::model::{
    AuditEvent, AuthenticationMetadata, Level, ObjectReference, RawJson, ResponseStatus, Stage,
    Str, UserInfo,
};
use crate::time::Timestamp;
use crate::wire::{CowStr, WireObject, WireUser};

/// What a top-level JSON object turned out to be.
pub(crate) enum Document<'a> {
    /// One audit event.
    Event(Box<AuditEvent<'a>>),
    /// An `EventList` (webhook body): its items, each still raw.
    EventList(Vec<LazyValue<'a>>),
    /// An Azure Event Hubs batch: `{"records": [...]}`.
    AzureRecords(Vec<LazyValue<'a>>),
    /// One Azure diagnostic record.
    AzureRecord {
        category: Option<Str<'a>>,
        log: LazyValue<'a>,
    },
    /// A Docker json-file log line.
    DockerLine {
        log: String,
        stream: Option<Str<'a>>,
    },
}

#[derive(Deserialize)]
struct AzureProperties<'a> {
    #[serde(borrow)]
    log: Option<LazyValue<'a>>,
}

/// Decides what `w`, whose JSON text is `raw`, is.
pub(crate) fn classify<'a>(
    w: Box<WireObject<'a>>,
    raw: &'a str,
) -> Result<Document<'a>, Rejection> {
    let kind = string_field(w.kind.as_ref(), "kind")?;
    if let Some(api_version) = string_field(w.api_version.as_ref(), "apiVersion")?
        && !api_version.starts_with("audit.k8s.io/")
    {
        return Err(Rejection::not_an_event(format!(
            "apiVersion {api_version:?} is not audit.k8s.io (kind {:?})",
            kind.unwrap_or_default()
        )));
    }
    if w.audit_id.is_some() || w.stage.is_some() || kind == Some("Event") {
        return build_event(w, raw).map(Document::Event);
    }
    if kind == Some("EventList") || w.unknown("items").is_some() {
        let items = w
            .unknown("items")
            .ok_or_else(|| Rejection::invalid("EventList without `items`"))?;
        return array_items(items, "items").map(Document::EventList);
    }
    if let Some(records) = w.unknown("records") {
        return array_items(records, "records").map(Document::AzureRecords);
    }
    if let Some(properties) = w.unknown("properties") {
        let properties: AzureProperties<'a> = sonic_rs::from_str(borrowed_raw(properties)?)
            .map_err(|e| Rejection::not_an_event(format!("field `properties`: {e}")))?;
        if let Some(log) = properties.log {
            let category = w
                .unknown("category")
                .and_then(|c| c.as_str().map(str::to_owned));
            return Ok(Document::AzureRecord {
                category: category.map(Cow::Owned),
                log,
            });
        }
    }
    if let Some(log) = w.unknown("log") {
        // A string with escapes is held unescaped-later by sonic-rs, so read it from its text.
        let log: String = sonic_rs::from_str(&log.as_raw_cow())
            .map_err(|e| Rejection::not_an_event(format!("field `log`: {e}")))?;
        let stream = w
            .unknown("stream")
            .and_then(|s| s.as_str().map(str::to_owned));
        return Ok(Document::DockerLine {
            log,
            stream: stream.map(Cow::Owned),
        });
    }
    if w.unknown("protoPayload").is_some() {
        return Err(Rejection::not_an_event(
            "a Google Cloud Logging LogEntry (protoPayload), not an audit.k8s.io event",
        ));
    }
    Err(Rejection::not_an_event(
        "no `auditID` or `stage`: not an audit.k8s.io event",
    ))
}

/// A string-valued top-level field that identifies the document, if present.
fn string_field<'v>(
    value: Option<&'v LazyValue<'_>>,
    name: &str,
) -> Result<Option<&'v str>, Rejection> {
    match value {
        None => Ok(None),
        Some(v) => match v.as_str() {
            Some(s) => Ok(Some(s)),
            None => Err(Rejection::not_an_event(format!(
                "field `{name}` is {}, not a string",
                v.as_raw_str()
            ))),
        },
    }
}

/// The raw text of a value that was parsed from a borrowed `&'a str`.
fn borrowed_raw<'a>(value: &LazyValue<'a>) -> Result<&'a str, Rejection> {
    match value.as_raw_cow() {
        Cow::Borrowed(s) => Ok(s),
        Cow::Owned(_) => Err(Rejection::invalid(
            "value was not read from a borrowed buffer",
        )),
    }
}

fn array_items<'a>(value: &LazyValue<'a>, name: &str) -> Result<Vec<LazyValue<'a>>, Rejection> {
    sonic_rs::from_str::<Vec<LazyValue<'a>>>(borrowed_raw(value)?).map_err(|_| Rejection {
        reason: crate::error::SkipReason::InvalidEnvelope,
        message: format!("field `{name}` is not an array"),
    })
}

fn required<'a>(value: Option<CowStr<'a>>, name: &str) -> Result<Str<'a>, Rejection> {
    value
        .map(|v| v.0)
        .ok_or_else(|| Rejection::invalid(format!("missing field `{name}`")))
}

fn text<'a>(value: Option<CowStr<'a>>) -> Str<'a> {
    value.map(|v| v.0).unwrap_or_default()
}

fn timestamp(value: Option<&CowStr<'_>>, name: &str) -> Result<Option<Timestamp>, Rejection> {
    match value {
        None => Ok(None),
        Some(CowStr(text)) => Timestamp::parse(text).map(Some).ok_or_else(|| {
            Rejection::invalid(format!("field `{name}`: {text:?} is not an RFC 3339 time"))
        }),
    }
}

fn user_info(user: WireUser<'_>) -> UserInfo<'_> {
    UserInfo {
        username: text(user.username),
        uid: text(user.uid),
        groups: user
            .groups
            .unwrap_or_default()
            .into_iter()
            .map(|g| g.0)
            .collect(),
        extra: user
            .extra
            .map(|pairs| {
                pairs
                    .0
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default().into_iter().map(|s| s.0).collect()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn raw(value: LazyValue<'_>) -> RawJson<'_> {
    RawJson(value.as_raw_cow())
}

fn build_event<'a>(
    w: Box<WireObject<'a>>,
    raw_text: &'a str,
) -> Result<Box<AuditEvent<'a>>, Rejection> {
    let w = *w;
    if let Some(kind) = string_field(w.kind.as_ref(), "kind")?
        && kind != "Event"
    {
        return Err(Rejection::not_an_event(format!(
            "kind {kind:?} is not Event"
        )));
    }
    let source_api_version =
        string_field(w.api_version.as_ref(), "apiVersion")?.map(|v| Cow::Owned(v.to_owned()));
    let level_text = required(w.level, "level")?;
    let level = Level::parse(&level_text).ok_or_else(|| {
        Rejection::invalid(format!("field `level`: unknown level {level_text:?}"))
    })?;
    let audit_id = required(w.audit_id, "auditID")?;
    let stage_text = required(w.stage, "stage")?;
    let stage = Stage::parse(&stage_text).ok_or_else(|| {
        Rejection::invalid(format!("field `stage`: unknown stage {stage_text:?}"))
    })?;

    let received = timestamp(
        w.request_received_timestamp.as_ref(),
        "requestReceivedTimestamp",
    )?;
    let stage_time = timestamp(w.stage_timestamp.as_ref(), "stageTimestamp")?;
    let legacy_received = timestamp(w.timestamp.as_ref(), "timestamp")?;
    let legacy_stage = timestamp(
        w.metadata
            .as_ref()
            .and_then(|m| m.creation_timestamp.as_ref()),
        "metadata.creationTimestamp",
    )?;

    let object_ref = w.object_ref.map(|r| {
        let mut api_group = text(r.api_group);
        let mut api_version = text(r.api_version);
        if api_group.is_empty()
            && let Some(slash) = api_version.rfind('/')
        {
            // v1alpha1: `apiVersion` is `group/version`.
            api_group = slice(&api_version, 0, slash);
            api_version = slice(&api_version, slash + 1, api_version.len());
        }
        ObjectReference {
            resource: text(r.resource),
            namespace: text(r.namespace),
            name: text(r.name),
            uid: text(r.uid),
            api_group,
            api_version,
            resource_version: text(r.resource_version),
            subresource: text(r.subresource),
        }
    });

    let mut event = Box::new(AuditEvent {
        source_api_version,
        level,
        audit_id,
        stage,
        request_uri: text(w.request_uri),
        verb: text(w.verb),
        user: w.user.map(user_info).unwrap_or_default(),
        impersonated_user: w.impersonated_user.map(user_info),
        authentication_metadata: w.authentication_metadata.map(|m| AuthenticationMetadata {
            impersonation_constraint: text(m.impersonation_constraint),
        }),
        source_ips: w
            .source_ips
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.0)
            .collect(),
        user_agent: w.user_agent.map(|s| s.0),
        object_ref,
        response_status: w.response_status.map(|s| ResponseStatus {
            status: text(s.status),
            message: text(s.message),
            reason: text(s.reason),
            details: s.details.map(raw),
            code: s.code,
        }),
        request_object: w.request_object.map(raw),
        response_object: w.response_object.map(raw),
        request_received_timestamp: received.or(legacy_received),
        stage_timestamp: stage_time.or(legacy_stage),
        annotations: w
            .annotations
            .map(|a| a.0.into_iter().map(|(k, v)| (k, v.0)).collect())
            .unwrap_or_default(),
        unknown_fields: w.unknown.into_iter().map(|(k, v)| (k, raw(v))).collect(),
        raw: RawJson(Cow::Borrowed(raw_text)),
        derived: Derived::default(),
    });
    event.derived = derive(&event);
    Ok(event)
}
