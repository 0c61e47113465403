//! A rotator's metrics, all from its audit trail.

use std::time::SystemTime;

use ::metrics::{SharedString, counter, gauge, histogram};

use super::catalogue as m;
use super::labels::SecretLabels;
use super::{Source, secs};
use crate::rotation::{AuditActivity, AuditOutcome, RotationEvent, Rotator, Step};

pub(super) fn watch(name: &str, rotator: &Rotator) -> Box<dyn Source> {
    let name = SharedString::from(name.to_owned());
    let secret = [("secret", name.clone())];
    // The series alerts compare exist from the start, at zero.
    counter!(m::ROTATIONS_STARTED, &secret).absolute(0);
    counter!(m::ROTATION_ROLLBACKS, &secret).absolute(0);
    for outcome in ["done", "rolled_back"] {
        let labels = [
            ("secret", name.clone()),
            ("outcome", SharedString::const_str(outcome)),
        ];
        counter!(m::ROTATIONS_FINISHED, &labels).absolute(0);
    }
    for outcome in ["done", "failed", "rolled_back"] {
        let labels = [
            ("secret", name.clone()),
            ("outcome", SharedString::const_str(outcome)),
        ];
        counter!(m::ROTATIONS, &labels).absolute(0);
    }
    let hook_name = name.clone();
    rotator.on_event(move |event| record(&hook_name, event));
    Box::new(Nothing)
}

/// The label of an outcome: its name without the error kind (which has a label of its own).
fn outcome(outcome: AuditOutcome) -> &'static str {
    match outcome {
        AuditOutcome::Done => "done",
        AuditOutcome::AlreadyDone => "already_done",
        AuditOutcome::UnderWay => "under_way",
        AuditOutcome::NotDue => "not_due",
        AuditOutcome::RolledBack => "rolled_back",
        AuditOutcome::Failed(_) => "failed",
    }
}

fn activity(activity: AuditActivity) -> &'static str {
    match activity {
        AuditActivity::Step(step) => step.as_aws_str(),
        AuditActivity::Rollback => "rollback",
        AuditActivity::Rotation => "rotation",
    }
}

fn record(name: &SharedString, event: &RotationEvent) {
    let secret = || ("secret", name.clone());
    let outcome_label = ("outcome", SharedString::const_str(outcome(event.outcome)));
    let step_label = ("step", SharedString::const_str(activity(event.activity)));
    if let AuditOutcome::Failed(kind) = event.outcome {
        let labels = [
            secret(),
            step_label.clone(),
            ("kind", SharedString::const_str(kind.as_str())),
        ];
        counter!(m::ROTATION_FAILURES, &labels).increment(1);
    }
    match (event.activity, event.outcome) {
        (AuditActivity::Rotation, _) => {
            let labels = [secret(), outcome_label];
            counter!(m::ROTATIONS, &labels).increment(1);
            histogram!(m::ROTATION_DURATION, &labels).record(secs(event.duration));
        }
        (AuditActivity::Rollback, AuditOutcome::Done) => {
            counter!(m::ROTATION_ROLLBACKS, &[secret()]).increment(1);
            let finished = [
                secret(),
                ("outcome", SharedString::const_str("rolled_back")),
            ];
            counter!(m::ROTATIONS_FINISHED, &finished).increment(1);
        }
        (AuditActivity::Step(step), outcome) => {
            counter!(
                m::ROTATION_STEPS,
                &[secret(), step_label.clone(), outcome_label]
            )
            .increment(1);
            histogram!(m::ROTATION_STEP_DURATION, &[secret(), step_label])
                .record(secs(event.duration));
            match (step, outcome) {
                (Step::Create, AuditOutcome::Done) => {
                    counter!(m::ROTATIONS_STARTED, &[secret()]).increment(1);
                }
                (Step::Finish, AuditOutcome::Done) => {
                    let finished = [secret(), ("outcome", SharedString::const_str("done"))];
                    counter!(m::ROTATIONS_FINISHED, &finished).increment(1);
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default();
                    gauge!(m::ROTATION_LAST_SUCCESS, &[secret()]).set(secs(now));
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// A rotator has no snapshot to publish: everything comes from its events.
struct Nothing;

impl Source for Nothing {
    fn publish(&mut self, _: &SecretLabels) -> bool {
        true
    }
}
