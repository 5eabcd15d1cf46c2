//! Derived fields on genuine API-server events.

use super::decode_file;
use kubetrail_event::{AuditEvent, CodeClass, UserKind};

fn real_event(audit_id: &str) -> AuditEvent<'static> {
    decode_file("fixtures/real-apiserver-v1.36/audit.log")
        .events
        .into_iter()
        .map(|(e, _, _)| e)
        .find(|e| e.audit_id == audit_id)
        .unwrap()
}

#[test]
fn a_controller_creating_a_replicaset() {
    let e = real_event("d926004d-bf8d-4cc4-b7bc-2cd2f89ab6dd");
    let d = &e.derived;
    assert_eq!(d.latency_micros, Some(16_546));
    assert_eq!(d.user_kind, UserKind::ServiceAccount);
    assert_eq!(
        d.service_account
            .as_ref()
            .map(|(ns, n)| (ns.as_ref(), n.as_ref())),
        Some(("kube-system", "deployment-controller"))
    );
    assert_eq!(
        d.effective_user,
        "system:serviceaccount:kube-system:deployment-controller"
    );
    assert_eq!(d.decision.as_deref(), Some("allow"));
    assert!(
        d.authorization_reason
            .as_deref()
            .unwrap()
            .starts_with("RBAC: allowed by ClusterRoleBinding")
    );
    assert_eq!(d.code_class, Some(CodeClass(2)));
    assert!(d.mutating);
    assert_eq!(d.path, "/apis/apps/v1/namespaces/audit-demo/replicasets");
    assert_eq!(d.resource_key.as_deref(), Some("apps/replicasets"));
    assert_eq!(
        d.client.to_string(),
        "kube-controller-manager/deployment-controller"
    );
    assert_eq!(d.client.version, "v1.36.2");
}

#[test]
fn an_impersonated_discovery_request() {
    let e = real_event("a3a69b99-c105-4d57-97ef-7086faaa9533");
    let d = &e.derived;
    assert_eq!(e.user.username, "admin");
    assert_eq!(d.effective_user, "alice");
    assert_eq!(d.user_kind, UserKind::Human);
    assert_eq!(
        e.authentication_metadata
            .as_ref()
            .unwrap()
            .impersonation_constraint,
        "impersonate:user-info"
    );
    assert!(!d.mutating);
    assert_eq!(d.resource_key, None);
    assert_eq!(d.client.to_string(), "kubectl");
}

#[test]
fn a_not_found_with_status_details() {
    let e = real_event("900e5f61-c806-4893-b5d2-a02444ddefc3");
    let status = e.response_status.as_ref().unwrap();
    assert_eq!(
        (status.code, status.reason.as_ref()),
        (Some(404), "NotFound")
    );
    assert_eq!(
        e.derived.code_class.map(|c| c.to_string()).as_deref(),
        Some("4xx")
    );
    assert_eq!(
        e.derived.resource_key.as_deref(),
        Some("rbac.authorization.k8s.io/clusterroles")
    );
    assert_eq!(e.derived.user_kind, UserKind::ControlPlane);
}
