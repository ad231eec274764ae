//! Protobuf read field by field, for the few places that must look at a field or two of a
//! message without decoding the rest: confining a query's selectors ([`super::confine`]) and
//! reading the service names in an OTLP push's attribute dictionary ([`super::apps`]). Each
//! field comes with its raw bytes, so a caller can copy what it does not touch unread.

use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

/// One field's value: the bytes of a length-delimited field, a varint, or another wire type
/// (skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Bytes(&'a [u8]),
    Varint(u64),
    Other,
}

/// One field of a message: its number, its value, and all its bytes (key included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub tag: u32,
    pub value: Value<'a>,
    pub raw: &'a [u8],
}

/// A message's bytes are not a valid protobuf message (a bad key, a length past the end, a
/// truncated field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// The fields of `buf` in order; the first malformed one ends the walk with an error.
pub fn fields(buf: &[u8]) -> impl Iterator<Item = Result<Field<'_>, Malformed>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let field = next(&mut rest);
        if field.is_err() {
            rest = &[];
        }
        Some(field)
    })
}

fn next<'a>(buf: &mut &'a [u8]) -> Result<Field<'a>, Malformed> {
    let start = *buf;
    let (tag, wire_type) = decode_key(buf).map_err(|_| Malformed)?;
    let value = match wire_type {
        WireType::LengthDelimited => {
            let len = decode_varint(buf).map_err(|_| Malformed)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= buf.len())
                .ok_or(Malformed)?;
            let (value, rest) = buf.split_at(len);
            *buf = rest;
            Value::Bytes(value)
        }
        WireType::Varint => Value::Varint(decode_varint(buf).map_err(|_| Malformed)?),
        other => {
            skip_field(other, tag, buf, DecodeContext::default()).map_err(|_| Malformed)?;
            Value::Other
        }
    };
    Ok(Field {
        tag,
        value,
        raw: &start[..start.len() - buf.len()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::encoding::{encode_key, encode_varint};

    #[test]
    fn fields_come_with_their_raw_bytes_and_a_bad_one_ends_the_walk() {
        let mut msg = Vec::new();
        encode_key(1, WireType::LengthDelimited, &mut msg);
        encode_varint(2, &mut msg);
        msg.extend_from_slice(b"ab");
        encode_key(3, WireType::Varint, &mut msg);
        encode_varint(300, &mut msg);
        encode_key(4, WireType::SixtyFourBit, &mut msg);
        msg.extend_from_slice(&[0; 8]);
        let got: Vec<_> = fields(&msg).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].tag, got[0].value), (1, Value::Bytes(b"ab")));
        assert_eq!((got[1].tag, got[1].value), (3, Value::Varint(300)));
        assert_eq!((got[2].tag, got[2].value), (4, Value::Other));
        let joined: Vec<u8> = got.iter().flat_map(|f| f.raw.iter().copied()).collect();
        assert_eq!(joined, msg);
        let truncated: Vec<_> = fields(&msg[..3]).collect();
        assert_eq!(truncated, vec![Err(Malformed)]);
    }
}
