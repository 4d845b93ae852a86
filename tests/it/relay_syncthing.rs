//! Stock Syncthing through our relay: two Debian Syncthing 1.19 devices that can meet only
//! through `peerfold-relay` (they listen on nothing else, know each other only by the relay
//! address, and their namespaces drop each other's packets) sync a folder through it. Needs
//! root (namespaces) and the Debian packages `syncthing` and `nftables`.

use std::fs;

use serde_json::json;

use crate::global_discovery::SyncthingDevice;
use crate::netns::Netns;
use crate::ns_daemon::wait_until;
use crate::relay::RelayProcess;

#[test]
fn two_syncthing_devices_sync_through_our_relay() {
    let net = Netns::new(2);
    for (node, other) in [(0, 1), (1, 0)] {
        net.nft(
            node,
            &format!(
                "table inet pf_apart {{\n\
                 chain in {{ type filter hook input priority 0; ip saddr {} drop; }}\n\
                 chain out {{ type filter hook output priority 0; ip daddr {} drop; }}\n\
                 }}\n",
                net.ip(other),
                net.ip(other)
            ),
        );
    }
    let relay_data = tempfile::tempdir().unwrap();
    let relay = RelayProcess::ours(net.host_ip(), relay_data.path());
    let devices = [
        SyncthingDevice::start(&net, 0),
        SyncthingDevice::start(&net, 1),
    ];
    let folders = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for (i, device) in devices.iter().enumerate() {
        let other = &devices[1 - i];
        device.change(
            "PATCH",
            "/rest/config/options",
            &json!({
                "listenAddresses": [relay.url],
                "globalAnnounceEnabled": false,
                "localAnnounceEnabled": false,
                "relaysEnabled": true,
                "natEnabled": false,
                "reconnectionIntervalS": 5,
            }),
        );
        // Only the second dials (through the relay); two Syncthings dialing each other at
        // once each close the other's connection.
        let addresses = if i == 1 {
            json!([relay.url])
        } else {
            json!(["dynamic"])
        };
        device.change(
            "POST",
            "/rest/config/devices",
            &json!({ "deviceID": other.id, "addresses": addresses }),
        );
        device.change(
            "POST",
            "/rest/config/folders",
            &json!({
                "id": "docs",
                "label": "docs",
                "path": folders[i].path(),
                "type": "sendreceive",
                "rescanIntervalS": 5,
                "fsWatcherEnabled": false,
                "devices": [{ "deviceID": device.id }, { "deviceID": other.id }],
            }),
        );
    }
    let content = crate::support::noise(9, 2 << 20);
    fs::write(folders[0].path().join("through-our-relay.bin"), &content).unwrap();
    let arrived = folders[1].path().join("through-our-relay.bin");
    let logs = || format!("{}\n-----\n{}", devices[0].log(), devices[1].log());
    wait_until("syncthing syncs through our relay", &[], || {
        fs::read(&arrived).is_ok_and(|got| got == content)
    });
    let connections = devices[1].api.get("/rest/system/connections");
    let connection = &connections["connections"][devices[0].id.as_str()];
    assert_eq!(connection["connected"], true, "{connections}\n{}", logs());
    assert!(
        connection["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("relay-")),
        "{connections}"
    );
}
