//! The fields a query can name: short names Kubernetes users expect (`user`, `ns`, `code`), the
//! full dotted audit field names (`user.username`, `objectRef.namespace`), and paths into bodies
//! and annotations. Each maps to a column of the store's `events` table (documented in
//! `docs/store-schema.md`), so user text never becomes a column name: only catalog entries do.

use crate::error::QueryError;

/// The type of a field, which decides how values and comparisons are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A string.
    Text,
    /// A list of strings (`groups`, `sourceIPs`): a term matches when any element does.
    List,
    /// An integer (`code`).
    Int,
    /// A duration in microseconds (`latency`); values are written `250ms`, `1.5s`, `2m`.
    Duration,
    /// A UTC time (`time`); values are RFC 3339.
    Time,
    /// `true` or `false`.
    Bool,
}

/// A column of the events table that queries may use.
#[derive(Debug, PartialEq, Eq)]
pub struct FieldDef {
    /// The canonical short name, as shown in output and docs.
    pub name: &'static str,
    /// The column in the store.
    pub column: &'static str,
    /// Its type.
    pub kind: FieldKind,
    /// Other names accepted for it, including the audit event's dotted field names.
    pub aliases: &'static [&'static str],
}

macro_rules! field {
    ($name:literal, $column:literal, $kind:ident, [$($alias:literal),*]) => {
        FieldDef { name: $name, column: $column, kind: FieldKind::$kind, aliases: &[$($alias),*] }
    };
}

/// Every queryable column.
pub static FIELDS: &[FieldDef] = &[
    field!(
        "time",
        "time",
        Time,
        ["timestamp", "requestReceivedTimestamp"]
    ),
    field!("stage_time", "stage_time", Time, ["stageTimestamp"]),
    field!("id", "audit_id", Text, ["auditID", "audit_id"]),
    field!("stage", "stage", Text, []),
    field!("level", "level", Text, []),
    field!("verb", "verb", Text, []),
    field!("user", "user", Text, ["user.username", "username"]),
    field!("user_uid", "user_uid", Text, ["user.uid"]),
    field!("group", "user_groups", List, ["groups", "user.groups"]),
    field!("user_kind", "user_kind", Text, ["userkind"]),
    field!(
        "as",
        "impersonated_user",
        Text,
        ["impersonatedUser.username", "impersonated_user"]
    ),
    field!("effective_user", "effective_user", Text, ["euser"]),
    field!(
        "sa",
        "service_account",
        Text,
        ["serviceaccount", "service_account"]
    ),
    field!("ip", "source_ips", List, ["sourceIPs", "source_ip"]),
    field!("ua", "user_agent", Text, ["userAgent", "user_agent"]),
    field!("client", "client", Text, []),
    field!(
        "apigroup",
        "api_group",
        Text,
        ["objectRef.apiGroup", "api_group"]
    ),
    field!(
        "apiversion",
        "api_version",
        Text,
        ["objectRef.apiVersion", "api_version"]
    ),
    field!("resource", "resource", Text, ["objectRef.resource"]),
    field!(
        "subresource",
        "subresource",
        Text,
        ["objectRef.subresource"]
    ),
    field!("resource_key", "resource_key", Text, ["resourcekey"]),
    field!(
        "ns",
        "namespace",
        Text,
        ["namespace", "objectRef.namespace"]
    ),
    field!("name", "name", Text, ["objectRef.name"]),
    field!("object_uid", "object_uid", Text, ["objectRef.uid"]),
    field!("uri", "request_uri", Text, ["requestURI", "request_uri"]),
    field!("path", "path", Text, []),
    field!("code", "code", Int, ["responseStatus.code", "status_code"]),
    field!(
        "status_reason",
        "status_reason",
        Text,
        ["responseStatus.reason"]
    ),
    field!(
        "message",
        "status_message",
        Text,
        ["responseStatus.message", "status_message"]
    ),
    field!("decision", "decision", Text, ["authorization.decision"]),
    field!(
        "reason",
        "authz_reason",
        Text,
        ["authorization.reason", "authz_reason"]
    ),
    field!("latency", "latency_us", Duration, ["latency_us"]),
    field!("mutating", "mutating", Bool, []),
    field!("cluster", "cluster", Text, []),
];

/// The columns holding JSON that paths can reach into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonColumn {
    /// `requestObject`.
    RequestObject,
    /// `responseObject`.
    ResponseObject,
    /// `annotations`: the rest of the name is one key, dots and slashes included.
    Annotations,
}

impl JsonColumn {
    /// The column in the store. Request bodies have their own (searching them then decompresses
    /// a few percent of the data instead of every event); response bodies are read from the
    /// complete event, because list responses can be the largest part of the data and a second
    /// copy would double it.
    pub const fn column(self) -> &'static str {
        match self {
            JsonColumn::RequestObject => "request_object",
            JsonColumn::ResponseObject => "event",
            JsonColumn::Annotations => "annotations",
        }
    }

    /// The dotted path of `path` (below this JSON) inside [`column`](Self::column): a response
    /// body lies under `responseObject` in the event.
    pub fn path_in_column(self, path: &[String]) -> String {
        match self {
            JsonColumn::ResponseObject => std::iter::once(self.prefix())
                .chain(path.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join("."),
            JsonColumn::RequestObject | JsonColumn::Annotations => path.join("."),
        }
    }

    /// The prefix users write.
    pub const fn prefix(self) -> &'static str {
        match self {
            JsonColumn::RequestObject => "requestObject",
            JsonColumn::ResponseObject => "responseObject",
            JsonColumn::Annotations => "annotations",
        }
    }
}

