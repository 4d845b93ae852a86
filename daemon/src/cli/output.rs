//! How commands print: human text, JSON, progress bars, QR codes.

use std::io::{self, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use peerfold_engine::config::{DeviceConfig, FolderConfig};
use peerfold_engine::disk::scanner::{ScanProgress, ScanReport};
use peerfold_engine::model::entry::FileEntry;
use peerfold_engine::store::{PendingDevice, PendingFolder};

/// Prints one JSON value on its own line.
pub(super) fn json_line(out: &mut impl Write, value: &impl serde::Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

/// A QR code of `text` drawn with half-block characters, light on dark so phone cameras read
/// it on the usual dark terminal.
pub(super) fn qr_text(text: &str) -> anyhow::Result<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(text.as_bytes())?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build()
        + "\n")
}

pub(super) fn folders_json(folders: &[FolderConfig]) -> Value {
    folders
        .iter()
        .map(|f| {
            json!({
                "id": f.id,
                "label": f.label,
                "path": f.path,
                "type": f.folder_type.as_str(),
                "devices": f.devices.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "paused": f.paused,
            })
        })
        .collect()
}

pub(super) fn devices_json(devices: &[DeviceConfig]) -> Value {
    devices
        .iter()
        .map(|d| {
            json!({
                "id": d.id.to_string(),
                "name": d.name,
                "addresses": d.addresses,
                "paused": d.paused,
                "autoAcceptFolders": d.auto_accept_folders,
                "introducer": d.introducer,
                "introducedBy": d.introduced_by.map(|id| id.to_string()),
            })
        })
        .collect()
}

/// A progress bar over the bytes to hash; hidden when stderr is not a terminal.
pub(super) fn scan_progress_bar(folder: &str, visible: bool) -> ProgressBar {
    let target = if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(0), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(format!("scanning {folder}"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub(super) fn update_scan_bar(bar: &ProgressBar, progress: ScanProgress) {
    bar.set_length(progress.to_hash);
    bar.set_position(progress.hashed);
    bar.set_message(format!("{} names walked", progress.walked));
}

/// One line: what a scan found and did.
pub(super) fn scan_summary(folder: &str, r: &ScanReport) -> String {
    let seconds = r.duration.as_secs_f64();
    let rate = if seconds > 0.0 {
        r.hashed_bytes as f64 / seconds / 1e6
    } else {
        0.0
    };
    format!(
        "{folder}: {} files, {} directories, {} symlinks, {}; {} added, {} changed, {} deleted, \
         {} ignored; hashed {} in {seconds:.2} s ({rate:.0} MB/s){}",
        r.files,
        r.directories,
        r.symlinks,
        human_bytes(r.bytes),
        r.added,
        r.changed,
        r.deleted,
        r.ignored,
        human_bytes(r.hashed_bytes),
        if r.issues.is_empty() {
            String::new()
        } else {
            format!("; {} problems (see warnings)", r.issues.len())
        }
    )
}

pub(super) fn scan_json(folder: &str, r: &ScanReport) -> Value {
    json!({
        "folder": folder,
        "files": r.files,
        "directories": r.directories,
        "symlinks": r.symlinks,
        "bytes": r.bytes,
        "added": r.added,
        "changed": r.changed,
        "deleted": r.deleted,
        "ignored": r.ignored,
        "hashed_bytes": r.hashed_bytes,
        "duration_ms": r.duration.as_millis() as u64,
        "issues": r.issues.iter().map(|i| json!({"name": i.name, "message": i.message})).collect::<Vec<_>>(),
    })
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Index entries printed as they stream from the database: a JSON array written element by
/// element (so a folder of a million files never sits in memory), or one text line each.
pub(super) struct EntryList<'a, W: Write> {
    out: &'a mut W,
    json: bool,
    first: bool,
}

impl<'a, W: Write> EntryList<'a, W> {
    pub(super) fn new(out: &'a mut W, json: bool) -> io::Result<Self> {
        if json {
            out.write_all(b"[")?;
        }
        Ok(Self {
            out,
            json,
            first: true,
        })
    }

    pub(super) fn push(&mut self, entry: &FileEntry) -> anyhow::Result<()> {
        if self.json {
            if !self.first {
                self.out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *self.out, &entry_json(entry))?;
        } else {
            writeln!(
                self.out,
                "{:<9} {:>12} {} {:>6} {}{}",
                entry.kind.as_str(),
                entry.size,
                entry.modified.to_rfc3339(),
                entry.sequence,
                entry.name,
                if entry.deleted {
                    " (deleted)"
                } else if entry.invalid {
                    " (ignored)"
                } else {
                    ""
                }
            )?;
        }
        self.first = false;
        Ok(())
    }

    pub(super) fn finish(self) -> io::Result<()> {
        if self.json {
            self.out.write_all(b"]\n")?;
        }
        self.out.flush()
    }
}

fn entry_json(entry: &FileEntry) -> Value {
    json!({
        "name": entry.name,
        "kind": entry.kind.as_str(),
        "size": entry.size,
        "permissions": entry.permissions,
        "modified": entry.modified.to_rfc3339(),
        "sequence": entry.sequence,
        "version": entry
            .version
            .counters()
            .map(|(id, value)| json!({ "id": id.to_string(), "value": value }))
            .collect::<Vec<_>>(),
        "modified_by": entry.modified_by.to_string(),
        "deleted": entry.deleted,
        "invalid": entry.invalid,
        "symlink_target": entry.symlink_target,
        "blocks": entry
            .blocks
            .iter()
            .map(|b| json!({ "offset": b.offset, "size": b.size, "hash": b.hash.to_hex().as_str() }))
            .collect::<Vec<_>>(),
    })
}

/// Unix seconds as an RFC 3339 time (empty if out of range).
pub(super) fn unix_time(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A folder's line in `peerfold status --watch`.
pub(super) fn folder_watch_bar(folder: &str) -> ProgressBar {
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("folder {prefix:16} {wide_bar} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(folder.to_owned());
    bar
}

/// A device's bar in `peerfold status --watch`: how much of the shared folders it has.
pub(super) fn device_watch_bar(device: &str) -> ProgressBar {
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("device {prefix:16} {wide_bar} {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(device.chars().take(7).collect::<String>());
    bar
}

/// A device that knocked, as `--json` lists it.
pub(super) fn pending_device_json(p: &PendingDevice) -> Value {
    json!({
        "id": p.device.to_string(),
        "name": p.name,
        "address": p.address,
        "time": unix_time(p.last_seen),
    })
}

/// A folder a device offered, as `--json` lists it.
pub(super) fn pending_folder_json(p: &PendingFolder) -> Value {
    json!({
        "id": p.folder,
        "label": p.label,
        "device": p.device.to_string(),
        "time": unix_time(p.last_seen),
    })
}
