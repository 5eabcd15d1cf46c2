//! The `events` table: one row per audit event (per stage), flat columns for everything people
//! filter and group on, and the complete original event. This is a public interface — people
//! open the Parquet files with DuckDB or Spark — documented in `docs/store-schema.md`; change
//! both together.
//!
//! Text columns are never null (absent is `''`) so that negated searches mean what users expect;
//! numbers that can be absent (`code`, `latency_us`) are nullable.

use std::fmt::Write;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BooleanBuilder, Int32Builder, Int64Builder,
    ListBuilder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use kubetrail_event::{AuditEvent, DecodeOptions, Decoded, Decoder, InputFormat, Str};

/// Text columns, in table order after `time` and `stage_time`.
const TEXT_COLUMNS: &[&str] = &[
    "audit_id",
    "stage",
    "level",
    "verb",
    "user",
    "user_uid",
    "user_kind",
    "impersonated_user",
    "effective_user",
    "service_account",
    "user_agent",
    "client",
    "api_group",
    "api_version",
    "resource",
    "subresource",
    "resource_key",
    "namespace",
    "name",
    "object_uid",
    "request_uri",
    "path",
    "status_reason",
    "status_message",
    "decision",
    "authz_reason",
    "cluster",
    "source_api_version",
    "annotations",
    "request_object",
    "event",
];

/// The columns holding JSON documents searched as text: the complete event and its request body.
pub(crate) const BODY_TEXT_COLUMNS: [&str; 2] = ["event", "request_object"];

/// The table's schema.
pub fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let time = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let list = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        let mut fields = vec![
            Field::new("time", time.clone(), false),
            Field::new("stage_time", time, true),
        ];
        fields.extend(
            TEXT_COLUMNS
                .iter()
                .map(|name| Field::new(*name, DataType::Utf8, false)),
        );
        fields.push(Field::new("user_groups", list.clone(), false));
        fields.push(Field::new("source_ips", list, false));
        fields.push(Field::new("code", DataType::Int32, true));
        fields.push(Field::new("latency_us", DataType::Int64, true));
        fields.push(Field::new("mutating", DataType::Boolean, false));
        Arc::new(Schema::new(fields))
    });
    SCHEMA.clone()
}

/// The schema the `events` table is read with: the written schema ([`schema`]), except that
/// the complete original `event` and the request body are read as `Utf8View`, pointing into the
/// decompressed Parquet page instead of copying a kilobyte per row into a new buffer (a third of
/// a free-text scan). The other text columns stay `Utf8`, which every caller reads as plain
/// strings.
pub fn table_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> =
        LazyLock::new(|| with_text_as_views(|name| BODY_TEXT_COLUMNS.contains(&name)));
    SCHEMA.clone()
}

/// The schema of `events_view`: the same files and columns, with the text columns read as
/// `Utf8View`. A view points into the Parquet page (a dictionary page, for the repetitive
/// columns) instead of copying every string out of it, which halves a scan that filters and
/// groups millions of rows on text columns; results must be cast back to `Utf8` where callers
/// read them as plain strings.
pub fn view_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| with_text_as_views(|_| true));
    SCHEMA.clone()
}

