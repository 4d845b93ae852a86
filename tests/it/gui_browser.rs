//! The web GUI in a real headless chromium against real daemons, as a person uses it:
//! pairing two devices by typed ID and by an invite link, sharing a folder and watching it
//! sync, settling a conflict, restoring a version, mistakes in forms, logging in.
//! Screenshots of the main pages (desktop and 360 px) land in
//! `target/tmp/gui-screenshots/` (the current ones are kept in docs/).
//!
//! Needs Debian's `chromium` and `chromium-driver` (see `browser`).

use std::fs;

use serde_json::json;

use crate::api::Api;
use crate::browser::{Chrome, run};
use crate::support::{Device, Running, pair, tree, wait_for_same_tree, wait_until};
use crate::sync::pair_address;

fn gui(running: &Running) -> String {
    format!("http://127.0.0.1:{}/", running.api_port)
}

/// Opens the GUI at `url` and waits until it shows this device.
async fn open_dashboard(chrome: &Chrome, url: &str, device: &Device) {
    chrome.open(url).await;
    chrome
        .wait_text("this-device-id", &device.id()[..7], 30)
        .await;
}

/// Fails on anything the page's scripts threw.
async fn no_script_errors(chrome: &Chrome) {
    let errors = chrome.script_errors().await;
    assert!(errors.is_empty(), "script errors: {errors:?}");
}

#[test]
fn two_devices_pair_share_and_sync_through_their_guis() {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("docs", "docs");
    fs::write(root_a.join("hello.txt"), "from a's GUI test").unwrap();
    let root_b = b.path("docs-on-b");
    let (running_a, running_b) = (a.serve(), b.serve());
    let (id_a, id_b) = (a.id(), b.id());
    run(async {
        let chrome = Chrome::start(1280, 900).await;
        open_dashboard(&chrome, &gui(&running_a), &a).await;
        chrome
            .wait_attr("folder-docs", "data-state", "idle", 30)
            .await;
        chrome.screenshot("dashboard").await;

        // A's GUI: add B by its ID. A mistyped check character is caught as typed.
        chrome.click("add-device").await;
        let mut typo = id_b.clone().into_bytes();
        typo[6] = if typo[6] == b'A' { b'B' } else { b'A' };
        chrome
            .type_into("device-id-input", &String::from_utf8(typo).unwrap())
            .await;
        chrome.wait_text("device-id-error", "check", 10).await;
        chrome.screenshot("device-dialog").await;
        chrome.type_into("device-id-input", &id_b).await;
        chrome.wait_text("device-id-ok", &id_b, 10).await;
        chrome.type_into("device-name-input", "laptop").await;
        chrome
            .type_into(
                "device-addresses-input",
                &format!("quic://127.0.0.1:{}", running_b.port),
            )
            .await;
        chrome.click("device-share-docs").await;
        chrome.click("dialog-save").await;
        chrome.el(&format!("device-{id_b}")).await;

        // B's GUI: A knocks; accept it, then the folder it offers, at a path of B's.
        open_dashboard(&chrome, &gui(&running_b), &b).await;
        chrome
            .click_in(&format!("pending-device-{id_a}"), "pending-device-accept")
            .await;
        assert_eq!(chrome.value("device-id-input").await, id_a);
        chrome.click("dialog-save").await;
        chrome.el(&format!("device-{id_a}")).await;
        chrome
            .click_in("pending-folder-docs", "pending-folder-accept")
            .await;
        chrome
            .type_into("folder-path-input", root_b.to_str().unwrap())
            .await;
        chrome.screenshot("folder-dialog").await;
        chrome.click("dialog-save").await;

        wait_until("b has hello.txt", 60, || root_b.join("hello.txt").exists());
        // A file written on A later arrives too, and both dashboards say up to date.
        fs::write(root_a.join("later.txt"), "written after pairing").unwrap();
        wait_for_same_tree("b has later.txt", 60, (&root_a, &a), (&root_b, &b));
        chrome
            .wait_attr("folder-docs", "data-completion", "100", 30)
            .await;
        chrome
            .wait_attr(&format!("device-{id_a}"), "data-connected", "true", 30)
            .await;
        open_dashboard(&chrome, &gui(&running_a), &a).await;
        chrome
            .wait_attr(&format!("device-{id_b}"), "data-completion", "100", 30)
            .await;
        chrome
            .wait_attr(&format!("device-{id_b}"), "data-connected", "true", 30)
            .await;
        no_script_errors(&chrome).await;
    });
}