/// A field a query names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A catalog column.
    Column(&'static FieldDef),
    /// A path into a JSON column: `requestObject.spec.containers.securityContext.privileged`
    /// (arrays are searched element by element), an annotation key, or a whole body
    /// (`requestObject`, with an empty path), whose text a search looks in.
    Json {
        /// The column.
        column: JsonColumn,
        /// The path below it (for annotations, one key; empty for a whole body).
        path: Vec<String>,
    },
}

impl Field {
    /// Resolves a name written in a query at `position`.
    pub fn resolve(name: &str, position: usize) -> Result<Field, QueryError> {
        if let Some(def) = FIELDS
            .iter()
            .find(|f| f.name == name || f.aliases.contains(&name))
        {
            return Ok(Field::Column(def));
        }
        for column in [JsonColumn::RequestObject, JsonColumn::ResponseObject] {
            if name == column.prefix() {
                return Ok(Field::Json {
                    column,
                    path: Vec::new(),
                });
            }
        }
        for column in [
            JsonColumn::RequestObject,
            JsonColumn::ResponseObject,
            JsonColumn::Annotations,
        ] {
            if let Some(rest) = name
                .strip_prefix(column.prefix())
                .and_then(|r| r.strip_prefix('.'))
                && !rest.is_empty()
            {
                let path = match column {
                    JsonColumn::Annotations => vec![rest.to_owned()],
                    _ => rest.split('.').map(str::to_owned).collect(),
                };
                return Ok(Field::Json { column, path });
            }
        }
        let suggestion = closest(name)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        Err(QueryError::at(
            position,
            format!(
                "unknown field `{name}`{suggestion} (fields: {}; or requestObject[.…], responseObject[.…], annotations.…)",
                FIELDS.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
            ),
        ))
    }

    /// Whether exact values of the field can be looked up in a set ([`crate::Expr::In`]): a
    /// text or list column, or an annotation (body paths hold many values of any type).
    pub fn is_set_searchable(&self) -> bool {
        match self {
            Field::Column(def) => matches!(def.kind, FieldKind::Text | FieldKind::List),
            Field::Json { column, .. } => *column == JsonColumn::Annotations,
        }
    }

    /// The field's type; paths into JSON are text.
    pub fn kind(&self) -> FieldKind {
        match self {
            Field::Column(def) => def.kind,
            Field::Json { .. } => FieldKind::Text,
        }
    }

    /// The name used in output.
    pub fn display_name(&self) -> String {
        match self {
            Field::Column(def) => def.name.to_owned(),
            Field::Json { column, path } if path.is_empty() => column.prefix().to_owned(),
            Field::Json { column, path } => format!("{}.{}", column.prefix(), path.join(".")),
        }
    }
}

/// The catalog name closest to `name` by edit distance, when close enough to be a typo.
fn closest(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    FIELDS
        .iter()
        .flat_map(|f| std::iter::once(f.name).chain(f.aliases.iter().copied()))
        .map(|candidate| {
            (
                edit_distance(&lower, &candidate.to_ascii_lowercase()),
                candidate,
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            current[j + 1] = (previous[j] + usize::from(ca != *cb))
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Parses a duration: `250ms`, `1.5s`, `2m`, `1h`, `500us`; a bare number is seconds.
pub fn parse_duration_micros(text: &str) -> Option<i64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1e6,
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "m" => 60e6,
        "h" => 3600e6,
        "d" => 86400e6,
        _ => return None,
    };
    Some((value * scale).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_dotted_names() {
        assert_eq!(
            Field::resolve("ns", 0).unwrap(),
            Field::resolve("objectRef.namespace", 0).unwrap()
        );
        assert_eq!(
            Field::resolve("annotations.authorization.k8s.io/decision", 0).unwrap(),
            Field::Json {
                column: JsonColumn::Annotations,
                path: vec!["authorization.k8s.io/decision".into()]
            }
        );
    }

    #[test]
    fn typos_get_a_suggestion() {
        let e = Field::resolve("verbb", 3).unwrap_err();
        assert_eq!(e.position, 3);
        assert!(
            e.message
                .starts_with("unknown field `verbb`; did you mean `verb`?"),
            "{}",
            e.message
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_micros("1s"), Some(1_000_000));
        assert_eq!(parse_duration_micros("250ms"), Some(250_000));
        assert_eq!(parse_duration_micros("1.5s"), Some(1_500_000));
        assert_eq!(parse_duration_micros("2m"), Some(120_000_000));
        assert_eq!(parse_duration_micros("3"), Some(3_000_000));
        assert_eq!(parse_duration_micros("fast"), None);
    }
}
