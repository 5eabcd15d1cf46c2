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

/// The columns of [`FIELDS`], for code that reads a column's value from an event: a match on
/// this is exhaustive (a column added to the catalog without a reader does not compile) and
/// costs a jump, where a match on the column's name compares strings on every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// `time`.
    Time,
    /// `stage_time`.
    StageTime,
    /// `audit_id`.
    AuditId,
    /// `stage`.
    Stage,
    /// `level`.
    Level,
    /// `verb`.
    Verb,
    /// `user`.
    User,
    /// `user_uid`.
    UserUid,
    /// `user_groups`.
    UserGroups,
    /// `user_kind`.
    UserKind,
    /// `impersonated_user`.
    ImpersonatedUser,
    /// `effective_user`.
    EffectiveUser,
    /// `service_account`.
    ServiceAccount,
    /// `source_ips`.
    SourceIps,
    /// `user_agent`.
    UserAgent,
    /// `client`.
    Client,
    /// `api_group`.
    ApiGroup,
    /// `api_version`.
    ApiVersion,
    /// `resource`.
    Resource,
    /// `subresource`.
    Subresource,
    /// `resource_key`.
    ResourceKey,
    /// `namespace`.
    Namespace,
    /// `name`.
    Name,
    /// `object_uid`.
    ObjectUid,
    /// `request_uri`.
    RequestUri,
    /// `path`.
    Path,
    /// `code`.
    Code,
    /// `status_reason`.
    StatusReason,
    /// `status_message`.
    StatusMessage,
    /// `decision`.
    Decision,
    /// `authz_reason`.
    AuthzReason,
    /// `latency_us`.
    LatencyUs,
    /// `mutating`.
    Mutating,
    /// `cluster`.
    Cluster,
}

/// A column of the events table that queries may use.
#[derive(Debug, PartialEq, Eq)]
pub struct FieldDef {
    /// Which column.
    pub id: Column,
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
    ($id:ident, $name:literal, $column:literal, $kind:ident, [$($alias:literal),*]) => {
        FieldDef {
            id: Column::$id,
            name: $name,
            column: $column,
            kind: FieldKind::$kind,
            aliases: &[$($alias),*],
        }
    };
}

/// Every queryable column.
pub static FIELDS: &[FieldDef] = &[
    field!(
        Time,
        "time",
        "time",
        Time,
        ["timestamp", "requestReceivedTimestamp"]
    ),
    field!(
        StageTime,
        "stage_time",
        "stage_time",
        Time,
        ["stageTimestamp"]
    ),
    field!(AuditId, "id", "audit_id", Text, ["auditID", "audit_id"]),
    field!(Stage, "stage", "stage", Text, []),
    field!(Level, "level", "level", Text, []),
    field!(Verb, "verb", "verb", Text, []),
    field!(User, "user", "user", Text, ["user.username", "username"]),
    field!(UserUid, "user_uid", "user_uid", Text, ["user.uid"]),
    field!(
        UserGroups,
        "group",
        "user_groups",
        List,
        ["groups", "user.groups"]
    ),
    field!(UserKind, "user_kind", "user_kind", Text, ["userkind"]),
    field!(
        ImpersonatedUser,
        "as",
        "impersonated_user",
        Text,
        ["impersonatedUser.username", "impersonated_user"]
    ),
    field!(
        EffectiveUser,
        "effective_user",
        "effective_user",
        Text,
        ["euser"]
    ),
    field!(
        ServiceAccount,
        "sa",
        "service_account",
        Text,
        ["serviceaccount", "service_account"]
    ),
    field!(
        SourceIps,
        "ip",
        "source_ips",
        List,
        ["sourceIPs", "source_ip"]
    ),
    field!(
        UserAgent,
        "ua",
        "user_agent",
        Text,
        ["userAgent", "user_agent"]
    ),
    field!(Client, "client", "client", Text, []),
    field!(
        ApiGroup,
        "apigroup",
        "api_group",
        Text,
        ["objectRef.apiGroup", "api_group"]
    ),
    field!(
        ApiVersion,
        "apiversion",
        "api_version",
        Text,
        ["objectRef.apiVersion", "api_version"]
    ),
    field!(
        Resource,
        "resource",
        "resource",
        Text,
        ["objectRef.resource"]
    ),
    field!(
        Subresource,
        "subresource",
        "subresource",
        Text,
        ["objectRef.subresource"]
    ),
    field!(
        ResourceKey,
        "resource_key",
        "resource_key",
        Text,
        ["resourcekey"]
    ),
    field!(
        Namespace,
        "ns",
        "namespace",
        Text,
        ["namespace", "objectRef.namespace"]
    ),
    field!(Name, "name", "name", Text, ["objectRef.name"]),
    field!(
        ObjectUid,
        "object_uid",
        "object_uid",
        Text,
        ["objectRef.uid"]
    ),
    field!(
        RequestUri,
        "uri",
        "request_uri",
        Text,
        ["requestURI", "request_uri"]
    ),
    field!(Path, "path", "path", Text, []),
    field!(
        Code,
        "code",
        "code",
        Int,
        ["responseStatus.code", "status_code"]
    ),
    field!(
        StatusReason,
        "status_reason",
        "status_reason",
        Text,
        ["responseStatus.reason"]
    ),
    field!(
        StatusMessage,
        "message",
        "status_message",
        Text,
        ["responseStatus.message", "status_message"]
    ),
    field!(
        Decision,
        "decision",
        "decision",
        Text,
        ["authorization.decision"]
    ),
    field!(
        AuthzReason,
        "reason",
        "authz_reason",
        Text,
        ["authorization.reason", "authz_reason"]
    ),
    field!(LatencyUs, "latency", "latency_us", Duration, ["latency_us"]),
    field!(Mutating, "mutating", "mutating", Bool, []),
    field!(Cluster, "cluster", "cluster", Text, []),
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

/// One field of the pod-spec view (`pod.privileged`, `pod.image`, …): the same question asked of
/// a Pod, the pod template of a Deployment, ReplicaSet, StatefulSet, DaemonSet, Job or
/// ReplicationController, a CronJob's job template and a PodTemplate, in every kind of container
/// (`containers`, `initContainers`, `ephemeralContainers`). Detections need it: a privileged
/// DaemonSet is a human's request, while the pods its controller creates later are the
/// controller's.
#[derive(Debug, PartialEq, Eq)]
pub struct PodFieldDef {
    /// The name after `pod.`.
    pub name: &'static str,
    /// Paths below the pod spec (`hostNetwork`, `volumes.hostPath.path`).
    pub pod_paths: &'static [&'static str],
    /// Paths below each container (`securityContext.privileged`).
    pub container_paths: &'static [&'static str],
    /// What it is, for the docs and completion.
    pub doc: &'static str,
}

