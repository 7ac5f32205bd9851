//! `promoctl completion SHELL` and `promoctl man`: generated from the clap
//! definition itself (clap_complete, clap_mangen), so they never drift from
//! the flags.

use crate::cli::Cli;
use crate::error::{CtlError, CtlResult};
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;

pub fn completion(shell: clap_complete::Shell) -> CtlResult<()> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "promoctl", &mut out);
    write_stdout(&out)
}

/// The top page to stdout, or a page per command into `out_dir`.
pub fn man(out_dir: Option<&Path>) -> CtlResult<()> {
    let cmd = Cli::command();
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CtlError::other(format!("cannot create {}", dir.display()), e))?;
            clap_mangen::generate_to(cmd, dir)
                .map_err(|e| CtlError::other(format!("cannot write into {}", dir.display()), e))
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .map_err(|e| CtlError::other("cannot render the man page", e))?;
            write_stdout(&out)
        }
    }
}

fn write_stdout(bytes: &[u8]) -> CtlResult<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|_| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CtlError::other("cannot write", e))
        }
        _ => Ok(()),
    }
}
