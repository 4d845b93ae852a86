//! A real headless browser for the GUI tests: Debian's `chromium` driven through its
//! `chromedriver` over WebDriver (fantoccini). Needs the packages `chromium` and
//! `chromium-driver` (tests/run.sh installs them); without them the tests fail saying so.
//!
//! Elements are found by their `data-test` names (daemon/gui/SELECTORS.md).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long an element may take to appear or change (the GUI is live: most take
/// milliseconds; sync and long polls a few seconds).
const PATIENCE: Duration = Duration::from_secs(30);

/// A chromedriver process and one browser session on it.
pub(crate) struct Chrome {
    driver: Child,
    /// Where chromedriver listens (for its Chrome DevTools door).
    driver_port: u16,
    pub(crate) client: Client,
    /// Where screenshots go.
    pub(crate) shots: PathBuf,
}

impl Chrome {
    /// Starts chromedriver and a headless chromium at `width` x `height`.
    pub(crate) async fn start(width: u32, height: u32) -> Self {
        for binary in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                std::path::Path::new(binary).exists(),
                "{binary} is missing: the GUI tests need Debian's chromium and chromium-driver \
                 (apt-get install chromium chromium-driver; tests/run.sh does it)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, so the browsers it starts go with it (see Drop).
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // Root in CI: chromium's sandbox cannot start as root.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let attempt = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
            match attempt {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver: {e}"),
            }
        };
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gui-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            driver,
            driver_port: port,
            client,
            shots,
        }
    }

    /// Runs `script` in every page opened from now on, before the page's own scripts
    /// (DevTools' `Page.addScriptToEvaluateOnNewDocument`, through chromedriver's door to
    /// it): how a test watches a page it did not write, as Syncthing's GUI.
    pub(crate) async fn before_every_page(&self, script: &str) {
        let session = self.client.session_id().await.unwrap().expect("a session");
        let door = format!(
            "http://127.0.0.1:{}/session/{session}/goog/cdp/execute",
            self.driver_port
        );
        let body = json!({
            "cmd": "Page.addScriptToEvaluateOnNewDocument",
            "params": { "source": script },
        });
        // chromedriver answers on its own thread; this runtime only waits here.
        ureq::post(&door)
            .send_json(body)
            .expect("chromedriver's DevTools door");
    }

    pub(crate) async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The element named `test`, waiting until it is there.
    pub(crate) async fn el(&self, test: &str) -> Element {
        let css = format!("[data-test=\"{test}\"]");
        match self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(&css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!(
                "no [data-test={test:?}] within {PATIENCE:?}: {e}\n{}",
                self.page_text().await
            ),
        }
    }

    /// Whether an element named `test` is on the page now.
    pub(crate) async fn has(&self, test: &str) -> bool {
        let css = format!("[data-test=\"{test}\"]");
        self.client
            .find_all(Locator::Css(&css))
            .await
            .is_ok_and(|found| !found.is_empty())
    }

    pub(crate) async fn click(&self, test: &str) {
        let element = self.el(test).await;
        settle(&element).await;
        // A dialog may still be sliding in: retry while something else takes the click.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match element.click().await {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("clicking [data-test={test:?}]: {e}"),
            }
        }
    }

    /// Clicks the first displayed element `xpath` finds (for pages without `data-test`
    /// names, as Syncthing's GUI), retrying while none is there or clickable yet.
    pub(crate) async fn click_xpath(&self, xpath: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut last = String::from("none found");
            for element in self
                .client
                .find_all(Locator::XPath(xpath))
                .await
                .unwrap_or_default()
            {
                if !element.is_displayed().await.unwrap_or(false) {
                    continue;
                }
                match element.click().await {
                    Ok(()) => return,
                    Err(e) => last = e.to_string(),
                }
            }
            assert!(
                Instant::now() < deadline,
                "clicking {xpath}: {last}\n{}",
                self.page_text().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Clicks the element named `inner` inside the one named `outer`.
    pub(crate) async fn click_in(&self, outer: &str, inner: &str) {
        let container = self.el(outer).await;
        let css = format!("[data-test=\"{inner}\"]");
        let element = match container.find(Locator::Css(&css)).await {
            Ok(element) => element,
            Err(e) => panic!(
                "no [data-test={inner:?}] in [data-test={outer:?}]: {e}\n{}",
                self.page_text().await
            ),
        };
        element.click().await.unwrap();
    }

    /// Replaces the text of the input named `test`.
    pub(crate) async fn type_into(&self, test: &str, text: &str) {
        let element = self.el(test).await;
        element.clear().await.unwrap();
        element.send_keys(text).await.unwrap();
    }

    pub(crate) async fn text(&self, test: &str) -> String {
        self.el(test).await.text().await.unwrap()
    }

    /// The input's current value.
    pub(crate) async fn value(&self, test: &str) -> String {
        self.el(test)
            .await
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default()
    }

    pub(crate) async fn attr(&self, test: &str, name: &str) -> Option<String> {
        self.el(test).await.attr(name).await.unwrap()
    }

    /// Waits until `condition` holds, checking every 200 ms; fails after `seconds` with
    /// what the page shows.
    pub(crate) async fn wait_until<F, Fut>(&self, what: &str, seconds: u64, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < deadline {
            if condition().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "timed out waiting for: {what}\n--- page:\n{}",
            self.page_text().await
        );
    }

    /// Waits until the element named `test` has `attribute` = `value`.
    pub(crate) async fn wait_attr(&self, test: &str, attribute: &str, value: &str, seconds: u64) {
        let what = format!("[data-test={test:?}] {attribute}={value:?}");
        self.wait_until(&what, seconds, || async {
            self.has(test).await && self.attr(test, attribute).await.as_deref() == Some(value)
        })
        .await;
    }

    /// Waits until the element named `test` shows text containing `part`.
    pub(crate) async fn wait_text(&self, test: &str, part: &str, seconds: u64) {
        let what = format!("[data-test={test:?}] showing {part:?}");
        self.wait_until(&what, seconds, || async {
            self.has(test).await && self.text(test).await.contains(part)
        })
        .await;
    }

    /// The visible text of the page, for failure messages.
    pub(crate) async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(e) => format!("(no page: {e})"),
        }
    }

    /// Saves a PNG of the window as `name`.png in the screenshots directory.
    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Errors the page's scripts threw or logged (collected by the GUI's error hook).
    pub(crate) async fn script_errors(&self) -> Vec<String> {
        let found = self
            .client
            .execute(
                "return (window.__peerfoldErrors || []).map(String);",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(found).unwrap_or_default()
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        // The whole group: chromedriver and every chromium process it started.
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.driver.wait();
    }
}

/// Runs a GUI test's async body on its own runtime (the tests themselves are plain).
pub(crate) fn run<F: Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

/// Waits (up to 2 s) until `element` stays where it is for 100 ms: a click aimed at a
/// button that moves (a line appearing above it) lands on whatever took its place.
async fn settle(element: &Element) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = element.rectangle().await.ok();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = element.rectangle().await.ok();
        if now == last {
            return;
        }
        last = now;
    }
}
