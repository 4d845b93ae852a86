//! The CLI's way to the daemon running on a home, over its control socket, and the one way
//! it changes a configuration: a typed [`ConfigEdit`], sent to the running daemon (which
//! applies it at once and saves it) or, when none runs, applied to `config.toml` with the
//! same checks.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use peerfold_engine::config::{self, ConfigEdit, Home};

/// Where an edit was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Applied {
    /// By the running daemon, which saved it.
    ByDaemon,
    /// In this `config.toml` (no daemon runs on the home).
    InFile(PathBuf),
}

impl Applied {
    /// Says what was done and where: `{done} (applied by the running daemon)` or
    /// `{done} in CONFIG (the daemon is not running)`.
    pub(super) fn say(&self, done: &str, out: &mut impl Write) -> Result<()> {
        match self {
            Self::ByDaemon => writeln!(out, "{done} (applied by the running daemon)")?,
            Self::InFile(path) => writeln!(
                out,
                "{done} in {} (the daemon is not running)",
                path.display()
            )?,
        }
        Ok(())
    }
}

/// Applies one configuration change: through the daemon running on `home` (it applies at
/// once and saves), or in `config.toml` when none runs.
pub(super) fn apply_edit(home: &Home, edit: ConfigEdit) -> Result<Applied> {
    apply_edit_prepared(home, edit, || Ok(()))
}

/// Like [`apply_edit`]; when no daemon runs, `offline` runs first (what a running daemon
/// would do itself, such as creating a new folder's marker directory).
pub(super) fn apply_edit_prepared(
    home: &Home,
    edit: ConfigEdit,
    offline: impl FnOnce() -> Result<()>,
) -> Result<Applied> {
    let request = format!(
        "edit {}",
        serde_json::to_string(&edit).context("writing the edit")?
    );
    if ask_daemon_if_running(home, &request)?.is_some() {
        return Ok(Applied::ByDaemon);
    }
    offline()?;
    config::edit_file(home, edit)?;
    Ok(Applied::InFile(home.config_path()))
}

/// Sends one request line to the running daemon's control socket; returns its answer.
pub(super) fn ask_daemon(home: &Home, request: &str) -> Result<Value> {
    match ask_daemon_if_running(home, request)? {
        Some(answer) => Ok(answer),
        None => bail!(
            "the daemon is not running (nothing listens on {}): start it with `peerfold serve`",
            crate::control::socket_path(home).display()
        ),
    }
}

/// Like `ask_daemon`, but `None` when no daemon runs on the home (no socket, or one a dead
/// daemon left). Any other failure (permissions, a hung daemon) is an error: commands must
/// not fall back to editing config.toml under a daemon that runs. An `{"error": ...}`
/// answer becomes an error.
pub(super) fn ask_daemon_if_running(home: &Home, request: &str) -> Result<Option<Value>> {
    let path = crate::control::socket_path(home);
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot reach the daemon's control socket {}",
                    path.display()
                )
            });
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .context("talking to the daemon")?;
    writeln!(stream, "{request}").context("talking to the daemon")?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .context("talking to the daemon")?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .context("reading the daemon's answer")?;
    let answer: Value = serde_json::from_str(&text).context("the daemon's answer")?;
    if let Some(error) = answer["error"].as_str() {
        bail!("{error}");
    }
    Ok(Some(answer))
}
