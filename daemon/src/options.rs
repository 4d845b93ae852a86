//! The options peerfold keeps, by their Syncthing names: one table for the REST API
//! (`/rest/config/options`) and the CLI (`peerfold config get|set`), so both read, check and
//! write them the same way.

use serde_json::{Value, json};

use peerfold_engine::config::{self, Address, Config, OptionChange};

/// The shape of an option's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Number,
    /// A list of strings; on the command line, comma-separated.
    List,
}

/// One option.
#[derive(Debug)]
pub(crate) struct Setting {
    /// Syncthing's name.
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// Whether a change waits for the next start.
    pub(crate) needs_restart: bool,
}

/// Every option peerfold keeps.
pub(crate) const SETTINGS: &[Setting] = &[
    Setting {
        name: "listenAddresses",
        kind: Kind::List,
        needs_restart: true,
    },
    Setting {
        name: "globalAnnounceEnabled",
        kind: Kind::Bool,
        needs_restart: false,
    },
    Setting {
        name: "globalAnnounceServers",
        kind: Kind::List,
        needs_restart: false,
    },
    Setting {
        name: "localAnnounceEnabled",
        kind: Kind::Bool,
        needs_restart: false,
    },
    Setting {
        name: "relaysEnabled",
        kind: Kind::Bool,
        needs_restart: false,
    },
    Setting {
        name: "reconnectionIntervalS",
        kind: Kind::Number,
        needs_restart: false,
    },
    Setting {
        name: "stunServers",
        kind: Kind::List,
        needs_restart: false,
    },
    Setting {
        name: "stunKeepaliveStartS",
        kind: Kind::Number,
        needs_restart: false,
    },
    Setting {
        name: "stunKeepaliveMinS",
        kind: Kind::Number,
        needs_restart: false,
    },
    Setting {
        name: "maxSendKbps",
        kind: Kind::Number,
        needs_restart: false,
    },
    Setting {
        name: "maxRecvKbps",
        kind: Kind::Number,
        needs_restart: false,
    },
    Setting {
        name: "limitBandwidthInLan",
        kind: Kind::Bool,
        needs_restart: false,
    },
];

/// The option called `name`, or an error listing the ones there are.
pub(crate) fn setting(name: &str) -> Result<&'static Setting, String> {
    SETTINGS.iter().find(|s| s.name == name).ok_or_else(|| {
        let known: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        format!(
            "peerfold has no option {name:?}; it keeps: {}",
            known.join(", ")
        )
    })
}

/// An option's value as JSON.
pub(crate) fn get(config: &Config, setting: &Setting) -> Value {
    let o = &config.options;
    match setting.name {
        "listenAddresses" => json!(
            config
                .listen
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        ),
        "globalAnnounceEnabled" => json!(o.global_announce_enabled),
        "globalAnnounceServers" => json!(o.global_announce_servers),
        "localAnnounceEnabled" => json!(o.local_announce_enabled),
        "relaysEnabled" => json!(o.relays_enabled),
        "reconnectionIntervalS" => json!(o.reconnection_interval_s),
        "stunServers" => json!(o.stun_servers),
        "stunKeepaliveStartS" => json!(o.stun_keepalive_start_s),
        "stunKeepaliveMinS" => json!(o.stun_keepalive_min_s),
        "maxSendKbps" => json!(o.max_send_kbps),
        "maxRecvKbps" => json!(o.max_recv_kbps),
        "limitBandwidthInLan" => json!(o.limit_bandwidth_in_lan),
        other => unreachable!("option {other} is in SETTINGS but has no field"),
    }
}

/// The change an option's JSON value makes, its type and content checked.
pub(crate) fn change(setting: &Setting, value: &Value) -> Result<OptionChange, String> {
    let name = setting.name;
    match setting.kind {
        Kind::Bool => {
            let flag = value
                .as_bool()
                .ok_or_else(|| format!("{name} must be true or false, not {value}"))?;
            Ok(match name {
                "globalAnnounceEnabled" => OptionChange::GlobalAnnounceEnabled(flag),
                "localAnnounceEnabled" => OptionChange::LocalAnnounceEnabled(flag),
                "relaysEnabled" => OptionChange::RelaysEnabled(flag),
                "limitBandwidthInLan" => OptionChange::LimitBandwidthInLan(flag),
                other => unreachable!("bool option {other} has no field"),
            })
        }
        Kind::Number => {
            let number = value
                .as_u64()
                .ok_or_else(|| format!("{name} must be a whole number, not {value}"))?;
            match name {
                "reconnectionIntervalS" if number == 0 || number > 86_400 => {
                    Err(format!("{name} must be 1 to 86400 seconds, not {number}"))
                }
                "reconnectionIntervalS" => Ok(OptionChange::ReconnectionIntervalS(number)),
                // Checked against the other interval when applied.
                "stunKeepaliveStartS" => Ok(OptionChange::StunKeepaliveStartS(number)),
                "stunKeepaliveMinS" => Ok(OptionChange::StunKeepaliveMinS(number)),
                // KiB/s; 0: no limit.
                "maxSendKbps" => Ok(OptionChange::MaxSendKbps(number)),
                "maxRecvKbps" => Ok(OptionChange::MaxRecvKbps(number)),
                other => unreachable!("number option {other} has no field"),
            }
        }
        Kind::List => {
            let list = string_list(name, value)?;
            match name {
                "listenAddresses" => Ok(OptionChange::ListenAddresses(listen_addresses(&list)?)),
                "globalAnnounceServers" => {
                    for server in &list {
                        config::check_announce_server(server).map_err(|e| e.to_string())?;
                    }
                    Ok(OptionChange::GlobalAnnounceServers(list))
                }
                "stunServers" => {
                    for server in &list {
                        config::check_stun_server(server).map_err(|e| e.to_string())?;
                    }
                    Ok(OptionChange::StunServers(list))
                }
                other => unreachable!("list option {other} has no field"),
            }
        }
    }
}

