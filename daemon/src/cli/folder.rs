//! `peerfold folder ...`: add, list, share, pause and resume folders (configuration edits),
//! list the folders devices offer, and override or revert a one-way folder (asks the
//! running daemon).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use peerfold_protocol::DeviceId;

use super::edit::{Applied, apply_edit, apply_edit_prepared, ask_daemon};
use super::{FolderCommand, output};
use peerfold_engine::config::{self, ConfigEdit, FolderConfig, FolderType, Home};
use peerfold_engine::disk::scanner;

pub(super) fn run(
    home: &Home,
    command: FolderCommand,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    match command {
        FolderCommand::Add {
            id,
            path,
            label,
            folder_type,
        } => {
            let folder = new_folder(home, id, &path, label, folder_type)?;
            add(home, folder, out).map(drop)
        }
        FolderCommand::List => list(home, json, out),
        FolderCommand::Share { folder, device } => {
            let device: DeviceId = device
                .parse()
                .with_context(|| format!("device ID {device:?}"))?;
            share(home, &folder, device, out)
        }
        FolderCommand::Pause { folder } => pause(home, &folder, true, out),
        FolderCommand::Resume { folder } => pause(home, &folder, false, out),
        FolderCommand::Override { folder } => {
            let answer = ask_daemon(home, &format!("override {folder}"))?;
            writeln!(
                out,
                "Overrode {} out-of-sync names in {folder:?}: peers take this device's version",
                answer["changed"]
            )?;
            Ok(())
        }
        FolderCommand::Revert { folder } => {
            let answer = ask_daemon(home, &format!("revert {folder}"))?;
            writeln!(
                out,
                "Reverted {} locally changed names in {folder:?} to the global version",
                answer["changed"]
            )?;
            Ok(())
        }
        FolderCommand::Pending => pending(home, json, out),
    }
}

/// A new folder's settings, checked against the configuration: a fresh ID and an existing
/// directory (canonicalised) that no other folder uses.
pub(super) fn new_folder(
    home: &Home,
    id: String,
    path: &Path,
    label: Option<String>,
    folder_type: FolderType,
) -> Result<FolderConfig> {
    let config = home.config()?;
    config::check_folder_id(&id)?;
    if config.folder(&id).is_some() {
        bail!("folder {id:?} already exists");
    }
    let root: PathBuf = path
        .canonicalize()
        .with_context(|| format!("folder path {}", path.display()))?;
    if !root.is_dir() {
        bail!("folder path {} is not a directory", root.display());
    }
    if let Some(other) = config.folders.iter().find(|f| f.path == root) {
        bail!(
            "{} is already the path of folder {:?}",
            root.display(),
            other.id
        );
    }
    let mut folder = FolderConfig::new(id, label.unwrap_or_default(), root);
    folder.folder_type = folder_type;
    Ok(folder)
}

/// Adds a checked folder (see [`new_folder`]), as it is or already shared. Without a
/// daemon, the root gets its marker directory before the configuration is saved (a
/// running daemon makes it itself).
pub(super) fn add(home: &Home, folder: FolderConfig, out: &mut impl Write) -> Result<Applied> {
    let (id, root) = (folder.id.clone(), folder.path.clone());
    let applied = apply_edit_prepared(home, ConfigEdit::AddFolder(folder), || {
        let marker = root.join(scanner::MARKER_DIR);
        std::fs::create_dir_all(&marker)
            .with_context(|| format!("creating the folder marker {}", marker.display()))
    })?;
    let by_daemon = if applied == Applied::ByDaemon {
        " (applied by the running daemon)"
    } else {
        ""
    };
    writeln!(out, "Added folder {id:?} at {}{by_daemon}", root.display())?;
    Ok(applied)
}

/// Shares a configured folder with a configured device.
pub(super) fn share(
    home: &Home,
    folder: &str,
    device: DeviceId,
    out: &mut impl Write,
) -> Result<()> {
    let config = home.config()?;
    if !config.devices.iter().any(|d| d.id == device) {
        bail!("device {device} is not configured: add it with `peerfold device add`");
    }
    let Some(entry) = config.folder(folder) else {
        bail!("no folder {folder:?}: see `peerfold folder list`");
    };
    if entry.devices.contains(&device) {
        writeln!(out, "Folder {folder:?} is already shared with {device}")?;
        return Ok(());
    }
    let edit = ConfigEdit::ShareFolder {
        folder: folder.to_owned(),
        device,
    };
    let applied = apply_edit(home, edit)?;
    say_shared(&applied, folder, device, out)
}

/// `Shared folder ... with ...`, and by whom.
pub(super) fn say_shared(
    applied: &Applied,
    folder: &str,
    device: DeviceId,
    out: &mut impl Write,
) -> Result<()> {
    match applied {
        Applied::ByDaemon => writeln!(
            out,
            "Shared folder {folder:?} with {device} (applied by the running daemon)"
        )?,
        Applied::InFile(_) => writeln!(out, "Shared folder {folder:?} with {device}")?,
    }
    Ok(())
}

/// Pauses or resumes a folder.
fn pause(home: &Home, id: &str, paused: bool, out: &mut impl Write) -> Result<()> {
    if home.config()?.folder(id).is_none() {
        bail!("no folder {id:?}: see `peerfold folder list`");
    }
    let verb = if paused { "Paused" } else { "Resumed" };
    let edit = ConfigEdit::PauseFolder {
        folder: id.to_owned(),
        paused,
    };
    apply_edit(home, edit)?.say(&format!("{verb} folder {id:?}"), out)
}

fn list(home: &Home, json: bool, out: &mut impl Write) -> Result<()> {
    let config = home.config()?;
    if json {
        output::json_line(out, &output::folders_json(&config.folders))?;
        return Ok(());
    }
    for f in &config.folders {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\tshared with {}{}",
            f.id,
            f.folder_type.as_str(),
            f.path.display(),
            f.label,
            f.devices.len(),
            if f.paused { "\tpaused" } else { "" }
        )?;
    }
    Ok(())
}

fn pending(home: &Home, json: bool, out: &mut impl Write) -> Result<()> {
    let pending = home.store()?.pending_folders()?;
    if json {
        let list: Vec<_> = pending.iter().map(output::pending_folder_json).collect();
        output::json_line(out, &list)?;
        return Ok(());
    }
    for p in &pending {
        writeln!(out, "{}\t{}\t{}", p.folder, p.device, p.label)?;
    }
    Ok(())
}
