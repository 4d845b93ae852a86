//! The web GUI's doors over real HTTP: a browser never needs the API key; it gets a CSRF
//! cookie from a page the daemon served and must echo it on every `/rest` call; with a
//! GUI user and password it must log in first (an HttpOnly, SameSite=Strict session);
//! wrong passwords are refused and then rate limited; a GUI beyond loopback without a
//! password is not served at all, while scripts keep using the key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::Api;
use crate::support::Device;

/// A cookie-keeping HTTP client that behaves as a browser does on the GUI's origin.
struct Browser {
    base: String,
    agent: ureq::Agent,
    cookies: BTreeMap<String, String>,
    /// Every `Set-Cookie` line received, for checking its attributes.
    set_cookies: Vec<String>,
}

impl Browser {
    fn new(base: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            base: base.to_owned(),
            agent,
            cookies: BTreeMap::new(),
            set_cookies: Vec::new(),
        }
    }

    /// Sends a request with the cookies held and `headers`; keeps the cookies set.
    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, String) {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            request = request.header("Cookie", jar.join("; "));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .header("Content-Type", "application/json")
            .body(body.unwrap_or_default().to_owned())
            .unwrap();
        let mut response = self.agent.run(request).unwrap();
        for line in response.headers().get_all("set-cookie") {
            let line = line.to_str().unwrap().to_owned();
            let pair = line.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
            self.set_cookies.push(line);
        }
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    /// The CSRF cookie's name and value, if one was set.
    fn csrf(&self) -> Option<(String, String)> {
        self.cookies
            .iter()
            .find(|(k, _)| k.starts_with("CSRF-Token-"))
            .map(|(k, v)| (k.clone(), v.clone()))
    }

    /// A `/rest` call as the GUI's scripts make it: the CSRF cookie echoed in its header.
    fn rest(&mut self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let header = self
            .csrf()
            .map(|(name, value)| (name.replace("CSRF-Token-", "X-CSRF-Token-"), value));
        let headers: Vec<(&str, &str)> = header
            .as_ref()
            .map(|(n, v)| vec![(n.as_str(), v.as_str())])
            .unwrap_or_default();
        let (status, text) = self.send(method, path, &headers, body);
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, json)
    }

    fn login(&mut self, user: &str, password: &str) -> (u16, Value) {
        let body = json!({ "username": user, "password": password }).to_string();
        let (status, text) = self.send("POST", "/rest/noauth/auth/password", &[], Some(&body));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[test]
fn on_loopback_a_served_page_is_enough_and_the_csrf_token_is_required() {
    let device = Device::init();
    let running = device.serve();
    let base = format!("http://127.0.0.1:{}", running.api_port);
    let short = &device.id()[..5];
    let mut browser = Browser::new(&base);

    // No page served yet: no token, and the API refuses.
    assert_eq!(browser.rest("GET", "/rest/system/version", None).0, 401);
    let (status, page) = browser.send("GET", "/", &[], None);
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page}"
    );
    let (name, token) = browser.csrf().expect("the page sets the CSRF cookie");
    assert_eq!(name, format!("CSRF-Token-{short}"));
    let line = browser.set_cookies.last().unwrap();
    assert!(line.contains("SameSite=Strict"), "{line}");

    let (status, version) = browser.rest("GET", "/rest/system/version", None);
    assert_eq!(status, 200, "{version}");
    assert!(
        version["longVersion"]
            .as_str()
            .unwrap()
            .contains("peerfold")
    );

    // The cookie alone (what another site's form would send) is not enough.
    let (status, body) = browser.send("POST", "/rest/system/pause", &[], None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("CSRF"), "{body}");
    // Nor a made-up token.
    let (status, _) = browser.send(
        "POST",
        "/rest/system/pause",
        &[(&format!("X-CSRF-Token-{short}"), "forged")],
        None,
    );
    assert_eq!(status, 403);
    // A foreign Host (DNS rebinding) is refused before anything else.
    let (status, body) = browser.send(
        "GET",
        "/rest/system/version",
        &[
            ("Host", "evil.example"),
            (&format!("X-CSRF-Token-{short}"), &token),
        ],
        None,
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("evil.example"), "{body}");
    let (status, _) = browser.send("GET", "/", &[("Host", "evil.example")], None);
    assert_eq!(status, 403);

    // Every answer names the device, as Syncthing's do (its GUI reads it).
    let response = ureq::get(format!("{base}/rest/noauth/health"))
        .call()
        .unwrap();
    assert_eq!(response.headers()["x-syncthing-id"], device.id().as_str());
    // meta.js says who this is, as Syncthing's GUI expects.
    let (status, meta) = browser.send("GET", "/meta.js", &[], None);
    assert_eq!(status, 200);
    assert!(
        meta.contains(&device.id()) && meta.contains("\"authenticated\":true"),
        "{meta}"
    );

    // Files are sent gzipped with an ETag; an unchanged file costs a 304.
    let api = Api::of(&device, &running);
    let (status, _) = api.send("GET", "/app.js", &[("Accept-Encoding", "gzip")]);
    assert_eq!(status, 200);
    let response = ureq::get(format!("{base}/app.js"))
        .header("Accept-Encoding", "gzip")
        .call()
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let again = ureq::get(format!("{base}/app.js"))
        .header("If-None-Match", &etag)
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);
    let (status, body) = browser.send("GET", "/../../etc/passwd", &[], None);
    assert_eq!(status, 404, "{body}");
}

