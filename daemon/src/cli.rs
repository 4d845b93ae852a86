//! The command line: argument definitions and the commands that work on a home offline.

mod client;
mod config_cmd;
mod output;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use peerfold_protocol::DeviceId;

use client::DaemonApi;
use peerfold_engine::config::{self, DeviceConfig, FolderConfig, FolderType};
use peerfold_engine::config::{HOME_ENV, Home};
use peerfold_engine::disk::scanner::{self, ScanReport};

/// peerfold: peer-to-peer folder sync.
#[derive(Debug, Parser)]
#[command(name = "peerfold", version, about, propagate_version = true)]
pub struct Cli {
    /// The device's home directory (identity, config, index).
    #[arg(long, global = true, env = HOME_ENV, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Print JSON instead of text (commands that only confirm print
    /// {"ok": true, "message": ...}).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create this device's identity, configuration and index; print its device ID.
    Init {
        /// The name peers see (default: the host name).
        #[arg(long)]
        name: Option<String>,
        /// Listen on quic://HOST:PORT (repeatable) instead of the defaults.
        #[arg(long = "listen", value_name = "ADDRESS")]
        listen: Vec<String>,
        /// The REST API's address (default 127.0.0.1:8385).
        #[arg(long = "api", value_name = "HOST:PORT")]
        api: Option<String>,
    },
    /// Print this device's ID.
    Id {
        /// Also draw it as a QR code to scan with a phone.
        #[arg(long)]
        qr: bool,
    },
    /// Add, list and share folders.
    #[command(subcommand)]
    Folder(FolderCommand),
    /// Add and list devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Scan folders (all, or one) into the index now.
    Scan {
        /// The folder to scan; all folders when omitted.
        folder: Option<String>,
    },
    /// Run the daemon: scan, listen, connect to known devices and keep folders in sync.
    /// Initialises the home first if needed. Stops on Ctrl-C or SIGTERM.
    Serve {
        /// Listen on quic://HOST:PORT instead of the configured addresses (repeatable).
        #[arg(long = "listen", value_name = "ADDRESS")]
        listen: Vec<String>,
        /// Serve the REST API on HOST:PORT instead of the configured address.
        #[arg(long = "api", value_name = "HOST:PORT")]
        api: Option<String>,
    },
    /// Print the REST API's key (clients send it as `X-API-Key`).
    ApiKey,
    /// List devices and folders waiting to be accepted.
    Pending,
    /// Accept a pending device (by its ID) or folder (by its ID, with --path).
    Accept {
        /// A device ID, or the ID of a folder a device offered.
        id: String,
        /// Where an accepted folder goes on this device.
        #[arg(long)]
        path: Option<PathBuf>,
        /// A name for an accepted device.
        #[arg(long)]
        name: Option<String>,
    },
    /// Follow the running daemon's events, one JSON object per line.
    Events {
        /// Start after this event ID (0: everything still kept).
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Only these event types (comma-separated, e.g. ItemFinished,StateChanged).
        #[arg(long)]
        types: Option<String>,
    },
    /// Read or change an option, by its Syncthing name (e.g. listenAddresses).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show what the running daemon is doing: folders and devices.
    Status {
        /// Keep showing live progress per folder and device (Ctrl-C to stop).
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    /// List a folder's index entries, tombstones included.
    Ls {
        /// The folder.
        folder: String,
    },
}

#[derive(Debug, Subcommand)]
enum FolderCommand {
    /// Add a folder: its root gets a `.peerfold` marker directory.
    Add {
        /// The folder ID, the same on every device that shares it.
        #[arg(long)]
        id: String,
        /// The folder's root on this device (must exist).
        #[arg(long)]
        path: PathBuf,
        /// A human name.
        #[arg(long)]
        label: Option<String>,
        /// How the folder syncs.
        #[arg(long = "type", default_value = "sendreceive", value_parser = folder_type_parser())]
        folder_type: FolderType,
    },
    /// List configured folders.
    List,
    /// List folders that configured devices offer but that are not shared with them here
    /// (accept one with `folder add` and `folder share`).
    Pending,
    /// Send-only folder: make this device's state the newest everywhere, replacing
    /// remote changes (asks the running daemon).
    Override {
        /// The folder ID.
        folder: String,
    },
    /// Receive-only folder: drop local changes and restore the global state; files that
    /// exist only here move to .peerfold/versions (asks the running daemon).
    Revert {
        /// The folder ID.
        folder: String,
    },
    /// Pause a folder: it is not scanned, watched or synced, and not offered to peers.
    Pause {
        /// The folder ID.
        folder: String,
    },
    /// Resume a paused folder.
    Resume {
        /// The folder ID.
        folder: String,
    },
    /// Share a folder with a configured device.
    Share {
        /// The folder ID.
        folder: String,
        /// The device ID.
        device: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Add a device by its ID.
    Add {
        /// The device ID (dashes and case do not matter).
        id: String,
        /// A human name.
        #[arg(long)]
        name: Option<String>,
        /// Where to reach it: quic://HOST:PORT (repeatable); default: dynamic (discovery).
        #[arg(long = "address", value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// Add the folders it offers without asking, under the default folder path
        /// (`peerfold config` defaults; `~` unless changed).
        #[arg(long)]
        auto_accept_folders: bool,
    },
    /// Pause a device (all devices when none is named): it is disconnected and not let in.
    Pause {
        /// The device ID.
        id: Option<String>,
    },
    /// Resume a paused device (all devices when none is named).
    Resume {
        /// The device ID.
        id: Option<String>,
    },
    /// List configured devices.
    List,
    /// List devices that tried to connect but are not configured here.
    Pending,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print an option's value, or every option as KEY=VALUE.
    Get {
        /// The option's Syncthing name (e.g. globalAnnounceServers).
        key: Option<String>,
    },
    /// Set an option: KEY=VALUE (lists take comma-separated values).
    Set {
        /// KEY=VALUE, e.g. globalAnnounceServers=https://host:8443/?id=ID.
        assignment: String,
    },
}

/// Runs one command. Errors come back with context, for `main` to print on one line.
/// `--type`: Syncthing's three folder types, listed in `--help` and checked by clap.
fn folder_type_parser() -> impl clap::builder::TypedValueParser<Value = FolderType> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["sendreceive", "sendonly", "receiveonly"])
        .map(|text| text.parse::<FolderType>().unwrap_or_default())
}

