//! The applications a push is for, decided in full — for a key scoped to `apps`
//! ([`crate::core::scope`]). Unlike [`super::labels`] (a peek for display), this is a decision:
//! every series of a push must name its application, and anything that can't be read answers
//! "undetermined", which refuses the push.
//!
//! | route | application |
//! |---|---|
//! | `/ingest`, `/pyroscope/ingest` | `name=app.cpu{k=v}` → `app` (the name before `{`, less its last `.suffix`), and a `service_name` label inside the braces if there is one |
//! | `/push.v1.PusherService/Push` | the `service_name` label of every series (protobuf or JSON, gzip or not) |
//! | `/v1development/profiles` | the `service.name` attribute of every resource (protobuf or JSON, gzip or not); and every other place Pyroscope takes a service name or a `service_name` label from: a `service.name` in the dictionary's attribute table (samples that carry one go to that service, whatever the resource says), a `service_name` attribute of a resource or scope (it becomes a label of that name) |
//!
//! Protobuf is decoded with `prost` and message definitions for only the fields read here:
//! the samples — the profile bytes — are unknown fields to these messages, skipped by length
//! without being copied. Bodies are inflated to at most the caller's cap
//! (`ingest.max-body-size`) and decoded from that buffer only; gzip members are read one after
//! another, as Go's reader (and so Pyroscope) does, so no second member can hide a series.

use std::io::Read as _;

/// Why the applications of a push could not be read. The text goes into the 403.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undetermined(pub String);

impl Undetermined {
    fn new(why: impl Into<String>) -> Self {
        Undetermined(why.into())
    }
}

/// The applications of a legacy `/ingest` push, from its query string.
pub fn legacy(query: Option<&str>) -> Result<Vec<String>, Undetermined> {
    let mut names = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "name")
        .map(|(_, v)| v);
    let name = names
        .next()
        .ok_or_else(|| Undetermined::new("the push has no name= parameter"))?;
    if names.next().is_some() {
        return Err(Undetermined::new(
            "the push has more than one name= parameter",
        ));
    }
    let (base, labels) = match name.split_once('{') {
        Some((base, rest)) => (base, Some(rest.strip_suffix('}').unwrap_or(rest))),
        None => (&name[..], None),
    };
    let app = match base.rsplit_once('.') {
        Some((app, _profile_type)) => app,
        None => base,
    };
    if app.is_empty() {
        return Err(Undetermined::new("the push's name= has no application"));
    }
    let mut apps = vec![app.to_owned()];
    // A `service_name` label decides the application upstream: it must be allowed as well.
    for pair in labels.into_iter().flat_map(|l| l.split(',')) {
        if let Some((k, v)) = pair.split_once('=')
            && k.trim() == "service_name"
        {
            apps.push(v.trim().to_owned());
        }
    }
    Ok(apps)
}

/// How a body is framed: its media type and compression, from the request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Proto,
    Json,
}

/// Reads `Content-Type` and `Content-Encoding` into an [`Encoding`] and whether to inflate.
pub fn encoding(
    content_type: &str,
    content_encoding: &str,
) -> Result<(Encoding, bool), Undetermined> {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let kind = match media.as_str() {
        "application/json" => Encoding::Json,
        "application/proto" | "application/protobuf" | "application/x-protobuf" => Encoding::Proto,
        other => {
            return Err(Undetermined::new(format!(
                "the content type {other:?} can't be read for its applications"
            )));
        }
    };
    let gzip = match content_encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => false,
        "gzip" => true,
        other => {
            return Err(Undetermined::new(format!(
                "the content encoding {other:?} can't be read for its applications"
            )));
        }
    };
    Ok((kind, gzip))
}