/// The container lists of a pod spec.
pub const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

macro_rules! pod_field {
    ($name:literal, [$($pod:literal),*], [$($container:literal),*], $doc:literal) => {
        PodFieldDef { name: $name, pod_paths: &[$($pod),*], container_paths: &[$($container),*], doc: $doc }
    };
}

/// Every field of the pod-spec view.
pub static POD_FIELDS: &[PodFieldDef] = &[
    pod_field!("image", [], ["image"], "a container's image"),
    pod_field!("container", [], ["name"], "a container's name"),
    pod_field!(
        "command",
        [],
        ["command", "args"],
        "an element of a container's command or args"
    ),
    pod_field!(
        "privileged",
        [],
        ["securityContext.privileged"],
        "a container's securityContext.privileged"
    ),
    pod_field!(
        "allowPrivilegeEscalation",
        [],
        ["securityContext.allowPrivilegeEscalation"],
        "a container's securityContext.allowPrivilegeEscalation"
    ),
    pod_field!(
        "capabilities",
        [],
        ["securityContext.capabilities.add"],
        "a capability a container adds"
    ),
    pod_field!(
        "procMount",
        [],
        ["securityContext.procMount"],
        "a container's /proc mount type"
    ),
    pod_field!(
        "runAsUser",
        ["securityContext.runAsUser"],
        ["securityContext.runAsUser"],
        "the pod's or a container's runAsUser"
    ),
    pod_field!(
        "runAsNonRoot",
        ["securityContext.runAsNonRoot"],
        ["securityContext.runAsNonRoot"],
        "the pod's or a container's runAsNonRoot"
    ),
    pod_field!(
        "seccomp",
        ["securityContext.seccompProfile.type"],
        ["securityContext.seccompProfile.type"],
        "the pod's or a container's seccomp profile type"
    ),
    pod_field!("hostNetwork", ["hostNetwork"], [], "the pod's hostNetwork"),
    pod_field!("hostPID", ["hostPID"], [], "the pod's hostPID"),
    pod_field!("hostIPC", ["hostIPC"], [], "the pod's hostIPC"),
    pod_field!(
        "hostPath",
        ["volumes.hostPath.path"],
        [],
        "the path of a hostPath volume"
    ),
    pod_field!(
        "hostPort",
        [],
        ["ports.hostPort"],
        "a host port a container binds"
    ),
    pod_field!(
        "serviceAccountName",
        ["serviceAccountName", "serviceAccount"],
        [],
        "the pod's service account"
    ),
    pod_field!(
        "automountServiceAccountToken",
        ["automountServiceAccountToken"],
        [],
        "the pod's automountServiceAccountToken"
    ),
    pod_field!("nodeName", ["nodeName"], [], "the node the pod is bound to"),
];

