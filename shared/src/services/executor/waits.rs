//! Wait steps: a one-time schedule wakes the action, which rests in `waiting` meanwhile.

use super::*;

impl ExecutorService {
    /// A wait step: schedule the wake-up, then rest in `waiting`.
    pub(super) async fn start_wait(&self, action: Action, deadline: DateTime<Utc>) -> Outcome {
        let index = action.next_step();
        let now = self.clock.now();
        // A plan that starts with a wait starts no earlier than its time either.
        if let Some(at) = action.runnable_at().filter(|at| *at > now) {
            let delay = u64::try_from((at - now).num_seconds()).unwrap_or(0).max(1);
            self.enqueue_at(&action, index, delay, &format!("s{index}-due{}", at.timestamp())).await;
            return Outcome::Ignored(format!("not due before {}", format_time(at)));
        }
        let wake_at = match &action.steps[index].kind {
            StepKind::WaitFor { wait_for } => action.steps[index].wake_at.unwrap_or(now + wait_for.to_chrono()),
            StepKind::WaitUntil { wait_until } => *wait_until,
            StepKind::Action { .. } => return Outcome::Ignored("not a wait step".into()),
        };
        // Schedules have second precision: round up, so a wait never ends early.
        let wake_at = match wake_at.timestamp_subsec_nanos() {
            0 => wake_at,
            nanos => wake_at + chrono::Duration::nanoseconds(1_000_000_000 - i64::from(nanos)),
        };
        let message = ExecuteMessage::step(action.action_id, index);
        if wake_at > now {
            if let Err(e) = self
                .scheduler
                .schedule(
                    &crate::ports::scheduler::wake_up_name(&message, &format!("s{index}-wait")),
                    wake_at,
                    &message,
                )
                .await
            {
                return Outcome::Retry(e.to_string());
            }
        }
        let mut after = action.clone();
        after.lease_expires_at = None;
        let step = &mut after.steps[index];
        step.state = StepState::Waiting;
        step.started_at = Some(now);
        step.wake_at = Some(wake_at);
        let _ = deadline;
        let path = [
            (Status::Executing, format!("step {index} (wait) started"), None),
            (
                Status::Waiting,
                format!("waiting until {}", format_time(wake_at)),
                Some(json!({"wake_at": format_time(wake_at)})),
            ),
        ];
        match self.write(&action, after, &path).await {
            Ok(done) => {
                if wake_at <= now {
                    self.enqueue(&done, index, 0).await;
                }
                Outcome::Ran(done.status)
            }
            Err(TransitionError::Conflict) => Outcome::Ignored("claimed by another executor".into()),
            Err(TransitionError::Store(e)) => Outcome::Retry(e.to_string()),
        }
    }

    /// The wake-up fired: the wait step is done, the action is queued for the next step.
    pub(super) async fn finish_wait(&self, action: Action) -> Result<(), Outcome> {
        let index = action.next_step();
        let now = self.clock.now();
        let wake_at = action.steps[index].wake_at.unwrap_or(now);
        if now < wake_at {
            return Err(Outcome::Ignored(format!("the wait lasts until {}", format_time(wake_at))));
        }
        let mut after = action.clone();
        let step = &mut after.steps[index];
        step.state = StepState::Completed;
        step.finished_at = Some(now);
        if index + 1 == after.steps.len() {
            return Err(Outcome::Ignored("a plan cannot end with a wait".into()));
        }
        match self
            .write(&action, after, &[(Status::Queued, format!("wait over; step {} is next", index + 1), None)])
            .await
        {
            Ok(_) => Ok(()),
            Err(TransitionError::Conflict) => Err(Outcome::Ignored("the wait was already resumed".into())),
            Err(TransitionError::Store(e)) => Err(Outcome::Retry(e.to_string())),
        }
    }
}