/// `body`, inflated (all gzip members) to at most `cap` bytes when `gzip`.
pub fn inflate(
    body: &[u8],
    gzip: bool,
    cap: usize,
) -> Result<std::borrow::Cow<'_, [u8]>, Undetermined> {
    if !gzip {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(cap).min(1 << 20));
    flate2::read::MultiGzDecoder::new(body)
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| Undetermined::new("the gzipped body is broken"))?;
    if out.len() > cap {
        return Err(Undetermined::new(format!(
            "the inflated body exceeds {cap} bytes (ingest.max-body-size)"
        )));
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// The `service_name` of every series of a `push.v1.PusherService/Push` request.
pub fn push_v1(body: &[u8], encoding: Encoding) -> Result<Vec<String>, Undetermined> {
    let req: proto::PushRequest = decode(body, encoding, "PushRequest")?;
    every(
        req.series.into_iter().map(|s| {
            s.labels
                .into_iter()
                .filter(|l| l.name == "service_name")
                .map(|l| l.value)
                .collect()
        }),
        "series has no service_name label",
    )
}

/// The applications of an OTLP `ExportProfilesServiceRequest`: the `service.name` of every
/// resource (required), and every other name the upstream would file a profile under —
/// Pyroscope sends samples whose attributes hold a `service.name` to that service instead of
/// the resource's, and turns a resource's or scope's `service_name` attribute into a label of
/// that name. Each of those must be allowed too, so they are returned with the rest. A
/// `service.name` that is empty or not a string names nothing (Pyroscope reads it as absent).
pub fn otlp(body: &[u8], encoding: Encoding) -> Result<Vec<String>, Undetermined> {
    let (req, dictionary): (proto::ExportProfilesServiceRequest, _) = match encoding {
        Encoding::Proto => (
            decode(body, encoding, "ExportProfilesServiceRequest")?,
            dictionary_services_proto(body)?,
        ),
        // Parsed once: the dictionary is read from the same tree the request is made from.
        Encoding::Json => {
            let bad = || Undetermined::new("the push is not a valid ExportProfilesServiceRequest");
            let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| bad())?;
            let dictionary = dictionary_services_json(&value)?;
            (
                serde_json::from_value(value).map_err(|_| bad())?,
                dictionary,
            )
        }
    };
    let mut also = Vec::new();
    for rp in &req.resource_profiles {
        let scopes = rp.scope_profiles.iter().filter_map(|sp| sp.scope.as_ref());
        let attributes = rp
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .chain(scopes.flat_map(|s| &s.attributes));
        for kv in attributes.filter(|kv| kv.key == "service_name") {
            also.extend(kv.value.as_ref().and_then(|v| v.string_value.clone()));
        }
    }
    also.extend(dictionary);
    let mut apps = every(
        req.resource_profiles.into_iter().map(|rp| {
            rp.resource
                .map(|r| r.attributes)
                .unwrap_or_default()
                .into_iter()
                .filter(|kv| kv.key == "service.name")
                .map(|kv| kv.value.and_then(|v| v.string_value).unwrap_or_default())
                .collect()
        }),
        "resource has no service.name attribute",
    )?;
    apps.extend(also.into_iter().filter(|name| !name.is_empty()));
    Ok(apps)
}

/// Most entries of a dictionary's attribute table looked at.
const MAX_DICTIONARY_ATTRIBUTES: usize = 1 << 20;

/// The `service.name` string values in the dictionary's attribute table (request field 2,
/// `ProfilesDictionary.attribute_table` 6), in either layout OpenTelemetry has used: entries
/// keyed by a string (`KeyValue.key`, 1) or by an index into the dictionary's `string_table`
/// (5) (`KeyValueAndUnit.key_strindex`, 1). Read field by field from the protobuf; everything
/// else is skipped unread. Malformed input is undetermined.
fn dictionary_services_proto(body: &[u8]) -> Result<Vec<String>, Undetermined> {
    use super::wire::{Field, Malformed, Value, fields};
    let bad = |_| Undetermined::new("the push is not a valid ExportProfilesServiceRequest");
    let mut names = Vec::new();
    for top in fields(body) {
        let top = top.map_err(bad)?;
        let (2, Value::Bytes(dictionary)) = (top.tag, top.value) else {
            continue;
        };
        let (mut strings, mut entries) = (Vec::new(), Vec::new());
        for f in fields(dictionary) {
            match f.map_err(bad)? {
                Field {
                    tag: 5,
                    value: Value::Bytes(b),
                    ..
                } => strings.push(b),
                Field {
                    tag: 6,
                    value: Value::Bytes(e),
                    ..
                } => entries.push(e),
                _ => {}
            }
            if entries.len() > MAX_DICTIONARY_ATTRIBUTES {
                return Err(Undetermined::new("the push's attribute table is too large"));
            }
        }
        for entry in entries {
            let (mut key, mut value) = (None, None);
            for f in fields(entry) {
                let f = f.map_err(bad)?;
                match (f.tag, f.value) {
                    (1, Value::Bytes(k)) => key = Some(k),
                    (1, Value::Varint(i)) => {
                        let string = usize::try_from(i).ok().and_then(|i| strings.get(i));
                        key = Some(*string.ok_or_else(|| bad(Malformed))?);
                    }
                    (2, Value::Bytes(v)) => value = Some(v),
                    _ => {}
                }
            }
            if key != Some(b"service.name".as_slice()) {
                continue;
            }
            // AnyValue: the last `string_value` (1) wins, as protobuf merges.
            let mut string_value = None;
            for f in fields(value.unwrap_or_default()) {
                if let (1, Value::Bytes(s)) = f.map(|f| (f.tag, f.value)).map_err(bad)? {
                    string_value = Some(s);
                }
            }
            if let Some(s) = string_value {
                let s = std::str::from_utf8(s).map_err(|_| bad(Malformed))?;
                names.push(s.to_owned());
            }
        }
    }
    Ok(names)
}

