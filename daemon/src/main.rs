//! The `peerfold` binary: parses the command line, sets up logging (`peerfold::logs`), runs the command, and
//! turns an error into a one-line message and exit code 1 (clap exits 2 on usage errors).

use std::process::ExitCode;

use clap::Parser;
use peerfold::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.serves() {
        tune_malloc();
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

/// glibc's malloc tuned for a long-running daemon, through the environment it reads when the
/// process starts (`unsafe_code` is forbidden, so no `mallopt` or `malloc_trim`): the daemon
/// runs itself again, same PID and arguments, with the settings below, unless the user set
/// any of them (or `GLIBC_TUNABLES`).
/// - Two arenas: glibc gives threads that contend for malloc arenas of their own, up to eight
///   per core, and keeps what was freed in each; a daemon pulling 60,000 small files (dozens
///   of blocking threads for SQLite and fsync) peaked at 101 MB RSS, 47 MB with two, at the
///   same speed.
/// - Free memory at the top of a heap goes back beyond 64 KiB, and only allocations of 4 MiB
///   and more get their own mapping: with glibc's sliding defaults a receiver stayed at 43 MB
///   after pulling 20,000 files, 36 MB with these; the fixed mapping threshold keeps block
///   buffers (up to a few hundred KiB) off `mmap`, which cost a 1 GiB transfer a third more
///   CPU when only the trim threshold was set (bench/RESULTS.md).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        const SETTINGS: [(&str, &str); 3] = [
            ("MALLOC_ARENA_MAX", "2"),
            ("MALLOC_TRIM_THRESHOLD_", "65536"),
            ("MALLOC_MMAP_THRESHOLD_", "4194304"),
        ];
        let user_set = SETTINGS
            .iter()
            .any(|(name, _)| std::env::var_os(name).is_some());
        if user_set || std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        // Only returns if the exec failed: then the daemon runs with glibc's defaults.
        let error = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .envs(SETTINGS)
            .exec();
        eprintln!("note: could not tune malloc ({error}); running with the defaults");
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
