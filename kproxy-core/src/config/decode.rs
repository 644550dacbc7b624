//! Strict decoding of a config document, the way upstream's codec reads it.
//!
//! Upstream (`cmd/kube-proxy/app/server.go` `loadConfig`, through
//! `k8s.io/apimachinery` strict serializers and `sigs.k8s.io/yaml`) turns YAML into JSON,
//! then decodes the JSON strictly: an unknown or duplicated field is an error naming its
//! path, and an explicit `null` leaves the Go zero value. kproxy does the same in two
//! steps:
//! 1. the text becomes a JSON value (YAML through serde-saphyr, which rejects duplicate
//!    keys itself; JSON through serde_json with a duplicate-key check of our own), and
//!    `null` members are dropped;
//! 2. the value is decoded into [`KubeProxyConfiguration`] with `serde_path_to_error`, so
//!    a type error or unknown field names its full path.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::types::{API_VERSION, KIND, KubeProxyConfiguration};
use crate::error::{Error, Result};

fn syntax(reason: impl Into<String>) -> Error {
    Error::ConfigSyntax {
        reason: reason.into(),
    }
}

/// A JSON value read from any self-describing format. A duplicate mapping key is an
/// error, unless `LAST_WINS` (lenient decoding), where the later value is kept.
struct AnyValue<const LAST_WINS: bool>(Value);

impl<'de, const LAST_WINS: bool> Deserialize<'de> for AnyValue<LAST_WINS> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(AnyVisitor::<LAST_WINS>)
            .map(AnyValue)
    }
}

struct AnyVisitor<const LAST_WINS: bool>;

impl<'de, const LAST_WINS: bool> Visitor<'de> for AnyVisitor<LAST_WINS> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML or JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("number {v} is not representable in JSON")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(AnyValue::<LAST_WINS>(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if !LAST_WINS && out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate field {key:?}")));
            }
            let AnyValue::<LAST_WINS>(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Drops `null` members of every mapping: in Go a `null` leaves the zero value, which is
/// what an absent field gives too.
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// The text of a path from `serde_path_to_error`, `""` for the root. A trailing `?`
/// (an error while reading a mapping key) is dropped: the message names the key.
fn path_text(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    let text = text.trim_end_matches('?').trim_end_matches('.');
    if text.is_empty() {
        String::new()
    } else {
        text.to_owned()
    }
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// Turns a decode error into kproxy's wording: `unknown field "iptables.masqueradeBitt"`,
/// `duplicate field "mode"`, or `<path>: <reason>`.
fn describe(path: &str, message: &str) -> String {
    // serde-saphyr: "duplicate mapping key: K, set DuplicateKeyPolicy in Options if
    // acceptable at line L, column C".
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let (key, tail) = rest
            .split_once(", set DuplicateKeyPolicy")
            .unwrap_or((rest, ""));
        let location = tail.split_once("if acceptable").map_or("", |(_, loc)| loc);
        return format!("duplicate field {:?}{location}", join(path, key));
    }
    for kind in ["unknown field", "duplicate field"] {
        if let Some(rest) = message.strip_prefix(kind) {
            // serde says "unknown field `x`, expected ..."; our own check says "... \"x\"".
            let name = rest
                .trim_start()
                .trim_start_matches(['`', '"'])
                .split(['`', '"'])
                .next()
                .unwrap_or_default();
            // serde_path_to_error may already have appended the key to the path.
            let full = if path == name || path.ends_with(&format!(".{name}")) {
                path.to_owned()
            } else {
                join(path, name)
            };
            return format!("{kind} {full:?}");
        }
    }
    if path.is_empty() {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

fn read_json<const LAST_WINS: bool>(text: &str) -> Result<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize::<_, AnyValue<LAST_WINS>>(&mut de)
        .map_err(|e| syntax(describe(&path_text(e.path()), &e.inner().to_string())))?;
    de.end().map_err(|e| syntax(e.to_string()))?;
    Ok(value.0)
}

fn read_yaml<const LAST_WINS: bool>(text: &str) -> Result<Value> {
    let duplicate_keys = if LAST_WINS {
        serde_saphyr::DuplicateKeyPolicy::LastWins
    } else {
        serde_saphyr::DuplicateKeyPolicy::Error
    };
    let options = serde_saphyr::options! { with_snippet: false, duplicate_keys: duplicate_keys };
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize::<_, AnyValue<LAST_WINS>>(de).map_err(|e| {
            let path = path_text(e.path());
            let inner = e.into_inner();
            let message = describe(&path, &inner.to_string());
            <serde_saphyr::Error as de::Error>::custom(message)
        })
    })
    .map(|v| v.0)
    .map_err(|e| syntax(lowercase_first(&e.to_string())))
}

/// Error texts start lowercase (STYLE.md); the YAML parser capitalises some.
fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_uppercase() && !chars.clone().next().is_some_and(char::is_uppercase) => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => s.to_owned(),
    }
}