/// A value typed on the command line, as the JSON `set` takes.
pub(crate) fn from_text(setting: &Setting, text: &str) -> Result<Value, String> {
    let name = setting.name;
    match setting.kind {
        Kind::Bool => match text.trim() {
            "true" | "yes" | "on" => Ok(json!(true)),
            "false" | "no" | "off" => Ok(json!(false)),
            other => Err(format!("{name} must be true or false, not {other:?}")),
        },
        Kind::Number => text
            .trim()
            .parse::<u64>()
            .map(|n| json!(n))
            .map_err(|_| format!("{name} must be a whole number, not {text:?}")),
        Kind::List => Ok(json!(
            text.split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
        )),
    }
}

/// A value as the CLI prints it: lists comma-separated, strings bare.
pub(crate) fn to_text(value: &Value) -> String {
    match value {
        Value::Array(list) => list.iter().map(to_text).collect::<Vec<_>>().join(","),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A list of strings; empty entries are none (Syncthing's GUI sends `[""]` for an empty
/// text field).
fn string_list(name: &str, value: &Value) -> Result<Vec<String>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("{name} must be a list of strings, not {value}"))?
        .iter()
        .filter(|entry| entry.as_str().is_none_or(|s| !s.trim().is_empty()))
        .map(|entry| {
            entry
                .as_str()
                .map(|s| s.trim().to_owned())
                .ok_or_else(|| format!("{name} must hold strings, not {entry}"))
        })
        .collect()
}

/// Listen addresses: `default` stands for peerfold's defaults.
fn listen_addresses(list: &[String]) -> Result<Vec<Address>, String> {
    let mut out = Vec::new();
    for text in list {
        if text == "default" {
            out.extend(config::default_listen());
            continue;
        }
        let address = text
            .parse::<Address>()
            .map_err(|e| format!("{e} (peerfold listens on quic://HOST:PORT and relays)"))?;
        config::check_listen_address(&address).map_err(|e| e.to_string())?;
        out.push(address);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_reads_back_what_was_set() {
        let mut config = Config::new("x".into(), "k".into());
        let cases = [
            ("listenAddresses", "quic://127.0.0.1:1,quic://[::1]:2"),
            ("globalAnnounceEnabled", "false"),
            (
                "globalAnnounceServers",
                "https://disco.example:8443/?id=ABC,default",
            ),
            ("localAnnounceEnabled", "no"),
            ("relaysEnabled", "off"),
            ("reconnectionIntervalS", "15"),
            (
                "stunServers",
                "default,stun.example:3478,[2001:db8::1]:3478",
            ),
            ("stunKeepaliveStartS", "100"),
            ("stunKeepaliveMinS", "10"),
            ("maxSendKbps", "2048"),
            ("maxRecvKbps", "512"),
            ("limitBandwidthInLan", "true"),
        ];
        assert_eq!(cases.len(), SETTINGS.len(), "every option has a case");
        for (name, text) in cases {
            let s = setting(name).unwrap();
            let value = from_text(s, text).unwrap();
            config::ConfigEdit::SetOption(change(s, &value).unwrap())
                .apply(
                    &mut config,
                    peerfold_protocol::DeviceId::from_bytes([1; 32]),
                )
                .unwrap();
            assert_eq!(get(&config, s), value, "{name}");
        }
        config.check().unwrap();
    }

    #[test]
    fn bad_values_name_the_option() {
        let config = Config::new("x".into(), "k".into());
        for (name, value) in [
            ("listenAddresses", json!("quic://a:1")),
            ("listenAddresses", json!(["tcp://a:1"])),
            ("globalAnnounceEnabled", json!("yes")),
            ("globalAnnounceServers", json!(["http://plain.example"])),
            ("reconnectionIntervalS", json!(0)),
            ("reconnectionIntervalS", json!(-5)),
            ("stunServers", json!(["stun.example"])),
            ("stunServers", json!(["stun.example:0"])),
        ] {
            let s = setting(name).unwrap();
            let err = change(s, &value).unwrap_err();
            assert!(
                err.contains(name) || err.contains("address") || err.contains("discovery server"),
                "{err}"
            );
        }
        assert!(
            setting("natEnabled")
                .unwrap_err()
                .contains("listenAddresses")
        );
        assert!(from_text(setting("relaysEnabled").unwrap(), "maybe").is_err());
        assert_eq!(
            get(&config, setting("listenAddresses").unwrap()),
            json!(config::DEFAULT_LISTEN)
        );
    }
}
