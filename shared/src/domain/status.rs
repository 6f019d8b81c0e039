//! The lifecycle state machine. State names are part of the API contract.
//!
//! Every change of state goes through [`Status::transition_to`], which knows the one table of
//! legal moves; the store additionally makes each move a conditional write on the previous
//! state and version, so a move decided on stale data is rejected there too.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Received,
    Blocked,
    AwaitingApproval,
    Approved,
    Rejected,
    Expired,
    Cancelled,
    Manual,
    DoneManually,
    Dismissed,
    Pending,
    Queued,
    Executing,
    Waiting,
    Completed,
    Failed,
    RollingBack,
    RolledBack,
    RollbackFailed,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an action cannot move from {from} to {to}")]
pub struct IllegalTransition {
    pub from: Status,
    pub to: Status,
}

impl Status {
    pub const ALL: [Status; 19] = [
        Status::Received,
        Status::Blocked,
        Status::AwaitingApproval,
        Status::Approved,
        Status::Rejected,
        Status::Expired,
        Status::Cancelled,
        Status::Manual,
        Status::DoneManually,
        Status::Dismissed,
        Status::Pending,
        Status::Queued,
        Status::Executing,
        Status::Waiting,
        Status::Completed,
        Status::Failed,
        Status::RollingBack,
        Status::RolledBack,
        Status::RollbackFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Blocked => "blocked",
            Status::AwaitingApproval => "awaiting_approval",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
            Status::Manual => "manual",
            Status::DoneManually => "done_manually",
            Status::Dismissed => "dismissed",
            Status::Pending => "pending",
            Status::Queued => "queued",
            Status::Executing => "executing",
            Status::Waiting => "waiting",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::RollingBack => "rolling_back",
            Status::RolledBack => "rolled_back",
            Status::RollbackFailed => "rollback_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// The states this one may move to. The single source of truth for the lifecycle.
    pub fn successors(self) -> &'static [Status] {
        use Status::*;
        match self {
            Received => &[Blocked, AwaitingApproval, Manual, Pending, Queued],
            AwaitingApproval => &[Approved, Rejected, Expired, Cancelled],
            Approved => &[Queued],
            Manual => &[DoneManually, Dismissed],
            // Before any step starts, the policy current at that moment decides again: a change
            // may block it, send it to a human (approval or manual), or hold tier-1 work
            // (kill switch, open breaker) — see `Policy::recheck`.
            // A plan whose earlier steps already ran fails instead (rollback stays possible):
            // see `placement::stopped_by_policy`.
            Pending => &[Queued, Cancelled, Blocked, AwaitingApproval, Manual, Failed],
            // An owner may withdraw queued work until an executor claims it.
            Queued => &[Executing, Cancelled, Pending, Blocked, AwaitingApproval, Manual, Failed],
            // A transient error re-queues (attempt + 1); a wait step rests in `waiting`.
            Executing => &[Completed, Failed, Waiting, Queued],
            Waiting => &[Queued, Cancelled],
            Completed | Failed => &[RollingBack],
            // A plan stopped half-way (cancelled mid-plan, or asked to approve again and then
            // rejected or expired) may still undo the steps it ran; the rollback service
            // allows this only when a step did run.
            Rejected | Expired | Cancelled => &[RollingBack],
            RollingBack => &[RolledBack, RollbackFailed],
            Blocked | DoneManually | Dismissed | RolledBack | RollbackFailed => &[],
        }
    }

    pub fn can_move_to(self, next: Status) -> bool {
        self.successors().contains(&next)
    }

    pub fn transition_to(self, next: Status) -> Result<Status, IllegalTransition> {
        if self.can_move_to(next) {
            Ok(next)
        } else {
            Err(IllegalTransition { from: self, to: next })
        }
    }

    /// No further move is possible.
    pub fn is_terminal(self) -> bool {
        self.successors().is_empty()
    }

    /// The owner can still withdraw the action (nothing has started running).
    pub fn is_cancellable(self) -> bool {
        self.can_move_to(Status::Cancelled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_parse() {
        for status in Status::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("done"), None);
    }

    #[test]
    fn the_documented_lifecycle_is_legal() {
        use Status::*;
        let paths: &[&[Status]] = &[
            &[Received, AwaitingApproval, Approved, Queued, Executing, Completed, RollingBack, RolledBack],
            &[Received, AwaitingApproval, Rejected],
            &[Received, AwaitingApproval, Expired],
            &[Received, Manual, DoneManually],
            &[Received, Pending, Queued, Executing, Waiting, Queued, Executing, Completed],
            &[Received, Queued, Executing, Queued, Executing, Failed, RollingBack, RollbackFailed],
            &[Received, Blocked],
        ];
        for path in paths {
            for pair in path.windows(2) {
                assert_eq!(pair[0].transition_to(pair[1]), Ok(pair[1]), "{:?}", pair);
            }
        }
    }

    #[test]
    fn illegal_moves_are_rejected() {
        use Status::*;
        assert!(Received.transition_to(Executing).is_err());
        assert!(AwaitingApproval.transition_to(Queued).is_err());
        assert!(Executing.transition_to(Cancelled).is_err());
        assert!(Completed.transition_to(Queued).is_err());
        assert!(Manual.transition_to(Queued).is_err());
        let err = Blocked.transition_to(Queued).unwrap_err();
        assert_eq!(err.to_string(), "an action cannot move from blocked to queued");
    }

    #[test]
    fn terminal_states_have_no_successors() {
        use Status::*;
        for s in [Blocked, DoneManually, Dismissed, RolledBack, RollbackFailed] {
            assert!(s.is_terminal());
        }
        // A stopped plan may only go on to undo what it ran.
        for s in [Rejected, Expired, Cancelled] {
            assert_eq!(s.successors(), &[RollingBack]);
        }
        assert!(!Completed.is_terminal());
    }

    #[test]
    fn only_work_not_yet_running_is_cancellable() {
        use Status::*;
        let cancellable: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_cancellable()).collect();
        assert_eq!(cancellable, vec![AwaitingApproval, Pending, Queued, Waiting]);
    }
}
