//! Syncthing's log endpoints: the recent lines (`/rest/system/log`, and as text
//! `/rest/system/log.txt`), and the debug facilities (`/rest/system/debug`).

use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Params};
use crate::logs::{FACILITIES, LogLine, logs};

/// `since=` (RFC 3339), if given.
fn since(params: &Params) -> Result<Option<jiff::Timestamp>, ApiError> {
    params
        .get("since")
        .filter(|s| !s.is_empty())
        .map(|text| {
            text.parse::<jiff::Timestamp>().map_err(|e| {
                ApiError::bad_request(format!(
                    "query parameter \"since\" {text:?} is not an RFC 3339 time: {e}"
                ))
            })
        })
        .transpose()
}

fn when(line: &LogLine) -> String {
    format!("{:.9}", line.when)
}

pub(super) async fn log(params: Params) -> ApiResult {
    let messages: Vec<Value> = logs()
        .since(since(&params)?)
        .iter()
        .map(|l| json!({ "when": when(l), "message": l.message, "level": l.level }))
        .collect();
    Ok(axum::Json(json!({ "messages": messages })))
}

pub(super) async fn log_text(params: Params) -> Result<impl IntoResponse, ApiError> {
    let text = lines_text(since(&params)?);
    Ok(([("content-type", "text/plain; charset=utf-8")], text))
}

/// The recent log lines (after `since`) as text, one a line.
pub(super) fn lines_text(since: Option<jiff::Timestamp>) -> String {
    let mut text = String::new();
    for line in logs().since(since) {
        let level = match line.level {
            0 => "DEBUG",
            1 => "VERBOSE",
            2 => "INFO",
            _ => "WARNING",
        };
        text.push_str(&format!("{} {level}: {}\n", when(&line), line.message));
    }
    text
}

pub(super) async fn debug() -> ApiResult {
    let facilities: serde_json::Map<String, Value> = FACILITIES
        .iter()
        .map(|(name, _, about)| ((*name).to_owned(), json!(about)))
        .collect();
    Ok(axum::Json(
        json!({ "enabled": logs().debugging(), "facilities": facilities }),
    ))
}

/// `enable=` and `disable=`: comma-separated facility names.
pub(super) async fn set_debug(params: Params) -> ApiResult {
    let list = |name: &str| -> Vec<&str> {
        params
            .get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    logs()
        .set_debugging(&list("enable"), &list("disable"))
        .map_err(ApiError::bad_request)?;
    debug().await
}
