//! The `peerfold` binary: parses the command line, sets up logging (`peerfold::logs`), runs the command, and
//! turns an error into a one-line message and exit code 1 (clap exits 2 on usage errors).

use std::process::ExitCode;

use clap::Parser;
use peerfold::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.serves() {
        few_malloc_arenas();
    }
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

/// glibc's malloc gives threads that contend for it arenas of their own, up to eight per
/// core, and keeps what was freed in each: a daemon pulling 60,000 small files (dozens of
/// blocking threads for SQLite and fsync) peaked at 101 MB RSS, 47 MB with two arenas, at
/// the same speed (bench/RESULTS.md). The limit is read from the environment when the
/// process starts (`unsafe_code` is forbidden, so no `mallopt`): the daemon runs itself
/// again, same PID and arguments, with `MALLOC_ARENA_MAX=2`, unless the user set it (or
/// `GLIBC_TUNABLES`).
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        const ARENAS: &str = "MALLOC_ARENA_MAX";
        if std::env::var_os(ARENAS).is_some() || std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        // Only returns if the exec failed: then the daemon runs with glibc's defaults.
        let error = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(ARENAS, "2")
            .exec();
        eprintln!("note: could not limit malloc arenas ({error}); running with the defaults");
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