/// [`schema`] with the text columns `as_view` picks read as `Utf8View`.
fn with_text_as_views(as_view: impl Fn(&str) -> bool) -> SchemaRef {
    let fields: Vec<Field> = schema()
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Utf8 if as_view(field.name()) => {
                field.as_ref().clone().with_data_type(DataType::Utf8View)
            }
            _ => field.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// How much each growing buffer of a finished batch held per row. A builder made from it
/// allocates its buffers once instead of doubling them as rows arrive: doubling copied
/// everything so far each time (for the `event` column, up to a hundred megabytes per batch)
/// and was about a tenth of the writer thread's time.
#[derive(Debug, Clone)]
pub struct BatchSizes {
    rows: usize,
    text_bytes: Vec<usize>,
    group_values: usize,
    group_bytes: usize,
    ip_values: usize,
    ip_bytes: usize,
}

impl BatchSizes {
    /// Rows the sizes were measured on.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// Accumulates events into a record batch of the `events` schema.
pub struct EventBatchBuilder {
    time: TimestampMicrosecondBuilder,
    stage_time: TimestampMicrosecondBuilder,
    text: Vec<StringBuilder>,
    user_groups: ListBuilder<StringBuilder>,
    source_ips: ListBuilder<StringBuilder>,
    code: Int32Builder,
    latency_us: Int64Builder,
    mutating: BooleanBuilder,
    /// Reused for the annotations' JSON text, so an event costs no allocation for it.
    scratch: Vec<u8>,
}

impl Default for EventBatchBuilder {
    fn default() -> Self {
        EventBatchBuilder {
            time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            stage_time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            text: TEXT_COLUMNS.iter().map(|_| StringBuilder::new()).collect(),
            user_groups: ListBuilder::new(StringBuilder::new()),
            source_ips: ListBuilder::new(StringBuilder::new()),
            code: Int32Builder::new(),
            latency_us: Int64Builder::new(),
            mutating: BooleanBuilder::new(),
            scratch: Vec::new(),
        }
    }
}

/// The text columns formatted into their builders rather than copied from a borrowed value.
const SERVICE_ACCOUNT: usize = text_column("service_account");
const CLIENT: usize = text_column("client");

/// The position of a text column, checked when compiling.
const fn text_column(name: &str) -> usize {
    let mut index = 0;
    while index < TEXT_COLUMNS.len() {
        if TEXT_COLUMNS[index].len() == name.len() {
            let (a, b) = (TEXT_COLUMNS[index].as_bytes(), name.as_bytes());
            let mut i = 0;
            while i < a.len() && a[i] == b[i] {
                i += 1;
            }
            if i == a.len() {
                return index;
            }
        }
        index += 1;
    }
    panic!("not a text column")
}

impl EventBatchBuilder {
    /// A builder whose buffers hold `rows` rows the size of those `like` measured, plus an
    /// eighth for variation.
    pub fn with_capacity(rows: usize, like: &BatchSizes) -> Self {
        let scale = |bytes: usize| {
            let per_row = bytes as f64 / like.rows.max(1) as f64;
            (per_row * rows as f64 * 1.125) as usize
        };
        let list = |values: usize, bytes: usize| {
            ListBuilder::with_capacity(
                StringBuilder::with_capacity(scale(values), scale(bytes)),
                rows,
            )
        };
        EventBatchBuilder {
            time: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            stage_time: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            text: like
                .text_bytes
                .iter()
                .map(|bytes| StringBuilder::with_capacity(rows, scale(*bytes)))
                .collect(),
            user_groups: list(like.group_values, like.group_bytes),
            source_ips: list(like.ip_values, like.ip_bytes),
            code: Int32Builder::with_capacity(rows),
            latency_us: Int64Builder::with_capacity(rows),
            mutating: BooleanBuilder::with_capacity(rows),
            scratch: Vec::new(),
        }
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.time.len()
    }

    /// True before the first row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the rows so far hold, to size the next builder with.
    pub fn sizes(&mut self) -> BatchSizes {
        BatchSizes {
            rows: self.len(),
            text_bytes: self.text.iter().map(|b| b.values_slice().len()).collect(),
            group_values: self.user_groups.values().len(),
            group_bytes: self.user_groups.values().values_slice().len(),
            ip_values: self.source_ips.values().len(),
            ip_bytes: self.source_ips.values().values_slice().len(),
        }
    }

    /// Adds one event; `time` is the event's time (received, else stage, else ingest time).
    pub fn append(&mut self, event: &AuditEvent<'_>, cluster: &str, time_micros: i64) {
        let d = &event.derived;
        let object = event.object_ref.as_ref();
        let status = event.response_status.as_ref();
        // Writing to a string builder cannot fail: it only extends its buffer.
        if let Some((ns, name)) = &d.service_account {
            let builder = &mut self.text[SERVICE_ACCOUNT];
            for piece in [ns.as_ref(), ":", name.as_ref()] {
                let _ = builder.write_str(piece);
            }
        }
        let _ = d.client.write_to(&mut self.text[CLIENT]);
        write_annotations_json(&mut self.scratch, &event.annotations);
        let annotations = std::str::from_utf8(&self.scratch).unwrap_or("{}");
        let values: [&str; TEXT_COLUMNS.len()] = [
            &event.audit_id,
            event.stage.as_str(),
            event.level.as_str(),
            &event.verb,
            &event.user.username,
            &event.user.uid,
            d.user_kind.as_str(),
            event
                .impersonated_user
                .as_ref()
                .map_or("", |u| u.username.as_ref()),
            &d.effective_user,
            "",
            event.user_agent.as_deref().unwrap_or(""),
            "",
            object.map_or("", |o| o.api_group.as_ref()),
            object.map_or("", |o| o.api_version.as_ref()),
            object.map_or("", |o| o.resource.as_ref()),
            object.map_or("", |o| o.subresource.as_ref()),
            d.resource_key.as_deref().unwrap_or(""),
            object.map_or("", |o| o.namespace.as_ref()),
            object.map_or("", |o| o.name.as_ref()),
            object.map_or("", |o| o.uid.as_ref()),
            &event.request_uri,
            &d.path,
            status.map_or("", |s| s.reason.as_ref()),
            status.map_or("", |s| s.message.as_ref()),
            d.decision.as_deref().unwrap_or(""),
            d.authorization_reason.as_deref().unwrap_or(""),
            cluster,
            event.source_api_version.as_deref().unwrap_or(""),
            annotations,
            event
                .request_object
                .as_ref()
                .map_or("", |body| body.as_str()),
            event.raw.as_str(),
        ];
        for (builder, value) in self.text.iter_mut().zip(values) {
            builder.append_value(value);
        }
        self.time.append_value(time_micros);
        self.stage_time
            .append_option(event.stage_timestamp.map(|t| t.as_micros()));
        for group in &event.user.groups {
            self.user_groups.values().append_value(group);
        }
        self.user_groups.append(true);
        for ip in &event.source_ips {
            self.source_ips.values().append_value(ip);
        }
        self.source_ips.append(true);
        self.code.append_option(event.code());
        self.latency_us.append_option(d.latency_micros);
        self.mutating.append_value(d.mutating);
    }

    /// The rows so far as a record batch; the builder starts over.
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.stage_time.finish()),
        ];
        columns.extend(
            self.text
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.user_groups.finish()));
        columns.push(Arc::new(self.source_ips.finish()));
        columns.push(Arc::new(self.code.finish()));
        columns.push(Arc::new(self.latency_us.finish()));
        columns.push(Arc::new(self.mutating.finish()));
        RecordBatch::try_new(schema(), columns).expect("builders follow the schema")
    }
}

