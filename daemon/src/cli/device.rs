//! `peerfold device ...`: add, pause and resume devices (configuration edits), list the
//! configured ones and those that knocked.

use std::io::Write;

use anyhow::{Context, Result, bail};
use peerfold_protocol::DeviceId;

use super::edit::{Applied, apply_edit};
use super::{DeviceCommand, output};
use peerfold_engine::config::{Address, ConfigEdit, DeviceConfig, Home};

pub(super) fn run(
    home: &Home,
    command: DeviceCommand,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    match command {
        DeviceCommand::Add {
            id,
            name,
            addresses,
            auto_accept_folders,
            introducer,
        } => {
            let id: DeviceId = id.parse().with_context(|| format!("device ID {id:?}"))?;
            let addresses = addresses
                .iter()
                .map(|a| a.parse::<Address>())
                .collect::<Result<Vec<_>, _>>()?;
            let options = AddOptions {
                auto_accept_folders,
                introducer,
            };
            add(home, id, name, addresses, options, out)
        }
        DeviceCommand::Pending => pending(home, json, out),
        DeviceCommand::Pause { id } => pause(home, id.as_deref(), true, out),
        DeviceCommand::Resume { id } => pause(home, id.as_deref(), false, out),
        DeviceCommand::List => list(home, json, out),
    }
}

/// How a new device is trusted.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct AddOptions {
    /// Folders it offers are added without asking.
    pub(super) auto_accept_folders: bool,
    /// The devices it shares folders with are added too.
    pub(super) introducer: bool,
}

/// Adds a device that is not configured yet; no addresses means `dynamic` (discovery).
pub(super) fn add(
    home: &Home,
    id: DeviceId,
    name: Option<String>,
    addresses: Vec<Address>,
    options: AddOptions,
    out: &mut impl Write,
) -> Result<()> {
    if id == home.identity()?.device_id() {
        bail!("{id} is this device's own ID");
    }
    let config = home.config()?;
    if config.devices.iter().any(|d| d.id == id) {
        bail!("device {id} is already configured");
    }
    // The default device's settings (`defaults.device`), then what was given here.
    let mut device = config
        .defaults
        .new_device(id)
        .unwrap_or_else(|| DeviceConfig::new(id, String::new(), vec![Address::Dynamic]));
    if let Some(name) = name {
        device.name = name;
    }
    if !addresses.is_empty() {
        device.addresses = addresses;
    }
    device.auto_accept_folders |= options.auto_accept_folders;
    device.introducer |= options.introducer;
    match apply_edit(home, ConfigEdit::AddDevice(device))? {
        Applied::ByDaemon => writeln!(out, "Added device {id} (applied by the running daemon)")?,
        Applied::InFile(_) => writeln!(out, "Added device {id}")?,
    }
    Ok(())
}

/// Pauses or resumes one device or all of them (the daemon disconnects or dials at once).
fn pause(home: &Home, id: Option<&str>, paused: bool, out: &mut impl Write) -> Result<()> {
    let device: Option<DeviceId> = id
        .map(|id| id.parse().with_context(|| format!("device ID {id:?}")))
        .transpose()?;
    if let Some(device) = device
        && !home.config()?.devices.iter().any(|d| d.id == device)
    {
        bail!("device {device} is not configured: see `peerfold device list`");
    }
    let verb = if paused { "Paused" } else { "Resumed" };
    let which = device.map_or_else(|| "every device".to_owned(), |d| d.to_string());
    apply_edit(home, ConfigEdit::PauseDevices { device, paused })?
        .say(&format!("{verb} {which}"), out)
}

fn list(home: &Home, json: bool, out: &mut impl Write) -> Result<()> {
    let config = home.config()?;
    if json {
        output::json_line(out, &output::devices_json(&config.devices))?;
        return Ok(());
    }
    for d in &config.devices {
        let addresses: Vec<String> = d.addresses.iter().map(ToString::to_string).collect();
        writeln!(out, "{}\t{}\t{}", d.id, d.name, addresses.join(","))?;
    }
    Ok(())
}

fn pending(home: &Home, json: bool, out: &mut impl Write) -> Result<()> {
    let pending = home.store()?.pending_devices()?;
    if json {
        let list: Vec<_> = pending.iter().map(output::pending_device_json).collect();
        output::json_line(out, &list)?;
        return Ok(());
    }
    for p in &pending {
        writeln!(out, "{}\t{}\t{}", p.device, p.address, p.name)?;
    }
    Ok(())
}
