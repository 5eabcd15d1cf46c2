//! The JSON wire form: one pass over a top-level JSON object that captures every audit event
//! field of every version (v1, v1beta1, v1alpha1) and keeps everything else as raw JSON text.
//!
//! The same object may turn out to be an event, an `EventList`, an Azure diagnostic record or a
//! Docker json-file log line; [`WireObject::classify`] decides from the keys it found, so a
//! document is read once whatever it is. Nested objects use serde derives and ignore keys they do
//! not know (the event's raw text keeps them).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use sonic_rs::LazyValue;

/// A string that borrows from the input when it has no escapes.
#[derive(Debug, Clone, Default)]
pub(crate) struct CowStr<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CowStrVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for CowStrVisitor<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(CowStrVisitor(std::marker::PhantomData))
    }
}

/// A JSON object read into an ordered list of pairs (annotations, `user.extra`), keys borrowed
/// from the input.
#[derive(Debug, Default)]
pub(crate) struct BorrowedPairs<'a, V>(pub Vec<(Cow<'a, str>, V)>);

impl<'de: 'a, 'a, V: Deserialize<'de>> Deserialize<'de> for BorrowedPairs<'a, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor<'a, V>(std::marker::PhantomData<(&'a (), V)>);
        impl<'de: 'a, 'a, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<'a, V> {
            type Value = BorrowedPairs<'a, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(key) = map.next_key::<CowStr<'a>>()? {
                    pairs.push((key.0, map.next_value::<V>()?));
                }
                Ok(BorrowedPairs(pairs))
            }
        }
        deserializer.deserialize_map(PairsVisitor(std::marker::PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct WireUser<'a> {
    #[serde(borrow)]
    pub username: Option<CowStr<'a>>,
    #[serde(borrow)]
    pub uid: Option<CowStr<'a>>,
    #[serde(borrow)]
    pub groups: Option<Vec<CowStr<'a>>>,
    #[serde(borrow)]
    pub extra: Option<BorrowedPairs<'a, Option<Vec<CowStr<'a>>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct WireAuthenticationMetadata<'a> {
    #[serde(borrow)]
    pub impersonation_constraint: Option<CowStr<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct WireObjectReference<'a> {
    #[serde(borrow)]
    pub resource: Option<CowStr<'a>>,
    #[serde(borrow)]
    pub namespace: Option<CowStr<'a>>,
    #[serde(borrow)]
    pub name: Option<CowStr<'a>>,
    #[serde(borrow)]
    pub uid: Option<CowStr<'a>>,
    #[serde(borrow)]
    pub api_group: Option<CowStr<'a>>,
    #[serde(borrow)]
    pub api_version: Option<CowStr<'a>>,
    #[serde(borrow)]
    pub resource_version: Option<CowStr<'a>>,
    #[serde(borrow)]
    pub subresource: Option<CowStr<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct WireResponseStatus<'a> {
    #[serde(borrow)]
    pub status: Option<CowStr<'a>>,
    #[serde(borrow)]
    pub message: Option<CowStr<'a>>,
    #[serde(borrow)]
    pub reason: Option<CowStr<'a>>,
    #[serde(borrow)]
    pub details: Option<LazyValue<'a>>,
    pub code: Option<i32>,
}

/// v1beta1/v1alpha1 `metadata` (an ObjectMeta of which only `creationTimestamp` is ever set).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct WireObjectMeta<'a> {
    #[serde(borrow)]
    pub creation_timestamp: Option<CowStr<'a>>,
}