pub fn run(cli: Cli) -> Result<()> {
    let home = Home::resolve(cli.home)?;
    let mut out = std::io::stdout().lock();
    let json = cli.json;
    if json && !speaks_json(&cli.command) {
        // A command that only confirms what it did: its message, as JSON.
        let mut message = Vec::new();
        dispatch(&home, cli.command, false, &mut message)?;
        output::json_line(
            &mut out,
            &serde_json::json!({
                "ok": true,
                "message": String::from_utf8_lossy(&message).trim(),
            }),
        )?;
        return Ok(());
    }
    dispatch(&home, cli.command, json, &mut out)
}

/// Commands whose output has a JSON form of its own (or that run until stopped).
fn speaks_json(command: &Command) -> bool {
    match command {
        Command::Init { .. }
        | Command::Id { .. }
        | Command::Scan { .. }
        | Command::Ls { .. }
        | Command::Serve { .. }
        | Command::Status { .. }
        | Command::Pending
        | Command::Events { .. }
        | Command::ApiKey
        | Command::Config(ConfigCommand::Get { .. }) => true,
        Command::Folder(f) => matches!(f, FolderCommand::List | FolderCommand::Pending),
        Command::Device(d) => matches!(d, DeviceCommand::List | DeviceCommand::Pending),
        Command::Accept { .. } | Command::Config(ConfigCommand::Set { .. }) => false,
    }
}

