//! Queries by a key limited to applications, confined to them before they leave the node:
//! every label selector of the request gets `service_name=~"<the key's applications>"` ANDed
//! to it unless it already names an allowed application ([`selector::confine`]), and a
//! request whose selectors can't all be found and confined is refused with the reason. The
//! upstream then answers only about allowed applications: a query for another one selects
//! nothing, and a list of applications (`LabelValues` of `service_name`) lists only allowed ones.
//!
//! | request | selectors |
//! |---|---|
//! | `render`, `render-diff`, `labels`, `label-values` (legacy, GET) | `query`, `leftQuery`, `rightQuery`; `labels` and `label-values` without one get `query={service_name=~…}`; any parameter not known is refused |
//! | Querier `SelectMergeStacktraces`, `SelectMergeProfile`, `SelectMergeSpanProfile`, `SelectSeries`, `SelectHeatmap` | `labelSelector` (field 2), required |
//! | Querier `Diff` | `left.labelSelector` and `right.labelSelector`, both required |
//! | Querier `LabelValues`, `LabelNames`, `Series` | each of `matchers` (field 2, 1, 1); none → one added |
//! | other Querier methods (`ProfileTypes`, `GetProfileStats`, `AnalyzeQuery`, …), `/api/apps` | refused |
//!
//! Querier requests are read as Connect JSON or protobuf (`application/json`,
//! `application/proto`) `POST`s, uncompressed; a Connect `GET` or a compressed body is
//! refused (nothing is sent that was not read). Protobuf is rewritten field by field: the
//! selector fields are replaced, every other field is copied byte for byte, unread.

use std::borrow::Cow;

use axum::http::request::Parts;
use axum::http::{Method, header};
use bytes::Bytes;
use prost::encoding::{WireType, encode_key, encode_varint};

use super::{selector, wire};
use crate::core::scope::Scope;

/// What to send instead of the request's own query string or body (`None`: unchanged).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Confined {
    pub query: Option<String>,
    pub body: Option<Bytes>,
}

/// Where a Querier method's request keeps its selectors (querier.v1 / types.v1 field numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One `label_selector` string, required.
    Selector(u32),
    /// `left` (1) and `right` (2), each a request with `label_selector` at 2.
    Diff,
    /// A repeated `matchers` string; none means every series, so one is added.
    Matchers(u32),
}

fn shape(method: &str) -> Option<Shape> {
    Some(match method {
        "SelectMergeStacktraces"
        | "SelectMergeProfile"
        | "SelectMergeSpanProfile"
        | "SelectSeries"
        | "SelectHeatmap" => Shape::Selector(2),
        "Diff" => Shape::Diff,
        "LabelValues" => Shape::Matchers(2),
        "LabelNames" | "Series" => Shape::Matchers(1),
        _ => return None,
    })
}

/// Query parameters of the legacy read API that hold selectors, and those that only shape the
/// answer. Any other parameter is refused rather than guessed at.
const LEGACY_SELECTORS: &[&str] = &["query", "leftQuery", "rightQuery"];
const LEGACY_OTHER: &[&str] = &[
    "from",
    "until",
    "leftFrom",
    "leftUntil",
    "rightFrom",
    "rightUntil",
    "format",
    "maxNodes",
    "max-nodes",
    "label",
    "groupBy",
    "aggregation",
    "step",
];

