//! Syncthing's debug endpoints (`/rest/debug/*`), which answer only while the GUI setting
//! `debugging` is on (403 "Debugging disabled" otherwise, as in Syncthing): the completion
//! of each connected peer, one file as every device announced it, and the support bundle
//! (a zip a user attaches to a bug report, with the API key and password redacted). Go's
//! profiles (`cpuprof`, `heapprof`) and the timings per endpoint (`httpmetrics`) are
//! refused with the reason: peerfold is profiled with `perf`.

use std::collections::BTreeMap;
use std::io::Write;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use peerfold_engine::folder::DeviceVersion;
use serde_json::{Value, json};
use zip::write::SimpleFileOptions;

use super::db::file_json;
use super::{ApiError, ApiResult, AppState, Params, config_json, logs, report, system};

/// Lets a debug request through only while `debugging` is on.
pub(super) async fn only_when_debugging(
    State(api): AppState,
    request: Request,
    next: Next,
) -> Response {
    if api.engine.config().api.debugging {
        next.run(request).await
    } else {
        ApiError {
            status: StatusCode::FORBIDDEN,
            message: "Debugging disabled (set the GUI setting \"debugging\")".into(),
        }
        .into_response()
    }
}

/// `GET /rest/debug/peerCompletion`: each connected device's completion (percent, whole),
/// averaged over the folders shared with it.
pub(super) async fn peer_completion(State(api): AppState) -> ApiResult {
    let mut sums: BTreeMap<String, (f64, u32)> = BTreeMap::new();
    for folder in api.engine.folders() {
        for device in folder.config().devices.iter().copied() {
            if api.engine.peer(device).is_none() {
                continue;
            }
            let summary = folder.summaries(&[device]).await?.remove(0);
            let sum = sums.entry(device.to_string()).or_default();
            sum.0 += summary.completion();
            sum.1 += 1;
        }
    }
    let percents: serde_json::Map<String, Value> = sums
        .into_iter()
        .map(|(device, (sum, count))| (device, json!((sum / f64::from(count)) as i64)))
        .collect();
    Ok(axum::Json(Value::Object(percents)))
}

