//! Fields kubetrail derives from every event, computed once when the event is decoded so that
//! the store, queries, reports and rules all agree on them. `docs/derived-fields.md` is the
//! user-facing description; keep the two in step.

use std::borrow::Cow;
use std::fmt;

use crate::client::Client;
use crate::model::{AuditEvent, Str, UserInfo, own};

/// What kind of identity made a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum UserKind {
    /// A person (anything not recognised as one of the other kinds).
    Human,
    /// `system:serviceaccount:<namespace>:<name>`.
    ServiceAccount,
    /// A kubelet: `system:node:<name>`, or any user in group `system:nodes`.
    Node,
    /// kube-apiserver itself, the controller manager, the scheduler, kube-proxy and other
    /// `system:` identities of the control plane.
    ControlPlane,
    /// `system:anonymous`: an unauthenticated request the API server let through.
    Anonymous,
    /// A request that failed authentication; the event's `user` is `{}`.
    #[default]
    Unauthenticated,
}

impl UserKind {
    /// The stable name used in output, queries and the store.
    pub const fn as_str(self) -> &'static str {
        match self {
            UserKind::Human => "human",
            UserKind::ServiceAccount => "serviceaccount",
            UserKind::Node => "node",
            UserKind::ControlPlane => "controlplane",
            UserKind::Anonymous => "anonymous",
            UserKind::Unauthenticated => "unauthenticated",
        }
    }

    /// Classifies a user.
    pub fn of(user: &UserInfo<'_>) -> UserKind {
        let name = user.username.as_ref();
        if name.is_empty() {
            UserKind::Unauthenticated
        } else if name == "system:anonymous" {
            UserKind::Anonymous
        } else if name.starts_with("system:serviceaccount:") {
            UserKind::ServiceAccount
        } else if name.starts_with("system:node:")
            || user.groups.iter().any(|g| g == "system:nodes")
        {
            UserKind::Node
        } else if name.starts_with("system:") && name != "system:admin" {
            // `system:admin` is the human cluster administrator on OpenShift and in old
            // client-certificate setups; every other `system:` user is a component.
            UserKind::ControlPlane
        } else {
            UserKind::Human
        }
    }
}

impl fmt::Display for UserKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of an HTTP status code: 1 for 1xx … 5 for 5xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodeClass(pub u8);

impl fmt::Display for CodeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}xx", self.0)
    }
}

/// The derived fields of one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Derived<'a> {
    /// `stageTimestamp − requestReceivedTimestamp` in microseconds: time to the stage (to
    /// headers for `ResponseStarted`, to completion for `ResponseComplete`, 0 at
    /// `RequestReceived`). None when either timestamp is missing.
    pub latency_micros: Option<i64>,
    /// The user whose permissions the request ran with: the impersonated user when there is
    /// one, otherwise the authenticated user.
    pub effective_user: Str<'a>,
    /// What kind of identity the effective user is.
    pub user_kind: UserKind,
    /// Namespace and name when the effective user is a service account.
    pub service_account: Option<(Str<'a>, Str<'a>)>,
    /// `authorization.k8s.io/decision`: `allow` or `forbid`.
    pub decision: Option<Str<'a>>,
    /// `authorization.k8s.io/reason`: the authorizer's explanation (may be empty).
    pub authorization_reason: Option<Str<'a>>,
    /// The class of `responseStatus.code`.
    pub code_class: Option<CodeClass>,
    /// Whether the request changes state (create, update, patch, delete, deletecollection; for
    /// non-resource requests post, put, patch, delete). Everything else is read-only.
    pub mutating: bool,
    /// `requestURI` without the query string.
    pub path: Str<'a>,
    /// `group/resource[/subresource]` with `core` for the core group (`core/pods/log`,
    /// `apps/deployments/scale`); None for non-resource requests.
    pub resource_key: Option<String>,
    /// The client program, from the user agent.
    pub client: Client<'a>,
}

impl Derived<'_> {
    pub(crate) fn into_owned(self) -> Derived<'static> {
        Derived {
            latency_micros: self.latency_micros,
            effective_user: own(self.effective_user),
            user_kind: self.user_kind,
            service_account: self.service_account.map(|(ns, name)| (own(ns), own(name))),
            decision: self.decision.map(own),
            authorization_reason: self.authorization_reason.map(own),
            code_class: self.code_class,
            mutating: self.mutating,
            path: own(self.path),
            resource_key: self.resource_key,
            client: self.client.into_owned(),
        }
    }
}

