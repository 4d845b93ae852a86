//! The `peerfold` binary: parses the command line, sets up logging (`peerfold::logs`), runs the command, and
//! turns an error into a one-line message and exit code 1 (clap exits 2 on usage errors).

use std::process::ExitCode;

use clap::Parser;
use peerfold::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    peerfold::logs::init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `peerfold ls ... | head` closing the pipe early is not a failure.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
