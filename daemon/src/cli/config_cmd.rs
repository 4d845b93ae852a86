//! `peerfold config get|set`: options by their Syncthing names. With the daemon running
//! they are read through its REST API and set through its control socket (and apply at
//! once); otherwise config.toml is read or edited, and the command says so.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

use super::client::DaemonApi;
use super::edit::{Applied, apply_edit};
use super::output;
use crate::options::{self, SETTINGS};
use peerfold_engine::config::{ConfigEdit, Home};

/// Prints one option, or all of them as KEY=VALUE lines (or one JSON object).
pub(super) fn get(home: &Home, key: Option<&str>, json: bool, out: &mut impl Write) -> Result<()> {
    if let Some(key) = key {
        options::setting(key).map_err(anyhow::Error::msg)?;
    }
    let all: Value = match DaemonApi::find(home)? {
        Some(api) => api.call("GET", "/rest/config/options", None)?,
        None => {
            let config = home.config()?;
            SETTINGS
                .iter()
                .map(|s| (s.name.to_owned(), options::get(&config, s)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        }
    };
    let wanted: Vec<&str> = match key {
        Some(key) => vec![key],
        None => SETTINGS.iter().map(|s| s.name).collect(),
    };
    if json {
        let picked: serde_json::Map<String, Value> = wanted
            .iter()
            .map(|name| ((*name).to_owned(), all[*name].clone()))
            .collect();
        output::json_line(out, &picked)?;
        return Ok(());
    }
    for name in wanted {
        if key.is_some() {
            writeln!(out, "{}", options::to_text(&all[name]))?;
        } else {
            writeln!(out, "{name}={}", options::to_text(&all[name]))?;
        }
    }
    Ok(())
}

/// Sets one option from `KEY=VALUE`.
pub(super) fn set(home: &Home, assignment: &str, out: &mut impl Write) -> Result<()> {
    let (key, text) = assignment
        .split_once('=')
        .context("write KEY=VALUE, e.g. globalAnnounceServers=https://host:8443/?id=ID")?;
    let setting = options::setting(key.trim()).map_err(anyhow::Error::msg)?;
    let value = options::from_text(setting, text).map_err(anyhow::Error::msg)?;
    let change = options::change(setting, &value).map_err(anyhow::Error::msg)?;
    match apply_edit(home, ConfigEdit::SetOption(change))? {
        Applied::ByDaemon => {
            let later = if setting.needs_restart {
                "; it applies at the daemon's next start"
            } else {
                ""
            };
            writeln!(
                out,
                "Set {} (saved by the running daemon{later})",
                setting.name
            )?;
        }
        Applied::InFile(path) => writeln!(
            out,
            "Set {} in {} (the daemon is not running; it applies at its next start)",
            setting.name,
            path.display()
        )?,
    }
    Ok(())
}