fn dispatch(home: &Home, command: Command, json: bool, out: &mut impl Write) -> Result<()> {
    match command {
        Command::Init { name, listen, api } => {
            for address in &listen {
                config::check_address(address).map_err(anyhow::Error::msg)?;
            }
            init(
                home,
                |config| {
                    if let Some(name) = name {
                        config.device_name = name;
                    }
                    if !listen.is_empty() {
                        config.listen = listen;
                    }
                    if let Some(api) = api {
                        config.api.address = api;
                    }
                },
                json,
                out,
            )
        }
        Command::Id { qr } => id(home, qr, json, out),
        Command::Folder(command) => folder(home, command, json, out),
        Command::Device(command) => device(home, command, json, out),
        Command::Scan { folder } => scan(home, folder, json, out),
        Command::Ls { folder } => ls(home, &folder, json, out),
        Command::Serve { listen, api } => {
            serve(home, crate::daemon::StartOptions { listen, api }, out)
        }
        Command::ApiKey => {
            let key = home.config()?.api.key;
            if json {
                output::json_line(out, &serde_json::json!({ "apiKey": key }))?;
            } else {
                writeln!(out, "{key}")?;
            }
            Ok(())
        }
        Command::Status { watch: true } => watch_status(home),
        Command::Status { watch: false } => status(home, json, out),
        Command::Pending => pending(home, json, out),
        Command::Accept { id, path, name } => accept(home, &id, path, name, out),
        Command::Events { since, types } => events(home, since, types, out),
        Command::Config(ConfigCommand::Get { key }) => {
            config_cmd::get(home, key.as_deref(), json, out)
        }
        Command::Config(ConfigCommand::Set { assignment }) => {
            config_cmd::set(home, &assignment, out)
        }
    }
}