#[test]
fn an_invite_link_pairs_two_devices_with_one_accept_on_each() {
    let (a, b) = (Device::init(), Device::init());
    let root_a = a.add_folder("photos", "photos");
    fs::write(root_a.join("cat.jpg"), "not really a cat").unwrap();
    let root_b = b.path("photos-on-b");
    let (running_a, running_b) = (a.serve(), b.serve());
    let id_b = b.id();
    run(async {
        let chrome = Chrome::start(1280, 900).await;
        open_dashboard(&chrome, &gui(&running_a), &a).await;
        chrome.click("share-invite-photos").await;
        let link = chrome.value("invite-link").await;
        assert!(
            link.starts_with("peerfold://invite?") && link.contains(&a.id()),
            "{link}"
        );
        chrome.screenshot("invite").await;

        // B pastes it and says where the folder goes: that is B's accept.
        open_dashboard(&chrome, &gui(&running_b), &b).await;
        chrome.click("paste-invite").await;
        chrome.type_into("invite-input", &link).await;
        chrome
            .type_into("invite-path-input", root_b.to_str().unwrap())
            .await;
        chrome.click("dialog-save").await;
        chrome
            .wait_until("the invite is taken", 20, || async {
                !chrome.has("paste-invite-dialog").await
            })
            .await;
        let taken = Api::of(&b, &running_b).get("/rest/config/folders/photos");
        assert_eq!(taken["path"], root_b.to_str().unwrap());

        // A's one accept: the device, with the folder it asks for already ticked.
        open_dashboard(&chrome, &gui(&running_a), &a).await;
        chrome
            .click_in(&format!("pending-device-{id_b}"), "pending-device-accept")
            .await;
        let ticked = chrome
            .el("device-share-photos")
            .await
            .prop("checked")
            .await
            .unwrap();
        assert_eq!(ticked.as_deref(), Some("true"));
        chrome.click("dialog-save").await;
        wait_for_same_tree("b has cat.jpg", 60, (&root_a, &a), (&root_b, &b));
        no_script_errors(&chrome).await;
    });
}

#[test]
fn a_conflict_is_settled_and_a_version_restored_in_the_gui() {
    let (a, b) = (Device::init(), Device::init());
    let (root_a, root_b) = (a.add_folder("docs", "docs"), b.add_folder("docs", "docs"));
    fs::write(root_a.join("notes.txt"), "original").unwrap();
    pair(&a, &b, None);
    a.ok(["folder", "share", "docs", &b.id()]);
    b.ok(["folder", "share", "docs", &a.id()]);
    let running_b = b.serve();
    pair_address(&a, &b, running_b.port);
    let running_a = a.serve();
    wait_until("b has notes.txt", 30, || tree(&root_b) == tree(&root_a));
    assert!(running_a.stop().success() && running_b.stop().success());
    // Both edit while apart; b's edit is later and wins the name, a's becomes the copy.
    fs::write(root_a.join("notes.txt"), "edited on a").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    fs::write(root_b.join("notes.txt"), "edited on b").unwrap();
    let running_b = b.serve();
    pair_address(&a, &b, running_b.port);
    let running_a = a.serve();
    let copy_on = |root: &std::path::Path| {
        tree(root)
            .into_keys()
            .find(|k| k.contains(".sync-conflict-"))
    };
    wait_until("both have the conflict copy", 60, || {
        copy_on(&root_a).is_some() && tree(&root_a) == tree(&root_b)
    });
    let copy = copy_on(&root_a).unwrap();
    run(async {
        let chrome = Chrome::start(1280, 900).await;
        open_dashboard(&chrome, &gui(&running_a), &a).await;
        chrome.click("nav-conflicts").await;
        chrome.el(&format!("conflict-{copy}")).await;
        chrome.screenshot("conflicts").await;
        // Keep a's edit (the conflict copy): it takes the name on both devices.
        chrome
            .click_in(&format!("conflict-{copy}"), "keep-conflict")
            .await;
        wait_until("both have a's edit and no copy", 60, || {
            fs::read_to_string(root_b.join("notes.txt")).is_ok_and(|t| t == "edited on a")
                && copy_on(&root_a).is_none()
                && copy_on(&root_b).is_none()
                && tree(&root_a) == tree(&root_b)
        });
        chrome
            .wait_until("the conflict leaves the page", 30, || async {
                !chrome.has(&format!("conflict-{copy}")).await
            })
            .await;
        // b's edit is not lost: it is a's kept version, and the GUI restores it.
        chrome.click("nav-versions").await;
        chrome.el("version-notes.txt").await;
        chrome.screenshot("versions").await;
        chrome.click_in("version-notes.txt", "restore").await;
        wait_until("b's edit is back on both", 60, || {
            fs::read_to_string(root_a.join("notes.txt")).is_ok_and(|t| t == "edited on b")
                && tree(&root_a) == tree(&root_b)
        });
        no_script_errors(&chrome).await;
    });
}

