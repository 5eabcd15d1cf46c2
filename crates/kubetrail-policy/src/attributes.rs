//! The request attributes kube-apiserver's policy checker sees, and how to recover them from an
//! audit event (reference §2.4).
//!
//! They cannot simply be read off `objectRef`: the API server fills `objectRef.name` and
//! `namespace` from the request body (a `create` shows the new object's name), while the checker
//! saw the URL, where a create has no name. So the path is parsed again the way the API server's
//! `RequestInfoFactory` parses it; the verb is taken from the event, which recorded the one the
//! API server derived (including list/watch/deletecollection).

use std::borrow::Cow;

use kubetrail_event::AuditEvent;

/// The authenticated user of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User<'a> {
    /// User name.
    pub name: Cow<'a, str>,
    /// Groups.
    pub groups: Vec<Cow<'a, str>>,
}

/// What the policy checker matches rules against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestAttributes<'a> {
    /// The authenticated user; None for requests that failed authentication.
    pub user: Option<User<'a>>,
    /// Kubernetes verb, or lower-cased HTTP method for non-resource requests.
    pub verb: Cow<'a, str>,
    /// Namespace; for Namespace objects, their own name; `""` for cluster-scoped.
    pub namespace: Cow<'a, str>,
    /// API group; `""` for the core group.
    pub api_group: Cow<'a, str>,
    /// API version.
    pub api_version: Cow<'a, str>,
    /// Resource.
    pub resource: Cow<'a, str>,
    /// Subresource.
    pub subresource: Cow<'a, str>,
    /// Name; `""` for list, watch, create, deletecollection (unless a field selector names one).
    pub name: Cow<'a, str>,
    /// Whether this is a resource request (`/api/v1/…`, `/apis/g/v/…` with a resource).
    pub resource_request: bool,
    /// The URL path, without query.
    pub path: Cow<'a, str>,
}

impl<'a> RequestAttributes<'a> {
    /// The attributes of the request an event records.
    pub fn from_event(event: &'a AuditEvent<'_>) -> RequestAttributes<'a> {
        let user = (!event.user.username.is_empty()).then(|| User {
            name: Cow::Borrowed(event.user.username.as_ref()),
            groups: event
                .user
                .groups
                .iter()
                .map(|g| Cow::Borrowed(g.as_ref()))
                .collect(),
        });
        let (path, query) = match event.request_uri.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (event.request_uri.as_ref(), None),
        };
        let mut attributes = parse_path(path);
        attributes.user = user;
        attributes.verb = Cow::Borrowed(event.verb.as_ref());
        if attributes.resource_request
            && attributes.name.is_empty()
            && matches!(event.verb.as_ref(), "list" | "watch")
            && let Some(name) = query.and_then(field_selector_name)
        {
            attributes.name = Cow::Owned(name);
        }
        attributes
    }
}

/// Splits a URL path into the RequestInfo fields (all but user and verb).
pub fn parse_path(path: &str) -> RequestAttributes<'_> {
    let non_resource = RequestAttributes {
        path: Cow::Borrowed(path),
        ..RequestAttributes::default()
    };
    let trimmed = path.trim_matches('/');
    let parts: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
        return non_resource;
    }
    let mut rest = &parts[1..];
    let mut attributes = non_resource.clone();
    if parts[0] == "apis" {
        if rest.len() < 3 {
            return non_resource;
        }
        attributes.api_group = Cow::Borrowed(rest[0]);
        rest = &rest[1..];
    }
    attributes.resource_request = true;
    attributes.api_version = Cow::Borrowed(rest[0]);
    rest = &rest[1..];
    let mut verb_is_proxy = false;
    if matches!(rest[0], "proxy" | "watch") {
        if rest.len() < 2 {
            return non_resource;
        }
        verb_is_proxy = rest[0] == "proxy";
        rest = &rest[1..];
    }
    if rest[0] == "namespaces" && rest.len() > 1 {
        attributes.namespace = Cow::Borrowed(rest[1]);
        // Past the namespace comes a resource, unless it is a subresource of the Namespace.
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    if rest.len() >= 3 && !verb_is_proxy {
        attributes.subresource = Cow::Borrowed(rest[2]);
    }
    if rest.len() >= 2 {
        attributes.name = Cow::Borrowed(rest[1]);
    }
    if !rest.is_empty() {
        attributes.resource = Cow::Borrowed(rest[0]);
    }
    attributes
}

/// The name an exact `metadata.name` field selector asks for, as list/watch requests use it.
fn field_selector_name(query: &str) -> Option<String> {
    let selector = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "fieldSelector")
        .map(|(_, value)| percent_decode(value))?;
    selector.split(',').find_map(|term| {
        let value = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="))?;
        (!value.is_empty() && value != "." && value != ".." && !value.contains(['/', '%']))
            .then(|| value.to_owned())
    })
}

fn percent_decode(value: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1]).zip(hex(bytes[i + 2])),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some((high, low)), _) => {
                out.push(high << 4 | low);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, expected: (bool, &str, &str, &str, &str, &str)) {
        let a = parse_path(path);
        let got = (
            a.resource_request,
            a.api_group.as_ref(),
            a.namespace.as_ref(),
            a.resource.as_ref(),
            a.name.as_ref(),
            a.subresource.as_ref(),
        );
        assert_eq!(got, expected, "{path}");
    }

    #[test]
    fn request_info_paths() {
        check(
            "/api/v1/namespaces/default/pods/web-1/log",
            (true, "", "default", "pods", "web-1", "log"),
        );
        check(
            "/apis/apps/v1/namespaces/shop/deployments/web/scale",
            (true, "apps", "shop", "deployments", "web", "scale"),
        );
        check("/api/v1/nodes", (true, "", "", "nodes", "", ""));
        check("/api/v1/namespaces", (true, "", "", "namespaces", "", ""));
        // The namespace of a Namespace object is its own name.
        check(
            "/api/v1/namespaces/kube-system",
            (true, "", "kube-system", "namespaces", "kube-system", ""),
        );
        check(
            "/api/v1/namespaces/gone/finalize",
            (true, "", "gone", "namespaces", "gone", "finalize"),
        );
        check(
            "/api/v1/watch/namespaces/default/pods",
            (true, "", "default", "pods", "", ""),
        );
        check(
            "/api/v1/proxy/nodes/n1/metrics",
            (true, "", "", "nodes", "n1", ""),
        );
        // Discovery and other paths are non-resource requests.
        check("/api/v1", (false, "", "", "", "", ""));
        check("/apis/apps/v1", (false, "", "", "", "", ""));
        check("/healthz", (false, "", "", "", "", ""));
        check("/", (false, "", "", "", "", ""));
    }

    #[test]
    fn field_selectors_name_a_list() {
        assert_eq!(
            field_selector_name("fieldSelector=metadata.name%3Dkube-root-ca.crt&watch=true")
                .as_deref(),
            Some("kube-root-ca.crt")
        );
        assert_eq!(
            field_selector_name("fieldSelector=spec.nodeName%3Dn1"),
            None
        );
        assert_eq!(field_selector_name("limit=500"), None);
    }
}
