//! Local discovery (mDNS) between real daemons on a LAN of network namespaces: devices that
//! know each other only as `dynamic` find each other's LAN address, connect and sync; a
//! device nobody configured is seen but never connected. Needs root (CI runs as root); the
//! namespaces are made and removed by the test, and nothing multicasts in the root namespace.

use std::fs;
use std::time::Duration;

use crate::netns::Netns;
use crate::ns_daemon::{NsDaemon, discovered, wait_until};
use crate::support::{Device, wait_for_same_tree};

#[test]
fn devices_on_a_lan_find_each_other_by_mdns_and_sync_and_strangers_stay_strangers() {
    let net = Netns::new(3);
    let (a, b, stranger) = (lan_device(), lan_device(), lan_device());
    let (id_a, id_b, id_stranger) = (a.id(), b.id(), stranger.id());
    let (root_a, root_b) = (a.add_folder("docs", "docs"), b.add_folder("docs", "docs"));
    for (device, other) in [(&a, &id_b), (&b, &id_a)] {
        // No address: `dynamic`, so only discovery can say where the other one is.
        device.ok(["device", "add", other]);
        device.ok(["folder", "share", "docs", other]);
    }
    fs::write(root_a.join("hello.txt"), b"found you on the LAN").unwrap();

    let on_a = NsDaemon::serve(&net, 0, &a);
    let on_b = NsDaemon::serve(&net, 1, &b);
    let pair = [(&on_a, &id_b, net.ip(1)), (&on_b, &id_a, net.ip(0))];

    // Each lists the other with a QUIC address on the LAN.
    for (daemon, other, other_ip) in pair {
        let wanted = format!("quic://{other_ip}:");
        wait_until("discovery lists the other device", &[&a, &b], || {
            discovered(&daemon.api)
                .get(other)
                .is_some_and(|addrs| addrs.iter().any(|a| a.starts_with(&wanted)))
        });
    }
    // They connect over the LAN, and the file arrives as it is.
    for (daemon, other, other_ip) in pair {
        let wanted = format!("{other_ip}:");
        wait_until("the devices connect over the LAN", &[&a, &b], || {
            let connections = daemon.api.get("/rest/system/connections");
            let connection = &connections["connections"][other.as_str()];
            connection["connected"] == true
                && connection["address"]
                    .as_str()
                    .is_some_and(|addr| addr.starts_with(&wanted))
        });
    }
    wait_for_same_tree("b has a's file", 20, (&root_a, &a), (&root_b, &b));
    assert_eq!(
        fs::read(root_b.join("hello.txt")).unwrap(),
        b"found you on the LAN"
    );

    // A third device on the LAN that neither knows: seen, never connected.
    let on_stranger = NsDaemon::serve(&net, 2, &stranger);
    let all = [&a, &b, &stranger];
    let stranger_at = format!("quic://{}:", net.ip(2));
    for daemon in [&on_a, &on_b] {
        wait_until("discovery lists the unknown device", &all, || {
            discovered(&daemon.api)
                .get(&id_stranger)
                .is_some_and(|addrs| addrs.iter().any(|a| a.starts_with(&stranger_at)))
        });
    }
    wait_until("the unknown device sees both", &all, || {
        let seen = discovered(&on_stranger.api);
        seen.contains_key(&id_a) && seen.contains_key(&id_b)
    });
    // Time for a wrong dial to happen (the dialer's first attempts come within a second).
    std::thread::sleep(Duration::from_secs(3));
    let knocked = on_stranger.api.get("/rest/cluster/pending/devices");
    assert_eq!(knocked, serde_json::json!({}), "a or b dialed the stranger");
    for daemon in [&on_a, &on_b] {
        let connections = daemon.api.get("/rest/system/connections");
        assert!(
            connections["connections"].get(&id_stranger).is_none(),
            "{connections}"
        );
        let pending = daemon.api.get("/rest/cluster/pending/devices");
        assert!(pending.get(&id_stranger).is_none(), "{pending}");
    }
    for device in all {
        let log = device.log();
        assert!(log.contains("announcing on the LAN"), "{log}");
        assert!(!log.contains("address claimed by a device"), "{log}");
    }

    // The option follows live: off says goodbye and stops mDNS, on starts it again.
    stranger.ok(["config", "set", "localAnnounceEnabled=false"]);
    wait_until("mDNS stops when turned off", &all, || {
        stranger.log().contains("local discovery turned off")
    });
    stranger.ok(["config", "set", "localAnnounceEnabled=true"]);
    wait_until("mDNS starts again when turned on", &all, || {
        stranger.log().matches("announcing on the LAN").count() == 2
    });

    // Each stops cleanly (mDNS says goodbye, then shuts down).
    assert!(on_stranger.stop().success(), "{}", stranger.log());
    assert!(on_a.stop().success(), "{}", a.log());
    assert!(on_b.stop().success(), "{}", b.log());
}

/// An initialised device with local discovery on (support.rs turns it off for every test
/// that runs in the root namespace; these daemons run inside the test's namespaces).
fn lan_device() -> Device {
    let device = Device::init();
    device.ok(["config", "set", "localAnnounceEnabled=true"]);
    device
}
