//! The CLI's way to a running daemon's REST API, at the address the daemon gives over its
//! control socket and with the key in the home's configuration: for what the control
//! socket does not offer (scans, events, reading options). Configuration changes go over
//! the control socket instead (`edit.rs`).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use peerfold_engine::config::Home;

/// A client for the daemon of one home.
pub(super) struct DaemonApi {
    base: String,
    key: String,
    agent: ureq::Agent,
}

impl DaemonApi {
    /// The running daemon's API, or `None` when no daemon runs on this home. The address
    /// comes from the daemon itself (over the home's control socket), so a `serve --api`
    /// override is found and another daemon on the default port never is.
    pub(super) fn find(home: &Home) -> Result<Option<Self>> {
        let Some(answer) = super::edit::ask_daemon_if_running(home, "api")? else {
            return Ok(None);
        };
        let Some(address) = answer["address"].as_str() else {
            return Ok(None);
        };
        let address = address
            .replace("0.0.0.0", "127.0.0.1")
            .replace("[::]", "[::1]");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(Some(Self {
            base: format!("http://{address}"),
            key: home.config()?.api.key,
            agent,
        }))
    }

    /// `METHOD /path` with an optional JSON body; an error answer becomes an error.
    pub(super) fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("X-API-Key", &self.key)
            .header("Content-Type", "application/json")
            .body(body.map(Value::to_string).unwrap_or_default())
            .context("building the request")?;
        let mut response = self
            .agent
            .run(request)
            .with_context(|| format!("asking the daemon ({method} {path})"))?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .context("reading the daemon's answer")?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            match json["error"].as_str() {
                Some(error) => bail!("{error}"),
                None => bail!("the daemon answered {status}: {json}"),
            }
        }
        Ok(json)
    }
}

/// Text for a URL path segment or query value.
pub(super) fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