/// Decodes one stored event (an `event` value or a WAL record: one JSON object as received) and
/// hands it to `read`; None when the text holds no event.
pub(crate) fn read_stored_event<R>(
    json: &[u8],
    read: impl FnOnce(&AuditEvent<'_>) -> R,
) -> Option<R> {
    let mut read = Some(read);
    let mut result = None;
    let mut take = |decoded: Decoded<'_>| {
        if let Decoded::Event(event, _) = decoded
            && let Some(read) = read.take()
        {
            result = Some(read(&event));
        }
    };
    let mut decoder = Decoder::new(DecodeOptions {
        format: Some(InputFormat::Json),
        ..DecodeOptions::default()
    });
    decoder.feed(json, &mut take);
    decoder.finish(&mut take);
    result
}

/// A batch read from a segment written before the table had its `request_object` column,
/// brought to the current schema with the request bodies taken from the stored events (which
/// compaction then writes out); a batch of the current schema is returned as it is. The table
/// reads such segments with NULL request bodies until they are merged.
pub(crate) fn upgrade(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    if batch.schema().column_with_name("request_object").is_some() {
        return Ok(batch);
    }
    let current = schema();
    let missing = |name: &str| ArrowError::SchemaError(format!("segment has no column {name}"));
    let events = batch
        .column_by_name("event")
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| missing("event"))?;
    let mut bodies = StringBuilder::with_capacity(events.len(), 0);
    for event in events.iter() {
        let body = read_stored_event(event.unwrap_or_default().as_bytes(), |e| {
            e.request_object.as_ref().map(|b| b.as_str().to_owned())
        });
        bodies.append_value(body.flatten().as_deref().unwrap_or(""));
    }
    let mut bodies = Some(Arc::new(bodies.finish()) as ArrayRef);
    let columns = current
        .fields()
        .iter()
        .map(|field| match field.name().as_str() {
            "request_object" => bodies.take().ok_or_else(|| missing("request_object")),
            name => batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| missing(name)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(current, columns)
}

/// Writes the annotations as a JSON object text (`{}` when none) into `out`, in the order
/// recorded; a key given twice keeps its first place and its last value, as a JSON object
/// parsed in order does.
fn write_annotations_json(out: &mut Vec<u8>, annotations: &[(Str<'_>, Str<'_>)]) {
    out.clear();
    out.push(b'{');
    let mut first = true;
    for (index, (key, _)) in annotations.iter().enumerate() {
        if annotations[..index]
            .iter()
            .any(|(earlier, _)| earlier == key)
        {
            continue;
        }
        let value = annotations
            .iter()
            .rev()
            .find_map(|(k, v)| (k == key).then_some(v))
            .unwrap_or(key);
        if !first {
            out.push(b',');
        }
        first = false;
        // Serializing a string into a vector cannot fail.
        let _ = serde_json::to_writer(&mut *out, key.as_ref());
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, value.as_ref());
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use arrow::array::AsArray;
    use kubetrail_event::{DecodeOptions, Decoded, Decoder};

    use super::{EventBatchBuilder, schema, upgrade, write_annotations_json};

    #[test]
    fn segments_without_request_bodies_get_them_from_the_stored_events() {
        let log = concat!(
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns/configmaps","verb":"create","user":{"username":"u"},"objectRef":{"resource":"configmaps","namespace":"ns"},"requestObject":{"data": {"k" : "debug-tools"}},"requestReceivedTimestamp":"2026-03-02T08:00:00.000000Z"}"#,
            "\n",
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a2","stage":"ResponseComplete","requestURI":"/api/v1/pods","verb":"list","user":{"username":"u"},"requestObject":null,"requestReceivedTimestamp":"2026-03-02T08:00:01.000000Z"}"#,
            "\n"
        );
        let mut builder = EventBatchBuilder::default();
        let mut take = |decoded: Decoded<'_>| {
            if let Decoded::Event(event, _) = decoded {
                builder.append(&event, "c", 0);
            }
        };
        let mut decoder = Decoder::new(DecodeOptions::default());
        decoder.feed(log.as_bytes(), &mut take);
        decoder.finish(&mut take);
        let current = builder.finish();
        let bodies = current["request_object"].as_string::<i32>();
        assert_eq!(bodies.value(0), r#"{"data": {"k" : "debug-tools"}}"#);
        assert_eq!(bodies.value(1), "");

        let old_columns: Vec<usize> = (0..current.num_columns())
            .filter(|&i| current.schema().field(i).name() != "request_object")
            .collect();
        let old = current.project(&old_columns).unwrap();
        assert_eq!(upgrade(old).unwrap(), current);
        assert_eq!(upgrade(current.clone()).unwrap(), current);
    }

    #[test]
    fn annotations_are_a_json_object_in_recorded_order() {
        let mut out = Vec::new();
        write_annotations_json(&mut out, &[]);
        assert_eq!(out, b"{}");
        let annotations = [
            (Cow::from("z"), Cow::from("first \"quoted\"\n")),
            (Cow::from("a"), Cow::from("x")),
            (Cow::from("z"), Cow::from("last")),
        ];
        write_annotations_json(&mut out, &annotations);
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(text, r#"{"z":"last","a":"x"}"#);
        let mut out = Vec::new();
        write_annotations_json(&mut out, &annotations[..2]);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["z"], "first \"quoted\"\n");
    }

    #[test]
    fn every_query_field_is_a_column() {
        let schema = schema();
        for field in kubetrail_query::FIELDS {
            assert!(
                schema.field_with_name(field.column).is_ok(),
                "query field {} has no column {}",
                field.name,
                field.column
            );
        }
        assert!(schema.field_with_name("event").is_ok());
    }
}