/// One top-level JSON object with every audit event field captured.
#[derive(Debug, Default)]
pub(crate) struct WireObject<'a> {
    pub kind: Option<LazyValue<'a>>,
    pub api_version: Option<LazyValue<'a>>,
    pub metadata: Option<WireObjectMeta<'a>>,
    pub timestamp: Option<CowStr<'a>>,
    pub level: Option<CowStr<'a>>,
    pub audit_id: Option<CowStr<'a>>,
    pub stage: Option<CowStr<'a>>,
    pub request_uri: Option<CowStr<'a>>,
    pub verb: Option<CowStr<'a>>,
    pub user: Option<WireUser<'a>>,
    pub impersonated_user: Option<WireUser<'a>>,
    pub authentication_metadata: Option<WireAuthenticationMetadata<'a>>,
    pub source_ips: Option<Vec<CowStr<'a>>>,
    pub user_agent: Option<CowStr<'a>>,
    pub object_ref: Option<WireObjectReference<'a>>,
    pub response_status: Option<WireResponseStatus<'a>>,
    pub request_object: Option<LazyValue<'a>>,
    pub response_object: Option<LazyValue<'a>>,
    pub request_received_timestamp: Option<CowStr<'a>>,
    pub stage_timestamp: Option<CowStr<'a>>,
    pub annotations: Option<BorrowedPairs<'a, CowStr<'a>>>,
    pub unknown: Vec<(Cow<'a, str>, LazyValue<'a>)>,
}

/// The key under which `kubetrail cat --derived` writes derived fields. It is dropped on input:
/// derived fields are always recomputed, never trusted from a file.
pub(crate) const DERIVED_KEY: &str = "_kubetrail";

/// A boxed [`WireObject`]: the object is filled in place on the heap, because moving a
/// kilobyte-sized struct through the deserializer's return paths cost a tenth of parse time.
pub(crate) struct BoxedWireObject<'a>(pub Box<WireObject<'a>>);

impl<'de> Deserialize<'de> for BoxedWireObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(WireObjectVisitor)
    }
}

struct WireObjectVisitor;

/// Reads the value of a known field, naming the field in the error.
fn field<'de, A, T>(map: &mut A, name: &str) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    map.next_value::<T>()
        .map_err(|e| de::Error::custom(format_args!("field `{name}`: {e}")))
}

impl<'de> Visitor<'de> for WireObjectVisitor {
    type Value = BoxedWireObject<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut w = Box::<WireObject<'de>>::default();
        while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
            match key.as_ref() {
                "kind" => w.kind = Some(field(&mut map, "kind")?),
                "apiVersion" => w.api_version = Some(field(&mut map, "apiVersion")?),
                "metadata" => w.metadata = field(&mut map, "metadata")?,
                "timestamp" => w.timestamp = field(&mut map, "timestamp")?,
                "level" => w.level = field(&mut map, "level")?,
                "auditID" => w.audit_id = field(&mut map, "auditID")?,
                "stage" => w.stage = field(&mut map, "stage")?,
                "requestURI" => w.request_uri = field(&mut map, "requestURI")?,
                "verb" => w.verb = field(&mut map, "verb")?,
                "user" => w.user = field(&mut map, "user")?,
                "impersonatedUser" => w.impersonated_user = field(&mut map, "impersonatedUser")?,
                "authenticationMetadata" => {
                    w.authentication_metadata = field(&mut map, "authenticationMetadata")?
                }
                "sourceIPs" => w.source_ips = field(&mut map, "sourceIPs")?,
                "userAgent" => w.user_agent = field(&mut map, "userAgent")?,
                "objectRef" => w.object_ref = field(&mut map, "objectRef")?,
                "responseStatus" => w.response_status = field(&mut map, "responseStatus")?,
                "requestObject" => w.request_object = non_null(field(&mut map, "requestObject")?),
                "responseObject" => {
                    w.response_object = non_null(field(&mut map, "responseObject")?)
                }
                "requestReceivedTimestamp" => {
                    w.request_received_timestamp = field(&mut map, "requestReceivedTimestamp")?
                }
                "stageTimestamp" => w.stage_timestamp = field(&mut map, "stageTimestamp")?,
                "annotations" => w.annotations = field(&mut map, "annotations")?,
                DERIVED_KEY => {
                    map.next_value::<de::IgnoredAny>()?;
                }
                _ => {
                    let value = map.next_value::<LazyValue<'de>>()?;
                    w.unknown.push((key, value));
                }
            }
        }
        Ok(BoxedWireObject(w))
    }
}

fn non_null(value: LazyValue<'_>) -> Option<LazyValue<'_>> {
    (value.as_raw_str() != "null").then_some(value)
}

impl<'a> WireObject<'a> {
    /// An unknown top-level field's value.
    pub fn unknown(&self, key: &str) -> Option<&LazyValue<'a>> {
        self.unknown.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}