impl PodFieldDef {
    /// The paths, from the top of a request body whose pod spec lies at `root`, that hold this
    /// field's values.
    pub fn paths_below(&'static self, root: &'static str) -> impl Iterator<Item = String> {
        let pod = self.pod_paths.iter().map(move |p| format!("{root}.{p}"));
        let containers = CONTAINER_LISTS.iter().flat_map(move |list| {
            self.container_paths
                .iter()
                .map(move |p| format!("{root}.{list}.{p}"))
        });
        pod.chain(containers)
    }
}

/// Where the pod spec lies in request bodies of each resource: the resources, whether the
/// `ephemeralcontainers` subresource counts too, and the path. Only writes of the object itself
/// carry a spec someone chose (`pods/status` updates repeat a running pod's whole spec, which
/// would blame the kubelet for its pod's settings).
pub const POD_SPEC_ROOTS: &[(&[&str], bool, &str)] = &[
    (&["pods"], true, "spec"),
    (
        &[
            "deployments",
            "replicasets",
            "statefulsets",
            "daemonsets",
            "jobs",
            "replicationcontrollers",
        ],
        false,
        "spec.template.spec",
    ),
    (&["cronjobs"], false, "spec.jobTemplate.spec.template.spec"),
    (&["podtemplates"], false, "template.spec"),
];

/// The path of the pod spec in a request body on `resource`/`subresource`, if it has one.
pub fn pod_spec_root(resource: &str, subresource: &str) -> Option<&'static str> {
    POD_SPEC_ROOTS
        .iter()
        .find(|(resources, ephemeral, _)| {
            resources.contains(&resource)
                && (subresource.is_empty() || (*ephemeral && subresource == "ephemeralcontainers"))
        })
        .map(|(_, _, root)| *root)
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
    /// A field of the pod-spec view of a request body: `pod.privileged`.
    Pod(&'static PodFieldDef),
    /// The values of one query parameter of the request URI, decoded: `param.command` (an
    /// exec's command, one value per `command=`), `param.watch`.
    Param(String),
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
        if let Some(rest) = name.strip_prefix("pod.") {
            return POD_FIELDS
                .iter()
                .find(|f| f.name == rest)
                .map(Field::Pod)
                .ok_or_else(|| {
                    QueryError::at(
                        position,
                        format!(
                            "unknown field `{name}` (the pod view has pod.{})",
                            POD_FIELDS
                                .iter()
                                .map(|f| f.name)
                                .collect::<Vec<_>>()
                                .join(", pod.")
                        ),
                    )
                });
        }
        if let Some(rest) = name.strip_prefix("param.")
            && !rest.is_empty()
        {
            return Ok(Field::Param(rest.to_owned()));
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
                "unknown field `{name}`{suggestion} (fields: {}; or requestObject[.…], responseObject[.…], annotations.…, pod.…, param.…)",
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
            Field::Pod(_) | Field::Param(_) => false,
        }
    }

    /// The field's type; paths into JSON are text, and the pod view and query parameters are
    /// lists (a pod has several containers; a parameter may be given several times).
    pub fn kind(&self) -> FieldKind {
        match self {
            Field::Column(def) => def.kind,
            Field::Json { .. } => FieldKind::Text,
            Field::Pod(_) | Field::Param(_) => FieldKind::List,
        }
    }

    /// Whether the field can only be searched (not grouped by, aggregated or shown as a
    /// column): the pod view and query parameters are read from the event when matching.
    pub fn is_search_only(&self) -> bool {
        matches!(self, Field::Pod(_) | Field::Param(_))
    }

    /// The name used in output.
    pub fn display_name(&self) -> String {
        match self {
            Field::Column(def) => def.name.to_owned(),
            Field::Json { column, path } if path.is_empty() => column.prefix().to_owned(),
            Field::Json { column, path } => format!("{}.{}", column.prefix(), path.join(".")),
            Field::Pod(def) => format!("pod.{}", def.name),
            Field::Param(name) => format!("param.{name}"),
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
