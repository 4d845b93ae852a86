//! The web GUI's files, served at the API address: embedded in the binary from
//! `daemon/gui/`, or read from the directory named by `PEERFOLD_GUI_DIR` (GUI development
//! without rebuilding, or another GUI such as Syncthing's).
//!
//! Files are sent gzipped when the browser takes it, with an ETag so an unchanged file
//! costs a 304. A page served to an allowed browser carries the CSRF cookie its scripts
//! echo (see `auth`); `meta.js` tells them the cookie's suffix and whether they are
//! logged in, as Syncthing's GUI expects.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, LazyLock};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::auth::{Browser, NEEDS_LOGIN};
use super::{ApiError, AppState};

/// The directory to serve instead of the embedded files.
pub(crate) const GUI_DIR_ENV: &str = "PEERFOLD_GUI_DIR";

/// What the embedded pages may load: only this origin; no inline scripts.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'";

#[derive(rust_embed::Embed)]
#[folder = "gui/"]
struct Embedded;

/// One file, ready to send.
#[derive(Debug)]
struct Asset {
    body: Bytes,
    gzipped: Option<Bytes>,
    etag: String,
    content_type: String,
}

impl Asset {
    fn new(name: &str, body: Vec<u8>) -> Self {
        let content_type = mime_guess::from_path(name)
            .first_or_octet_stream()
            .to_string();
        let etag = format!("\"{}\"", &blake3::hash(&body).to_hex()[..32]);
        let textual = content_type.starts_with("text/")
            || content_type.contains("javascript")
            || content_type.contains("json")
            || content_type.contains("svg");
        let gzipped = textual.then(|| gzip(&body)).flatten();
        Self {
            body: body.into(),
            gzipped,
            etag,
            content_type,
        }
    }
}

/// The embedded files by path, compressed once (notes for developers, `*.md`, stay out).
static EMBEDDED: LazyLock<HashMap<String, Arc<Asset>>> = LazyLock::new(|| {
    Embedded::iter()
        .filter(|name| !name.ends_with(".md"))
        .filter_map(|name| {
            let file = Embedded::get(&name)?;
            let asset = Asset::new(&name, file.data.into_owned());
            Some((name.to_string(), Arc::new(asset)))
        })
        .collect()
});