/// [`dictionary_services_proto`] for the JSON mapping: `dictionary.attributeTable[*]` with a
/// `key` or a `keyStrindex` into `dictionary.stringTable` (proto names accepted as well).
fn dictionary_services_json(value: &serde_json::Value) -> Result<Vec<String>, Undetermined> {
    use serde_json::Value;
    let bad = || Undetermined::new("the push is not a valid ExportProfilesServiceRequest");
    fn member<'v>(v: &'v Value, camel: &str, snake: &str) -> Option<&'v Value> {
        v.get(camel).or_else(|| v.get(snake))
    }
    let Some(dictionary) = member(value, "dictionary", "dictionary") else {
        return Ok(Vec::new());
    };
    let strings = member(dictionary, "stringTable", "string_table");
    let entries = match member(dictionary, "attributeTable", "attribute_table") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(bad()),
    };
    let mut names = Vec::new();
    for entry in entries {
        let key = match (
            member(entry, "key", "key"),
            member(entry, "keyStrindex", "key_strindex"),
        ) {
            (Some(Value::String(k)), _) => k.as_str(),
            (_, Some(index)) => {
                let index = index
                    .as_u64()
                    .or_else(|| index.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(bad)?;
                strings
                    .and_then(|t| t.get(usize::try_from(index).ok()?))
                    .and_then(Value::as_str)
                    .ok_or_else(bad)?
            }
            _ => continue,
        };
        if key != "service.name" {
            continue;
        }
        if let Some(Value::String(s)) =
            member(entry, "value", "value").and_then(|v| member(v, "stringValue", "string_value"))
        {
            names.push(s.clone());
        }
    }
    Ok(names)
}

/// One message from protobuf or from its JSON mapping.
fn decode<M>(body: &[u8], encoding: Encoding, name: &str) -> Result<M, Undetermined>
where
    M: prost::Message + Default + serde::de::DeserializeOwned,
{
    let decoded = match encoding {
        Encoding::Proto => M::decode(body).ok(),
        Encoding::Json => serde_json::from_slice(body).ok(),
    };
    decoded.ok_or_else(|| Undetermined::new(format!("the push is not a valid {name}")))
}

/// All the names of all the items; an item without one, or a push with no items, is
/// undetermined.
fn every(
    items: impl Iterator<Item = Vec<String>>,
    missing: &str,
) -> Result<Vec<String>, Undetermined> {
    let mut apps = Vec::new();
    let mut any = false;
    for (i, names) in items.enumerate() {
        any = true;
        if names.is_empty() || names.iter().any(String::is_empty) {
            return Err(Undetermined::new(format!("{missing} (item {i})")));
        }
        apps.extend(names);
    }
    if !any {
        return Err(Undetermined::new("the push holds no profiles"));
    }
    Ok(apps)
}

/// The protobuf messages, with only the fields read here. Field numbers are the upstream
/// definitions' (push/v1/push.proto, types/v1/types.proto, and OpenTelemetry's
/// collector/profiles/v1development/profiles_service.proto, profiles.proto,
/// resource/v1/resource.proto, common/v1/common.proto). They read the JSON mapping too
/// (lowerCamelCase names, the proto names accepted as well): unknown members are skipped,
/// duplicated ones refused.
pub mod proto {
    use serde::Deserialize;

