//! `peerfold scan` and `peerfold ls`: scanning folders into the index (by the running
//! daemon when there is one, here otherwise) and listing a folder's index entries.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result, bail};

use super::client::{DaemonApi, encode};
use super::output;
use peerfold_engine::config::{FolderConfig, Home};
use peerfold_engine::disk::scanner::{self, ScanReport};
use peerfold_engine::store::StoreHandle;

/// Scans one folder, or all of them.
pub(super) fn scan(
    home: &Home,
    only: Option<String>,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let config = home.config()?;
    if let Some(api) = DaemonApi::find(home)? {
        // The running daemon scans (and its watcher usually already has).
        let ids: Vec<String> = match &only {
            Some(id) => vec![id.clone()],
            None => config.folders.iter().map(|f| f.id.clone()).collect(),
        };
        let mut answers = Vec::new();
        for id in ids {
            let answer = api.call(
                "POST",
                &format!("/rest/db/scan?folder={}", encode(&id)),
                None,
            )?;
            if !json {
                let changed = if answer["changed"] == true {
                    "changes recorded"
                } else {
                    "no changes"
                };
                writeln!(out, "{id}: scanned by the running daemon, {changed}")?;
            }
            answers.push(answer);
        }
        if json {
            output::json_line(out, &serde_json::Value::Array(answers))?;
        }
        return Ok(());
    }
    let local = home.identity()?.device_id().short();
    let folders: Vec<&FolderConfig> = match &only {
        Some(id) => vec![
            config
                .folder(id)
                .with_context(|| format!("no folder {id:?}: see `peerfold folder list`"))?,
        ],
        None => config.folders.iter().collect(),
    };
    let store = StoreHandle::new(home.store()?);
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for folder in folders {
        let bar = output::scan_progress_bar(&folder.id, std::io::stderr().is_terminal());
        let result = scanner::scan_folder(&store, &folder.id, &folder.path, local, |p| {
            output::update_scan_bar(&bar, p);
        });
        bar.finish_and_clear();
        match result {
            Ok(report) => {
                for issue in &report.issues {
                    eprintln!("warning: {}: {}: {}", folder.id, issue.name, issue.message);
                }
                if !json {
                    writeln!(out, "{}", output::scan_summary(&folder.id, &report))?;
                }
                reports.push((folder.id.clone(), report));
            }
            Err(e) => failures.push(format!("folder {:?}: {e}", folder.id)),
        }
    }
    if json {
        let reports: Vec<_> = reports
            .iter()
            .map(|(id, r): &(String, ScanReport)| output::scan_json(id, r))
            .collect();
        output::json_line(out, &reports)?;
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// Lists a folder's local index entries, tombstones included.
pub(super) fn ls(home: &Home, folder_id: &str, json: bool, out: &mut impl Write) -> Result<()> {
    let config = home.config()?;
    if config.folder(folder_id).is_none() {
        bail!("no folder {folder_id:?}: see `peerfold folder list`");
    }
    let store = home.store()?;
    let Some(folder) = store.folder(folder_id)? else {
        // Configured but never scanned: an empty index.
        if json {
            writeln!(out, "[]")?;
        }
        return Ok(());
    };
    let mut list = output::EntryList::new(out, json)?;
    store.for_each_local_entry(folder, |entry| list.push(&entry))?;
    list.finish()?;
    Ok(())
}