fn pending(home: &Home, json: bool, out: &mut impl Write) -> Result<()> {
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
        let devices: Vec<_> = devices
            .iter()
            .map(|p| serde_json::json!({ "id": p.device.to_string(), "name": p.name, "address": p.address, "time": output::unix_time(p.last_seen) }))
            .collect();
        let folders: Vec<_> = folders
            .iter()
            .map(|p| serde_json::json!({ "id": p.folder, "label": p.label, "device": p.device.to_string(), "time": output::unix_time(p.last_seen) }))
            .collect();
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

fn accept(
    home: &Home,
    id: &str,
    path: Option<PathBuf>,
    name: Option<String>,
    out: &mut impl Write,
) -> Result<()> {
    if let Ok(device_id) = id.parse::<DeviceId>() {
        return device(
            home,
            DeviceCommand::Add {
                id: device_id.to_string(),
                name,
                addresses: Vec::new(),
                auto_accept_folders: false,
            },
            false,
            out,
        );
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
    let path = path.with_context(|| format!("accepting folder {id:?} needs --path DIR"))?;
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    if home.config()?.folder(id).is_none() {
        folder(
            home,
            FolderCommand::Add {
                id: id.to_owned(),
                path,
                label: Some(first.label.clone()).filter(|l| !l.is_empty()),
                folder_type: FolderType::SendReceive,
            },
            false,
            out,
        )?;
    }
    for offer in &offers {
        folder(
            home,
            FolderCommand::Share {
                folder: id.to_owned(),
                device: offer.device.to_string(),
            },
            false,
            out,
        )?;
    }
    Ok(())
}

fn events(home: &Home, since: u64, types: Option<String>, out: &mut impl Write) -> Result<()> {
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

fn init(
    home: &Home,
    configure: impl FnOnce(&mut config::Config),
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let identity = home.init(configure)?;
    let id = identity.device_id();
    if json {
        output::json_line(
            out,
            &serde_json::json!({ "id": id.to_string(), "home": home.dir() }),
        )?;
    } else {
        writeln!(out, "Initialised {}", home.dir().display())?;
        writeln!(out, "Device ID: {id}")?;
    }
    Ok(())
}

fn id(home: &Home, qr: bool, json: bool, out: &mut impl Write) -> Result<()> {
    let id = home.identity()?.device_id();
    if json {
        output::json_line(out, &serde_json::json!({ "id": id.to_string() }))?;
        return Ok(());
    }
    if qr {
        write!(out, "{}", output::qr_text(&id.to_string())?)?;
    }
    writeln!(out, "{id}")?;
    Ok(())
}

fn folder(home: &Home, command: FolderCommand, json: bool, out: &mut impl Write) -> Result<()> {
    match command {
        FolderCommand::Add {
            id,
            path,
            label,
            folder_type,
        } => {
            let mut config = home.config()?;
            config::check_folder_id(&id).map_err(anyhow::Error::msg)?;
            if config.folder(&id).is_some() {
                bail!("folder {id:?} already exists");
            }
            let root = path
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
            if let Some(api) = DaemonApi::find(home)? {
                api.call(
                    "POST",
                    "/rest/config/folders",
                    Some(&serde_json::json!({
                        "id": id,
                        "label": label.unwrap_or_default(),
                        "path": root,
                        "type": folder_type.as_str(),
                    })),
                )?;
                writeln!(
                    out,
                    "Added folder {id:?} at {} (applied by the running daemon)",
                    root.display()
                )?;
                return Ok(());
            }
            let marker = root.join(scanner::MARKER_DIR);
            std::fs::create_dir_all(&marker)
                .with_context(|| format!("creating the folder marker {}", marker.display()))?;
            let mut folder = FolderConfig::new(id.clone(), label.unwrap_or_default(), root.clone());
            folder.folder_type = folder_type;
            config.folders.push(folder);
            home.save_config(&config)?;
            writeln!(out, "Added folder {id:?} at {}", root.display())?;
        }
        FolderCommand::List => {
            let config = home.config()?;
            if json {
                output::json_line(out, &output::folders_json(&config.folders))?;
            } else {
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
            }
        }
        FolderCommand::Share { folder, device } => {
            let mut config = home.config()?;
            let device: DeviceId = device
                .parse()
                .with_context(|| format!("device ID {device:?}"))?;
            if !config.devices.iter().any(|d| d.id == device) {
                bail!("device {device} is not configured: add it with `peerfold device add`");
            }
            let Some(entry) = config.folders.iter_mut().find(|f| f.id == folder) else {
                bail!("no folder {folder:?}: see `peerfold folder list`");
            };
            if entry.devices.contains(&device) {
                writeln!(out, "Folder {folder:?} is already shared with {device}")?;
                return Ok(());
            }
            entry.devices.push(device);
            if let Some(api) = DaemonApi::find(home)? {
                let devices: Vec<_> = entry
                    .devices
                    .iter()
                    .map(|d| serde_json::json!({ "deviceID": d.to_string() }))
                    .collect();
                api.call(
                    "PATCH",
                    &format!("/rest/config/folders/{}", encode(&folder)),
                    Some(&serde_json::json!({ "devices": devices })),
                )?;
                writeln!(
                    out,
                    "Shared folder {folder:?} with {device} (applied by the running daemon)"
                )?;
                return Ok(());
            }
            home.save_config(&config)?;
            home.store()?.forget_pending_folder(&folder, Some(device))?;
            writeln!(out, "Shared folder {folder:?} with {device}")?;
        }
        FolderCommand::Pause { folder } => pause_folder(home, &folder, true, out)?,
        FolderCommand::Resume { folder } => pause_folder(home, &folder, false, out)?,
        FolderCommand::Override { folder } => {
            let answer = ask_daemon(home, &format!("override {folder}"))?;
            writeln!(
                out,
                "Overrode {} out-of-sync names in {folder:?}: peers take this device's version",
                answer["changed"]
            )?;
        }
        FolderCommand::Revert { folder } => {
            let answer = ask_daemon(home, &format!("revert {folder}"))?;
            writeln!(
                out,
                "Reverted {} locally changed names in {folder:?} to the global version",
                answer["changed"]
            )?;
        }
        FolderCommand::Pending => {
            let pending = home.store()?.pending_folders()?;
            if json {
                let list: Vec<_> = pending
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "id": p.folder,
                            "label": p.label,
                            "device": p.device.to_string(),
                            "time": output::unix_time(p.last_seen),
                        })
                    })
                    .collect();
                output::json_line(out, &list)?;
            } else {
                for p in &pending {
                    writeln!(out, "{}\t{}\t{}", p.folder, p.device, p.label)?;
                }
            }
        }
    }
    Ok(())
}