/// The request confined to `scope`'s applications, or why it can't be.
pub fn confine(parts: &Parts, body: &[u8], scope: &Scope) -> Result<Confined, String> {
    let path = parts.uri.path();
    match path.strip_prefix("/querier.v1.QuerierService/") {
        Some(method) => {
            let shape = shape(method)
                .ok_or_else(|| format!("{method} can't be limited to applications"))?;
            let compressed = ["content-encoding", "connect-content-encoding"]
                .iter()
                .filter_map(|h| parts.headers.get(*h))
                .any(|v| v.as_bytes() != b"identity");
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|ct| ct.split(';').next().unwrap_or("").trim());
            if parts.method != Method::POST || compressed {
                return Err(
                    "send the query as an uncompressed POST; other forms can't be checked".into(),
                );
            }
            let body = match content_type {
                Some("application/json") => confine_json(body, shape, scope)?,
                Some("application/proto") => confine_proto(body, shape, scope)?,
                _ => {
                    return Err(
                        "send the query as application/json or application/proto; other encodings can't be checked"
                            .into(),
                    );
                }
            };
            Ok(Confined { query: None, body })
        }
        None => confine_legacy(path, parts.uri.query().unwrap_or(""), scope),
    }
}

fn confine_legacy(path: &str, query: &str, scope: &Scope) -> Result<Confined, String> {
    if path.ends_with("/api/apps") {
        return Err("the list of every application can't be limited".into());
    }
    let mut out = form_urlencoded::Serializer::new(String::new());
    let (mut selectors, mut changed) = (0, false);
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if LEGACY_SELECTORS.contains(&&*name) {
            let confined = selector::confine(&value, scope)?;
            changed |= matches!(confined, Cow::Owned(_));
            out.append_pair(&name, &confined);
            selectors += 1;
        } else if LEGACY_OTHER.contains(&&*name) {
            out.append_pair(&name, &value);
        } else {
            return Err(format!("the parameter {name:?} can't be checked"));
        }
    }
    if selectors == 0 {
        if !(path.ends_with("/labels") || path.ends_with("/label-values")) {
            return Err("the query has no label selector".into());
        }
        out.append_pair("query", &format!("{{{}}}", selector::apps_matcher(scope)));
        changed = true;
    }
    Ok(Confined {
        query: changed.then(|| out.finish()),
        body: None,
    })
}

