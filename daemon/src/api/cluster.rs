//! Pairing: pending devices and folders, device-ID validation, and QR codes.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use peerfold_protocol::DeviceId;
use serde_json::{Map, Value, json};

use super::{ApiError, ApiResult, AppState, Params, required};

fn unix_time(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn device_param(params: &Params, name: &str) -> Result<Option<DeviceId>, ApiError> {
    match params.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("device ID {text:?}: {e}"))),
    }
}

pub(super) async fn pending_devices(State(api): AppState) -> ApiResult {
    let pending = api.engine.pending_devices().await?;
    let out: Map<String, Value> = pending
        .into_iter()
        .map(|p| {
            (
                p.device.to_string(),
                json!({ "time": unix_time(p.last_seen), "name": p.name, "address": p.address }),
            )
        })
        .collect();
    Ok(axum::Json(Value::Object(out)))
}

pub(super) async fn forget_pending_device(State(api): AppState, params: Params) -> ApiResult {
    required(&params, "device")?;
    let device = device_param(&params, "device")?.unwrap_or(api.engine.device_id());
    api.engine.forget_pending_device(device).await?;
    Ok(axum::Json(json!({})))
}

pub(super) async fn pending_folders(State(api): AppState, params: Params) -> ApiResult {
    let only = device_param(&params, "device")?;
    let pending = api.engine.pending_folders().await?;
    let mut out: Map<String, Value> = Map::new();
    for p in pending {
        if only.is_some_and(|d| d != p.device) {
            continue;
        }
        let entry = out
            .entry(p.folder.clone())
            .or_insert_with(|| json!({ "offeredBy": {} }));
        entry["offeredBy"][p.device.to_string()] = json!({
            "time": unix_time(p.last_seen),
            "label": p.label,
            "receiveEncrypted": false,
            "remoteEncrypted": false,
        });
    }
    Ok(axum::Json(Value::Object(out)))
}

pub(super) async fn forget_pending_folder(State(api): AppState, params: Params) -> ApiResult {
    let folder = required(&params, "folder")?;
    let device = device_param(&params, "device")?;
    api.engine.forget_pending_folder(folder, device).await?;
    Ok(axum::Json(json!({})))
}

/// Validates and normalises a device ID. Like Syncthing, a malformed ID is answered with
/// `{"error": ...}` (the endpoint exists to check IDs); a missing `id` is a bad request.
pub(super) async fn device_id(params: Params) -> ApiResult {
    let text = required(&params, "id")?;
    Ok(axum::Json(match text.parse::<DeviceId>() {
        Ok(id) => json!({ "id": id.to_string() }),
        Err(e) => json!({ "error": e.to_string() }),
    }))
}

/// Pixels per QR module, and the quiet zone in modules.
const QR_SCALE: usize = 8;
const QR_QUIET: usize = 4;

/// `text` as a PNG QR code (error correction M, as Syncthing's GUI draws device IDs).
pub(super) async fn qr(params: Params) -> Result<impl IntoResponse, ApiError> {
    let text = required(&params, "text")?;
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| ApiError::bad_request(format!("cannot draw {text:?} as a QR code: {e}")))?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QR_QUIET) * QR_SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (x, y) = (i % modules + QR_QUIET, i / modules + QR_QUIET);
        for row in y * QR_SCALE..(y + 1) * QR_SCALE {
            pixels[row * side + x * QR_SCALE..row * side + (x + 1) * QR_SCALE].fill(0);
        }
    }
    let mut png = Vec::new();
    {
        let side = u32::try_from(side).map_err(|_| ApiError::bad_request("text too long"))?;
        let mut encoder = png::Encoder::new(&mut png, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    Ok(([(header::CONTENT_TYPE, "image/png")], png))
}