fn device(home: &Home, command: DeviceCommand, json: bool, out: &mut impl Write) -> Result<()> {
    match command {
        DeviceCommand::Add {
            id,
            name,
            addresses,
            auto_accept_folders,
        } => {
            let mut config = home.config()?;
            let id: DeviceId = id.parse().with_context(|| format!("device ID {id:?}"))?;
            if id == home.identity()?.device_id() {
                bail!("{id} is this device's own ID");
            }
            if config.devices.iter().any(|d| d.id == id) {
                bail!("device {id} is already configured");
            }
            let addresses = if addresses.is_empty() {
                vec![config::DYNAMIC_ADDRESS.to_owned()]
            } else {
                addresses
            };
            for address in &addresses {
                config::check_address(address).map_err(anyhow::Error::msg)?;
            }
            let mut device = DeviceConfig::new(id, name.unwrap_or_default(), addresses);
            device.auto_accept_folders = auto_accept_folders;
            if let Some(api) = DaemonApi::find(home)? {
                api.call(
                    "POST",
                    "/rest/config/devices",
                    Some(&serde_json::json!({
                        "deviceID": device.id.to_string(),
                        "name": device.name,
                        "addresses": device.addresses,
                        "autoAcceptFolders": device.auto_accept_folders,
                    })),
                )?;
                writeln!(out, "Added device {id} (applied by the running daemon)")?;
                return Ok(());
            }
            config.devices.push(device);
            home.save_config(&config)?;
            writeln!(out, "Added device {id}")?;
        }
        DeviceCommand::Pending => {
            let pending = home.store()?.pending_devices()?;
            if json {
                let list: Vec<_> = pending
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "id": p.device.to_string(),
                            "name": p.name,
                            "address": p.address,
                            "time": output::unix_time(p.last_seen),
                        })
                    })
                    .collect();
                output::json_line(out, &list)?;
            } else {
                for p in &pending {
                    writeln!(out, "{}\t{}\t{}", p.device, p.address, p.name)?;
                }
            }
        }
        DeviceCommand::Pause { id } => pause_devices(home, id.as_deref(), true, out)?,
        DeviceCommand::Resume { id } => pause_devices(home, id.as_deref(), false, out)?,
        DeviceCommand::List => {
            let config = home.config()?;
            if json {
                output::json_line(out, &output::devices_json(&config.devices))?;
            } else {
                for d in &config.devices {
                    writeln!(out, "{}\t{}\t{}", d.id, d.name, d.addresses.join(","))?;
                }
            }
        }
    }
    Ok(())
}

/// Pauses or resumes a folder.
fn pause_folder(home: &Home, id: &str, pause: bool, out: &mut impl Write) -> Result<()> {
    if home.config()?.folder(id).is_none() {
        bail!("no folder {id:?}: see `peerfold folder list`");
    }
    let verb = if pause { "Paused" } else { "Resumed" };
    change_config(
        home,
        out,
        &format!("{verb} folder {id:?}"),
        |api| {
            api.call(
                "PATCH",
                &format!("/rest/config/folders/{}", encode(id)),
                Some(&serde_json::json!({ "paused": pause })),
            )
            .map(drop)
        },
        |config| {
            for folder in config.folders.iter_mut().filter(|f| f.id == id) {
                folder.paused = pause;
            }
        },
    )
}

