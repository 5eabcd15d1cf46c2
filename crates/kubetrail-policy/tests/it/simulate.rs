//! `simulate` on the real kube-apiserver 1.36 log.

use kubetrail_event::{AuditEvent, DecodeOptions, Decoded, Decoder, Level};
use kubetrail_policy::{RequestAttributes, Simulator, load};

use super::data;

fn is_lease(e: &AuditEvent<'_>) -> bool {
    e.object_ref
        .as_ref()
        .is_some_and(|r| r.resource == "leases")
}

pub fn real_events() -> Vec<AuditEvent<'static>> {
    let bytes = std::fs::read(data("fixtures/real-apiserver-v1.36/audit.log")).unwrap();
    let mut events = Vec::new();
    let mut decoder = Decoder::new(DecodeOptions::default());
    let mut out = |d: Decoded<'_>| {
        if let Decoded::Event(e, _) = d {
            events.push((*e).into_owned());
        }
    };
    decoder.feed(&bytes, &mut out);
    decoder.finish(&mut out);
    events
}

#[test]
fn dropping_leases_and_keeping_metadata() {
    let policy = load(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  resources: [{group: coordination.k8s.io, resources: [leases]}]\n- level: Metadata\n",
    )
    .unwrap()
    .policy;
    let events = real_events();
    let mut simulator = Simulator::new(&policy);
    for event in &events {
        simulator.observe(event);
    }
    let s = simulator.finish();
    let size = |e: &AuditEvent<'_>| e.raw.as_str().len() as u64 + 1;
    let leases: Vec<_> = events.iter().filter(|e| is_lease(e)).collect();
    assert_eq!(leases.len(), 693); // summary.txt
    assert_eq!(s.recorded.events, 2823);
    assert_eq!(s.dropped_by_level.events, 693);
    assert_eq!(
        s.dropped_by_level.bytes,
        leases.iter().map(|e| size(e)).sum::<u64>()
    );
    assert_eq!(s.rules[0].matched.events, 693);
    assert_eq!(s.rules[1].kept.events, 2823 - 693);
    // Every other event was recorded at RequestResponse and loses both bodies.
    let removed: u64 = events
        .iter()
        .filter(|e| !is_lease(e))
        .map(|e| {
            let body = |b: &Option<kubetrail_event::RawJson<'_>>, key: &str| {
                b.as_ref()
                    .map_or(0, |b| (b.as_str().len() + key.len() + 4) as u64)
            };
            body(&e.request_object, "requestObject") + body(&e.response_object, "responseObject")
        })
        .sum();
    assert_eq!(s.body_bytes_removed, removed);
    assert_eq!(
        s.kept.bytes,
        s.recorded.bytes - s.dropped_by_level.bytes - removed
    );
    assert_eq!(s.down_levelled.events, 2823 - 693);
    // The recording omitted RequestReceived; this policy does not, so it would add one event per
    // completed authenticated request.
    let completed = events
        .iter()
        .filter(|e| {
            e.stage == kubetrail_event::Stage::ResponseComplete
                && !e.user.username.is_empty()
                && !is_lease(e)
        })
        .count() as u64;
    assert_eq!(s.added_request_received.events, completed);
    assert_eq!(s.lost[0].0, "update coordination.k8s.io/leases");
}

#[test]
fn attributes_come_from_the_url_not_the_body() {
    let events = real_events();
    let create = events
        .iter()
        .find(|e| e.audit_id == "d926004d-bf8d-4cc4-b7bc-2cd2f89ab6dd")
        .unwrap();
    // objectRef.name was filled from the created object; the policy checker saw no name.
    assert_eq!(create.object_ref.as_ref().unwrap().name, "web-cc544bdcc");
    let attributes = RequestAttributes::from_event(create);
    assert_eq!(attributes.name, "");
    assert_eq!(attributes.namespace, "audit-demo");
    assert_eq!(attributes.api_group, "apps");
    assert_eq!(attributes.resource, "replicasets");
    assert_eq!(attributes.verb, "create");
    assert_eq!(create.level, Level::RequestResponse);
}
