//! Sigma's Kubernetes audit field names (the audit event's own JSON names) and the kubetrail
//! query fields they become, with what each field's values look like as far as letter case
//! goes: Sigma compares strings case-insensitively, kubetrail case-sensitively, so a field
//! converts exactly only where the case of its values is known.

use kubetrail_query::{Field, FieldKind, JsonColumn};

/// How the values of a field are cased in audit events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    /// Always lower case (verbs, resources, namespaces, API groups): a case-insensitive match
    /// is the case-sensitive match of the lower-cased value.
    Lower,
    /// One of a fixed set of spellings (`ResponseComplete`): a case-insensitive match is the
    /// set of members it matches.
    Enum(&'static [&'static str]),
    /// Anything (user names, user agents, URIs, bodies): a case-insensitive match of a value
    /// with letters cannot be written.
    Any,
    /// A number.
    Number,
}

/// A Sigma field name and the kubetrail field it converts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldMapping {
    /// The kubetrail field as written in a condition.
    pub(crate) kubetrail: String,
    /// The field, resolved.
    pub(crate) field: Field,
    /// The case of its values.
    pub(crate) case: Case,
}

const STAGES: &[&str] = &[
    "RequestReceived",
    "ResponseStarted",
    "ResponseComplete",
    "Panic",
];
const LEVELS: &[&str] = &["None", "Metadata", "Request", "RequestResponse"];
const DECISIONS: &[&str] = &["allow", "forbid"];

/// The audit event fields Sigma rules name, and their kubetrail fields. The annotations of
/// the authorizer are kept as annotation paths: they are what the Sigma rule reads.
pub(crate) const AUDIT_FIELDS: &[(&str, &str, Case)] = &[
    ("verb", "verb", Case::Lower),
    ("objectRef.resource", "resource", Case::Lower),
    ("objectRef.subresource", "subresource", Case::Lower),
    ("objectRef.namespace", "ns", Case::Lower),
    ("objectRef.apiGroup", "apigroup", Case::Lower),
    ("objectRef.apiVersion", "apiversion", Case::Lower),
    ("objectRef.name", "name", Case::Any),
    ("objectRef.uid", "object_uid", Case::Any),
    ("user.username", "user", Case::Any),
    ("user.uid", "user_uid", Case::Any),
    ("user.groups", "group", Case::Any),
    ("impersonatedUser.username", "as", Case::Any),
    ("sourceIPs", "ip", Case::Any),
    ("userAgent", "ua", Case::Any),
    ("requestURI", "uri", Case::Any),
    ("responseStatus.code", "code", Case::Number),
    ("responseStatus.reason", "status_reason", Case::Any),
    ("responseStatus.message", "message", Case::Any),
    ("auditID", "id", Case::Any),
    ("stage", "stage", Case::Enum(STAGES)),
    ("level", "level", Case::Enum(LEVELS)),
    (
        "annotations.authorization.k8s.io/decision",
        "annotations.authorization.k8s.io/decision",
        Case::Enum(DECISIONS),
    ),
];

/// The case of a kubetrail field's values, as [`AUDIT_FIELDS`] knows it; anything else
/// (bodies, annotations, the pod view, derived fields) is [`Case::Any`], and numbers are
/// numbers.
pub(crate) fn case_of(field: &Field) -> Case {
    if field.kind() == FieldKind::Int {
        return Case::Number;
    }
    AUDIT_FIELDS
        .iter()
        .find(|(_, kubetrail, _)| {
            Field::resolve(kubetrail, 0).is_ok_and(|f| f.display_name() == field.display_name())
        })
        .map_or(Case::Any, |(_, _, case)| *case)
}

/// The kubetrail field of a Sigma field name: a mapping given by the user first, then the
/// audit fields, then paths into the request and response bodies and the annotations.
pub(crate) fn map_field(name: &str, extra: &[(String, String)]) -> Result<FieldMapping, String> {
    if let Some((_, kubetrail)) = extra.iter().rev().find(|(sigma, _)| sigma == name) {
        // Written by its canonical name, as every other field of a converted condition.
        let field = Field::resolve(kubetrail, 0).map_err(|e| e.message)?;
        return Ok(FieldMapping {
            kubetrail: field.display_name(),
            case: case_of(&field),
            field,
        });
    }
    if let Some((_, kubetrail, case)) = AUDIT_FIELDS.iter().find(|(sigma, _, _)| *sigma == name) {
        let field = Field::resolve(kubetrail, 0).map_err(|e| e.message)?;
        return Ok(FieldMapping {
            kubetrail: (*kubetrail).to_owned(),
            field,
            case: *case,
        });
    }
    for column in [
        JsonColumn::RequestObject,
        JsonColumn::ResponseObject,
        JsonColumn::Annotations,
    ] {
        if name
            .strip_prefix(column.prefix())
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| !rest.is_empty())
        {
            let field = Field::resolve(name, 0).map_err(|e| e.message)?;
            return Ok(FieldMapping {
                kubetrail: name.to_owned(),
                field,
                case: Case::Any,
            });
        }
    }
    Err(unknown_field_hint(name))
}

/// Why a field name is not an audit event field, with the field the rule may mean.
fn unknown_field_hint(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let audit = AUDIT_FIELDS
        .iter()
        .map(|(sigma, _, _)| *sigma)
        .find(|sigma| {
            sigma
                .rsplit('.')
                .next()
                .is_some_and(|last| last.eq_ignore_ascii_case(&lower))
        });
    let pod = kubetrail_query::POD_FIELDS
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name));
    let mut hint = format!(
        "`{name}` is not a field of Kubernetes audit events, so the Sigma rule can never match as written"
    );
    if let Some(audit) = audit {
        hint.push_str(&format!(
            "; the audit field is `{audit}` (if that is what the rule means, convert with --field {name}={audit})"
        ));
    } else if let Some(pod) = pod {
        hint.push_str(&format!(
            "; kubetrail's pod view has `pod.{}`, {} (if that is what the rule means, convert with --field {name}=pod.{})",
            pod.name, pod.doc, pod.name
        ));
    } else {
        hint.push_str(&format!(
            " (kubetrail reads the audit event's own field names, requestObject.…, responseObject.… and annotations.…, see docs/sigma.md; if you know what the rule means, convert with --field {name}=KUBETRAIL_FIELD)"
        ));
    }
    hint
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_names_map_onto_query_fields() {
        for (sigma, kubetrail, _) in AUDIT_FIELDS {
            let mapping = map_field(sigma, &[]).unwrap();
            assert_eq!(mapping.kubetrail, *kubetrail);
        }
        assert_eq!(map_field("verb", &[]).unwrap().case, Case::Lower);
        assert_eq!(
            map_field("requestObject.spec.hostNetwork", &[])
                .unwrap()
                .case,
            Case::Any
        );
    }

    #[test]
    fn fields_audit_events_lack_are_refused_with_what_was_meant() {
        let api_group = map_field("apiGroup", &[]).unwrap_err();
        assert!(
            api_group.contains("--field apiGroup=objectRef.apiGroup"),
            "{api_group}"
        );
        let host_path = map_field("hostPath", &[]).unwrap_err();
        assert!(host_path.contains("pod.hostPath"), "{host_path}");
        assert!(map_field("file_path", &[]).is_err());
    }

    #[test]
    fn user_mappings_come_first_and_keep_the_target_case() {
        let extra = vec![("apiGroup".to_owned(), "objectRef.apiGroup".to_owned())];
        let mapping = map_field("apiGroup", &extra).unwrap();
        assert_eq!(mapping.case, Case::Lower);
        assert_eq!(mapping.field.display_name(), "apigroup");
    }
}