#[test]
fn mistakes_in_forms_show_a_message_and_change_nothing() {
    let device = Device::init();
    device.add_folder("docs", "docs");
    let running = device.serve();
    let api = Api::of(&device, &running);
    let before = api.get("/rest/config");
    run(async {
        let chrome = Chrome::start(360, 800).await;
        open_dashboard(&chrome, &gui(&running), &device).await;
        chrome.screenshot("dashboard-360").await;
        // A device ID that is no ID.
        chrome.click("add-device").await;
        chrome.type_into("device-id-input", "NOT-AN-ID").await;
        chrome.wait_text("device-id-error", "ID", 10).await;
        chrome.click("dialog-save").await;
        chrome.el("dialog-error").await;
        chrome.screenshot("device-dialog-360").await;
        chrome.click("dialog-cancel").await;
        // A folder ID that exists, then a path that is not absolute.
        chrome.click("add-folder").await;
        chrome.type_into("folder-id-input", "docs").await;
        chrome
            .type_into(
                "folder-path-input",
                device.path("elsewhere").to_str().unwrap(),
            )
            .await;
        chrome.click("dialog-save").await;
        chrome.wait_text("dialog-error", "already exists", 10).await;
        chrome.type_into("folder-id-input", "fresh").await;
        chrome.type_into("folder-path-input", "../up").await;
        chrome.click("dialog-save").await;
        chrome.wait_text("dialog-error", "absolute", 10).await;
        chrome.screenshot("folder-dialog-360").await;
        chrome.click("dialog-cancel").await;
        no_script_errors(&chrome).await;
    });
    assert_eq!(api.get("/rest/config"), before, "nothing changed");
}

#[test]
fn with_a_password_the_gui_asks_to_log_in() {
    let device = Device::init();
    let running = device.serve();
    let api = Api::of(&device, &running);
    api.ok_json(
        "PATCH",
        "/rest/config/gui",
        json!({ "user": "admin", "password": "s3cret" }),
    );
    run(async {
        let chrome = Chrome::start(1280, 900).await;
        chrome.open(&gui(&running)).await;
        chrome.type_into("login-user", "admin").await;
        chrome.type_into("login-password", "wrong").await;
        chrome.click("login-submit").await;
        chrome
            .wait_text("login-error", "wrong user or password", 10)
            .await;
        chrome.screenshot("login").await;
        chrome.type_into("login-password", "s3cret").await;
        chrome.click("login-submit").await;
        chrome
            .wait_text("this-device-id", &device.id()[..7], 30)
            .await;
        // The session cookie is HttpOnly: the page's scripts cannot read it.
        let cookies = chrome
            .client
            .execute("return document.cookie;", vec![])
            .await
            .unwrap();
        let cookies = cookies.as_str().unwrap();
        assert!(
            cookies.contains("CSRF-Token-") && !cookies.contains("sessionid-"),
            "{cookies}"
        );
        // Renaming this device from Settings (its own entry's name, as Syncthing's GUI).
        chrome.click("nav-settings").await;
        chrome
            .type_into("settings-name", "renamed in the GUI")
            .await;
        chrome.click("settings-device-save").await;
        let api = &api;
        chrome
            .wait_until("the new name is saved", 10, || async move {
                api.get("/rest/config")["devices"][0]["name"] == "renamed in the GUI"
            })
            .await;
        no_script_errors(&chrome).await;
    });
}

#[test]
fn transfers_show_on_both_sides_with_progress() {
    let (a, b) = (Device::init(), Device::init());
    let (root_a, root_b) = (a.add_folder("docs", "docs"), b.add_folder("docs", "docs"));
    pair(&a, &b, None);
    a.ok(["folder", "share", "docs", &b.id()]);
    b.ok(["folder", "share", "docs", &a.id()]);
    let running_b = b.serve();
    pair_address(&a, &b, running_b.port);
    let running_a = a.serve();
    // A slow sender (loopback counts as LAN, so the LAN is limited too): 24 MiB at 3 MiB/s.
    Api::of(&a, &running_a).ok_json(
        "PATCH",
        "/rest/config/options",
        json!({ "maxSendKbps": 3072, "limitBandwidthInLan": true }),
    );
    fs::write(root_a.join("big.bin"), crate::support::noise(5, 24 << 20)).unwrap();
    run(async {
        let chrome = Chrome::start(1280, 900).await;
        open_dashboard(&chrome, &gui(&running_b), &b).await;
        chrome.click("nav-transfers").await;
        chrome
            .wait_attr("transfer-big.bin", "data-direction", "down", 60)
            .await;
        chrome.wait_text("transfer-big.bin", "%", 10).await;
        chrome.screenshot("transfers").await;
        open_dashboard(&chrome, &gui(&running_a), &a).await;
        chrome.click("nav-transfers").await;
        chrome
            .wait_attr("transfer-big.bin", "data-direction", "up", 30)
            .await;
        chrome.wait_text("transfer-big.bin", "sent", 10).await;
        wait_until("b has big.bin", 60, || tree(&root_b) == tree(&root_a));
        chrome
            .wait_until("the upload leaves the page", 30, || async {
                chrome.has("no-transfers").await
            })
            .await;
        no_script_errors(&chrome).await;
    });
}