    /// `push.v1.PushRequest`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(default)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub series: Vec<RawProfileSeries>,
    }

    /// `push.v1.RawProfileSeries`; `samples` (2) — the profiles — is skipped unread.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(default)]
    pub struct RawProfileSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<LabelPair>,
    }

    /// `types.v1.LabelPair`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(default)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `opentelemetry.proto.collector.profiles.v1development.ExportProfilesServiceRequest`;
    /// `dictionary` (2) is skipped.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(default)]
    pub struct ExportProfilesServiceRequest {
        #[prost(message, repeated, tag = "1")]
        #[serde(rename = "resourceProfiles", alias = "resource_profiles")]
        pub resource_profiles: Vec<ResourceProfiles>,
    }

    /// `ResourceProfiles`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(default)]
    pub struct ResourceProfiles {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        #[serde(rename = "scopeProfiles", alias = "scope_profiles")]
        pub scope_profiles: Vec<ScopeProfiles>,
    }

    /// `ScopeProfiles`; `profiles` (2) — the profiles — is skipped unread.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(default)]
    pub struct ScopeProfiles {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
    }

    /// `opentelemetry.proto.common.v1.InstrumentationScope`: its `attributes` (3).
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(default)]
    pub struct InstrumentationScope {
        #[prost(message, repeated, tag = "3")]
        pub attributes: Vec<KeyValue>,
    }

    /// `opentelemetry.proto.resource.v1.Resource`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(default)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    /// `opentelemetry.proto.common.v1.KeyValue`.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(default)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    /// `AnyValue`: only its `string_value` (1) member; any other kind reads as no name.
    #[derive(Clone, PartialEq, prost::Message, Deserialize)]
    #[serde(default)]
    pub struct AnyValue {
        #[prost(string, optional, tag = "1")]
        #[serde(rename = "stringValue", alias = "string_value")]
        pub string_value: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn series(labels: &[(&str, &str)]) -> proto::RawProfileSeries {
        proto::RawProfileSeries {
            labels: labels
                .iter()
                .map(|(n, v)| proto::LabelPair {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn legacy_names_give_the_app_and_any_service_name_label() {
        assert_eq!(
            legacy(Some("name=checkout-api.cpu%7Benv%3Dprod%7D")).unwrap(),
            ["checkout-api"]
        );
        assert_eq!(legacy(Some("name=a.b.cpu")).unwrap(), ["a.b"]);
        assert_eq!(legacy(Some("name=plain")).unwrap(), ["plain"]);
        assert_eq!(
            legacy(Some("name=checkout.cpu{service_name=billing,env=x}")).unwrap(),
            ["checkout", "billing"]
        );
        for bad in [
            None,
            Some("from=1"),
            Some("name=.cpu"),
            Some("name=a.cpu&name=b.cpu"),
        ] {
            assert!(legacy(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn push_v1_reads_every_series_and_skips_the_samples() {
        let mut one = series(&[("__name__", "cpu"), ("service_name", "checkout")]);
        one.labels.push(proto::LabelPair::default());
        let mut body = proto::PushRequest {
            series: vec![one, series(&[("service_name", "billing")])],
        }
        .encode_to_vec();
        // A sample (field 2 of the first series would be nested; here a top-level unknown
        // field) is skipped.
        body.extend([0x12, 0x03, 1, 2, 3]);
        assert_eq!(
            push_v1(&body, Encoding::Proto).unwrap(),
            ["checkout", "billing"]
        );
        let missing = proto::PushRequest {
            series: vec![series(&[("service_name", "a")]), series(&[("x", "y")])],
        }
        .encode_to_vec();
        assert!(push_v1(&missing, Encoding::Proto).is_err());
        assert!(push_v1(b"", Encoding::Proto).is_err());
        let json = br#"{"series":[{"labels":[{"name":"service_name","value":"api"}],"samples":[{"rawProfile":"AAAA"}]}]}"#;
        assert_eq!(push_v1(json, Encoding::Json).unwrap(), ["api"]);
        assert!(push_v1(br#"{"series":[],"series":[]}"#, Encoding::Json).is_err());
    }

    #[test]
    fn otlp_reads_every_resource() {
        let resource = |name: Option<&str>| proto::ResourceProfiles {
            resource: Some(proto::Resource {
                attributes: name
                    .map(|n| proto::KeyValue {
                        key: "service.name".into(),
                        value: Some(proto::AnyValue {
                            string_value: Some(n.into()),
                        }),
                    })
                    .into_iter()
                    .collect(),
            }),
            scope_profiles: vec![],
        };
        let body = proto::ExportProfilesServiceRequest {
            resource_profiles: vec![resource(Some("a")), resource(Some("b"))],
        }
        .encode_to_vec();
        assert_eq!(otlp(&body, Encoding::Proto).unwrap(), ["a", "b"]);
        let body = proto::ExportProfilesServiceRequest {
            resource_profiles: vec![resource(Some("a")), resource(None)],
        }
        .encode_to_vec();
        assert!(otlp(&body, Encoding::Proto).is_err());
        let json = br#"{"resourceProfiles":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"x"}}]},"scopeProfiles":[]}]}"#;
        assert_eq!(otlp(json, Encoding::Json).unwrap(), ["x"]);
    }

    #[test]
    fn inflating_stops_at_the_cap_and_reads_every_member() {
        use std::io::Write as _;
        let gz = |data: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let mut two = gz(b"abc");
        two.extend(gz(b"def"));
        assert_eq!(&inflate(&two, true, 6).unwrap()[..], b"abcdef");
        assert!(inflate(&two, true, 5).is_err());
        let bomb = gz(&vec![0u8; 1 << 20]);
        assert!(inflate(&bomb, true, 1024).is_err());
        assert!(inflate(b"not gzip", true, 1024).is_err());
        assert_eq!(
            encoding("application/proto", "gzip").unwrap(),
            (Encoding::Proto, true)
        );
        assert_eq!(
            encoding("application/json; charset=utf-8", "").unwrap(),
            (Encoding::Json, false)
        );
        assert!(encoding("text/plain", "").is_err());
        assert!(encoding("application/proto", "br").is_err());
    }

    /// The newer dictionary layout (`KeyValueAndUnit`: keys as indices into the string table),
    /// which the Python classes in the integration tests do not write yet.
    #[test]
    fn a_dictionary_keyed_by_string_index_is_read_too() {
        use prost::encoding::{WireType, encode_key, encode_varint};
        fn message(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
            encode_key(tag, WireType::LengthDelimited, out);
            encode_varint(bytes.len() as u64, out);
            out.extend_from_slice(bytes);
        }
        let request = |index: u64| {
            let resource = proto::ExportProfilesServiceRequest {
                resource_profiles: vec![proto::ResourceProfiles {
                    resource: Some(proto::Resource {
                        attributes: vec![proto::KeyValue {
                            key: "service.name".into(),
                            value: Some(proto::AnyValue {
                                string_value: Some("checkout".into()),
                            }),
                        }],
                    }),
                    scope_profiles: vec![],
                }],
            };
            let mut body = resource.encode_to_vec();
            let (mut value, mut entry, mut dictionary) = (Vec::new(), Vec::new(), Vec::new());
            message(1, b"billing", &mut value);
            encode_key(1, WireType::Varint, &mut entry);
            encode_varint(index, &mut entry);
            message(2, &value, &mut entry);
            message(5, b"", &mut dictionary);
            message(5, b"service.name", &mut dictionary);
            message(5, b"host.name", &mut dictionary);
            message(6, &entry, &mut dictionary);
            message(2, &dictionary, &mut body);
            body
        };
        assert_eq!(
            otlp(&request(1), Encoding::Proto).unwrap(),
            ["checkout", "billing"]
        );
        assert_eq!(otlp(&request(2), Encoding::Proto).unwrap(), ["checkout"]);
        assert!(
            otlp(&request(9), Encoding::Proto).is_err(),
            "an index past the table"
        );
        let json = br#"{"resourceProfiles":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]}}],"dictionary":{"stringTable":["","service.name"],"attributeTable":[{"keyStrindex":1,"value":{"stringValue":"billing"}}]}}"#;
        assert_eq!(otlp(json, Encoding::Json).unwrap(), ["checkout", "billing"]);
    }
}
