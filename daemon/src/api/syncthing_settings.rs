//! What becomes of each Syncthing setting a client sends, so none is taken with 200 and
//! dropped: peerfold **uses** it (parsed into the engine's settings), **keeps** it without
//! effect (stored as sent and given back, so a client reads what it wrote; the log says it
//! does nothing here), or **refuses** it with the reason unless it repeats what peerfold
//! reports (accepting it would promise what peerfold does not do). A field peerfold does
//! not report at all (another Syncthing version's) is kept too.

use peerfold_engine::config::UnusedSettings;
use serde_json::Value;
use tracing::warn;

/// The settings of one kind of configuration object.
#[derive(Debug)]
pub(super) struct Section {
    /// How errors name the object.
    pub(super) name: &'static str,
    /// Parsed into the engine's settings.
    pub(super) used: &'static [&'static str],
    /// Kept and given back, with no effect.
    pub(super) unused: &'static [&'static str],
    /// Refused unless unchanged, with why.
    pub(super) refused: &'static [(&'static str, &'static str)],
}

pub(super) const FOLDER: Section = Section {
    name: "folder",
    used: &[
        "id",
        "label",
        "path",
        "type",
        "devices",
        "rescanIntervalS",
        "fsWatcherEnabled",
        "fsWatcherDelayS",
        "minDiskFree",
        // Syncthing's legacy percentage, taken as minDiskFree (never given back).
        "minDiskFreePct",
        "versioning",
        "order",
        "ignoreDelete",
        "ignorePerms",
        "maxConflicts",
        "paused",
    ],
    unused: &[
        "autoNormalize",
        "copiers",
        "pullerMaxPendingKiB",
        "hashers",
        "scanProgressIntervalS",
        "pullerPauseS",
        "disableSparseFiles",
        "disableTempIndexes",
        "weakHashThresholdPct",
        "modTimeWindowS",
        "maxConcurrentWrites",
        "disableFsync",
        "blockPullOrder",
        "copyRangeMethod",
        "caseSensitiveFS",
        "junctionsAsDirs",
    ],
    refused: &[
        (
            "filesystemType",
            "must be \"basic\": peerfold syncs folders of the local file system",
        ),
        (
            "markerName",
            "cannot change: peerfold's folder marker is its .peerfold directory",
        ),
        (
            "copyOwnershipFromParent",
            "is not supported by peerfold: files belong to the user the daemon runs as",
        ),
    ],
};

pub(super) const DEVICE: Section = Section {
    name: "device",
    used: &[
        "deviceID",
        "name",
        "addresses",
        "paused",
        "autoAcceptFolders",
        "maxSendKbps",
        "maxRecvKbps",
        "introducer",
        "skipIntroductionRemovals",
        "introducedBy",
        "ignoredFolders",
        "allowedNetworks",
    ],
    unused: &["compression", "certName", "maxRequestKiB", "remoteGUIPort"],
    refused: &[(
        "untrusted",
        "is not supported by peerfold yet (no encrypted devices)",
    )],
};

pub(super) const GUI: Section = Section {
    name: "gui",
    used: &["address", "apiKey", "user", "password", "debugging"],
    unused: &["unixSocketPermissions", "authMode", "theme"],
    refused: &[
        (
            "enabled",
            "cannot be turned off: peerfold's REST API always runs",
        ),
        (
            "useTLS",
            "is not supported by peerfold: the API speaks plain HTTP on its address",
        ),
        (
            "insecureAdminAccess",
            "is not supported by peerfold: the API always wants its key",
        ),
        (
            "insecureSkipHostcheck",
            "is not supported by peerfold: the Host check stays",
        ),
        (
            "insecureAllowFrameLoading",
            "is not supported by peerfold: the API is never framed",
        ),
    ],
};

pub(super) const OPTIONS: Section = Section {
    name: "option",
    // Those of `crate::options::SETTINGS`.
    used: &[],
    unused: &[
        "localAnnouncePort",
        "localAnnounceMCAddr",
        "relayReconnectIntervalM",
        "startBrowser",
        "natLeaseMinutes",
        "natRenewalMinutes",
        "natTimeoutSeconds",
        "urAccepted",
        "urSeen",
        "urUniqueId",
        "urURL",
        "urPostInsecurely",
        "urInitialDelayS",
        "autoUpgradeIntervalH",
        "upgradeToPreReleases",
        "keepTemporariesH",
        "cacheIgnoredFiles",
        "progressUpdateIntervalS",
        "minHomeDiskFree",
        "releasesURL",
        "alwaysLocalNets",
        "overwriteRemoteDeviceNamesOnConnect",
        "tempIndexMinBlocks",
        "unackedNotificationIDs",
        "trafficClass",
        "setLowPriority",
        "maxFolderConcurrency",
        "crURL",
        "crashReportingEnabled",
        "databaseTuning",
        "maxConcurrentIncomingRequestKiB",
        "announceLANAddresses",
        "sendFullIndexOnUpgrade",
        "featureFlags",
        "connectionLimitEnough",
        "connectionLimitMax",
    ],
    refused: &[
        (
            "natEnabled",
            "is not supported by peerfold (no UPnP or NAT-PMP: it punches holes through NATs instead)",
        ),
        (
            "insecureAllowOldTLSVersions",
            "is not supported by peerfold: peers speak TLS 1.3",
        ),
    ],
};

