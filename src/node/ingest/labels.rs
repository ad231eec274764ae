//! The app name of a push, for `GET /api/ingestion`: the `name` query parameter of a legacy
//! `/ingest` push, or the `service_name` label of a `/push.v1.PusherService/Push` request.
//!
//! Only the first few kilobytes of a push are looked at (labels come before samples in the
//! protobuf, and a gzipped body is inflated only that far), so this costs microseconds, not a
//! decode of the profile. Anything unexpected yields `None`: it is for display, never for
//! decisions.

use std::io::Read as _;

/// Bytes of (inflated) body inspected.
const PEEK: usize = 8 * 1024;

/// The `service_name` label of the first series of a push.v1 request.
pub fn push_v1_app(body: &[u8], content_type: &str, gzip: bool) -> Option<String> {
    let mut head = Vec::with_capacity(PEEK);
    let peeked: &[u8] = if gzip {
        flate2::read::GzDecoder::new(body)
            .take(PEEK as u64)
            .read_to_end(&mut head)
            .ok()?;
        &head
    } else {
        &body[..body.len().min(PEEK)]
    };
    if content_type.contains("json") {
        // JSON is not streamable from a prefix; parse whole bodies only when small.
        if gzip || body.len() > PEEK {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(peeked).ok()?;
        let labels = v.get("series")?.get(0)?.get("labels")?.as_array()?;
        return labels
            .iter()
            .find(|l| l.get("name").and_then(|n| n.as_str()) == Some("service_name"))
            .and_then(|l| l.get("value")?.as_str().map(str::to_owned));
    }
    // PushRequest { repeated RawProfileSeries series = 1 }
    // RawProfileSeries { repeated LabelPair labels = 1; ... }
    // LabelPair { string name = 1; string value = 2 }
    let series = first_field(peeked, 1)?;
    let mut rest = series;
    while let Some((field, payload, next)) = next_field(rest) {
        rest = next;
        if field != 1 {
            continue;
        }
        let name = first_field(payload, 1)?;
        if name == b"service_name" {
            let value = first_field(payload, 2)?;
            return std::str::from_utf8(value).ok().map(str::to_owned);
        }
    }
    None
}

/// The payload of the first length-delimited field `field` in `buf`.
fn first_field(buf: &[u8], field: u64) -> Option<&[u8]> {
    let mut rest = buf;
    while let Some((f, payload, next)) = next_field(rest) {
        if f == field {
            return Some(payload);
        }
        rest = next;
    }
    None
}

/// One protobuf field: `(number, length-delimited payload, rest)`. Varint and fixed fields
/// are skipped over (returned with an empty payload); a truncated field ends the scan.
fn next_field(buf: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let (key, rest) = varint(buf)?;
    let (field, wire) = (key >> 3, key & 7);
    match wire {
        0 => varint(rest).map(|(_, r)| (field, &[][..], r)),
        1 => rest.get(8..).map(|r| (field, &[][..], r)),
        2 => {
            let (len, rest) = varint(rest)?;
            let len = usize::try_from(len).ok()?;
            (rest.len() >= len).then(|| (field, &rest[..len], &rest[len..]))
        }
        5 => rest.get(4..).map(|r| (field, &[][..], r)),
        _ => None,
    }
}

fn varint(buf: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in buf.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &buf[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn ld(field: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | 2, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    fn push(labels: &[(&str, &str)]) -> Vec<u8> {
        let mut series = Vec::new();
        for (n, v) in labels {
            let mut pair = ld(1, n.as_bytes());
            pair.extend(ld(2, v.as_bytes()));
            series.extend(ld(1, &pair));
        }
        series.extend(ld(2, b"\x0a\x03abc")); // a sample, skipped
        ld(1, &series)
    }

    #[test]
    fn finds_service_name_in_proto_plain_and_gzipped() {
        let body = push(&[("__name__", "process_cpu"), ("service_name", "checkout")]);
        assert_eq!(
            push_v1_app(&body, "application/proto", false).as_deref(),
            Some("checkout")
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&body).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            push_v1_app(&gz, "application/proto", true).as_deref(),
            Some("checkout")
        );
    }

    #[test]
    fn finds_service_name_in_json() {
        let body =
            br#"{"series":[{"labels":[{"name":"service_name","value":"api"}],"samples":[]}]}"#;
        assert_eq!(
            push_v1_app(body, "application/json", false).as_deref(),
            Some("api")
        );
    }

    #[test]
    fn garbage_gives_none_without_panicking() {
        for body in [
            &b""[..],
            b"\xff\xff\xff",
            b"\x0a\xff",
            b"\x0a\x05ab",
            b"not gzip",
        ] {
            assert_eq!(push_v1_app(body, "application/proto", false), None);
            assert_eq!(push_v1_app(body, "application/proto", true), None);
        }
        let no_service = push(&[("__name__", "cpu")]);
        assert_eq!(push_v1_app(&no_service, "application/proto", false), None);
    }
}