/// A Connect JSON request: the selectors where `shape` says, and any other `labelSelector` or
/// `matchers` member at any depth, confined. `None` when nothing had to change.
fn confine_json(body: &[u8], shape: Shape, scope: &Scope) -> Result<Option<Bytes>, String> {
    use serde_json::Value;
    let mut value: Value =
        serde_json::from_slice(body).map_err(|_| "the query is not valid JSON".to_owned())?;
    let mut changed = false;
    walk_json(&mut value, scope, &mut changed)?;
    let top = value
        .as_object_mut()
        .ok_or("the query is not a JSON object")?;
    let has_selector = |o: &serde_json::Map<String, Value>| {
        ["labelSelector", "label_selector"]
            .iter()
            .any(|k| o.get(*k).is_some_and(|v| v.is_string()))
    };
    match shape {
        Shape::Selector(_) => {
            if !has_selector(top) {
                return Err("the query has no labelSelector".into());
            }
        }
        Shape::Diff => {
            for side in ["left", "right"] {
                if !top
                    .get(side)
                    .and_then(Value::as_object)
                    .is_some_and(has_selector)
                {
                    return Err(format!("the query has no {side}.labelSelector"));
                }
            }
        }
        Shape::Matchers(_) => {
            let empty = top
                .get("matchers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            if empty {
                let added = format!("{{{}}}", selector::apps_matcher(scope));
                top.insert("matchers".into(), Value::Array(vec![Value::String(added)]));
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    serde_json::to_vec(&value)
        .map(|v| Some(Bytes::from(v)))
        .map_err(|_| "the query can't be written back".to_owned())
}

/// Confines every `labelSelector`/`label_selector` string and every string of a `matchers`
/// array, at any depth; a member of that name of another type is refused.
fn walk_json(
    value: &mut serde_json::Value,
    scope: &Scope,
    changed: &mut bool,
) -> Result<(), String> {
    use serde_json::Value;
    fn one(s: &mut String, scope: &Scope, changed: &mut bool) -> Result<(), String> {
        if let Cow::Owned(confined) = selector::confine(s, scope)? {
            *s = confined;
            *changed = true;
        }
        Ok(())
    }
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match (key.as_str(), v) {
                    ("labelSelector" | "label_selector", Value::String(s)) => {
                        one(s, scope, changed)?
                    }
                    ("matchers", Value::Array(items)) => {
                        for item in items {
                            match item {
                                Value::String(s) => one(s, scope, changed)?,
                                _ => return Err("matchers must be strings".into()),
                            }
                        }
                    }
                    ("labelSelector" | "label_selector" | "matchers", _) => {
                        return Err(format!("{key} has an unexpected type"));
                    }
                    (_, v) => walk_json(v, scope, changed)?,
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                walk_json(item, scope, changed)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A protobuf request rewritten field by field. `None` when nothing had to change.
fn confine_proto(body: &[u8], shape: Shape, scope: &Scope) -> Result<Option<Bytes>, String> {
    let (out, changed) = match shape {
        Shape::Selector(field) => {
            let (out, found, changed) =
                rewrite(body, scope, &|tag| (tag == field).then_some(Part::Selector))?;
            if found.is_empty() {
                return Err("the query has no label_selector".into());
            }
            (out, changed)
        }
        Shape::Matchers(field) => {
            let (mut out, found, changed) =
                rewrite(body, scope, &|tag| (tag == field).then_some(Part::Selector))?;
            if found.is_empty() {
                let added = format!("{{{}}}", selector::apps_matcher(scope));
                put_string(field, &added, &mut out);
                (out, true)
            } else {
                (out, changed)
            }
        }
        Shape::Diff => {
            let (out, found, changed) = rewrite(body, scope, &|tag| {
                (tag == 1 || tag == 2).then_some(Part::Side)
            })?;
            if !(found.contains(&1) && found.contains(&2)) {
                return Err("the query needs a left and a right request".into());
            }
            (out, changed)
        }
    };
    Ok(changed.then(|| Bytes::from(out)))
}

/// What a field of a request is to [`rewrite`].
#[derive(Clone, Copy)]
enum Part {
    /// A selector string, confined.
    Selector,
    /// A Diff side: a request whose `label_selector` (2) is required and confined.
    Side,
}

/// Copies a protobuf message, confining the fields `part` picks. Returns the new bytes, the
/// tags of the picked fields met, and whether any changed. Malformed input (a bad key or length, a
/// truncated field, a picked field of the wrong wire type or not UTF-8) is refused.
fn rewrite(
    buf: &[u8],
    scope: &Scope,
    part: &dyn Fn(u32) -> Option<Part>,
) -> Result<(Vec<u8>, Vec<u32>, bool), String> {
    let mut out = Vec::with_capacity(buf.len() + 64);
    let (mut found, mut changed) = (Vec::new(), false);
    for field in wire::fields(buf) {
        let field = field.map_err(|_| "the query is not a valid protobuf message".to_owned())?;
        let tag = field.tag;
        let Some(picked) = part(tag) else {
            out.extend_from_slice(field.raw);
            continue;
        };
        let wire::Value::Bytes(value) = field.value else {
            return Err(format!("field {tag} of the query has the wrong type"));
        };
        found.push(tag);
        match picked {
            Part::Selector => {
                let text = std::str::from_utf8(value)
                    .map_err(|_| format!("field {tag} of the query is not UTF-8"))?;
                let confined = selector::confine(text, scope)?;
                changed |= matches!(confined, Cow::Owned(_));
                put_string(tag, &confined, &mut out);
            }
            Part::Side => {
                let (side, selectors, side_changed) =
                    rewrite(value, scope, &|t| (t == 2).then_some(Part::Selector))?;
                if selectors.is_empty() {
                    return Err("a side of the diff has no label_selector".into());
                }
                changed |= side_changed;
                encode_key(tag, WireType::LengthDelimited, &mut out);
                encode_varint(side.len() as u64, &mut out);
                out.extend_from_slice(&side);
            }
        }
    }
    Ok((out, found, changed))
}

fn put_string(tag: u32, s: &str, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::parse(Some(&["checkout".to_owned()]), None)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn strings(buf: &[u8]) -> Vec<(u32, String)> {
        wire::fields(buf)
            .map(|f| f.unwrap())
            .filter_map(|f| match f.value {
                wire::Value::Bytes(b) => Some((f.tag, String::from_utf8_lossy(b).into_owned())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn protobuf_selectors_are_confined_and_other_fields_copied() {
        let mut req = Vec::new();
        put_string(1, "process_cpu:cpu:nanoseconds:cpu:nanoseconds", &mut req);
        put_string(2, r#"{env="prod"}"#, &mut req);
        encode_key(3, WireType::Varint, &mut req);
        encode_varint(1_676_282_400_000, &mut req);
        let out = confine_proto(&req, Shape::Selector(2), &scope())
            .unwrap()
            .unwrap();
        assert_eq!(
            strings(&out),
            vec![
                (1, "process_cpu:cpu:nanoseconds:cpu:nanoseconds".to_owned()),
                (2, r#"{env="prod",service_name=~"checkout"}"#.to_owned()),
            ]
        );
        assert!(
            out.ends_with(&req[req.len() - 7..]),
            "the varint copied as it was"
        );

        let mut ok = Vec::new();
        put_string(2, r#"{service_name="checkout"}"#, &mut ok);
        assert_eq!(
            confine_proto(&ok, Shape::Selector(2), &scope()).unwrap(),
            None
        );
        assert!(confine_proto(&[], Shape::Selector(2), &scope()).is_err());
        assert!(confine_proto(&[0x12, 0x05, b'{'], Shape::Selector(2), &scope()).is_err());

        let none = confine_proto(&[], Shape::Matchers(1), &scope())
            .unwrap()
            .unwrap();
        assert_eq!(
            strings(&none),
            vec![(1, r#"{service_name=~"checkout"}"#.to_owned())]
        );

        let mut diff = Vec::new();
        for side in [1, 2] {
            encode_key(side, WireType::LengthDelimited, &mut diff);
            encode_varint(ok.len() as u64, &mut diff);
            diff.extend_from_slice(&ok);
        }
        assert_eq!(confine_proto(&diff, Shape::Diff, &scope()).unwrap(), None);
        assert!(confine_proto(&diff[..diff.len() / 2], Shape::Diff, &scope()).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1024, ..Default::default() })]

        /// Arbitrary bytes as any request: never a panic, and what comes out of a rewrite is
        /// confined already (rewriting it again changes nothing).
        #[test]
        fn protobuf_rewrites_never_panic_and_are_final(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            shape in proptest::sample::select(vec![Shape::Selector(2), Shape::Matchers(1), Shape::Matchers(2), Shape::Diff]),
        ) {
            if let Ok(Some(out)) = confine_proto(&body, shape, &scope()) {
                proptest::prop_assert_eq!(confine_proto(&out, shape, &scope()), Ok(None));
            }
        }

        /// The same for JSON bodies built from selector-like pieces.
        #[test]
        fn json_rewrites_never_panic_and_are_final(
            selector in "[{}a-z_=!~\",]{0,24}",
            shape in proptest::sample::select(vec![Shape::Selector(2), Shape::Matchers(1), Shape::Diff]),
        ) {
            let bodies = [
                serde_json::json!({ "labelSelector": selector }),
                serde_json::json!({ "matchers": [selector] }),
                serde_json::json!({ "left": { "labelSelector": selector }, "right": { "labelSelector": "{}" } }),
            ];
            for body in bodies {
                let body = serde_json::to_vec(&body).unwrap();
                if let Ok(Some(out)) = confine_json(&body, shape, &scope()) {
                    proptest::prop_assert_eq!(confine_json(&out, shape, &scope()), Ok(None));
                }
            }
        }
    }
}
