//! Syncthing's own web GUI (Debian's 1.19, AngularJS) served by peerfold from a directory
//! (`PEERFOLD_GUI_DIR`, laid out as Syncthing's `gui/`, as its `STGUIASSETS`), in a real
//! headless chromium: it signs in with peerfold's CSRF cookie (Syncthing's names), shows
//! peerfold's folders and devices, and its dialogs' saves (the whole configuration PUT
//! back, with AngularJS's extra fields) are taken.
//!
//! The GUI's files come from Debian's source package, assembled by tests/syncthing-gui.sh
//! (tests/run.sh runs it) in `target/syncthing-gui`; chromium as in `browser`.

use std::path::PathBuf;

use fantoccini::Locator;
use serde_json::json;

use crate::api::Api;
use crate::browser::{Chrome, run};
use crate::support::Device;

fn syncthing_gui() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("syncthing-gui");
    assert!(
        dir.join("default/index.html").is_file(),
        "{} has no Syncthing GUI: run tests/syncthing-gui.sh {} (tests/run.sh does; it \
         fetches Debian's syncthing source package)",
        dir.display(),
        dir.display()
    );
    dir
}

#[test]
fn syncthing_s_own_gui_drives_peerfold() {
    let gui = syncthing_gui();
    let device = Device::init();
    device.add_labeled_folder("docs", "docs", "Documents");
    let laptop = Device::init().id();
    device.ok(["device", "add", &laptop, "--name", "laptop"]);
    let running = device.serve_with(
        &["quic://127.0.0.1:0"],
        "127.0.0.1:0",
        &[("PEERFOLD_GUI_DIR", gui.to_str().unwrap())],
    );
    let api = Api::of(&device, &running);
    let url = format!("http://127.0.0.1:{}/", running.api_port);
    run(async {
        let chrome = Chrome::start(1280, 900).await;
        chrome.open(&url).await;
        let body = || async { chrome.page_text().await };
        chrome
            .wait_until(
                "Syncthing's GUI shows peerfold's folder and device",
                30,
                || async {
                    let text = body().await;
                    text.contains("Documents")
                        && text.contains("laptop")
                        && text.contains("This Device")
                },
            )
            .await;
        chrome.screenshot("syncthing-gui").await;

        // Actions > Settings: rename this device and save (a PUT of the whole config).
        chrome
            .click_xpath("//a[contains(@class,'dropdown-toggle')][.//span[contains(., 'Actions')]]")
            .await;
        chrome.click_xpath("//a[@ng-click='showSettings()']").await;
        let name = chrome
            .client
            .wait()
            .for_element(Locator::Id("DeviceName"))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        name.clear().await.unwrap();
        name.send_keys("renamed in Syncthing's GUI").await.unwrap();
        chrome
            .click_xpath("//div[@id='settings']//button[@ng-click='saveSettings()']")
            .await;
        chrome
            .wait_until("the new name is saved", 15, || async {
                api.get("/rest/config")["devices"][0]["name"] == "renamed in Syncthing's GUI"
            })
            .await;

        // Pause the folder from its panel.
        chrome
            .click_xpath("//button[@data-target='#folder-0']")
            .await;
        chrome
            .click_xpath(
                "//div[@id='folder-0']//button[@ng-click='setFolderPause(folder.id, true)']",
            )
            .await;
        chrome
            .wait_until("the folder is paused", 15, || async {
                api.get("/rest/config/folders/docs")["paused"] == json!(true)
            })
            .await;
    });
    // Nothing the GUI sent was refused, and its form fields were not kept as settings.
    let log = device.log();
    assert!(!log.contains("status=400"), "{log}");
    assert!(!log.contains("_listenAddressesStr") && !log.contains("$$hashKey"));
}

/// With a GUI user and password, Syncthing 1.19's GUI logs in as it does against
/// Syncthing: the page asks for HTTP basic authentication, which opens a session.
#[test]
fn syncthing_s_own_gui_logs_in_with_basic_authentication() {
    let gui = syncthing_gui();
    let device = Device::init();
    device.add_labeled_folder("docs", "docs", "Documents");
    let running = device.serve_with(
        &["quic://127.0.0.1:0"],
        "127.0.0.1:0",
        &[("PEERFOLD_GUI_DIR", gui.to_str().unwrap())],
    );
    let api = Api::of(&device, &running);
    api.ok_json(
        "PATCH",
        "/rest/config/gui",
        json!({ "user": "admin", "password": "s3cret" }),
    );
    let port = running.api_port;
    // Without credentials the page asks for them; wrong ones are refused.
    let (status, _) = api.send("GET", "/", &[]);
    assert_eq!(status, 401);
    let asked = ureq::get(format!("http://127.0.0.1:{port}/"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert!(
        asked.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"),
        "{:?}",
        asked.headers()
    );
    let (status, _) = api.send("GET", "/", &[("Authorization", "Basic YWRtaW46d3Jvbmc=")]);
    assert_eq!(status, 401, "admin:wrong");
    run(async {
        let chrome = Chrome::start(1280, 900).await;
        chrome
            .open(&format!("http://admin:s3cret@127.0.0.1:{port}/"))
            .await;
        chrome
            .wait_until("Syncthing's GUI shows peerfold's folder", 30, || async {
                chrome.page_text().await.contains("Documents")
            })
            .await;
    });
    assert!(device.log().contains("GUI login (HTTP basic)"));
}
