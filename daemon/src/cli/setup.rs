//! The home and the daemon's life: `peerfold init`, `id`, `api-key` and `serve`.

use std::io::Write;

use anyhow::Result;

use super::output;
use peerfold_engine::config::{self, Address, Config, Home};

/// `--listen` values: QUIC addresses and relays.
pub(super) fn listen_addresses(texts: &[String]) -> Result<Vec<Address>> {
    texts
        .iter()
        .map(|text| {
            let address = text.parse::<Address>()?;
            config::check_listen_address(&address)?;
            Ok(address)
        })
        .collect()
}

/// Creates the home's identity, configuration and index.
pub(super) fn init(
    home: &Home,
    name: Option<String>,
    listen: &[String],
    api: Option<String>,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let listen = listen_addresses(listen)?;
    let identity = home.init(|config: &mut Config| {
        if let Some(name) = name {
            config.device_name = name;
        }
        if !listen.is_empty() {
            config.listen = listen;
        }
        if let Some(api) = api {
            config.api.address = api;
        }
    })?;
    let id = identity.device_id();
    if json {
        output::json_line(
            out,
            &serde_json::json!({ "id": id.to_string(), "home": home.dir() }),
        )?;
    } else {
        writeln!(out, "Initialised {}", home.dir().display())?;
        writeln!(out, "Device ID: {id}")?;
    }
    Ok(())
}

/// Prints this device's ID (and its QR code).
pub(super) fn id(home: &Home, qr: bool, json: bool, out: &mut impl Write) -> Result<()> {
    let id = home.identity()?.device_id();
    if json {
        output::json_line(out, &serde_json::json!({ "id": id.to_string() }))?;
        return Ok(());
    }
    if qr {
        write!(out, "{}", output::qr_text(&id.to_string())?)?;
    }
    writeln!(out, "{id}")?;
    Ok(())
}

/// Prints the REST API's key.
pub(super) fn api_key(home: &Home, json: bool, out: &mut impl Write) -> Result<()> {
    let key = home.config()?.api.key;
    if json {
        output::json_line(out, &serde_json::json!({ "apiKey": key }))?;
    } else {
        writeln!(out, "{key}")?;
    }
    Ok(())
}

/// Runs the daemon, initialising a fresh home first (and showing its ID as a QR code).
pub(super) fn serve(
    home: &Home,
    listen: &[String],
    api: Option<String>,
    out: &mut impl Write,
) -> Result<()> {
    let listen = listen_addresses(listen)?;
    if !home.is_initialised() {
        let id = home.init(|_| {})?.device_id();
        writeln!(out, "Initialised {}", home.dir().display())?;
        write!(out, "{}", output::qr_text(&id.to_string())?)?;
    }
    crate::serve::serve(home, crate::serve::ServeOptions { listen, api }, out)
}
