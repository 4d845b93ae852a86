//! The engine's events in Syncthing's JSON shapes (`/rest/events`): the one place that
//! knows them.

use peerfold_engine::events::{
    ConnectionKind, DiskAction, Event, ItemAction, LoggedEvent, RemoteState, StateName,
};
use peerfold_engine::model::entry::FileKind;
use serde_json::{Value, json};

/// Syncthing's type name of an event.
pub(super) fn type_name(event: &Event) -> &'static str {
    match event {
        Event::StartupComplete { .. } => "StartupComplete",
        Event::StateChanged { .. } => "StateChanged",
        Event::LocalIndexUpdated { .. } => "LocalIndexUpdated",
        Event::FolderScanProgress { .. } => "FolderScanProgress",
        Event::RemoteIndexUpdated { .. } => "RemoteIndexUpdated",
        Event::DeviceConnected { .. } => "DeviceConnected",
        Event::DeviceDisconnected { .. } => "DeviceDisconnected",
        Event::DeviceDiscovered { .. } => "DeviceDiscovered",
        Event::PendingDeviceAdded(_) | Event::PendingDeviceRemoved { .. } => {
            "PendingDevicesChanged"
        }
        Event::PendingFolderAdded(_) | Event::PendingFolderRemoved { .. } => {
            "PendingFoldersChanged"
        }
        Event::ItemStarted { .. } => "ItemStarted",
        Event::ItemFinished { .. } => "ItemFinished",
        Event::FolderErrors { .. } => "FolderErrors",
        Event::FolderSummary { .. } => "FolderSummary",
        Event::FolderCompletion { .. } => "FolderCompletion",
        Event::ConfigSaved => "ConfigSaved",
        Event::LocalChangeDetected { .. } => "LocalChangeDetected",
        Event::RemoteChangeDetected { .. } => "RemoteChangeDetected",
    }
}

/// One logged event as Syncthing's REST API shows it. `config` is the configuration in
/// Syncthing's shape, which a ConfigSaved event carries (the one saved last: clients take it
/// as the current one).
pub(super) fn to_syncthing(logged: &LoggedEvent, config: Option<&Value>) -> Value {
    let data = match &*logged.event {
        Event::ConfigSaved => config.cloned().unwrap_or_else(|| json!({})),
        event => data(event),
    };
    json!({
        "id": logged.id,
        "globalID": logged.id,
        "type": type_name(&logged.event),
        "time": logged.time.to_string(),
        "data": data,
    })
}

/// Syncthing's name of a folder state.
pub(super) fn state_name(state: StateName) -> &'static str {
    state.as_str()
}

/// Syncthing's remoteState.
pub(super) fn remote_state_name(state: RemoteState) -> &'static str {
    match state {
        RemoteState::Valid => "valid",
        RemoteState::Paused => "paused",
        RemoteState::Unknown => "unknown",
    }
}

/// Syncthing's `type` of an entry in the disk events.
fn entry_type(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Directory => "dir",
        FileKind::Symlink => "symlink",
    }
}

/// What both disk events say of a change.
fn disk_change(folder: &str, label: &str, path: &str, action: DiskAction, kind: FileKind) -> Value {
    json!({
        "folder": folder,
        "folderID": folder,
        "label": label,
        "path": path,
        "action": action.as_str(),
        "type": entry_type(kind),
    })
}

fn data(event: &Event) -> Value {
    match event {
        Event::LocalChangeDetected {
            folder,
            label,
            path,
            action,
            kind,
        } => disk_change(folder, label, path, *action, *kind),
        Event::RemoteChangeDetected {
            folder,
            label,
            path,
            action,
            kind,
            modified_by,
        } => {
            let mut data = disk_change(folder, label, path, *action, *kind);
            data["modifiedBy"] = json!(modified_by);
            data
        }
        Event::StartupComplete { device } => json!({ "myID": device.to_string() }),
        Event::StateChanged { folder, from, to } => {
            json!({ "folder": folder, "from": state_name(*from), "to": state_name(*to) })
        }
        Event::LocalIndexUpdated { folder } => json!({ "folder": folder }),
        Event::FolderScanProgress {
            folder,
            current,
            total,
            rate,
        } => json!({ "folder": folder, "current": current, "total": total, "rate": rate }),
        Event::RemoteIndexUpdated {
            device,
            folder,
            items,
        } => json!({ "device": device.to_string(), "folder": folder, "items": items }),
        Event::DeviceConnected {
            device,
            name,
            address,
            client_name,
            client_version,
            kind,
            punched,
        } => json!({
            "id": device.to_string(),
            "deviceName": name,
            "addr": address,
            "clientName": client_name,
            "clientVersion": client_version,
            "type": connection_type(*kind),
            "holePunched": punched,
        }),
        Event::DeviceDisconnected { device, error } => {
            json!({ "id": device.to_string(), "error": error })
        }
        Event::DeviceDiscovered { device, addresses } => {
            json!({ "device": device.to_string(), "addrs": addresses })
        }
        Event::PendingDeviceAdded(seen) => json!({ "added": [{
            "deviceID": seen.device.to_string(),
            "name": seen.name,
            "address": seen.address,
        }] }),
        Event::PendingDeviceRemoved { device } => {
            json!({ "removed": [{ "deviceID": device.to_string() }] })
        }
        Event::PendingFolderAdded(seen) => json!({ "added": [{
            "deviceID": seen.device.to_string(),
            "folderID": seen.folder,
            "folderLabel": seen.label,
        }] }),
        Event::PendingFolderRemoved { folder, device } => json!({ "removed": [{
            "folderID": folder,
            "deviceID": device.map(|d| d.to_string()),
        }] }),
        Event::ItemStarted {
            folder,
            item,
            action,
        } => json!({
            "folder": folder,
            "item": item,
            "type": "file",
            "action": match action {
                ItemAction::Update => "update",
                ItemAction::Delete => "delete",
            },
        }),
        Event::ItemFinished {
            folder,
            item,
            error,
        } => json!({ "folder": folder, "item": item, "error": error, "type": "file" }),
        Event::FolderErrors { folder, errors } => json!({
            "folder": folder,
            "errors": errors
                .iter()
                .map(|(path, error)| json!({ "path": path, "error": error }))
                .collect::<Vec<_>>(),
        }),
        Event::FolderSummary {
            folder,
            summary,
            state,
            state_changed,
            errors,
            sequence,
        } => json!({
            "folder": folder,
            // The fields `/rest/db/status` has (clients parse `stateChanged` as a time).
            "summary": super::db::status_json(
                summary,
                state_name(*state),
                "",
                *errors,
                *sequence,
                &state_changed.to_string(),
            ),
        }),
        Event::FolderCompletion {
            folder,
            device,
            summary,
            remote_state,
            sequence,
        } => json!({
            "folder": folder,
            "device": device.to_string(),
            "completion": summary.completion(),
            "globalBytes": summary.global.bytes,
            "globalItems": summary.global.items(),
            "needBytes": summary.need.bytes,
            "needItems": summary.need.items(),
            "needDeletes": summary.need.deleted,
            "remoteState": remote_state_name(*remote_state),
            "sequence": sequence,
        }),
        // Carries the configuration: see `to_syncthing`.
        Event::ConfigSaved => json!({}),
    }
}

/// Syncthing's connection type for a side of a QUIC connection.
pub(crate) fn connection_type(kind: ConnectionKind) -> &'static str {
    match kind {
        ConnectionKind::QuicClient => "quic-client",
        ConnectionKind::QuicServer => "quic-server",
        ConnectionKind::RelayClient => "relay-client",
        ConnectionKind::RelayServer => "relay-server",
    }
}
