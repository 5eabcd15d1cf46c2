//! `policy eval` speed: evaluations per second per core of a 20-rule policy (the GCE/GKE policy
//! of reference §6.2 plus three common additions) over the request attributes of the real
//! kube-apiserver 1.36 log. Target: 1,000,000 evaluations/s per core.
//!
//! Run: `cargo bench -p kubetrail-policy --bench eval`

use std::time::{Duration, Instant};

use kubetrail_event::{DecodeOptions, Decoded, Decoder};
use kubetrail_policy::{Evaluator, RequestAttributes, load};

const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
    resources: [{group: "", resources: ["endpoints", "services", "services/status"]}]
  - level: None
    users: ["system:unsecured"]
    namespaces: ["kube-system"]
    verbs: ["get"]
    resources: [{group: "", resources: ["configmaps"]}]
  - level: None
    users: ["kubelet"]
    verbs: ["get"]
    resources: [{group: "", resources: ["nodes", "nodes/status"]}]
  - level: None
    userGroups: ["system:nodes"]
    verbs: ["get"]
    resources: [{group: "", resources: ["nodes", "nodes/status"]}]
  - level: None
    users: ["system:kube-controller-manager", "system:cloud-controller-manager", "system:kube-scheduler", "system:serviceaccount:kube-system:endpoint-controller"]
    verbs: ["get", "update"]
    namespaces: ["kube-system"]
    resources: [{group: "", resources: ["endpoints"]}]
  - level: None
    users: ["system:apiserver"]
    verbs: ["get"]
    resources: [{group: "", resources: ["namespaces", "namespaces/status", "namespaces/finalize"]}]
  - level: None
    users: ["cluster-autoscaler"]
    verbs: ["get", "update"]
    namespaces: ["kube-system"]
    resources: [{group: "", resources: ["configmaps", "endpoints"]}]
  - level: None
    users: ["system:kube-controller-manager", "system:cloud-controller-manager"]
    verbs: ["get", "list"]
    resources: [{group: "metrics.k8s.io"}]
  - level: None
    nonResourceURLs: ["/healthz*", "/version", "/swagger*", "/readyz*", "/livez*"]
  - level: None
    resources: [{group: "", resources: ["events"]}]
  - level: None
    users: ["system:kube-controller-manager", "system:kube-scheduler"]
    verbs: ["get", "update"]
    resources: [{group: "coordination.k8s.io", resources: ["leases"]}]
  - level: Request
    users: ["kubelet", "system:node-problem-detector", "system:serviceaccount:kube-system:node-problem-detector"]
    verbs: ["update", "patch"]
    resources: [{group: "", resources: ["nodes/status", "pods/status"]}]
    omitStages: ["RequestReceived"]
  - level: Request
    userGroups: ["system:nodes"]
    verbs: ["update", "patch"]
    resources: [{group: "", resources: ["nodes/status", "pods/status"]}]
    omitStages: ["RequestReceived"]
  - level: Request
    users: ["system:serviceaccount:kube-system:namespace-controller"]
    verbs: ["deletecollection"]
    omitStages: ["RequestReceived"]
  - level: Metadata
    resources:
      - {group: "", resources: ["secrets", "configmaps", "serviceaccounts/token"]}
      - {group: "authentication.k8s.io", resources: ["tokenreviews"]}
    omitStages: ["RequestReceived"]
  - level: Metadata
    resources: [{group: "", resources: ["pods/exec", "pods/attach", "pods/portforward"]}]
    omitStages: ["RequestReceived"]
  - level: Request
    verbs: ["get", "list", "watch"]
    resources: [{group: ""}, {group: "apps"}, {group: "batch"}, {group: "rbac.authorization.k8s.io"}, {group: "networking.k8s.io"}, {group: "policy"}]
    omitStages: ["RequestReceived"]
  - level: RequestResponse
    resources: [{group: ""}, {group: "apps"}, {group: "batch"}, {group: "rbac.authorization.k8s.io"}, {group: "networking.k8s.io"}, {group: "policy"}]
    omitStages: ["RequestReceived"]
  - level: Metadata
    namespaces: ["kube-system"]
    omitStages: ["RequestReceived"]
  - level: Metadata
    omitStages: ["RequestReceived"]
"#;

fn main() {
    let policy = load(POLICY).expect("the benchmark policy loads").policy;
    assert_eq!(policy.rules.len(), 20);
    let evaluator = Evaluator::new(&policy);
    let log = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/fixtures/real-apiserver-v1.36/audit.log"
    ))
    .expect("tests/data is in the repository");
    let mut events = Vec::new();
    let mut decoder = Decoder::new(DecodeOptions::default());
    let mut out = |d: Decoded<'_>| {
        if let Decoded::Event(e, _) = d {
            events.push((*e).into_owned());
        }
    };
    decoder.feed(&log, &mut out);
    decoder.finish(&mut out);
    let requests: Vec<RequestAttributes<'_>> =
        events.iter().map(RequestAttributes::from_event).collect();

    // Attribute extraction from events, measured separately: simulate pays it per event.
    let start = Instant::now();
    let mut extracted = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for event in &events {
            extracted += RequestAttributes::from_event(event).resource_request as u64 + 1;
        }
    }
    let extract_rate = extracted as f64 / start.elapsed().as_secs_f64();

    let mut best = 0f64;
    let mut checksum = 0u64;
    for _ in 0..3 {
        let start = Instant::now();
        let mut evaluations = 0u64;
        while start.elapsed() < Duration::from_secs(2) {
            for request in &requests {
                checksum += evaluator.evaluate(std::hint::black_box(request)).level as u64;
            }
            evaluations += requests.len() as u64;
        }
        best = best.max(evaluations as f64 / start.elapsed().as_secs_f64());
    }
    let target = 1_000_000f64;
    println!(
        "policy eval: 20 rules, {} distinct requests from the real 1.36 log (checksum {checksum})",
        requests.len()
    );
    println!(
        "  evaluate           {:>12.0} evaluations/s per core  {:>7.1} ns each  {:.1}x the 1,000,000/s target",
        best,
        1e9 / best,
        best / target
    );
    println!(
        "  attributes(event)  {:>12.0} extractions/s per core  {:>7.1} ns each",
        extract_rate,
        1e9 / extract_rate
    );
    println!("  (no in-process peer: kube-apiserver's checker is Go; the target is the yardstick)");
}
