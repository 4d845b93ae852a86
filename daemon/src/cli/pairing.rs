//! `peerfold pending` and `peerfold accept`: devices that knocked and folders devices
//! offered, and accepting them (one configuration edit each).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use peerfold_protocol::DeviceId;

use super::edit::apply_edit;
use super::{device, folder, output};
use peerfold_engine::config::{ConfigEdit, FolderType, Home};

/// Lists the devices and folders waiting to be accepted.
pub(super) fn pending(home: &Home, json: bool, out: &mut impl Write) -> Result<()> {
    let store = home.store()?;
    let config = home.config()?;
    let devices: Vec<_> = store
        .pending_devices()?
        .into_iter()
        .filter(|p| !config.devices.iter().any(|d| d.id == p.device))
        .collect();
    let folders: Vec<_> = store
        .pending_folders()?
        .into_iter()
        .filter(|p| {
            config
                .folder(&p.folder)
                .is_none_or(|f| !f.devices.contains(&p.device))
        })
        .collect();
    if json {
        let devices: Vec<_> = devices.iter().map(output::pending_device_json).collect();
        let folders: Vec<_> = folders.iter().map(output::pending_folder_json).collect();
        output::json_line(
            out,
            &serde_json::json!({ "devices": devices, "folders": folders }),
        )?;
        return Ok(());
    }
    for p in &devices {
        writeln!(out, "device {}\t{}\t{}", p.device, p.address, p.name)?;
    }
    for p in &folders {
        writeln!(
            out,
            "folder {}\toffered by {}\t{}",
            p.folder, p.device, p.label
        )?;
    }
    if devices.is_empty() && folders.is_empty() {
        writeln!(out, "Nothing is pending")?;
    }
    Ok(())
}

/// Accepts a pending device (by its ID: it is added) or a pending folder (by its ID: it is
/// added at `path`, or if it exists already, shared with the devices that offered it).
pub(super) fn accept(
    home: &Home,
    id: &str,
    path: Option<PathBuf>,
    name: Option<String>,
    out: &mut impl Write,
) -> Result<()> {
    if let Ok(device_id) = id.parse::<DeviceId>() {
        return device::add(home, device_id, name, Vec::new(), Default::default(), out);
    }
    let offers: Vec<_> = home
        .store()?
        .pending_folders()?
        .into_iter()
        .filter(|p| p.folder == id)
        .collect();
    let Some(first) = offers.first() else {
        bail!("{id:?} is neither a device ID nor a pending folder: see `peerfold pending`");
    };
    let config = home.config()?;
    let mut offered_by: Vec<DeviceId> = Vec::new();
    for offer in &offers {
        if !config.devices.iter().any(|d| d.id == offer.device) {
            bail!(
                "device {} is not configured: add it with `peerfold device add`",
                offer.device
            );
        }
        if !offered_by.contains(&offer.device) {
            offered_by.push(offer.device);
        }
    }
    let Some(existing) = config.folder(id) else {
        let path = path.with_context(|| format!("accepting folder {id:?} needs --path DIR"))?;
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let label = Some(first.label.clone()).filter(|l| !l.is_empty());
        let mut new =
            folder::new_folder(home, id.to_owned(), &path, label, FolderType::SendReceive)?;
        new.devices = offered_by.clone();
        let applied = folder::add(home, new, out)?;
        for &device in &offered_by {
            folder::say_shared(&applied, id, device, out)?;
        }
        return Ok(());
    };
    let (shared, to_share): (Vec<DeviceId>, Vec<DeviceId>) = offered_by
        .into_iter()
        .partition(|d| existing.devices.contains(d));
    for device in &shared {
        writeln!(out, "Folder {id:?} is already shared with {device}")?;
    }
    if to_share.is_empty() {
        return Ok(());
    }
    let edit = ConfigEdit::Several(
        to_share
            .iter()
            .map(|&device| ConfigEdit::ShareFolder {
                folder: id.to_owned(),
                device,
            })
            .collect(),
    );
    let applied = apply_edit(home, edit)?;
    for &device in &to_share {
        folder::say_shared(&applied, id, device, out)?;
    }
    Ok(())
}