/// Pauses or resumes one device or all of them (the daemon disconnects or dials at once).
fn pause_devices(home: &Home, id: Option<&str>, pause: bool, out: &mut impl Write) -> Result<()> {
    let wanted: Option<DeviceId> = id
        .map(|id| id.parse().with_context(|| format!("device ID {id:?}")))
        .transpose()?;
    if let Some(device) = wanted
        && !home.config()?.devices.iter().any(|d| d.id == device)
    {
        bail!("device {device} is not configured: see `peerfold device list`");
    }
    let verb = if pause { "Paused" } else { "Resumed" };
    let which = wanted.map_or_else(|| "every device".to_owned(), |d| d.to_string());
    change_config(
        home,
        out,
        &format!("{verb} {which}"),
        |api| {
            let query = wanted.map(|d| format!("?device={d}")).unwrap_or_default();
            let action = if pause { "pause" } else { "resume" };
            api.call("POST", &format!("/rest/system/{action}{query}"), None)
                .map(drop)
        },
        |config| {
            for device in &mut config.devices {
                if wanted.is_none_or(|w| w == device.id) {
                    device.paused = pause;
                }
            }
        },
    )
}

/// A configuration change: through the running daemon's API (it applies at once), or in
/// config.toml when no daemon runs on the home. Says which it was.
fn change_config(
    home: &Home,
    out: &mut impl Write,
    done: &str,
    live: impl FnOnce(&DaemonApi) -> Result<()>,
    offline: impl FnOnce(&mut config::Config),
) -> Result<()> {
    if let Some(api) = DaemonApi::find(home)? {
        live(&api)?;
        writeln!(out, "{done} (applied by the running daemon)")?;
        return Ok(());
    }
    let mut config = home.config()?;
    offline(&mut config);
    home.save_config(&config)?;
    writeln!(
        out,
        "{done} in {} (the daemon is not running)",
        home.config_path().display()
    )?;
    Ok(())
}

/// Text for a URL path segment or query value.
fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn scan(home: &Home, only: Option<String>, json: bool, out: &mut impl Write) -> Result<()> {
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
    let store = peerfold_engine::store::StoreHandle::new(home.store()?);
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

fn ls(home: &Home, folder_id: &str, json: bool, out: &mut impl Write) -> Result<()> {
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

fn serve(home: &Home, options: crate::daemon::StartOptions, out: &mut impl Write) -> Result<()> {
    if !home.is_initialised() {
        let id = home.init(|_| {})?.device_id();
        writeln!(out, "Initialised {}", home.dir().display())?;
        write!(out, "{}", output::qr_text(&id.to_string())?)?;
    }
    for address in &options.listen {
        config::check_address(address).map_err(anyhow::Error::msg)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // `POST /rest/system/restart` stops the daemon and asks for another round; the
        // process (and its PID) stays.
        for round in 0.. {
            let daemon = if round == 0 {
                crate::daemon::Daemon::start(home, options.clone()).await?
            } else {
                restart(home, &options).await?
            };
            let addrs: Vec<String> = daemon
                .local_addrs()
                .iter()
                .map(ToString::to_string)
                .collect();
            let mut banner = format!(
                "Device ID: {}\nListening on {} (QUIC)\n",
                daemon.device_id(),
                addrs.join(", ")
            );
            if let Some(api) = daemon.api_address() {
                banner += &format!("REST API on http://{api} (key: `peerfold api-key`)\n");
            }
            // After a restart nobody may read stdout any more: that must not stop the daemon.
            let printed = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
            if round == 0 {
                printed?;
            }
            tokio::select! {
                signal = wait_for_stop_signal() => signal?,
                () = daemon.stop_requested() => {}
            }
            let restart = daemon.restart_requested();
            daemon.shutdown().await;
            if !restart {
                return Ok(());
            }
            let _ = writeln!(out, "Restarting");
        }
        Ok(())
    })
}

/// Starts the daemon again after a restart request. The sockets of the previous run close
/// as their last users finish, which can take a moment: binding is retried for a while.
async fn restart(
    home: &Home,
    options: &crate::daemon::StartOptions,
) -> Result<crate::daemon::Daemon> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match crate::daemon::Daemon::start(home, options.clone()).await {
            Err(crate::daemon::DaemonError::Listen { .. })
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => return Ok(other?),
        }
    }
}

