//! Introducer devices (Syncthing's `introducer`), with three real daemons: two devices that
//! know only a hub marked introducer learn of each other through it, share its folder and
//! connect directly; when the hub stops sharing the folder with one, the other drops it.

use serde_json::{Value, json};

use crate::api::Api;
use crate::support::{Device, tree, wait_until};

fn quic(port: u16) -> String {
    format!("quic://127.0.0.1:{port}")
}

fn device<'a>(config: &'a Value, id: &str) -> Option<&'a Value> {
    config["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deviceID"] == id)
}

fn shares(config: &Value, folder: &str, id: &str) -> bool {
    config["folders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == folder)
        .flat_map(|f| f["devices"].as_array().unwrap())
        .any(|d| d["deviceID"] == id)
}

#[test]
fn an_introducer_makes_its_devices_meet_and_takes_them_back() {
    let (a, hub, c) = (Device::init(), Device::init(), Device::init());
    let (root_a, _root_hub, root_c) = (
        a.add_folder("docs", "docs"),
        hub.add_folder("docs", "docs"),
        c.add_folder("docs", "docs"),
    );
    let (run_a, run_hub, run_c) = (a.serve(), hub.serve(), c.serve());
    let (api_a, api_hub, api_c) = (
        Api::of(&a, &run_a),
        Api::of(&hub, &run_hub),
        Api::of(&c, &run_c),
    );
    let (id_a, id_hub, id_c) = (a.id(), hub.id(), c.id());

    // The hub knows both and shares "docs" with both; each knows only the hub.
    for (id, port) in [(&id_a, run_a.port), (&id_c, run_c.port)] {
        api_hub.ok_json(
            "POST",
            "/rest/config/devices",
            json!({ "deviceID": id, "name": format!("at {port}"), "addresses": [quic(port)] }),
        );
    }
    api_hub.ok_json(
        "PATCH",
        "/rest/config/folders/docs",
        json!({ "devices": [{ "deviceID": id_a }, { "deviceID": id_c }] }),
    );
    for api in [&api_a, &api_c] {
        api.ok_json(
            "POST",
            "/rest/config/devices",
            json!({ "deviceID": id_hub, "addresses": [quic(run_hub.port)], "introducer": true }),
        );
        api.ok_json(
            "PATCH",
            "/rest/config/folders/docs",
            json!({ "devices": [{ "deviceID": id_hub }] }),
        );
    }

    // Each learns the other from the hub: added (introduced by it), sharing "docs".
    for (api, other) in [(&api_a, &id_c), (&api_c, &id_a)] {
        wait_until("the introduced device appears", 40, || {
            let config = api.get("/rest/config");
            device(&config, other).is_some_and(|d| d["introducedBy"] == id_hub.as_str())
                && shares(&config, "docs", other)
        });
    }
    let config_a = api_a.get("/rest/config");
    let c_on_a = device(&config_a, &id_c).unwrap();
    assert_eq!(c_on_a["addresses"], json!([quic(run_c.port)]), "{c_on_a}");
    assert_eq!(c_on_a["introducer"], false);
    wait_until("a and c connect directly", 40, || {
        api_a.get("/rest/system/connections")["connections"][&id_c]["connected"] == true
    });
    std::fs::write(root_a.join("hello.txt"), b"from a").unwrap();
    wait_until("c has a's file", 40, || tree(&root_c) == tree(&root_a));

    // The hub stops sharing "docs" with c: a stops sharing it with c and forgets c, whom
    // only the hub had introduced; the hub itself stays.
    api_hub.ok_json(
        "PATCH",
        "/rest/config/folders/docs",
        json!({ "devices": [{ "deviceID": id_a }] }),
    );
    wait_until("a drops c", 40, || {
        device(&api_a.get("/rest/config"), &id_c).is_none()
    });
    let config_a = api_a.get("/rest/config");
    assert!(!shares(&config_a, "docs", &id_c));
    assert!(shares(&config_a, "docs", &id_hub));
    assert!(device(&config_a, &id_hub).is_some());
    assert!(a.log().contains("took the introducer's devices"));
}
