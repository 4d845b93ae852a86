//! Who gets in, by Syncthing's settings (issue 16): a knocking device put in
//! `remoteIgnoredDevices`, and a folder offer put in the offering device's `ignoredFolders`,
//! leave the pending lists and stay out of them when they come again; a device with
//! `allowedNetworks` is let in only from those. A peer that accepts an offered folder gets
//! it at once.

use serde_json::{Value, json};

use crate::api::Api;
use crate::settings::pair;
use crate::support::{Device, knock_on, wait_until};

/// Changes the whole configuration the way Syncthing's GUI saves it.
fn save(api: &Api, change: impl FnOnce(&mut Value)) {
    let mut config = api.get("/rest/config");
    change(&mut config);
    api.ok_json("PUT", "/rest/config", config);
}

#[test]
fn ignored_devices_and_folder_offers_stay_out_of_the_pending_lists() {
    // A stranger knocks, is ignored, and knocks again: not pending, nothing recorded.
    let (host, stranger) = (Device::init(), Device::init());
    host.add_folder("docs", "docs");
    stranger.add_folder("docs", "docs");
    let running = host.serve();
    let api = Api::of(&host, &running);
    let knocking = knock_on(&stranger, &host, running.port);
    let id = stranger.id();
    let pending = || api.get("/rest/cluster/pending/devices").get(&id).is_some();
    wait_until("the stranger is pending", 30, pending);
    save(
        &api,
        |c| {
            c["remoteIgnoredDevices"] = json!([{ "deviceID": id, "name": "", "address": "", "time": "2026-01-01T00:00:00Z" }])
        },
    );
    assert!(!pending(), "ignoring settles the pending entry");
    assert_eq!(
        api.get("/rest/config")["remoteIgnoredDevices"][0]["deviceID"],
        id.as_str()
    );
    drop(knocking);
    let _again = stranger.serve();
    wait_until("the stranger knocks again", 30, || {
        host.log().contains("ignored device; turned away")
    });
    assert!(!pending(), "an ignored device is not recorded again");

    // A folder offer, ignored for the device that offers it.
    let p = pair();
    let photos = p.a.path("photos");
    std::fs::create_dir_all(&photos).unwrap();
    p.api_a.ok_json(
        "POST",
        "/rest/config/folders",
        json!({ "id": "photos", "path": photos, "devices": [{ "deviceID": p.b.id() }] }),
    );
    let offered = || {
        p.api_b
            .get("/rest/cluster/pending/folders")
            .get("photos")
            .is_some()
    };
    wait_until("b sees the offer", 30, offered);
    let a_id = p.a.id();
    save(&p.api_b, |c| {
        for device in c["devices"].as_array_mut().unwrap() {
            if device["deviceID"] == a_id.as_str() {
                device["ignoredFolders"] = json!([{ "id": "photos", "label": "", "time": "" }]);
            }
        }
    });
    assert!(!offered(), "ignoring the offer settles it");
    // Offered again on a new connection: still not pending.
    let b_id = p.b.id();
    let connected =
        || p.api_a.get("/rest/system/connections")["connections"][&b_id]["connected"] == true;
    p.api_a.ok_json(
        "POST",
        &format!("/rest/system/pause?device={b_id}"),
        json!({}),
    );
    wait_until("a lets b go", 30, || !connected());
    p.api_a.ok_json(
        "POST",
        &format!("/rest/system/resume?device={b_id}"),
        json!({}),
    );
    wait_until("a and b meet again", 30, connected);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(!offered(), "an ignored offer is not recorded again");
    let device = p.api_b.get(&format!("/rest/config/devices/{a_id}"));
    assert_eq!(device["ignoredFolders"][0]["id"], "photos", "{device}");
}

#[test]
fn a_device_is_let_in_only_from_its_allowed_networks() {
    let p = pair();
    let b_id = p.b.id();
    let connected =
        || p.api_a.get("/rest/system/connections")["connections"][&b_id]["connected"] == true;
    wait_until("connected", 30, connected);
    let device = format!("/rest/config/devices/{b_id}");
    p.api_a.ok_json(
        "PATCH",
        &device,
        json!({ "allowedNetworks": ["10.0.0.0/8"] }),
    );
    wait_until("b is turned away from loopback", 30, || {
        !connected() && p.a.log().contains("outside the device's allowed networks")
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(!connected(), "not let back in");
    let (status, answer) = p.api_a.send_json(
        "PATCH",
        &device,
        &json!({ "allowedNetworks": ["localhost"] }),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("ADDRESS/PREFIX"));
    p.api_a.ok_json(
        "PATCH",
        &device,
        json!({ "allowedNetworks": ["127.0.0.0/8"] }),
    );
    wait_until("b is let in from loopback", 60, connected);
}

/// How many times `host` has turned an unknown device away.
fn refusals_logged(host: &Device) -> usize {
    host.log()
        .matches("unknown device; recorded as pending")
        .count()
}

/// A device the host does not accept backs off between attempts (0.5 s, doubling) instead
/// of redialing the moment it is refused: before the fix it knocked hundreds of times a
/// second, each refusal a handshake on both sides and a line in the host's log.
#[test]
fn a_refused_device_backs_off_instead_of_redialing_at_once() {
    let (host, stranger) = (Device::init(), Device::init());
    host.add_folder("docs", "docs");
    stranger.add_folder("docs", "docs");
    let running = host.serve();
    let _knocking = knock_on(&stranger, &host, running.port);
    let refusals = || refusals_logged(&host);
    wait_until("the stranger knocks", 30, || refusals() > 0);
    std::thread::sleep(std::time::Duration::from_secs(4));
    // 0.5 + 1 + 2 s of backoff in 4 s: a handful of attempts, never a storm.
    let knocks = refusals();
    assert!(
        (1..=8).contains(&knocks),
        "{knocks} refused attempts in 4 s"
    );
}

/// A peer that closes the link because its configuration changed (here: it accepted the
/// folder we offered) is dialed again at once, whatever backoff its earlier refusals built
/// up. Before, the first sync after `peerfold accept FOLDER` waited that backoff out (16 s
/// here, up to `reconnectionIntervalS`).
#[test]
fn a_peer_that_accepts_an_offered_folder_gets_it_without_waiting_out_a_backoff() {
    let (host, stranger) = (Device::init(), Device::init());
    let offered = stranger.add_folder("docs", "docs");
    std::fs::write(offered.join("hello.txt"), b"hello").unwrap();
    let running = host.serve();
    let _knocking = knock_on(&stranger, &host, running.port);
    let refusals = || refusals_logged(&host);
    // Five refusals: the stranger's backoff has grown to 16 s.
    wait_until("the stranger was refused five times", 60, || {
        refusals() >= 5
    });
    host.ok(["accept", &stranger.id()]);
    let offer_pending = || host.ok(["pending"]).contains("docs");
    wait_until("the stranger comes back and offers docs", 90, offer_pending);
    let accepted = std::time::Instant::now();
    let path = host.path("docs");
    host.ok(["accept", "docs", "--path", path.to_str().unwrap()]);
    let arrived = || std::fs::read(path.join("hello.txt")).is_ok_and(|d| d == b"hello");
    wait_until("the offered folder's file arrives", 90, arrived);
    // Bounds the wait, well apart from the backoff (16.1 s when it was waited out; about
    // 1 s redialed at once); it measures nothing.
    let took = accepted.elapsed();
    assert!(
        took.as_secs() < 8,
        "took {took:?}: the backoff was waited out"
    );
}
