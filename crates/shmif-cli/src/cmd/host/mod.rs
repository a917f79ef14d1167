//! `shmif host`: a userspace TCP/IP host on a bus.

use crate::cli::error::{interrupted, lib_error, usage_error};
use crate::cli::output;
use crate::cli::signal::StopSignal;
use crate::net::{self, dad, Step};
use anyhow::Result;
use plan::Plan;
use services::Services;
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod args;
mod plan;
mod services;

pub use args::Args;

/// Runs `shmif host`.
pub fn run(args: Args) -> Result<ExitCode> {
    let addrs = args.stack.addresses()?;
    if let Err(msg) = args.check_ports() {
        usage_error(msg);
    }
    args.check_actions(&addrs)?;
    let mut stack = args.stack.attach(&addrs)?;
    let stop = StopSignal::install()?;
    stop.take_down_on_stop(&stack.shmif)?;
    if !args.no_dad {
        let mine: Vec<_> = addrs.iter().map(|c| c.address()).collect();
        match dad::probe(&stack.shmif, &mine) {
            Ok(None) => {}
            Ok(Some(conflict)) => anyhow::bail!(
                "{conflict}; give this host another address (or --no-dad to start anyway)"
            ),
            Err(shmif::Error::Down) if stop.stopped() => return Ok(interrupted()),
            Err(e) => return Err(lib_error(e)),
        }
    }

    let mut services = Services::open(&args, &mut stack)?;
    output::say(&format!(
        "host {} ({}) up on {}{}",
        stack.addresses_text(),
        stack.mac(),
        args.stack.bus.display(),
        services.describe()
    ));

    let mut plan = Plan::new(args.actions.0.clone());
    let mut scratch = vec![0u8; 64 * 1024];
    let mut finished_actions = false;
    loop {
        stack.poll();
        let mut progressed = services.serve(&mut stack, &mut scratch);
        let until = match plan.step(&args, &mut stack) {
            Step::Busy => {
                progressed = true;
                None
            }
            Step::Idle(until) => until,
            Step::Done => {
                if !plan.reported && !plan.actions.is_empty() {
                    plan.reported = true;
                    output::say(&format!(
                        "host {}: actions done: {} of {} succeeded",
                        stack.addresses_text(),
                        plan.succeeded,
                        plan.actions.len()
                    ));
                }
                if args.exit_when_done {
                    finished_actions = true;
                    break;
                }
                None
            }
        };
        if progressed {
            // Socket buffers changed: let smoltcp send now, without sleeping.
            continue;
        }
        let max = until.map(|u| u.saturating_duration_since(Instant::now()));
        if max != Some(Duration::ZERO) && !stack.wait(max)? {
            plan.interrupt(net::activity::down_reason(&stop), &mut stack);
            if !plan.reported && !plan.actions.is_empty() {
                output::say(&format!(
                    "host {}: actions interrupted: {} of {} succeeded",
                    stack.addresses_text(),
                    plan.succeeded,
                    plan.actions.len()
                ));
            }
            break;
        }
    }
    // Whatever smoltcp queued last (the ACK of a peer's FIN) goes out.
    let _ = stack.dev.flush();
    let c = stack.shmif.counters();
    let why = if finished_actions {
        "actions done"
    } else if stop.stopped() {
        "signal"
    } else {
        "interface down"
    };
    output::say(&format!(
        "host {}: stopping ({why}); {} frames sent, {} received, {} overruns, {} bus repairs; \
         detached from {}",
        stack.addresses_text(),
        c.tx_frames,
        c.rx_frames,
        c.overruns,
        c.ring_repairs,
        args.stack.bus.display()
    ));
    Ok(if stop.stopped() && !finished_actions {
        interrupted()
    } else if plan.all_succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
