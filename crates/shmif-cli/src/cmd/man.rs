//! `shmif man`: manual pages in roff, from the command's own definitions
//! (clap_mangen).

use anyhow::{anyhow, Context as _, Result};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Print the manual page of `shmif` (or of one subcommand), in roff.
///
/// The page is made from the same definitions as `--help`: the synopsis,
/// the description, every option, the subcommands, and the examples and
/// exit status. `shmif man | man -l -` reads it at once; --dir writes a
/// page per command (shmif.1, shmif-dump.1, ...) to install under a
/// `man1` directory.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shmif man | man -l -                       # read it now\n  \
    shmif man dump | man -l -                  # the page of `shmif dump`\n  \
    shmif man --dir ~/.local/share/man/man1    # install every page\n\n\
    Exit status: 0; 1 if a page cannot be written; 2 on a usage error.")]
pub struct Args {
    /// The subcommand whose page to print (default: `shmif` itself).
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
    /// Write every page (shmif.1 and shmif-COMMAND.1) into DIR instead.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub dir: Option<PathBuf>,
}

/// The visible subcommands of `cli`, each as a command named
/// `shmif-NAME` for its own page.
fn pages(cli: &clap::Command) -> Vec<(String, clap::Command)> {
    let top = cli.get_name().to_string();
    cli.get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| {
            let name = format!("{top}-{}", c.get_name());
            (name.clone(), c.clone().name(name))
        })
        .collect()
}

/// Renders `cmd`'s page.
fn render(cmd: clap::Command) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .context("cannot render the manual page")?;
    Ok(out)
}

/// Runs `shmif man`, for the command `cli`.
pub fn run(args: Args, mut cli: clap::Command) -> Result<ExitCode> {
    cli.build();
    if let Some(dir) = &args.dir {
        let mut all = vec![(cli.get_name().to_string(), cli.clone())];
        all.extend(pages(&cli));
        for (name, cmd) in all {
            let path = dir.join(format!("{name}.1"));
            std::fs::write(&path, render(cmd)?)
                .with_context(|| format!("{}: cannot write", path.display()))?;
            println!("{}", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let page = match &args.command {
        None => render(cli)?,
        Some(want) => {
            let (_, cmd) = pages(&cli)
                .into_iter()
                .find(|(n, _)| n.split_once('-').is_some_and(|(_, sub)| sub == want))
                .ok_or_else(|| anyhow!("{want}: no such command (see `shmif help`)"))?;
            render(cmd)?
        }
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(&page).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(anyhow!("writing to standard output: {e}")),
    }
}
