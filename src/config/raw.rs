//! The raw serde layer: the shape of the YAML file, nothing more.
//!
//! Every struct denies unknown fields. Leaf values are kept as text ([`Scalar`]) and every field is
//! optional here, so that serde only fails on the shape (an unknown key, a list where a mapping
//! belongs) and `validate` can report every bad or missing value at once, each with its path.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// A scalar as written: a string, a number or a boolean, kept as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl Scalar {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a single value (a string or a number)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A mapping whose entries keep their file order (duplicates are kept too, for `validate`).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedMap<T>(pub Vec<(String, T)>);

impl<T> Default for OrderedMap<T> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrderedMap<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for MapVisitor<T> {
            type Value = OrderedMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of names to entries")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(OrderedMap::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Scalar>()? {
                    let value = map.next_value::<T>()?;
                    entries.push((key.0, value));
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

pub type Value = Option<Scalar>;

/// A value that may be written alone or as a list (`key: form:username` or
/// `key: [form:username, query:username]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, expecting = "a value or a list of values")]
pub enum ScalarOrList {
    One(Scalar),
    Many(Vec<Scalar>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawConfig {
    pub server: Option<RawServer>,
    pub listeners: Option<Vec<RawListener>>,
    pub admin: Option<RawAdmin>,
    pub upstreams: Option<OrderedMap<RawUpstream>>,
    pub routes: Option<Vec<RawRoute>>,
    pub limits: Option<OrderedMap<RawLimit>>,
    pub shield: Option<RawShield>,
    pub login_queues: Option<OrderedMap<RawLoginQueue>>,
    pub pages: Option<RawPages>,
    pub schedules: Option<RawSchedules>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawServer {
    pub threads: Value,
    pub grace_period: Value,
    pub trusted_proxies: Option<Vec<Scalar>>,
    pub ipv6_prefix: Value,
    pub header_timeout: Value,
    pub keepalive_timeout: Value,
    pub tls_handshake_timeout: Value,
    pub upgrade_idle_timeout: Value,
    pub body_min_rate: Value,
    pub max_header_bytes: Value,
    pub max_body_bytes: Value,
    pub max_connections: Value,
    pub max_connections_per_ip: Value,
    pub access_log: Value,
    pub watch_config: Value,
    pub path_normalization: Value,
    pub forwarded: Value,
    pub runtime_dir: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawListener {
    pub address: Value,
    pub tls: Option<RawListenerTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawListenerTls {
    pub certificates: Option<Vec<RawCertificate>>,
    pub http2: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawCertificate {
    pub cert: Value,
    pub key: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawAdmin {
    pub address: Value,
    pub token: Value,
    pub allowed_hosts: Option<Vec<Scalar>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawUpstream {
    pub datacenters: Option<Vec<RawDatacenter>>,
    pub on_down: Option<RawOnDown>,
    pub min_healthy: Value,
    pub health_check: Option<RawHealthCheck>,
    pub outlier: Option<RawOutlier>,
    pub failback_after: Value,
    pub when_all_down: Value,
    pub timeouts: Option<RawTimeouts>,
    pub retries: Option<RawRetries>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawDatacenter {
    pub name: Value,
    pub servers: Option<Vec<RawServerEntry>>,
}

/// A server: `IP:PORT`, or `{ address: IP:PORT, max_in_flight: N }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "an address IP:PORT, or a mapping with address and max_in_flight"
)]
pub enum RawServerEntry {
    Address(Scalar),
    Detailed(RawServerDetail),
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawServerDetail {
    pub address: Value,
    pub max_in_flight: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawOnDown {
    pub cut_after: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawHealthCheck {
    pub path: Value,
    pub interval: Value,
    pub timeout: Value,
    pub rise: Value,
    pub fall: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawOutlier {
    pub consecutive_failures: Value,
    pub eject_for: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawTimeouts {
    pub connect: Value,
    pub response: Value,
    pub idle: Value,
    pub per_try: Value,
    pub unacked: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawRetries {
    pub attempts: Value,
    pub budget: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawRoute {
    pub name: Value,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    pub upstream: Value,
    pub limits: Option<Vec<Scalar>>,
    pub login_queue: Value,
    pub retries: Option<RawRouteRetries>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawRouteRetries {
    pub idempotency_key: Value,
    pub resend_post: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawMatch {
    pub host: Value,
    pub path_prefix: Value,
    pub ignore_case: Value,
    pub methods: Option<Vec<Scalar>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawLimit {
    pub key: Option<ScalarOrList>,
    pub ban: Value,
    pub case_sensitive: Value,
    pub rate: Value,
    pub burst: Value,
    pub mode: Value,
    pub max_keys: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawShield {
    pub deny: Option<Vec<Scalar>>,
    pub allow: Option<Vec<Scalar>>,
    pub ban: Option<RawBan>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawBan {
    pub after: Value,
    pub within: Value,
    #[serde(rename = "for")]
    pub duration: Value,
    pub max_entries: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawLoginQueue {
    pub concurrency: Value,
    pub adaptive: Option<RawAdaptive>,
    pub tenant: Value,
    pub tenant_weights: Option<OrderedMap<Scalar>>,
    pub hold: Value,
    pub max_waiting: Value,
    pub per_client_waiting: Value,
    pub pass_ttl: Value,
    pub ticket_ttl: Value,
    pub secret: Value,
    pub secrets: Option<Vec<Scalar>>,
    pub secrets_file: Value,
    pub tenants: Option<RawTenants>,
    pub max_tenants_per_client: Value,
    pub pass: Option<RawPass>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawTenants {
    pub list: Option<Vec<Scalar>>,
    pub file: Value,
    pub unknown_weight: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawPass {
    pub on_status: Option<Vec<Scalar>>,
    pub on_cookie: Value,
    pub ttl: Value,
    pub max_uses_per_minute: Value,
    pub max_share: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawAdaptive {
    pub min: Value,
    pub max: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawPages {
    pub waiting_room: Value,
    pub maintenance: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawSchedules {
    pub time_zone: Value,
    pub overlays: Option<OrderedMap<RawOverlay>>,
    pub windows: Option<Vec<RawWindow>>,
}

/// What an overlay changes: the same sections and names as the base file, only the fields that
/// may change with the time of day.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawOverlay {
    pub login_queues: Option<OrderedMap<RawQueueOverlay>>,
    pub limits: Option<OrderedMap<RawLimitOverlay>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawQueueOverlay {
    pub concurrency: Value,
    pub adaptive: Option<RawAdaptiveOverlay>,
    pub hold: Value,
    pub max_waiting: Value,
    pub per_client_waiting: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawAdaptiveOverlay {
    pub min: Value,
    pub max: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawLimitOverlay {
    pub rate: Value,
    pub burst: Value,
    pub mode: Value,
    pub ban: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawWindow {
    pub overlay: Value,
    pub days: Option<ScalarOrList>,
    pub dates: Option<ScalarOrList>,
    pub except_dates: Option<ScalarOrList>,
    pub from: Value,
    pub until: Value,
}