/// Checks `apiVersion` and `kind` before anything else, as upstream's codec picks the
/// type from them.
fn check_type_meta(map: &Map<String, Value>) -> Result<()> {
    for (field, want) in [("apiVersion", API_VERSION), ("kind", KIND)] {
        match map.get(field) {
            Some(Value::String(got)) if got == want => {}
            Some(Value::String(got)) => {
                return Err(syntax(format!("{field}: got {got:?}, want {want:?}")));
            }
            Some(other) => return Err(syntax(format!("{field}: got {other}, want {want:?}"))),
            None => return Err(syntax(format!("{field}: missing, want {want:?}"))),
        }
    }
    Ok(())
}

/// Decodes a document already read into a JSON value.
fn decode_value(mut value: Value) -> Result<KubeProxyConfiguration> {
    drop_nulls(&mut value);
    let Value::Object(map) = &value else {
        return Err(match value {
            Value::Null => syntax("the config document is empty"),
            _ => syntax("the config document is not a mapping"),
        });
    };
    check_type_meta(map)?;
    serde_path_to_error::deserialize::<_, KubeProxyConfiguration>(value)
        .map_err(|e| syntax(describe(&path_text(e.path()), &e.inner().to_string())))
}

/// Decodes a JSON document strictly.
pub(crate) fn from_json(text: &str) -> Result<KubeProxyConfiguration> {
    decode_value(read_json::<false>(text)?)
}

/// Decodes a YAML document strictly (JSON is YAML too, but `from_json` gives better
/// messages for it).
pub(crate) fn from_yaml(text: &str) -> Result<KubeProxyConfiguration> {
    decode_value(read_yaml::<false>(text)?)
}

/// The shape of the config: every field present (options set, lists with one element),
/// so that lenient decoding can tell known fields from unknown ones.
fn template() -> Value {
    let mut cfg = KubeProxyConfiguration {
        udp_idle_timeout: Some(super::Duration::ZERO),
        windows_run_as_service: true,
        feature_gates: [(String::new(), true)].into(),
        ..KubeProxyConfiguration::default()
    };
    cfg.iptables.snat_node_internal_ip = Some(true);
    cfg.logging.vmodule = vec![super::VModuleItem::default()];
    cfg.logging.options.text.split_stream = true;
    cfg.logging.options.json.split_stream = true;
    serde_json::to_value(cfg).unwrap_or(Value::Null)
}

/// Removes members the template does not have, recording their paths. `featureGates` is
/// a free-form map and is kept whole.
fn prune(value: &mut Value, template: &Value, path: &str, ignored: &mut Vec<String>) {
    match (value, template) {
        (Value::Object(map), Value::Object(known)) => {
            map.retain(|key, _| {
                let keep = known.contains_key(key);
                if !keep {
                    ignored.push(join(path, key));
                }
                keep
            });
            for (key, v) in map.iter_mut() {
                if path.is_empty() && key == "featureGates" {
                    continue;
                }
                prune(v, &known[key], &join(path, key), ignored);
            }
        }
        (Value::Array(items), Value::Array(known)) if !known.is_empty() => {
            for (i, item) in items.iter_mut().enumerate() {
                prune(item, &known[0], &format!("{path}[{i}]"), ignored);
            }
        }
        _ => {}
    }
}

/// Lenient decoding, upstream's fallback when strict decoding fails: unknown fields are
/// dropped (and returned, for a warning) and a repeated key keeps its last value. Type
/// errors and a wrong `apiVersion`/`kind` are still errors.
pub(crate) fn parse_lenient(text: &str) -> Result<(KubeProxyConfiguration, Vec<String>)> {
    let mut value = if text.trim_start().starts_with('{') {
        read_json::<true>(text)?
    } else {
        read_yaml::<true>(text)?
    };
    drop_nulls(&mut value);
    let mut ignored = Vec::new();
    prune(&mut value, &template(), "", &mut ignored);
    Ok((decode_value(value)?, ignored))
}

/// Sorts every mapping's keys, as Go's YAML output (JSON, then YAML) has them.
fn sort_keys(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.sort_keys();
            map.values_mut().for_each(sort_keys);
        }
        Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

/// The config as YAML with sorted keys, like upstream's `--write-config-to`.
pub(crate) fn to_yaml(cfg: &KubeProxyConfiguration) -> String {
    // Neither step can fail: every field serializes to plain JSON data (qps is finite
    // unless set so in code, which becomes `null`).
    let mut value = serde_json::to_value(cfg).unwrap_or(Value::Null);
    sort_keys(&mut value);
    serde_saphyr::to_string(&value).unwrap_or_default()
}
