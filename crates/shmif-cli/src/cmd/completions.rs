//! `shmif completions`: shell completion scripts, from the command's own
//! definitions (clap_complete).

use anyhow::Result;
use clap_complete::Shell;
use std::process::ExitCode;

/// Print a shell completion script for `shmif`.
///
/// The script completes subcommands, options and their values (shells,
/// timestamp sources, file paths) from the same definitions as `--help`.
/// Load it in the running shell, or install it where the shell looks.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    source <(shmif completions bash)                       # bash, this shell only\n  \
    shmif completions bash > ~/.local/share/bash-completion/completions/shmif\n  \
    shmif completions zsh > ~/.zfunc/_shmif                # with fpath+=~/.zfunc\n  \
    shmif completions fish > ~/.config/fish/completions/shmif.fish\n\n\
    Exit status: 0; 2 on a usage error.")]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL", value_enum)]
    pub shell: Shell,
}

/// Runs `shmif completions`, for the command `cli`.
pub fn run(args: Args, mut cli: clap::Command) -> Result<ExitCode> {
    let name = cli.get_name().to_string();
    clap_complete::generate(args.shell, &mut cli, name, &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
