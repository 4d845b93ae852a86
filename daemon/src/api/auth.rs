//! Who may call the API: scripts with the API key, browsers with the GUI's session and
//! CSRF token, as Syncthing's GUI does.
//!
//! A browser never sees the API key. When the GUI has a user and password, logging in
//! (`POST /rest/noauth/auth/password`) sets an HttpOnly, SameSite=Strict session cookie
//! (`sessionid-XXXXX`); without them (allowed on a loopback address only) the browser
//! needs no session. Either way, every `/rest` call from a browser carries the header
//! `X-CSRF-Token-XXXXX` with the value of the `CSRF-Token-XXXXX` cookie, which only a
//! page this daemon served can read: another site's page cannot forge it. `XXXXX` is the
//! first 5 characters of the device ID, as in Syncthing.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use peerfold_engine::config::ApiConfig;
use serde_json::json;
use tracing::{info, warn};

use super::{ApiError, AppState, constant_time_eq, svc::random_string};

/// How long a session lives after logging in.
const SESSION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Sessions kept at most (the oldest go first).
const MAX_SESSIONS: usize = 256;
/// CSRF tokens handed out while no login is configured, newest last (one per page load).
const MAX_OPEN_TOKENS: usize = 64;
/// Login attempts per client address and minute.
const LOGINS_PER_MINUTE: u32 = 10;
/// The longest login body read.
const MAX_LOGIN_BODY: usize = 4096;

/// Sessions, CSRF tokens and the login limiter of one API server.
#[derive(Debug)]
pub(crate) struct Guard {
    /// The cookies' and header's suffix (the device ID's first 5 characters), so two
    /// daemons on one host (different ports, one cookie jar) keep apart cookies.
    suffix: String,
    /// Whether the API listens on a loopback address only (no login needed then).
    loopback: bool,
    state: BrowserTokens,
    logins: DefaultKeyedRateLimiter<IpAddr>,
}

/// The sessions and CSRF tokens browsers were given, kept across restarts within one
/// process: Syncthing's GUI waits through a restart and goes on with the tokens it has
/// (it would wait forever on refusals otherwise).
#[derive(Debug, Clone, Default)]
pub(crate) struct BrowserTokens(Arc<Mutex<Tokens>>);

#[derive(Debug, Default)]
struct Tokens {
    sessions: HashMap<String, Session>,
    /// Tokens of pages served with no login configured.
    open: VecDeque<String>,
}

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    expires: Instant,
    /// The credentials it was opened with: changing the user or password ends it.
    credentials: blake3::Hash,
}

/// What a request from a browser (no API key) proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Browser {
    /// Logged in, or no login is configured: the CSRF token its pages must send.
    Allowed { csrf: Option<String> },
    /// A login is configured and the request has no valid session.
    NotLoggedIn,
    /// The GUI listens beyond loopback and has no user and password.
    NeedsLogin,
}

impl Guard {
    pub(crate) fn new(suffix: String, loopback: bool, tokens: BrowserTokens) -> Self {
        let quota =
            Quota::per_minute(NonZeroU32::new(LOGINS_PER_MINUTE).unwrap_or(NonZeroU32::MIN));
        Self {
            suffix,
            loopback,
            state: tokens,
            logins: RateLimiter::keyed(quota),
        }
    }

    fn session_cookie(&self) -> String {
        format!("sessionid-{}", self.suffix)
    }

    pub(crate) fn csrf_cookie(&self) -> String {
        format!("CSRF-Token-{}", self.suffix)
    }