/// Whether two JSON values are the same setting: numbers by value (Go writes the float 1
/// as `1`, serde_json reads `1.0` as another number).
pub(super) fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        // Go writes an empty list or map as `null`.
        (Value::Null, Value::Array(x)) | (Value::Array(x), Value::Null) => x.is_empty(),
        (Value::Null, Value::Object(x)) | (Value::Object(x), Value::Null) => x.is_empty(),
        _ => a == b,
    }
}

/// `reported` with the kept settings in place of their defaults.
pub(super) fn with_kept(mut reported: Value, kept: &UnusedSettings) -> Value {
    if let Some(object) = reported.as_object_mut() {
        for (name, text) in kept {
            if let Ok(value) = serde_json::from_str(text) {
                object.insert(name.clone(), value);
            }
        }
    }
    reported
}

/// The kept settings after `value` (an object a client sent): `kept` (what the object kept
/// so far) updated with the unused fields it carries (a value equal to peerfold's default,
/// in `defaults`, is dropped from what is kept). Errs on a refused field whose value is not
/// the one in `reported` (the object as peerfold reports it now).
pub(super) fn take(
    section: &Section,
    value: &Value,
    reported: &Value,
    defaults: &Value,
    kept: &UnusedSettings,
) -> Result<UnusedSettings, String> {
    let mut kept = kept.clone();
    let Some(fields) = value.as_object() else {
        return Ok(kept);
    };
    for (name, why) in section.refused {
        if let Some(sent) = fields.get(*name)
            && !reported.get(*name).is_some_and(|r| same(r, sent))
        {
            return Err(format!("{} setting {name:?} {why}", section.name));
        }
    }
    // The listed ones, and any Syncthing has that peerfold does not report (other versions'
    // settings: 1.19's `restartOnWakeup`, say).
    // `$$hashKey` (AngularJS's bookkeeping) and `_listenAddressesStr` and the like (its
    // form fields) come along when Syncthing's GUI sends its objects as they are: never
    // settings, Syncthing's own server ignores them too.
    let unused = fields.iter().filter(|(name, _)| {
        !name.starts_with("$$")
            && !name.starts_with('_')
            && !section.used.contains(&name.as_str())
            && (section.unused.contains(&name.as_str()) || reported.get(name.as_str()).is_none())
    });
    for (name, sent) in unused {
        if defaults.get(name).is_some_and(|d| same(d, sent)) {
            kept.remove(name);
        } else if kept.get(name) != Some(&sent.to_string()) {
            warn!(
                setting = %name,
                value = %sent,
                "kept for Syncthing's clients; this {} setting has no effect in peerfold",
                section.name
            );
            kept.insert(name.clone(), sent.to_string());
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kept_refused_and_defaults() {
        let reported = json!({ "copiers": 0, "markerName": ".peerfold" });
        let none = UnusedSettings::new();
        let kept = take(
            &FOLDER,
            &json!({ "copiers": 4, "markerName": ".peerfold", "somethingNew": 1, "$$hashKey": "object:7", "_pathStr": "x" }),
            &reported,
            &reported,
            &none,
        )
        .unwrap();
        assert_eq!(kept.get("copiers").map(String::as_str), Some("4"));
        assert_eq!(kept.get("somethingNew").map(String::as_str), Some("1"));
        assert_eq!(
            kept.len(),
            2,
            "$$hashKey and _pathStr are no settings: {kept:?}"
        );
        assert_eq!(with_kept(reported.clone(), &kept)["copiers"], 4);
        let back = take(
            &FOLDER,
            &json!({ "copiers": 0 }),
            &reported,
            &reported,
            &kept,
        )
        .unwrap();
        assert!(
            !back.contains_key("copiers"),
            "the default again is not kept"
        );
        let err = take(
            &FOLDER,
            &json!({ "markerName": ".stfolder" }),
            &reported,
            &reported,
            &none,
        )
        .unwrap_err();
        assert!(err.contains("markerName"), "{err}");
    }

    #[test]
    fn numbers_are_compared_by_value() {
        assert!(same(
            &json!({ "value": 1.0, "unit": "%" }),
            &json!({ "unit": "%", "value": 1 })
        ));
        assert!(!same(&json!([1, 2]), &json!([1])));
        assert!(same(&json!(null), &json!([])), "Go's nil slice");
        assert!(!same(&json!(1), &json!("1")));
    }

    #[test]
    fn no_setting_is_in_two_lists() {
        for section in [&FOLDER, &DEVICE, &GUI, &OPTIONS] {
            let mut all: Vec<&str> = section.used.to_vec();
            all.extend(section.unused);
            all.extend(section.refused.iter().map(|(n, _)| *n));
            let count = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), count, "{}", section.name);
        }
    }
}
