//! `shmif host`'s plan: the actions, run one after another while the host
//! serves.

use super::args::{Action, Args};
use crate::net::ping::Pinger;
use crate::net::transfer::{local_port, TcpSender};
use crate::net::{Activity, Stack, Step};
use anyhow::Result;

/// The actions' progress: which is running, how many are done.
pub struct Plan {
    pub(super) actions: Vec<Action>,
    /// The next action to start.
    next: usize,
    current: Option<Box<dyn Activity>>,
    pub(super) succeeded: usize,
    /// Whether the `actions done` line was printed.
    pub(super) reported: bool,
}

impl Plan {
    /// A plan to run `actions` in order.
    pub fn new(actions: Vec<Action>) -> Plan {
        Plan {
            actions,
            next: 0,
            current: None,
            succeeded: 0,
            reported: false,
        }
    }

    pub(super) fn all_done(&self) -> bool {
        self.next == self.actions.len() && self.current.is_none()
    }

    pub(super) fn all_succeeded(&self) -> bool {
        self.all_done() && self.succeeded == self.actions.len()
    }

    /// Starts action `self.next` on `stack`.
    pub(super) fn start_next(&mut self, args: &Args, stack: &mut Stack) {
        let action = self.actions[self.next];
        let n = self.next;
        self.next += 1;
        let dest = match action {
            Action::Ping(d) => d,
            Action::TcpSend { dest, .. } => dest.ip(),
        };
        if let Err(e) = stack.solicit(dest.into()) {
            eprintln!("shmif host: {action}: {e:#}");
        }
        let started: Result<Box<dyn Activity>> = match action {
            Action::Ping(d) => Pinger::start(stack, args.ping_options(d), &args.stack.bus)
                .map(|p| Box::new(p) as _),
            Action::TcpSend { dest, echo } => {
                let served: Vec<u16> = args
                    .tcp_sink
                    .iter()
                    .chain(&args.tcp_echo)
                    .copied()
                    .collect();
                let port = local_port(stack, n as u16, &served);
                let context = format!("shmif host: {action}");
                TcpSender::start(stack, args.tcp_options(dest, echo), port, &context)
                    .map(|t| Box::new(t) as _)
            }
        };
        match started {
            Ok(a) => self.current = Some(a),
            Err(e) => eprintln!("shmif host: {action}: {e:#}"),
        }
    }

    /// Steps the running action (starting the next ones as each
    /// finishes); returns what the host loop should do about the actions.
    pub(super) fn step(&mut self, args: &Args, stack: &mut Stack) -> Step {
        loop {
            if self.current.is_none() {
                if self.next == self.actions.len() {
                    return Step::Done;
                }
                self.start_next(args, stack);
                continue;
            }
            let Some(a) = self.current.as_mut() else {
                continue;
            };
            match a.step(stack) {
                Step::Done => {
                    if a.finish(stack) {
                        self.succeeded += 1;
                    }
                    self.current = None;
                }
                other => return other,
            }
        }
    }

    /// The interface went down: the running action ends with a report.
    pub(super) fn interrupt(&mut self, why: &str, stack: &mut Stack) {
        if let Some(mut a) = self.current.take() {
            a.interrupt(why);
            if a.finish(stack) {
                self.succeeded += 1;
            }
        }
    }
}
