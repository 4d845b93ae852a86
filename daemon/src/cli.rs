//! The command line: argument definitions and the dispatch to the commands, one file per
//! command group:
//! - `setup`: `init`, `id`, `api-key`, `serve`;
//! - `folder`, `device`: `folder ...`, `device ...`;
//! - `pairing`: `pending`, `accept`;
//! - `scan`: `scan`, `ls`;
//! - `status`: `status` (and `--watch`), `events`;
//! - `config_cmd`: `config get|set`;
//! - `edit`: the one way a command changes the configuration (a typed edit, through the
//!   running daemon's control socket or in `config.toml`), and the control-socket client;
//! - `client`: the running daemon's REST API; `output`: how results are printed.

mod client;
mod config_cmd;
mod device;
mod edit;
mod folder;
mod output;
mod pairing;
mod scan;
mod setup;
mod status;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use peerfold_engine::config::FolderType;
use peerfold_engine::config::{HOME_ENV, Home};

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

impl Cli {
    /// Whether the command runs the daemon (a long-lived, many-threaded process).
    pub fn serves(&self) -> bool {
        matches!(self.command, Command::Serve { .. })
    }
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
        /// An introducer: the devices it shares your folders with are added and shared
        /// those folders too (Syncthing's introducer).
        #[arg(long)]
        introducer: bool,
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

/// `--type`: Syncthing's three folder types, listed in `--help` and checked by clap.
fn folder_type_parser() -> impl clap::builder::TypedValueParser<Value = FolderType> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["sendreceive", "sendonly", "receiveonly"])
        .map(|text| text.parse::<FolderType>().unwrap_or_default())
}

/// Runs one command. Errors come back with context, for `main` to print on one line.
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
        Command::Init { name, listen, api } => setup::init(home, name, &listen, api, json, out),
        Command::Id { qr } => setup::id(home, qr, json, out),
        Command::ApiKey => setup::api_key(home, json, out),
        Command::Serve { listen, api } => setup::serve(home, &listen, api, out),
        Command::Folder(command) => folder::run(home, command, json, out),
        Command::Device(command) => device::run(home, command, json, out),
        Command::Pending => pairing::pending(home, json, out),
        Command::Accept { id, path, name } => pairing::accept(home, &id, path, name, out),
        Command::Scan { folder } => scan::scan(home, folder, json, out),
        Command::Ls { folder } => scan::ls(home, &folder, json, out),
        Command::Status { watch: true } => status::watch(home),
        Command::Status { watch: false } => status::status(home, json, out),
        Command::Events { since, types } => status::events(home, since, types, out),
        Command::Config(ConfigCommand::Get { key }) => {
            config_cmd::get(home, key.as_deref(), json, out)
        }
        Command::Config(ConfigCommand::Set { assignment }) => {
            config_cmd::set(home, &assignment, out)
        }
    }
}
