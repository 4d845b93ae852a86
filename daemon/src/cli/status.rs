//! `peerfold status` (once, or live with `--watch`) over the control socket, and
//! `peerfold events`, which follows the running daemon's event log over its REST API.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{HumanBytes, MultiProgress, ProgressBar};
use serde_json::Value;

use super::client::{DaemonApi, encode};
use super::edit::ask_daemon;
use super::output;
use peerfold_engine::config::Home;

/// Prints what the running daemon is doing: folders and devices.
pub(super) fn status(home: &Home, json: bool, out: &mut impl Write) -> Result<()> {
    let report = ask_daemon(home, "status")?;
    if json {
        output::json_line(out, &report)?;
        return Ok(());
    }
    writeln!(out, "Device {}", report["id"].as_str().unwrap_or_default())?;
    for f in report["folders"].as_array().into_iter().flatten() {
        if f["state"] == "paused" {
            writeln!(
                out,
                "folder {:<16} paused",
                f["id"].as_str().unwrap_or_default()
            )?;
            continue;
        }
        writeln!(
            out,
            "folder {:<16} {:<9} local {} files / {} B, global {} files / {} B, need {} files / {} B{}",
            f["id"].as_str().unwrap_or_default(),
            f["state"].as_str().unwrap_or_default(),
            f["local"]["files"],
            f["local"]["bytes"],
            f["global"]["files"],
            f["global"]["bytes"],
            f["need"]["files"],
            f["need"]["bytes"],
            match f["error"].as_str() {
                Some(e) if !e.is_empty() => format!(" ({e})"),
                _ => String::new(),
            }
        )?;
        for e in f["errors"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  cannot sync {}: {}",
                e["path"].as_str().unwrap_or_default(),
                e["error"].as_str().unwrap_or_default()
            )?;
        }
    }
    for d in report["devices"].as_array().into_iter().flatten() {
        let global = d["globalBytes"].as_u64().unwrap_or(0);
        let need = d["needBytes"].as_u64().unwrap_or(0);
        let complete = if global == 0 {
            100.0
        } else {
            100.0 * global.saturating_sub(need) as f64 / global as f64
        };
        writeln!(
            out,
            "device {} {:<12} {} {}{} in {} B, out {} B, has {complete:.0}% of shared folders",
            d["id"].as_str().unwrap_or_default(),
            d["name"].as_str().unwrap_or_default(),
            match (d["paused"] == true, d["connected"] == true) {
                (true, _) => "paused      ",
                (false, true) => "connected   ",
                (false, false) => "disconnected",
            },
            d["address"].as_str().unwrap_or("-"),
            match d["type"].as_str() {
                Some(kind) if kind.starts_with("relay") => " (through the relay)",
                Some(_) if d["holePunched"] == true => " (direct, hole punched)",
                _ => "",
            },
            d["inBytes"],
            d["outBytes"],
        )?;
    }
    Ok(())
}

/// Live bars: per folder, the bytes it has of the global version (or, while it scans, the
/// bytes hashed of those found changed); per device, how much of the shared folders it
/// has, whether it is connected, and its traffic. Runs until interrupted.
pub(super) fn watch(home: &Home) -> Result<()> {
    let bars = MultiProgress::new();
    let mut folders: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut devices: BTreeMap<String, ProgressBar> = BTreeMap::new();
    loop {
        let report = ask_daemon(home, "status")?;
        for f in report["folders"].as_array().into_iter().flatten() {
            let id = f["id"].as_str().unwrap_or_default().to_owned();
            let bar = folders
                .entry(id.clone())
                .or_insert_with(|| bars.add(output::folder_watch_bar(&id)));
            show_folder(bar, f);
        }
        for d in report["devices"].as_array().into_iter().flatten() {
            let id = d["id"].as_str().unwrap_or_default().to_owned();
            let bar = devices
                .entry(id.clone())
                .or_insert_with(|| bars.add(output::device_watch_bar(&id)));
            show_device(bar, d);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn show_folder(bar: &ProgressBar, f: &Value) {
    let errors = f["errors"].as_array().map_or(0, Vec::len);
    let errors = if errors > 0 {
        format!(", {errors} cannot sync")
    } else {
        String::new()
    };
    if f["state"] == "paused" {
        bar.set_message("paused");
    } else if f["scan"].is_object() {
        let to_hash = f["scan"]["toHash"].as_u64().unwrap_or(0);
        bar.set_length(to_hash.max(1));
        bar.set_position(f["scan"]["hashed"].as_u64().unwrap_or(0));
        bar.set_message(format!(
            "scanning, {} names walked{errors}",
            f["scan"]["walked"]
        ));
    } else {
        let global = f["global"]["bytes"].as_u64().unwrap_or(0);
        let need = f["need"]["bytes"].as_u64().unwrap_or(0);
        bar.set_length(global.max(1));
        bar.set_position(global.saturating_sub(need));
        bar.set_message(format!(
            "{} need {} items{errors}",
            f["state"].as_str().unwrap_or_default(),
            f["need"]["files"],
        ));
    }
}

fn show_device(bar: &ProgressBar, d: &Value) {
    let global = d["globalBytes"].as_u64().unwrap_or(0);
    let need = d["needBytes"].as_u64().unwrap_or(0);
    bar.set_length(global.max(1));
    bar.set_position(global.saturating_sub(need));
    let state = match (d["paused"] == true, d["connected"] == true) {
        (true, _) => "paused",
        (false, true) => "connected",
        (false, false) => "disconnected",
    };
    bar.set_message(format!(
        "{state} {} in {} out {}",
        d["address"].as_str().unwrap_or("-"),
        HumanBytes(d["inBytes"].as_u64().unwrap_or(0)),
        HumanBytes(d["outBytes"].as_u64().unwrap_or(0)),
    ));
}

/// Follows the running daemon's events, one JSON object per line, until interrupted.
pub(super) fn events(
    home: &Home,
    since: u64,
    types: Option<String>,
    out: &mut impl Write,
) -> Result<()> {
    let api = DaemonApi::find(home)?
        .context("the daemon is not running: start it with `peerfold serve`")?;
    let filter = types
        .map(|t| format!("&events={}", encode(&t)))
        .unwrap_or_default();
    let mut since = since;
    loop {
        let batch = api.call(
            "GET",
            &format!("/rest/events?since={since}&timeout=60{filter}"),
            None,
        )?;
        for event in batch.as_array().into_iter().flatten() {
            since = since.max(event["id"].as_u64().unwrap_or(since));
            output::json_line(out, event)?;
        }
        out.flush()?;
    }
}
