//! Activities: what a host does over many polls of its stack, and the
//! driver for a stack that does nothing else.

use super::Stack;
use crate::cli::signal::StopSignal;
use anyhow::Result;
use std::time::{Duration, Instant};

/// What an [`Activity`] needs after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It handed data to a socket or took some: poll the stack again
    /// before sleeping.
    Busy,
    /// Nothing to do until a frame arrives, smoltcp has a timer due, or
    /// the given instant (`None`: no deadline of its own).
    Idle(Option<Instant>),
    /// Finished: call [`Activity::finish`].
    Done,
}

/// Something a host does over many polls of its [`Stack`], next to
/// whatever else the stack serves: a ping run ([`crate::net::ping::Pinger`]), a
/// TCP transfer ([`crate::net::transfer::TcpSender`]).
///
/// The driver polls the stack, calls [`Activity::step`], and sleeps as the
/// step says; when the interface is taken down (SIGINT/SIGTERM) it calls
/// [`Activity::interrupt`]; in the end it calls [`Activity::finish`] once.
/// [`run_alone`] is the driver for a stack that does nothing else.
pub trait Activity {
    /// Does what can be done now; called after each [`Stack::poll`].
    fn step(&mut self, stack: &mut Stack) -> Step;
    /// The interface was taken down (`why`): nothing more will come in.
    fn interrupt(&mut self, why: &str);
    /// Prints the report on stdout (failures on stderr), frees the
    /// activity's sockets, and returns whether it succeeded.
    fn finish(&mut self, stack: &mut Stack) -> bool;
}

/// What to say when the interface went down under an activity.
pub fn down_reason(stop: &StopSignal) -> &'static str {
    if stop.stopped() {
        "interrupted"
    } else {
        "interface taken down"
    }
}

/// Runs `act` on `stack` until it is done or the interface is taken down
/// (by [`StopSignal`]), then finishes it; returns whether it succeeded.
pub fn run_alone(stack: &mut Stack, act: &mut dyn Activity, stop: &StopSignal) -> Result<bool> {
    loop {
        stack.poll();
        let until = match act.step(stack) {
            Step::Busy => continue,
            Step::Done => break,
            Step::Idle(until) => until,
        };
        let max = until.map(|u| u.saturating_duration_since(Instant::now()));
        if max != Some(Duration::ZERO) && !stack.wait(max)? {
            act.interrupt(down_reason(stop));
            break;
        }
    }
    Ok(act.finish(stack))
}
