//! The Prometheus metrics: what happened to announces and lookups, how many devices are kept,
//! how long requests take, and how often the abuse limits bite.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How an announce ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum AnnounceResult {
    /// Undecodable body or no usable address (400).
    BadRequest,
    /// The store failed (500).
    Error,
    /// No client certificate (403).
    NoCertificate,
    /// Stored (204).
    Ok,
    /// Rate-limited (429).
    RateLimited,
    /// The body was too large (413) or too slow (408).
    TooLarge,
}

/// How a lookup ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum LookupResult {
    /// Missing or malformed device ID (400).
    Bad,
    /// The store failed (500).
    Error,
    /// Found with addresses (200).
    Hit,
    /// Unknown or expired (404).
    Miss,
    /// Rate-limited (429).
    RateLimited,
}

/// Which kind of request a latency belongs to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum RequestKind {
    Announce,
    Lookup,
    Other,
}

/// Label values in Prometheus's snake_case rather than the variants' names.
macro_rules! label_values {
    ($type:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl EncodeLabelValue for $type {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                let text = match self {
                    $(Self::$variant => $text,)*
                };
                EncodeLabelValue::encode(&text, encoder)
            }
        }
    };
}

label_values!(AnnounceResult {
    BadRequest => "bad_request",
    Error => "error",
    NoCertificate => "no_certificate",
    Ok => "ok",
    RateLimited => "rate_limited",
    TooLarge => "too_large",
});
label_values!(LookupResult {
    Bad => "bad",
    Error => "error",
    Hit => "hit",
    Miss => "miss",
    RateLimited => "rate_limited",
});
label_values!(RequestKind {
    Announce => "announce",
    Lookup => "lookup",
    Other => "other",
});

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnnounceLabels {
    result: AnnounceResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    result: LookupResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: RequestKind,
}

/// Every metric the server keeps, registered under `peerfold_discovery_`.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    announces: Family<AnnounceLabels, Counter>,
    lookups: Family<LookupLabels, Counter>,
    devices: Gauge,
    connections: Gauge,
    rejected_connections: Counter,
    latency: Family<KindLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("peerfold_discovery");
        let announces = Family::<AnnounceLabels, Counter>::default();
        let lookups = Family::<LookupLabels, Counter>::default();
        let devices = Gauge::default();
        let connections = Gauge::default();
        let rejected_connections = Counter::default();
        let latency: Family<KindLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 16)));
        registry.register("announces", "Announces by result", announces.clone());
        registry.register("lookups", "Lookups by result", lookups.clone());
        registry.register("devices", "Devices in the store", devices.clone());
        registry.register("connections", "Open connections", connections.clone());
        registry.register(
            "rejected_connections",
            "Connections closed at once because max-connections were open",
            rejected_connections.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response",
            latency.clone(),
        );
        Self {
            registry,
            announces,
            lookups,
            devices,
            connections,
            rejected_connections,
            latency,
        }
    }

    pub(crate) fn announce(&self, result: AnnounceResult) {
        self.announces
            .get_or_create(&AnnounceLabels { result })
            .inc();
    }

    pub(crate) fn lookup(&self, result: LookupResult) {
        self.lookups.get_or_create(&LookupLabels { result }).inc();
    }

    pub(crate) fn latency(&self, kind: RequestKind, took: Duration) {
        self.latency
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.dec();
    }

    pub(crate) fn connection_rejected(&self) {
        self.rejected_connections.inc();
    }

    /// The OpenMetrics text, with the device count as of now.
    pub(crate) fn render(&self, devices: Option<u64>) -> String {
        if let Some(devices) = devices {
            self.devices.set(i64::try_from(devices).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
