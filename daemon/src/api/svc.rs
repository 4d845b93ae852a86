//! Syncthing's small service endpoints that its GUI and clients call before anything else:
//! `/rest/svc/random/string` (the Add Folder dialog's folder ID), `/rest/svc/lang`,
//! `/rest/config/insync` (and its legacy `/rest/system/config/insync`), and
//! `/rest/system/upgrade` (peerfold has no built-in upgrade: answered "no newer version" in
//! Syncthing's shape, never a 404 that stops the client).

use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::json;

use super::{ApiError, ApiResult, AppState, Params, number};

/// Characters of random strings: Syncthing's set (no 0/O, 1/l/I look-alikes, nor `-`,
/// which a command line would take for an option).
const RANDOM_CHARSET: &[u8] = b"2345679abcdefghijkmnopqrstuvwxyzACDEFGHJKLMNPQRSTUVWXYZ";
/// The longest random string asked for.
const MAX_RANDOM_LENGTH: u64 = 1024;

/// `length` characters from [`RANDOM_CHARSET`], drawn without bias from the OS random
/// source.
pub(crate) fn random_string(length: usize) -> Option<String> {
    let rng = ring::rand::SystemRandom::new();
    let n = RANDOM_CHARSET.len();
    // The largest multiple of the set's size below 256: bytes above it are drawn again.
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(length);
    let mut buf = [0u8; 64];
    while out.len() < length {
        ring::rand::SecureRandom::fill(&rng, &mut buf).ok()?;
        for &b in &buf {
            if usize::from(b) < limit && out.len() < length {
                out.push(char::from(RANDOM_CHARSET[usize::from(b) % n]));
            }
        }
    }
    Some(out)
}

/// `GET /rest/svc/random/string?length=N` (32 by default): `{"random": "..."}`.
pub(super) async fn random(params: Params) -> ApiResult {
    let length = number(&params, "length", 32)?;
    if length == 0 || length > MAX_RANDOM_LENGTH {
        return Err(ApiError::bad_request(format!(
            "length must be 1 to {MAX_RANDOM_LENGTH}, not {length}"
        )));
    }
    let random = usize::try_from(length)
        .ok()
        .and_then(random_string)
        .ok_or_else(|| ApiError::internal("no random source"))?;
    Ok(axum::Json(json!({ "random": random })))
}

/// The language tags of an `Accept-Language` header, best first (lower case, weights
/// dropped; a tag weighted 0 is refused, so left out).
fn languages(header: &str) -> Vec<String> {
    let mut tags: Vec<(f32, usize, String)> = header
        .split(',')
        .enumerate()
        .filter_map(|(i, part)| {
            let mut pieces = part.split(';');
            let tag = pieces.next()?.trim().to_ascii_lowercase();
            let weight = pieces
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            (!tag.is_empty() && weight > 0.0).then_some((weight, i, tag))
        })
        .collect();
    tags.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    tags.into_iter().map(|(_, _, tag)| tag).collect()
}

/// `GET /rest/svc/lang`: the languages the browser asks for, as Syncthing lists them.
pub(super) async fn lang(headers: HeaderMap) -> ApiResult {
    let header = headers
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Ok(axum::Json(json!(languages(header))))
}

/// `GET /rest/config/insync`: whether the running daemon uses the saved configuration.
pub(super) async fn insync(State(api): AppState) -> ApiResult {
    Ok(axum::Json(
        json!({ "configInSync": !api.engine.restart_required() }),
    ))
}

/// `GET` and `POST /rest/system/upgrade`: the running version is the latest one peerfold
/// knows of (it does not upgrade itself; the package manager does).
pub(super) async fn upgrade() -> ApiResult {
    let running = format!("v{}", env!("CARGO_PKG_VERSION"));
    Ok(axum::Json(json!({
        "running": running,
        "latest": running,
        "newer": false,
        "majorNewer": false,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_strings_have_the_length_asked_and_no_dash() {
        for length in [1, 32, 1000] {
            let s = random_string(length).unwrap();
            assert_eq!(s.len(), length);
            assert!(s.bytes().all(|b| RANDOM_CHARSET.contains(&b)), "{s}");
        }
        assert_ne!(random_string(32), random_string(32));
    }

    #[test]
    fn languages_come_best_first() {
        assert_eq!(
            languages("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5"),
            ["fr-ch", "fr", "en", "de", "*"]
        );
        assert_eq!(languages("en;q=0.5, nl"), ["nl", "en"]);
        assert_eq!(languages("de;q=0, sv"), ["sv"]);
        assert!(languages("").is_empty());
        assert_eq!(languages("en;q=bogus, it"), ["it"]);
    }
}
