//! Policy simulation: replays recorded events through a candidate policy to answer "what will
//! this policy cost and what will I lose".
//!
//! For each recorded event the candidate's decision is applied the way the API server applies
//! it: level None or an omitted stage drops the event; a lower level than recorded removes the
//! bodies the lower level does not log (their bytes are subtracted exactly); a higher level would
//! log bodies the recording does not have, which is counted but cannot be sized. When the
//! recording has no `RequestReceived` events (it was made with them omitted) and the candidate
//! keeps that stage, the events it would add are estimated from the completed requests.

use std::collections::HashMap;

use kubetrail_event::{AuditEvent, Level, Stage};

use crate::attributes::RequestAttributes;
use crate::eval::Evaluator;
use crate::load::Policy;

/// A number of events and their size in bytes (as JSON lines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Volume {
    /// Events.
    pub events: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Volume {
    fn add(&mut self, bytes: u64) {
        self.events += 1;
        self.bytes += bytes;
    }
}

/// What one rule did to the recorded events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleVolume {
    /// Events the rule matched, at their recorded size.
    pub matched: Volume,
    /// What it keeps of them.
    pub kept: Volume,
}

/// The outcome of a simulation.
#[derive(Debug, Clone, Default)]
pub struct Simulation {
    /// Everything recorded.
    pub recorded: Volume,
    /// What the candidate policy keeps.
    pub kept: Volume,
    /// Dropped because their rule (or no rule) says level None.
    pub dropped_by_level: Volume,
    /// Dropped because their stage is omitted.
    pub dropped_by_stage: Volume,
    /// Kept at a lower level than recorded (their recorded size).
    pub down_levelled: Volume,
    /// Bytes of bodies removed from down-levelled events.
    pub body_bytes_removed: u64,
    /// Kept at a higher level than recorded: the candidate would log bodies not in the recording.
    pub up_levelled: u64,
    /// `RequestReceived` events the candidate would add, estimated (see the module docs).
    pub added_request_received: Volume,
    /// Per rule, in policy order.
    pub rules: Vec<RuleVolume>,
    /// Events no rule matched (level None).
    pub unmatched: Volume,
    /// Dropped and down-levelled events by `verb resource` (or path), most first.
    pub lost: Vec<(String, Volume)>,
}

/// Accumulates a [`Simulation`] over events.
pub struct Simulator {
    evaluator: Evaluator,
    result: Simulation,
    lost: HashMap<String, Volume>,
    recorded_request_received: bool,
    potential_request_received: Volume,
}

impl Simulator {
    /// A simulator for `policy`.
    pub fn new(policy: &Policy) -> Self {
        Simulator {
            evaluator: Evaluator::new(policy),
            result: Simulation {
                rules: vec![RuleVolume::default(); policy.rules.len()],
                ..Simulation::default()
            },
            lost: HashMap::new(),
            recorded_request_received: false,
            potential_request_received: Volume::default(),
        }
    }

    /// Replays one recorded event.
    pub fn observe(&mut self, event: &AuditEvent<'_>) {
        let size = event.raw.as_str().len() as u64 + 1;
        let r = &mut self.result;
        r.recorded.add(size);
        if event.stage == Stage::RequestReceived {
            self.recorded_request_received = true;
        }
        let decision = self
            .evaluator
            .evaluate(&RequestAttributes::from_event(event));
        match decision.rule {
            Some(rule) => r.rules[rule].matched.add(size),
            None => r.unmatched.add(size),
        }
        let what = || {
            let target = event
                .derived
                .resource_key
                .clone()
                .unwrap_or_else(|| event.derived.path.to_string());
            format!("{} {target}", event.verb)
        };
        if decision.level == Level::None {
            r.dropped_by_level.add(size);
            self.lost.entry(what()).or_default().add(size);
            return;
        }
        if decision.omit_stages.contains(event.stage) {
            r.dropped_by_stage.add(size);
            return;
        }
        let body = |b: &Option<kubetrail_event::RawJson<'_>>, key: &str| {
            // The body, its key, quotes, colon and comma.
            b.as_ref()
                .map_or(0, |b| b.as_str().len() as u64 + key.len() as u64 + 4)
        };
        let removed = match decision.level.cmp(&event.level) {
            std::cmp::Ordering::Less => {
                let response = body(&event.response_object, "responseObject");
                let request = if decision.level < Level::Request {
                    body(&event.request_object, "requestObject")
                } else {
                    0
                };
                r.down_levelled.add(size);
                self.lost.entry(what()).or_default().add(size);
                response + request
            }
            std::cmp::Ordering::Greater => {
                r.up_levelled += 1;
                0
            }
            std::cmp::Ordering::Equal => 0,
        };
        r.body_bytes_removed += removed;
        let kept = size.saturating_sub(removed);
        r.kept.add(kept);
        if let Some(rule) = decision.rule {
            r.rules[rule].kept.add(kept);
        }
        let completes = matches!(event.stage, Stage::ResponseComplete | Stage::Panic);
        if completes
            && !decision.omit_stages.contains(Stage::RequestReceived)
            && !event.user.username.is_empty()
        {
            // A RequestReceived event is the metadata of the request without a response.
            let metadata = kept
                .saturating_sub(body(&event.request_object, "requestObject"))
                .saturating_sub(body(&event.response_object, "responseObject"));
            self.potential_request_received.add(metadata);
        }
    }

    /// The result.
    pub fn finish(mut self) -> Simulation {
        if !self.recorded_request_received {
            self.result.added_request_received = self.potential_request_received;
        }
        let mut lost: Vec<(String, Volume)> = self.lost.into_iter().collect();
        lost.sort_by(|a, b| b.1.events.cmp(&a.1.events).then_with(|| a.0.cmp(&b.0)));
        self.result.lost = lost;
        self.result
    }
}
