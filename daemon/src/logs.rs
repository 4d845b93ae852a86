//! Logging: lines to stderr as `RUST_LOG` says (default: warnings), and the recent lines
//! (info and up, plus the debug facilities a client turned on) kept for the REST API, as
//! Syncthing's `/rest/system/log` and `/rest/system/debug` serve them.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// Lines kept.
const KEPT_LINES: usize = 1000;
/// Bytes of one line kept.
const LINE_BYTES: usize = 2048;

/// Debug facilities, by Syncthing's names where it has them, and the code they cover.
pub(crate) const FACILITIES: &[(&str, &str, &str)] = &[
    ("api", "peerfold::api", "The REST API"),
    (
        "config",
        "peerfold_engine::config",
        "Configuration loading and changes",
    ),
    (
        "connections",
        "peerfold_engine::net",
        "QUIC endpoints, dialing and accepting",
    ),
    ("db", "peerfold_engine::store", "The index database"),
    (
        "discover",
        "peerfold_engine::net::discovery",
        "Global discovery",
    ),
    (
        "mdns",
        "peerfold_engine::net::mdns",
        "Local discovery (mDNS)",
    ),
    (
        "model",
        "peerfold_engine::folder",
        "Folders: scans, pulls, conflicts",
    ),
    (
        "protocol",
        "peerfold_engine::peers",
        "Peers: sessions, index exchange, block requests",
    ),
    ("relay", "peerfold_engine::net::relay", "Relays"),
    (
        "scanner",
        "peerfold_engine::disk",
        "The scanner, watcher and versions",
    ),
    (
        "stun",
        "peerfold_engine::net::stun",
        "STUN and hole punching",
    ),
];

/// One kept line.
#[derive(Clone, Debug)]
pub(crate) struct LogLine {
    pub(crate) when: jiff::Timestamp,
    /// Syncthing's levels: 0 debug, 1 verbose, 2 info, 3 warning.
    pub(crate) level: u8,
    pub(crate) message: String,
}

/// What the API reads and changes.
pub(crate) struct Logs {
    lines: Mutex<VecDeque<LogLine>>,
    debugging: Mutex<BTreeSet<&'static str>>,
    filter: OnceLock<reload::Handle<EnvFilter, Registry>>,
}

static LOGS: Logs = Logs {
    lines: Mutex::new(VecDeque::new()),
    debugging: Mutex::new(BTreeSet::new()),
    filter: OnceLock::new(),
};

/// Installs logging for the process (once, from `main`).
pub fn init() {
    let stderr = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let (kept, handle) = reload::Layer::new(kept_filter(&BTreeSet::new()));
    let _ = LOGS.filter.set(handle);
    tracing_subscriber::registry()
        .with(KeepLayer.with_filter(kept))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(stderr),
        )
        .init();
}

/// The kept lines' filter: info and up, debug for the facilities turned on.
fn kept_filter(debugging: &BTreeSet<&'static str>) -> EnvFilter {
    let mut directives = String::from("info");
    for (name, target, _) in FACILITIES {
        if debugging.contains(name) {
            let _ = write!(directives, ",{target}=debug");
        }
    }
    EnvFilter::new(directives)
}

/// The process's logs.
pub(crate) fn logs() -> &'static Logs {
    &LOGS
}

impl Logs {
    /// The kept lines after `since` (all without), oldest first.
    pub(crate) fn since(&self, since: Option<jiff::Timestamp>) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .filter(|l| since.is_none_or(|s| l.when > s))
            .cloned()
            .collect()
    }

    /// The facilities whose debug lines are kept.
    pub(crate) fn debugging(&self) -> Vec<&'static str> {
        let set = self.debugging.lock().unwrap_or_else(|e| e.into_inner());
        set.iter().copied().collect()
    }

    /// Turns debug lines on for `enable` and off for `disable` (facility names); errs on a
    /// name that is none.
    pub(crate) fn set_debugging(&self, enable: &[&str], disable: &[&str]) -> Result<(), String> {
        let known = |name: &str| {
            FACILITIES
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(n, _, _)| *n)
                .ok_or_else(|| {
                    let names: Vec<&str> = FACILITIES.iter().map(|(n, _, _)| *n).collect();
                    format!(
                        "no debug facility {name:?} (there are: {})",
                        names.join(", ")
                    )
                })
        };
        let (enable, disable) = (
            enable
                .iter()
                .map(|n| known(n))
                .collect::<Result<Vec<_>, _>>()?,
            disable
                .iter()
                .map(|n| known(n))
                .collect::<Result<Vec<_>, _>>()?,
        );
        let mut set = self.debugging.lock().unwrap_or_else(|e| e.into_inner());
        set.extend(enable);
        for name in disable {
            set.remove(name);
        }
        if let Some(handle) = self.filter.get() {
            handle
                .reload(kept_filter(&set))
                .map_err(|e| format!("cannot change the log filter: {e}"))?;
        }
        Ok(())
    }

    fn push(&self, line: LogLine) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == KEPT_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

/// Keeps each event it sees as one line: the message, then its other fields as `k=v`.
struct KeepLayer;

impl<S: Subscriber> Layer<S> for KeepLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut text = Text::default();
        event.record(&mut text);
        let mut message = text.message;
        if !text.fields.is_empty() {
            message.push_str(&text.fields);
        }
        if message.len() > LINE_BYTES {
            let mut end = LINE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let level = match *event.metadata().level() {
            Level::TRACE | Level::DEBUG => 0,
            Level::INFO => 2,
            Level::WARN | Level::ERROR => 3,
        };
        LOGS.push(LogLine {
            when: jiff::Timestamp::now(),
            level,
            message,
        });
    }
}

#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}