const MUTATING_VERBS: [&str; 7] = [
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "post",
    "put",
];

/// Computes the derived fields of `event` (whose own `derived` field is ignored).
pub fn derive<'a>(event: &AuditEvent<'a>) -> Derived<'a> {
    let latency_micros = match (event.request_received_timestamp, event.stage_timestamp) {
        (Some(received), Some(stage)) => Some(stage.as_micros() - received.as_micros()),
        _ => None,
    };
    let effective = event.impersonated_user.as_ref().unwrap_or(&event.user);
    let user_kind = UserKind::of(effective);
    let service_account = match user_kind {
        UserKind::ServiceAccount => service_account_of(&effective.username),
        _ => None,
    };
    let annotation = |key: &str| {
        event
            .annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let code_class = event
        .code()
        .filter(|c| (100..600).contains(c))
        .map(|c| CodeClass((c / 100) as u8));
    let path = match event.request_uri.find('?') {
        Some(q) => slice(&event.request_uri, 0, q),
        None => event.request_uri.clone(),
    };
    let resource_key = event
        .object_ref
        .as_ref()
        .filter(|r| !r.resource.is_empty())
        .map(|r| {
            let group = if r.api_group.is_empty() {
                "core"
            } else {
                &r.api_group
            };
            let mut key = format!("{group}/{}", r.resource);
            if !r.subresource.is_empty() {
                key.push('/');
                key.push_str(&r.subresource);
            }
            key
        });
    Derived {
        latency_micros,
        effective_user: effective.username.clone(),
        user_kind,
        service_account,
        decision: annotation("authorization.k8s.io/decision"),
        authorization_reason: annotation("authorization.k8s.io/reason"),
        code_class,
        mutating: MUTATING_VERBS.contains(&event.verb.as_ref()),
        path,
        resource_key,
        client: Client::from_user_agent(event.user_agent.as_ref()),
    }
}

fn service_account_of<'a>(username: &Str<'a>) -> Option<(Str<'a>, Str<'a>)> {
    let rest_start = "system:serviceaccount:".len();
    let rest = username.get(rest_start..)?;
    let colon = rest.find(':')?;
    let ns_end = rest_start + colon;
    Some((
        slice(username, rest_start, ns_end),
        slice(username, ns_end + 1, username.len()),
    ))
}

/// A sub-slice of a string that still borrows from the input when the string does.
pub(crate) fn slice<'a>(s: &Str<'a>, start: usize, end: usize) -> Str<'a> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(&b[start..end]),
        Cow::Owned(o) => Cow::Owned(o[start..end].to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo<'static> {
        UserInfo {
            username: Cow::Owned(name.to_owned()),
            groups: groups.iter().map(|g| Cow::Owned((*g).to_owned())).collect(),
            ..UserInfo::default()
        }
    }

    #[test]
    fn user_kinds() {
        let cases = [
            ("", &[][..], UserKind::Unauthenticated),
            (
                "system:anonymous",
                &["system:unauthenticated"][..],
                UserKind::Anonymous,
            ),
            (
                "system:serviceaccount:ci:deployer",
                &[][..],
                UserKind::ServiceAccount,
            ),
            (
                "system:node:worker-1",
                &["system:nodes"][..],
                UserKind::Node,
            ),
            ("kubelet", &["system:nodes"][..], UserKind::Node),
            ("system:kube-scheduler", &[][..], UserKind::ControlPlane),
            (
                "system:apiserver",
                &["system:masters"][..],
                UserKind::ControlPlane,
            ),
            ("system:admin", &["system:masters"][..], UserKind::Human),
            ("alice@example.com", &["dev"][..], UserKind::Human),
        ];
        for (name, groups, kind) in cases {
            assert_eq!(UserKind::of(&user(name, groups)), kind, "{name}");
        }
    }

    #[test]
    fn service_account_parts() {
        let name: Str<'_> = Cow::Borrowed("system:serviceaccount:kube-system:job-controller");
        assert_eq!(
            service_account_of(&name),
            Some((
                Cow::Borrowed("kube-system"),
                Cow::Borrowed("job-controller")
            ))
        );
        assert_eq!(
            service_account_of(&Cow::Borrowed("system:serviceaccount:broken")),
            None
        );
    }
}