/// `GET /rest/debug/file?folder=&file=`: `/rest/db/file`'s answer and every device's version
/// of the name (`globalVersions`, as Syncthing prints its version list).
pub(super) async fn file(State(api): AppState, params: Params) -> ApiResult {
    let folder = super::folder(&api, &params)?;
    let name = super::required(&params, "file")?;
    let info = folder
        .file_info(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no file {name:?} in the folder")))?;
    let mut answer = file_json(&info);
    let global_version = info.global.as_ref().map(|g| &g.version);
    answer["globalVersions"] = json!(version_list(&info.announced, global_version));
    answer["mtime"] = json!({ "err": null, "value": { "real": null, "virtual": null } });
    Ok(axum::Json(answer))
}

/// The devices' versions grouped as Syncthing's `VersionList` prints them, the global
/// version first: `{{Version:{[{ID n}]}, Deleted:false, Devices:{ID}, Invalid:{}}, ...}`.
fn version_list(
    announced: &[DeviceVersion],
    global: Option<&peerfold_protocol::version::VersionVector>,
) -> String {
    let mut groups: Vec<(&DeviceVersion, Vec<String>, Vec<String>)> = Vec::new();
    for version in announced {
        let at = groups
            .iter()
            .position(|(g, ..)| g.version == version.version && g.deleted == version.deleted);
        let group = match at {
            Some(at) => &mut groups[at],
            None => {
                groups.push((version, Vec::new(), Vec::new()));
                groups.last_mut().expect("just pushed")
            }
        };
        let id = version.device.short().to_string();
        if version.invalid {
            group.2.push(id);
        } else {
            group.1.push(id);
        }
    }
    groups.sort_by_key(|(g, ..)| Some(&g.version) != global);
    let printed: Vec<String> = groups
        .iter()
        .map(|(version, devices, invalid)| {
            let counters: Vec<String> = version
                .version
                .counters()
                .map(|(id, n)| format!("{{{id} {n}}}"))
                .collect();
            format!(
                "{{Version:{{[{}]}}, Deleted:{}, Devices:{{{}}}, Invalid:{{{}}}}}",
                counters.join(" "),
                version.deleted,
                devices.join(", "),
                invalid.join(", ")
            )
        })
        .collect();
    format!("{{{}}}", printed.join(", "))
}

/// `GET /rest/debug/cpuprof` and `heapprof`: Go's profiles, which peerfold has not.
pub(super) async fn go_profile() -> ApiError {
    ApiError {
        status: StatusCode::NOT_IMPLEMENTED,
        message: "peerfold is not written in Go and has no pprof profiles; profile it with \
                  `perf record -g -p PID`"
            .into(),
    }
}

/// `GET /rest/debug/httpmetrics`: Syncthing's timings per endpoint, which peerfold does not
/// keep.
pub(super) async fn no_http_metrics() -> ApiError {
    ApiError {
        status: StatusCode::NOT_IMPLEMENTED,
        message: "peerfold keeps no timings per endpoint; its REST requests are logged with the \
                  debug facility \"api\", and /metrics has traffic and folder figures"
            .into(),
    }
}

/// `GET /rest/debug/support`: a zip of what helps with a bug report: the configuration
/// (API key and password redacted), the recent log, version, status, connections, the
/// usage report (never sent) and the statistics.
pub(super) async fn support(State(api): AppState) -> Result<Response, ApiError> {
    let mut config = config_json::config_json(&api.engine.config(), api.engine.device_id());
    config["gui"]["apiKey"] = json!("REDACTED");
    config["gui"]["password"] = json!("REDACTED");
    let parts: Vec<(&str, String)> = vec![
        ("config.json.txt", pretty(&config)),
        ("log-inmemory.txt", logs::lines_text(None)),
        (
            "version-platform.txt",
            system::version().await?.0["longVersion"].to_string(),
        ),
        (
            "system-status.json.txt",
            pretty(&system::status(State(api.clone())).await?.0),
        ),
        (
            "connection-stats.json.txt",
            pretty(&system::connections(State(api.clone())).await?.0),
        ),
        (
            "device-stats.json.txt",
            pretty(&system::device_stats(State(api.clone())).await?.0),
        ),
        (
            "folder-stats.json.txt",
            pretty(&system::folder_stats(State(api.clone())).await?.0),
        ),
        (
            "usage-reporting.json.txt",
            pretty(&report::report(State(api.clone())).await?.0),
        ),
    ];
    let zipped = zip_of(&parts).map_err(|e| ApiError::internal(format!("support bundle: {e}")))?;
    let when = jiff::Timestamp::now().strftime("%Y-%m-%dT%H%M%SZ");
    let name = format!(
        "peerfold-support-bundle_{}_{when}.zip",
        api.engine.device_id().short()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename={name}"),
            ),
        ],
        zipped,
    )
        .into_response())
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A zip archive of `parts` (name, contents), compressed.
fn zip_of(parts: &[(&str, String)]) -> zip::result::ZipResult<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, contents) in parts {
        zip.start_file(*name, options)?;
        zip.write_all(contents.as_bytes())?;
    }
    Ok(zip.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerfold_protocol::DeviceId;
    use peerfold_protocol::version::VersionVector;

    fn device(byte: u8) -> DeviceId {
        DeviceId::from_bytes([byte; 32])
    }

    #[test]
    fn the_version_list_groups_devices_by_version_global_first() {
        let (a, b, c) = (device(1), device(2), device(3));
        let old = VersionVector::new().incremented(a.short(), 0).unwrap();
        let new = old.clone().incremented(b.short(), 0).unwrap();
        let announced = [
            DeviceVersion {
                device: a,
                version: old.clone(),
                deleted: false,
                invalid: false,
            },
            DeviceVersion {
                device: b,
                version: new.clone(),
                deleted: false,
                invalid: false,
            },
            DeviceVersion {
                device: c,
                version: new.clone(),
                deleted: false,
                invalid: true,
            },
        ];
        let (sa, sb, sc) = (a.short(), b.short(), c.short());
        assert_eq!(
            version_list(&announced, Some(&new)),
            format!(
                "{{{{Version:{{[{{{sa} 1}} {{{sb} 1}}]}}, Deleted:false, Devices:{{{sb}}}, \
                 Invalid:{{{sc}}}}}, {{Version:{{[{{{sa} 1}}]}}, Deleted:false, \
                 Devices:{{{sa}}}, Invalid:{{}}}}}}"
            )
        );
        assert_eq!(version_list(&[], None), "{}");
    }

    #[test]
    fn the_support_bundle_is_a_zip_of_its_parts() {
        let parts = [("a.txt", "alpha".to_owned()), ("b.txt", "beta".to_owned())];
        let zipped = zip_of(&parts).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zipped)).unwrap();
        assert_eq!(archive.len(), 2);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut archive.by_name("b.txt").unwrap(), &mut text).unwrap();
        assert_eq!(text, "beta");
    }
}