async fn wait_for_stop_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// Sends one request line to the running daemon's control socket; returns its answer.
fn ask_daemon(home: &Home, request: &str) -> Result<serde_json::Value> {
    let path = crate::control::socket_path(home);
    match ask_daemon_if_running(home, request)? {
        Some(answer) => Ok(answer),
        None => bail!(
            "the daemon is not running (nothing listens on {}): start it with `peerfold serve`",
            path.display()
        ),
    }
}

/// Like `ask_daemon`, but `None` when no daemon runs on the home (no socket, or one a dead
/// daemon left). Any other failure (permissions, a hung daemon) is an error: commands must
/// not fall back to editing config.toml under a daemon that runs.
fn ask_daemon_if_running(home: &Home, request: &str) -> Result<Option<serde_json::Value>> {
    use std::io::Read;
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
        .set_read_timeout(Some(std::time::Duration::from_secs(300)))
        .context("talking to the daemon")?;
    writeln!(stream, "{request}").context("talking to the daemon")?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .context("talking to the daemon")?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .context("reading the daemon's answer")?;
    let answer: serde_json::Value = serde_json::from_str(&text).context("the daemon's answer")?;
    if let Some(error) = answer["error"].as_str() {
        bail!("{error}");
    }
    Ok(Some(answer))
}

/// Live bars: per folder, the bytes it has of the global version (or, while it scans, the
/// bytes hashed of those found changed); per device, how much of the shared folders it
/// has, whether it is connected, and its traffic.
fn watch_status(home: &Home) -> Result<()> {
    let bars = indicatif::MultiProgress::new();
    let mut folders: std::collections::BTreeMap<String, indicatif::ProgressBar> =
        std::collections::BTreeMap::new();
    let mut devices: std::collections::BTreeMap<String, indicatif::ProgressBar> =
        std::collections::BTreeMap::new();
    loop {
        let report = ask_daemon(home, "status")?;
        for f in report["folders"].as_array().into_iter().flatten() {
            let id = f["id"].as_str().unwrap_or_default().to_owned();
            let bar = folders
                .entry(id.clone())
                .or_insert_with(|| bars.add(output::folder_watch_bar(&id)));
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
        for d in report["devices"].as_array().into_iter().flatten() {
            let id = d["id"].as_str().unwrap_or_default().to_owned();
            let bar = devices
                .entry(id.clone())
                .or_insert_with(|| bars.add(output::device_watch_bar(&id)));
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
                indicatif::HumanBytes(d["inBytes"].as_u64().unwrap_or(0)),
                indicatif::HumanBytes(d["outBytes"].as_u64().unwrap_or(0)),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn status(home: &Home, json: bool, out: &mut impl Write) -> Result<()> {
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
            "device {} {:<12} {} {} in {} B, out {} B, has {complete:.0}% of shared folders",
            d["id"].as_str().unwrap_or_default(),
            d["name"].as_str().unwrap_or_default(),
            match (d["paused"] == true, d["connected"] == true) {
                (true, _) => "paused      ",
                (false, true) => "connected   ",
                (false, false) => "disconnected",
            },
            d["address"].as_str().unwrap_or("-"),
            d["inBytes"],
            d["outBytes"],
        )?;
    }
    Ok(())
}