    fn csrf_header(&self) -> String {
        format!("x-csrf-token-{}", self.suffix.to_ascii_lowercase())
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, Tokens> {
        // The lock guards only map lookups; a panic elsewhere cannot leave them half-done.
        self.state
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the browser behind `headers` may do, under the GUI settings `api`.
    pub(crate) fn browser(&self, api: &ApiConfig, headers: &HeaderMap) -> Browser {
        if !has_login(api) {
            return if self.loopback {
                Browser::Allowed { csrf: None }
            } else {
                Browser::NeedsLogin
            };
        }
        let credentials = fingerprint(api);
        let now = Instant::now();
        let Some(id) = cookie_value(headers, &self.session_cookie()) else {
            return Browser::NotLoggedIn;
        };
        let mut tokens = self.tokens();
        tokens
            .sessions
            .retain(|_, s| s.expires > now && s.credentials == credentials);
        match tokens.sessions.get(&id) {
            Some(session) => Browser::Allowed {
                csrf: Some(session.csrf.clone()),
            },
            None => Browser::NotLoggedIn,
        }
    }

    /// Whether the request's CSRF header is one this GUI handed out to `browser`.
    fn csrf_ok(&self, browser_csrf: Option<&str>, headers: &HeaderMap) -> bool {
        let Some(sent) = headers
            .get(self.csrf_header())
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        match browser_csrf {
            Some(expected) => constant_time_eq(sent.as_bytes(), expected.as_bytes()),
            None => self
                .tokens()
                .open
                .iter()
                .any(|t| constant_time_eq(t.as_bytes(), sent.as_bytes())),
        }
    }

    /// The CSRF cookie to set on a page served to an allowed browser, unless the one it
    /// has is still good.
    pub(crate) fn csrf_cookie_for(
        &self,
        csrf: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<HeaderValue> {
        let current = cookie_value(headers, &self.csrf_cookie());
        let token = match csrf {
            Some(token) if current.as_deref() == Some(token) => return None,
            Some(token) => token.to_owned(),
            None => {
                let mut tokens = self.tokens();
                if current.is_some_and(|c| tokens.open.contains(&c)) {
                    return None;
                }
                let token = random_string(32)?;
                tokens.open.push_back(token.clone());
                while tokens.open.len() > MAX_OPEN_TOKENS {
                    tokens.open.pop_front();
                }
                token
            }
        };
        set_cookie(Cookie::build((self.csrf_cookie(), token)).http_only(false))
    }

    /// The session cookie for session `id` (for the browser's session only, unless `stay`).
    pub(crate) fn session_set_cookie(&self, id: String, stay: bool) -> Option<HeaderValue> {
        let mut session = Cookie::build((self.session_cookie(), id)).http_only(true);
        if stay {
            session = session.max_age(cookie::time::Duration::seconds(
                SESSION_LIFETIME.as_secs().try_into().unwrap_or(i64::MAX),
            ));
        }
        set_cookie(session)
    }

    /// HTTP basic authentication, as Syncthing's own GUI (1.19) logs in: right credentials
    /// in `Authorization: Basic` open a session (its ID and CSRF token); limited like the
    /// login form.
    pub(crate) async fn basic_login(
        &self,
        api: &ApiConfig,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Option<(String, String)> {
        if !has_login(api) {
            return None;
        }
        let (user, password) = basic_credentials(headers)?;
        if self.logins.check_key(&client).is_err() {
            warn!(%client, "too many GUI login attempts");
            return None;
        }
        let good_user = constant_time_eq(user.as_bytes(), api.user.as_bytes());
        let hash = api.password_hash.clone();
        let good_password = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        if !(good_user && good_password) {
            warn!(%client, "GUI login failed");
            return None;
        }
        info!(%client, user, "GUI login (HTTP basic)");
        self.open_session(api, SESSION_LIFETIME)
    }

    fn open_session(&self, api: &ApiConfig, lifetime: Duration) -> Option<(String, String)> {
        let id = random_string(32)?;
        let csrf = random_string(32)?;
        let mut tokens = self.tokens();
        if tokens.sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = tokens
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
        {
            tokens.sessions.remove(&oldest);
        }
        let session = Session {
            csrf: csrf.clone(),
            expires: Instant::now() + lifetime,
            credentials: fingerprint(api),
        };
        tokens.sessions.insert(id.clone(), session);
        Some((id, csrf))
    }
}

/// Lets a request through with the API key, or from a browser allowed by [`Guard`] (with
/// the CSRF header on `/rest` paths).
pub(super) async fn authenticate(State(api): AppState, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let config = api.engine.config().api.clone();
    if let Some(key) = presented_key(headers) {
        if !config.key.is_empty() && constant_time_eq(key.as_bytes(), config.key.as_bytes()) {
            return next.run(request).await;
        }
        return refuse(
            StatusCode::UNAUTHORIZED,
            "wrong API key (see `peerfold api-key`)",
        );
    }
    let guard = &api.guard;
    let from_browser = cookie_value(headers, &guard.csrf_cookie()).is_some()
        || cookie_value(headers, &guard.session_cookie()).is_some()
        || headers.contains_key(guard.csrf_header());
    if !from_browser {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API key (X-API-Key or Authorization: Bearer; see `peerfold api-key`)",
        );
    }
    let needs_csrf = request.uri().path().starts_with("/rest/");
    match guard.browser(&config, headers) {
        Browser::Allowed { csrf } if !needs_csrf || guard.csrf_ok(csrf.as_deref(), headers) => {
            next.run(request).await
        }
        Browser::Allowed { .. } => refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "missing or stale CSRF token (X-CSRF-Token-{}): reload the page",
                guard.suffix
            ),
        ),
        Browser::NotLoggedIn => refuse(StatusCode::UNAUTHORIZED, "not logged in"),
        Browser::NeedsLogin => refuse(StatusCode::FORBIDDEN, NEEDS_LOGIN),
    }
}

/// Why a GUI beyond loopback without a login is refused.
pub(crate) const NEEDS_LOGIN: &str = "the GUI listens on a non-loopback address: set a GUI user and password first \
     (PATCH /rest/config/gui with the API key, or listen on 127.0.0.1)";

/// `POST /rest/noauth/auth/password` with `{"username", "password", "stayLoggedIn"}`:
/// 204 and the session and CSRF cookies, 403 for wrong credentials, 429 when the client
/// tried too often.
pub(super) async fn login(
    State(api): AppState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let guard = &api.guard;
    if guard.logins.check_key(&peer.ip()).is_err() {
        warn!(client = %peer.ip(), "too many GUI login attempts");
        return Ok(refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many login attempts: wait a minute",
        ));
    }
    if guard.logins.len() > 4096 {
        guard.logins.retain_recent();
    }
    if body.len() > MAX_LOGIN_BODY {
        return Err(ApiError::bad_request("login body over 4 KiB"));
    }
    let form: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let (Some(user), Some(password)) = (form["username"].as_str(), form["password"].as_str())
    else {
        return Err(ApiError::bad_request(
            "the body must be {\"username\": ..., \"password\": ...}",
        ));
    };
    let config = api.engine.config().api.clone();
    if !has_login(&config) {
        return Err(ApiError::bad_request(
            "no GUI user is configured: there is nothing to log in to",
        ));
    }
    let good_user = constant_time_eq(user.as_bytes(), config.user.as_bytes());
    // Argon2 takes tens of milliseconds on purpose: off the runtime's threads.
    let (hash, password) = (config.password_hash.clone(), password.to_owned());
    let good_password = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    if !(good_user && good_password) {
        warn!(client = %peer.ip(), "GUI login failed");
        return Ok(refuse(StatusCode::FORBIDDEN, "wrong user or password"));
    }
    let stay = form["stayLoggedIn"].as_bool().unwrap_or(false);
    let (id, csrf) = guard
        .open_session(&config, SESSION_LIFETIME)
        .ok_or_else(|| ApiError::internal("no random source for a session"))?;
    info!(client = %peer.ip(), user, "GUI login");
    let mut response = StatusCode::NO_CONTENT.into_response();
    for cookie in [
        guard.session_set_cookie(id, stay),
        set_cookie(Cookie::build((guard.csrf_cookie(), csrf)).http_only(false)),
    ]
    .into_iter()
    .flatten()
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// `POST /rest/noauth/auth/logout`: ends the session and clears its cookies.
pub(super) async fn logout(State(api): AppState, headers: HeaderMap) -> Response {
    let guard = &api.guard;
    if let Some(id) = cookie_value(&headers, &guard.session_cookie()) {
        guard.tokens().sessions.remove(&id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    for name in [guard.session_cookie(), guard.csrf_cookie()] {
        let expired = Cookie::build((name, "")).max_age(cookie::time::Duration::ZERO);
        if let Some(value) = set_cookie(expired) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// Replaces a new plain password in a GUI settings object (`"password"`) by its argon2
/// hash, off the runtime's threads. The stored hash given back, an empty string (no
/// password) and another argon2 PHC string pass as they are; Syncthing's bcrypt hashes
/// are refused, as peerfold cannot check them.
pub(super) async fn hash_new_password(
    gui: &mut serde_json::Value,
    current: &str,
) -> Result<(), ApiError> {
    let Some(password) = gui.get("password").and_then(|p| p.as_str()) else {
        return Ok(());
    };
    if password.is_empty() || password == current {
        return Ok(());
    }
    if password.starts_with("$argon2") {
        return argon2::password_hash::phc::PasswordHash::new(password)
            .map(|_| ())
            .map_err(|e| ApiError::bad_request(format!("password: not a valid argon2 hash: {e}")));
    }
    if password.starts_with("$2") {
        return Err(ApiError::bad_request(
            "password: a bcrypt hash (from Syncthing's config) cannot be checked by peerfold: send the password itself",
        ));
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::internal)?;
    gui["password"] = serde_json::Value::String(hash);
    Ok(())
}

/// The argon2id PHC string of `password` (random salt).
pub(crate) fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches the PHC string `hash`.
pub(crate) fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Whether browsers must log in.
pub(crate) fn has_login(api: &ApiConfig) -> bool {
    !api.user.is_empty() && !api.password_hash.is_empty()
}

fn fingerprint(api: &ApiConfig) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(api.user.as_bytes());
    hasher.update(b"\0");
    hasher.update(api.password_hash.as_bytes());
    hasher.finalize()
}

/// User and password from `Authorization: Basic BASE64(user:password)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = data_encoding::BASE64
        .decode(encoded.trim().as_bytes())
        .ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

fn set_cookie(cookie: cookie::CookieBuilder<'static>) -> Option<HeaderValue> {
    let cookie = cookie.same_site(SameSite::Strict).path("/").build();
    HeaderValue::from_str(&cookie.to_string()).ok()
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(user: &str, password: Option<&str>) -> ApiConfig {
        ApiConfig {
            user: user.to_owned(),
            password_hash: password
                .map(|p| hash_password(p).unwrap())
                .unwrap_or_default(),
            ..ApiConfig::default()
        }
    }

    fn with_cookie(name: &str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("other=1; {name}={value}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn passwords_are_hashed_with_argon2_and_verified() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct hors", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(hash, hash_password("correct horse").unwrap(), "salted");
    }

    #[test]
    fn without_login_only_loopback_is_allowed() {
        let (local, open) = (
            Guard::new("ABCDEFG".into(), true, BrowserTokens::default()),
            Guard::new("ABCDEFG".into(), false, BrowserTokens::default()),
        );
        let none = HeaderMap::new();
        assert_eq!(
            local.browser(&config("", None), &none),
            Browser::Allowed { csrf: None }
        );
        assert_eq!(open.browser(&config("", None), &none), Browser::NeedsLogin);
        // A user without a password is no login either.
        assert_eq!(
            open.browser(&config("admin", None), &none),
            Browser::NeedsLogin
        );
    }

    #[test]
    fn open_csrf_tokens_are_checked() {
        let guard = Guard::new("ABCDEFG".into(), false, BrowserTokens::default());
        let cookie = guard.csrf_cookie_for(None, &HeaderMap::new()).unwrap();
        let token = cookie
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned();
        let mut headers = HeaderMap::new();
        headers.insert("x-csrf-token-abcdefg", token.parse().unwrap());
        assert!(guard.csrf_ok(None, &headers));
        headers.insert("x-csrf-token-abcdefg", "forged".parse().unwrap());
        assert!(!guard.csrf_ok(None, &headers));
        assert!(!guard.csrf_ok(None, &HeaderMap::new()));
        // A page that already holds a good token gets no new one.
        assert!(
            guard
                .csrf_cookie_for(None, &with_cookie("CSRF-Token-ABCDEFG", &token))
                .is_none()
        );
    }

    #[test]
    fn sessions_end_when_the_password_changes() {
        let guard = Guard::new("ABCDEFG".into(), false, BrowserTokens::default());
        let api = config("admin", Some("one"));
        let (id, csrf) = guard.open_session(&api, SESSION_LIFETIME).unwrap();
        let headers = with_cookie("sessionid-ABCDEFG", &id);
        assert_eq!(
            guard.browser(&api, &headers),
            Browser::Allowed { csrf: Some(csrf) }
        );
        assert_eq!(
            guard.browser(&api, &with_cookie("sessionid-ABCDEFG", "guess")),
            Browser::NotLoggedIn
        );
        assert_eq!(guard.browser(&api, &HeaderMap::new()), Browser::NotLoggedIn);
        let changed = config("admin", Some("two"));
        assert_eq!(guard.browser(&changed, &headers), Browser::NotLoggedIn);
        assert_eq!(
            guard.browser(&api, &headers),
            Browser::NotLoggedIn,
            "gone for good"
        );
    }

    #[test]
    fn basic_credentials_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            "Basic YWRtaW46cGE6c3M=".parse().unwrap(),
        );
        assert_eq!(
            basic_credentials(&headers),
            Some(("admin".into(), "pa:ss".into()))
        );
        headers.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(basic_credentials(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer KEY".parse().unwrap());
        assert_eq!(basic_credentials(&headers), None);
    }

    #[test]
    fn expired_sessions_are_refused() {
        let guard = Guard::new("ABCDEFG".into(), false, BrowserTokens::default());
        let api = config("admin", Some("pw"));
        let (id, _) = guard.open_session(&api, Duration::ZERO).unwrap();
        assert_eq!(
            guard.browser(&api, &with_cookie("sessionid-ABCDEFG", &id)),
            Browser::NotLoggedIn
        );
    }

    #[test]
    fn sessions_and_tokens_outlive_a_restart() {
        let tokens = BrowserTokens::default();
        let before = Guard::new("ABCDEFG".into(), false, tokens.clone());
        let api = config("admin", Some("pw"));
        let (id, csrf) = before.open_session(&api, Duration::from_secs(60)).unwrap();
        let open = before.csrf_cookie_for(None, &HeaderMap::new()).unwrap();
        let open = open.to_str().unwrap().split(';').next().unwrap();
        let open = open.split_once('=').unwrap().1.to_owned();
        // The API server of the next run gets the same tokens.
        let after = Guard::new("ABCDEFG".into(), false, tokens);
        assert_eq!(
            after.browser(&api, &with_cookie("sessionid-ABCDEFG", &id)),
            Browser::Allowed { csrf: Some(csrf) }
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-csrf-token-abcdefg", open.parse().unwrap());
        assert!(after.csrf_ok(None, &headers));
        // Tokens of another process are not there.
        let other = Guard::new("ABCDEFG".into(), false, BrowserTokens::default());
        assert!(!other.csrf_ok(None, &headers));
    }
}