#[test]
fn with_a_password_the_browser_logs_in_and_wrong_passwords_are_limited() {
    let device = Device::init();
    let running = device.serve();
    let base = format!("http://127.0.0.1:{}", running.api_port);
    let api = Api::of(&device, &running);
    let short = &device.id()[..5];

    // Scripts set the login with the key; the password is stored as an argon2 hash.
    let gui = api.ok_json(
        "PATCH",
        "/rest/config/gui",
        json!({ "user": "admin", "password": "correct horse" }),
    );
    assert_eq!(gui["user"], "admin");
    let hash = gui["password"].as_str().unwrap().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let stored = std::fs::read_to_string(device.home().join("config.toml")).unwrap();
    assert!(
        stored.contains("$argon2id$") && !stored.contains("correct horse"),
        "{stored}"
    );
    // Sending the hash back (a client round-tripping the GUI object) keeps the password.
    api.ok_json("PATCH", "/rest/config/gui", json!({ "password": hash }));
    api.refused_json(
        "PATCH",
        "/rest/config/gui",
        json!({ "password": "$2a$10$abcdefghijklmnopqrstuv" }),
        "bcrypt",
    );

    let mut browser = Browser::new(&base);
    let (status, meta) = browser.send("GET", "/meta.js", &[], None);
    assert_eq!(status, 200);
    assert!(meta.contains("\"authenticated\":false"), "{meta}");
    assert!(browser.csrf().is_none(), "no token before logging in");
    // The page itself (the login form) is served.
    assert_eq!(browser.send("GET", "/", &[], None).0, 200);
    assert_eq!(browser.rest("GET", "/rest/system/version", None).0, 401);

    let (status, error) = browser.login("admin", "wrong");
    assert_eq!(status, 403, "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("wrong user or password")
    );
    assert_eq!(browser.login("root", "correct horse").0, 403);
    assert!(browser.cookies.is_empty(), "{:?}", browser.cookies);

    let (status, _) = browser.login("admin", "correct horse");
    assert_eq!(status, 204);
    let session = browser
        .set_cookies
        .iter()
        .find(|c| c.starts_with(&format!("sessionid-{short}=")))
        .expect("a session cookie")
        .clone();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    let (status, version) = browser.rest("GET", "/rest/system/version", None);
    assert_eq!(status, 200, "{version}");
    let (_, meta) = browser.send("GET", "/meta.js", &[], None);
    assert!(meta.contains("\"authenticated\":true"), "{meta}");
    // The session without the CSRF header is refused.
    let (status, _) = browser.send("POST", "/rest/system/pause", &[], None);
    assert_eq!(status, 403);
    // Another browser with a stolen CSRF token but no session is not logged in.
    let mut other = Browser::new(&base);
    let (name, token) = browser.csrf().unwrap();
    other.cookies.insert(name, token);
    assert_eq!(other.rest("GET", "/rest/system/version", None).0, 401);

    // Changing the password ends the session.
    api.ok_json(
        "PATCH",
        "/rest/config/gui",
        json!({ "password": "battery staple" }),
    );
    assert_eq!(browser.rest("GET", "/rest/system/version", None).0, 401);
    assert_eq!(browser.login("admin", "battery staple").0, 204);
    assert_eq!(browser.rest("GET", "/rest/system/version", None).0, 200);
    // Logging out ends it too.
    assert_eq!(
        browser
            .send("POST", "/rest/noauth/auth/logout", &[], None)
            .0,
        204
    );
    assert_eq!(browser.rest("GET", "/rest/system/version", None).0, 401);

    // Guessing: after a few more wrong passwords the client must wait, even with the
    // right one, and the log says so.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(browser.login("admin", "guess").0);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert_eq!(browser.login("admin", "battery staple").0, 429);
    assert!(device.log().contains("too many GUI login attempts"));
    // Scripts are not affected.
    assert_eq!(api.get("/rest/system/ping")["ping"], "pong");
}

#[test]
fn beyond_loopback_the_gui_needs_a_password_first() {
    let device = Device::init();
    let running = device.serve_with_api(&["quic://127.0.0.1:0"], "0.0.0.0:0");
    let base = format!("http://127.0.0.1:{}", running.api_port);
    let api = Api::of(&device, &running);
    let mut browser = Browser::new(&base);
    let (status, body) = browser.send("GET", "/", &[], None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("user and password"), "{body}");
    assert!(browser.csrf().is_none());
    // The key still works for scripts, which set the login.
    api.ok_json(
        "PATCH",
        "/rest/config/gui",
        json!({ "user": "admin", "password": "pw" }),
    );
    let (status, _) = browser.send("GET", "/", &[], None);
    assert_eq!(status, 200);
    assert_eq!(browser.login("admin", "pw").0, 204);
    assert_eq!(browser.rest("GET", "/rest/system/version", None).0, 200);
}
