//! Applying a policy to incoming events.

use kubetrail_event::Level;
use kubetrail_policy::{Applied, Evaluator, apply_policy, load};

use super::simulate::real_events;

#[test]
fn levels_stages_bodies_and_managed_fields() {
    let policy = load(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [ResponseStarted]\nomitManagedFields: true\nrules:\n- level: None\n  resources: [{group: coordination.k8s.io, resources: [leases]}]\n- level: Metadata\n  verbs: [get, list, watch]\n- level: Request\n  verbs: [create]\n- level: RequestResponse\n",
    )
    .unwrap()
    .policy;
    let evaluator = Evaluator::new(&policy);
    let mut kept = Vec::new();
    let (mut by_level, mut by_stage) = (0, 0);
    for mut event in real_events() {
        let original_level = event.level;
        match apply_policy(&evaluator, &mut event) {
            Applied::Kept => kept.push((original_level, event)),
            Applied::DroppedByLevel => by_level += 1,
            Applied::DroppedByStage => by_stage += 1,
        }
    }
    assert_eq!(by_level, 693);
    // summary.txt: 247 ResponseStarted events, minus the lease watches already dropped.
    assert!(by_stage > 0 && by_stage <= 247);
    for (_, event) in &kept {
        let raw = event.raw.as_str();
        match event.verb.as_ref() {
            "get" | "list" | "watch" => {
                assert_eq!(event.level, Level::Metadata);
                assert!(event.request_object.is_none() && event.response_object.is_none());
                assert!(!raw.contains("\"responseObject\""));
            }
            "create" => {
                assert_eq!(event.level, Level::Request);
                assert!(event.response_object.is_none());
            }
            _ => assert_eq!(event.level, Level::RequestResponse),
        }
        // managedFields survive only inside patch documents, which the API server never filters.
        if event.verb != "patch" {
            assert!(!raw.contains("\"managedFields\""), "{raw}");
        }
    }
    assert_eq!(kept.len() + by_level + by_stage, 2823);
}
