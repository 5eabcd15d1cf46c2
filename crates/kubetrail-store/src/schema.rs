//! The `events` table: one row per audit event (per stage), flat columns for everything people
//! filter and group on, and the complete original event. This is a public interface — people
//! open the Parquet files with DuckDB or Spark — documented in `docs/store-schema.md`; change
//! both together.
//!
//! Text columns are never null (absent is `''`) so that negated searches mean what users expect;
//! numbers that can be absent (`code`, `latency_us`) are nullable.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use kubetrail_event::AuditEvent;

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
    "event",
];

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

/// The schema of `events_view`: the same files and columns, with the text columns read as
/// `Utf8View`. A view points into the Parquet page (a dictionary page, for the repetitive
/// columns) instead of copying every string out of it, which halves a scan that filters and
/// groups millions of rows on text columns; results must be cast back to `Utf8` where callers
/// read them as plain strings.
pub fn view_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let fields: Vec<Field> = schema()
            .fields()
            .iter()
            .map(|field| match field.data_type() {
                DataType::Utf8 => field.as_ref().clone().with_data_type(DataType::Utf8View),
                _ => field.as_ref().clone(),
            })
            .collect();
        Arc::new(Schema::new(fields))
    });
    SCHEMA.clone()
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
        }
    }
}

impl EventBatchBuilder {
    /// Adds one event; `time` is the event's time (received, else stage, else ingest time).
    pub fn append(&mut self, event: &AuditEvent<'_>, cluster: &str, time_micros: i64) {
        let d = &event.derived;
        let object = event.object_ref.as_ref();
        let status = event.response_status.as_ref();
        let service_account = d
            .service_account
            .as_ref()
            .map(|(ns, name)| format!("{ns}:{name}"))
            .unwrap_or_default();
        let client = d.client.to_string();
        let annotations = annotations_json(event);
        let values: [&str; 30] = [
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
            &service_account,
            event.user_agent.as_deref().unwrap_or(""),
            &client,
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
            &annotations,
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

/// The annotations as a JSON object text (`{}` when none), in the order recorded.
fn annotations_json(event: &AuditEvent<'_>) -> String {
    if event.annotations.is_empty() {
        return "{}".to_owned();
    }
    let map: serde_json::Map<String, serde_json::Value> = event
        .annotations
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::schema;

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
