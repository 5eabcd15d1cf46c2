//! Policy evaluation exactly as kube-apiserver's policy checker does it (reference §2.3):
//! rules in order, the first match wins even at level None, each rule's omitted stages are the
//! union of the policy's and its own (computed once here), and `omitManagedFields` is the rule's
//! when it sets it, else the policy's.

use kubetrail_event::{Level, Stage};

use crate::attributes::RequestAttributes;
use crate::load::{GroupResources, Policy, PolicyRule};

/// A set of stages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StageSet(u8);

impl StageSet {
    fn bit(stage: Stage) -> u8 {
        1 << Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0)
    }

    /// The set of `stages`.
    pub fn of(stages: &[Stage]) -> Self {
        StageSet(stages.iter().fold(0, |acc, s| acc | Self::bit(*s)))
    }

    /// Whether `stage` is in the set.
    pub fn contains(self, stage: Stage) -> bool {
        self.0 & Self::bit(stage) != 0
    }

    /// The union of two sets.
    pub fn union(self, other: StageSet) -> Self {
        StageSet(self.0 | other.0)
    }

    /// The stages in the set, in request order.
    pub fn iter(self) -> impl Iterator<Item = Stage> {
        Stage::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

/// What the policy decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// The level; None when no rule matched.
    pub level: Level,
    /// The stages not to emit.
    pub omit_stages: StageSet,
    /// Whether to clear `metadata.managedFields` in logged bodies.
    pub omit_managed_fields: bool,
    /// The index of the rule that matched.
    pub rule: Option<usize>,
}

/// A policy prepared for fast evaluation.
#[derive(Debug, Clone)]
pub struct Evaluator {
    rules: Vec<CompiledRule>,
    omit_stages: StageSet,
    omit_managed_fields: bool,
}

#[derive(Debug, Clone)]
struct CompiledRule {
    rule: PolicyRule,
    omit_stages: StageSet,
    omit_managed_fields: bool,
}

impl Evaluator {
    /// Prepares `policy`.
    pub fn new(policy: &Policy) -> Self {
        let policy_stages = StageSet::of(&policy.omit_stages);
        Evaluator {
            rules: policy
                .rules
                .iter()
                .map(|rule| CompiledRule {
                    omit_stages: policy_stages.union(StageSet::of(&rule.omit_stages)),
                    omit_managed_fields: rule
                        .omit_managed_fields
                        .unwrap_or(policy.omit_managed_fields),
                    rule: rule.clone(),
                })
                .collect(),
            omit_stages: policy_stages,
            omit_managed_fields: policy.omit_managed_fields,
        }
    }

    /// Evaluates the policy for one request.
    pub fn evaluate(&self, request: &RequestAttributes<'_>) -> Evaluation {
        for (index, compiled) in self.rules.iter().enumerate() {
            if rule_matches(&compiled.rule, request) {
                return Evaluation {
                    level: compiled.rule.level,
                    omit_stages: compiled.omit_stages,
                    omit_managed_fields: compiled.omit_managed_fields,
                    rule: Some(index),
                };
            }
        }
        Evaluation {
            level: Level::None,
            omit_stages: self.omit_stages,
            omit_managed_fields: self.omit_managed_fields,
            rule: None,
        }
    }
}

/// Whether `rule` matches `request` (reference §2.3, `matches`).
pub fn rule_matches(rule: &PolicyRule, request: &RequestAttributes<'_>) -> bool {
    if !rule.users.is_empty() {
        match &request.user {
            Some(user) if rule.users.iter().any(|u| *u == user.name) => {}
            _ => return false,
        }
    }
    if !rule.user_groups.is_empty() {
        match &request.user {
            Some(user)
                if user
                    .groups
                    .iter()
                    .any(|g| rule.user_groups.iter().any(|rg| rg == g)) => {}
            _ => return false,
        }
    }
    if !rule.verbs.is_empty() && !rule.verbs.iter().any(|v| *v == request.verb) {
        return false;
    }
    if !rule.namespaces.is_empty() || !rule.resources.is_empty() {
        return resource_matches(rule, request);
    }
    if !rule.non_resource_urls.is_empty() {
        return non_resource_matches(&rule.non_resource_urls, request);
    }
    true
}

fn resource_matches(rule: &PolicyRule, request: &RequestAttributes<'_>) -> bool {
    if !request.resource_request {
        return false;
    }
    if !rule.namespaces.is_empty() && !rule.namespaces.iter().any(|n| *n == request.namespace) {
        return false;
    }
    if rule.resources.is_empty() {
        return true;
    }
    rule.resources.iter().any(|g| group_matches(g, request))
}

fn group_matches(group: &GroupResources, request: &RequestAttributes<'_>) -> bool {
    if group.group != request.api_group && group.group != "*" {
        return false;
    }
    if group.resources.is_empty() {
        return true;
    }
    if !group.resource_names.is_empty() && !group.resource_names.iter().any(|n| *n == request.name)
    {
        return false;
    }
    let resource = request.resource.as_ref();
    let subresource = request.subresource.as_ref();
    group.resources.iter().any(|pattern| {
        let combined_matches = if subresource.is_empty() {
            pattern == resource
        } else {
            pattern.len() == resource.len() + 1 + subresource.len()
                && pattern.starts_with(resource)
                && pattern.as_bytes()[resource.len()] == b'/'
                && pattern.ends_with(subresource)
        };
        combined_matches
            || pattern == "*"
            || (!subresource.is_empty() && pattern.strip_prefix("*/") == Some(subresource))
            || pattern.strip_suffix("/*") == Some(resource)
    })
}

fn non_resource_matches(urls: &[String], request: &RequestAttributes<'_>) -> bool {
    if request.resource_request {
        return false;
    }
    let path = request.path.as_ref();
    urls.iter().any(|spec| {
        spec == "*"
            || spec == path
            || (spec.ends_with('*') && path.starts_with(spec.trim_end_matches('*')))
    })
}