/// Every path the API router does not know: a GUI file, `meta.js`, or a JSON 404 under
/// `/rest/`.
pub(super) async fn serve(
    State(api): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    if path.starts_with("/rest/") {
        return ApiError::not_found("no such endpoint").into_response();
    }
    let config = api.engine.config().api.clone();
    let mut browser = api.guard.browser(&config, &headers);
    if browser == Browser::NeedsLogin {
        return (StatusCode::FORBIDDEN, NEEDS_LOGIN).into_response();
    }
    // Syncthing's own GUI logs in with HTTP basic authentication, asked for by the page.
    let mut session = None;
    if browser == Browser::NotLoggedIn
        && let Some((id, csrf)) = api.guard.basic_login(&config, &headers, peer.ip()).await
    {
        browser = Browser::Allowed {
            csrf: Some(csrf.clone()),
        };
        session = api.guard.session_set_cookie(id, false);
    }
    if browser == Browser::NotLoggedIn && serves_syncthing_gui() {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"Authorization Required\"",
            )],
            "log in",
        )
            .into_response();
    }
    let name = match path.trim_start_matches('/') {
        "" => "index.html",
        other => other,
    };
    let mut response = if name == "meta.js" {
        meta(&api, &browser)
    } else {
        match load(name).await {
            Some(asset) => send(&asset, &headers),
            None => (StatusCode::NOT_FOUND, format!("no such page: {path}")).into_response(),
        }
    };
    if let Some(cookie) = session {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    // Only pages of this daemon's own origin get the token (SameSite=Strict, Host-checked).
    if let Browser::Allowed { csrf } = &browser
        && let Some(cookie) = api.guard.csrf_cookie_for(csrf.as_deref(), &headers)
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `var metadata = {...};`: the device ID, the cookie suffix and whether this browser
/// is logged in.
fn meta(api: &super::Api, browser: &Browser) -> Response {
    let id = api.engine.device_id();
    let metadata = json!({
        "deviceID": id.to_string(),
        "deviceIDShort": id.short().to_string(),
        "authenticated": matches!(browser, Browser::Allowed { .. }),
    });
    (
        [
            (header::CONTENT_TYPE, "application/javascript"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!("var metadata = {metadata};\n"),
    )
        .into_response()
}

/// The file `name` from the override directory or the embedded set.
async fn load(name: &str) -> Option<Arc<Asset>> {
    match std::env::var_os(GUI_DIR_ENV) {
        Some(dir) => {
            let name = name.to_owned();
            let (file, body) =
                tokio::task::spawn_blocking(move || read_from_dir(Path::new(&dir), &name))
                    .await
                    .ok()??;
            Some(Arc::new(Asset::new(&file, body)))
        }
        None => EMBEDDED.get(name).cloned(),
    }
}

/// Whether the override directory holds a GUI laid out as Syncthing's (see
/// [`read_from_dir`]): Syncthing's own GUI, which logs in with HTTP basic authentication.
fn serves_syncthing_gui() -> bool {
    std::env::var_os(GUI_DIR_ENV)
        .is_some_and(|dir| Path::new(&dir).join("default").join("index.html").is_file())
}

/// Reads `name` from the override directory; returns the file's name (for its type) and
/// its bytes. A directory laid out as Syncthing's `gui/` (themes as subdirectories,
/// `default/index.html`: what Syncthing's `STGUIASSETS` names) is served as Syncthing
/// serves it: files from `default/`, `theme-assets/THEME/FILE` from that theme (else
/// `default/`), and `themes.json` listing the themes.
fn read_from_dir(dir: &Path, name: &str) -> Option<(String, Vec<u8>)> {
    if !dir.join("default").join("index.html").is_file() {
        let body = std::fs::read(inside(dir, name)?).ok()?;
        return Some((name.to_owned(), body));
    }
    if name == "themes.json" {
        let mut themes: Vec<String> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        themes.sort();
        let body = serde_json::to_vec(&json!({ "themes": themes })).ok()?;
        return Some((name.to_owned(), body));
    }
    let (theme, file) = name
        .strip_prefix("theme-assets/")
        .and_then(|rest| rest.split_once('/'))
        .unwrap_or(("default", name));
    [theme, "default"].into_iter().find_map(|theme| {
        let body = std::fs::read(inside(dir, &format!("{theme}/{file}"))?).ok()?;
        Some((file.to_owned(), body))
    })
}

/// `dir/name` if `name` is a plain relative path (no `..`, no root), else `None`.
fn inside(dir: &Path, name: &str) -> Option<PathBuf> {
    let relative = Path::new(name);
    relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(relative))
}

fn send(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = HeaderValue::from_str(&asset.etag).ok();
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if std::env::var_os(GUI_DIR_ENV).is_none() {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    if let Some(etag) = &etag {
        headers.insert(header::ETAG, etag.clone());
    }
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    if let Ok(content_type) = HeaderValue::from_str(&asset.content_type) {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    let takes_gzip = request
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    match &asset.gzipped {
        Some(gzipped) if takes_gzip => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            (headers, gzipped.clone()).into_response()
        }
        _ => (headers, asset.body.clone()).into_response(),
    }
}

fn gzip(body: &[u8]) -> Option<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).ok()?;
    encoder.finish().ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_names_are_read_from_the_directory() {
        let dir = Path::new("/srv/gui");
        assert_eq!(
            inside(dir, "app.js"),
            Some(PathBuf::from("/srv/gui/app.js"))
        );
        assert_eq!(
            inside(dir, "vendor/preact-htm.js"),
            Some(PathBuf::from("/srv/gui/vendor/preact-htm.js"))
        );
        for hostile in [
            "../etc/passwd",
            "vendor/../../x",
            "/etc/passwd",
            "./a/../../b",
        ] {
            assert_eq!(inside(dir, hostile), None, "{hostile}");
        }
    }

    #[test]
    fn a_syncthing_gui_tree_is_served_by_theme() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        for (path, text) in [
            ("default/index.html", "index"),
            ("default/assets/css/theme.css", "default theme"),
            ("dark/assets/css/theme.css", "dark theme"),
            ("secret.txt", "outside every theme"),
        ] {
            std::fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
            std::fs::write(dir.join(path), text).unwrap();
        }
        let read =
            |name: &str| read_from_dir(dir, name).map(|(_, b)| String::from_utf8(b).unwrap());
        assert_eq!(read("index.html").as_deref(), Some("index"));
        assert_eq!(
            read("theme-assets/dark/assets/css/theme.css").as_deref(),
            Some("dark theme")
        );
        // A theme without the file falls back to the default theme's.
        assert_eq!(
            read("theme-assets/light/assets/css/theme.css").as_deref(),
            Some("default theme")
        );
        assert_eq!(
            read("themes.json").as_deref(),
            Some(r#"{"themes":["dark","default"]}"#)
        );
        assert_eq!(read("secret.txt"), None);
        assert_eq!(read("theme-assets/../secret.txt"), None);
        assert_eq!(read("theme-assets/x/../../secret.txt"), None);
    }

    #[test]
    fn the_embedded_gui_has_its_page_and_scripts_gzipped() {
        let index = EMBEDDED.get("index.html").expect("index.html is embedded");
        assert!(index.content_type.starts_with("text/html"));
        let gzipped = index.gzipped.as_ref().expect("text is gzipped");
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzipped[..]), &mut plain)
            .unwrap();
        assert_eq!(plain, index.body);
        assert!(
            EMBEDDED
                .get("app.js")
                .is_some_and(|a| a.content_type.contains("javascript"))
        );
        assert!(
            !EMBEDDED.keys().any(|k| k.ends_with(".md")),
            "notes stay out"
        );
    }
}
