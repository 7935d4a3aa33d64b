//! Encoding and decoding of the [`Msg`] envelope without intermediate copies.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, decode_varint, encode_key, encode_varint, encoded_len_varint};

use super::Msg;

/// The prefix of every type URL on the wire.
pub const ANY_TYPE_URL_PREFIX: &str = "type.googleapis.com/";
/// Type URL of [`super::Request`].
pub const REQUEST_TYPE_URL: &str = "type.googleapis.com/internal.Request";
/// Type URL of [`super::Response`].
pub const RESPONSE_TYPE_URL: &str = "type.googleapis.com/internal.Response";
/// Type URL of [`super::ClaimRequest`].
pub const CLAIM_REQUEST_TYPE_URL: &str = "type.googleapis.com/internal.ClaimRequest";
/// Type URL of [`super::ClaimResponse`].
pub const CLAIM_RESPONSE_TYPE_URL: &str = "type.googleapis.com/internal.ClaimResponse";
/// Type URL of [`super::StreamFrame`] (`internal.Stream`).
pub const STREAM_TYPE_URL: &str = "type.googleapis.com/internal.Stream";

const TYPE_URL_TAG: u32 = 1;
const VALUE_TAG: u32 = 2;
const CHANNEL_TAG: u32 = 3;

/// The type URL of a protobuf message given its full name (`package.Message`).
///
/// ```
/// assert_eq!(
///     psrpc::wire::type_url_for("google.protobuf.StringValue"),
///     "type.googleapis.com/google.protobuf.StringValue"
/// );
/// ```
pub fn type_url_for(full_name: &str) -> String {
    let mut url = String::with_capacity(ANY_TYPE_URL_PREFIX.len() + full_name.len());
    url.push_str(ANY_TYPE_URL_PREFIX);
    url.push_str(full_name);
    url
}

fn len_field_size(len: usize) -> usize {
    // One byte of key: tags 1–3 with wire type 2 all fit in one byte.
    1 + encoded_len_varint(len as u64) + len
}

/// Encodes `inner` inside a [`Msg`] envelope with the given type URL and no route key, in one
/// allocation, with Go's field order and default omission.
pub fn encode_envelope<M: Message>(type_url: &str, inner: &M) -> Bytes {
    let inner_len = inner.encoded_len();
    let mut buf =
        BytesMut::with_capacity(len_field_size(type_url.len()) + len_field_size(inner_len));
    put_string(&mut buf, TYPE_URL_TAG, type_url);
    if inner_len > 0 {
        encode_key(VALUE_TAG, WireType::LengthDelimited, &mut buf);
        encode_varint(inner_len as u64, &mut buf);
        inner.encode_raw(&mut buf);
    }
    buf.freeze()
}

/// Encodes already encoded bytes inside a [`Msg`] envelope with the given type URL.
pub fn encode_envelope_raw(type_url: &str, value: &[u8]) -> Bytes {
    let mut buf =
        BytesMut::with_capacity(len_field_size(type_url.len()) + len_field_size(value.len()));
    put_string(&mut buf, TYPE_URL_TAG, type_url);
    put_bytes(&mut buf, VALUE_TAG, value);
    buf.freeze()
}

/// Returns `payload` (an envelope without route key) with the NATS route key appended as field 3.
///
/// Field 3 is the last field, so appending it gives the bytes Go writes.
pub fn with_route_key(payload: &[u8], route_key: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.len() + len_field_size(route_key.len()));
    buf.put_slice(payload);
    put_string(&mut buf, CHANNEL_TAG, route_key);
    buf.freeze()
}

/// Decodes an envelope; `value` shares the input buffer.
///
/// # Errors
/// A [`prost::DecodeError`] if the bytes are not a valid `Msg`.
pub fn decode_envelope(payload: Bytes) -> Result<Msg, prost::DecodeError> {
    Msg::decode(payload)
}

/// Finds the route key (field 3) of an encoded envelope without decoding the rest.
///
/// Returns `None` for malformed input or when the field is absent; never panics.
///
/// ```
/// let payload = psrpc::wire::with_route_key(b"", "Echo.REQ");
/// assert_eq!(psrpc::wire::route_key(&payload), Some("Echo.REQ"));
/// assert_eq!(psrpc::wire::route_key(&[0xff, 0xff]), None);
/// ```
pub fn route_key(payload: &[u8]) -> Option<&str> {
    let mut buf = payload;
    let mut found = None;
    while !buf.is_empty() {
        let key = decode_varint(&mut buf).ok()?;
        let field = key >> 3;
        match key & 7 {
            0 => {
                decode_varint(&mut buf).ok()?;
            }
            1 => buf = buf.get(8..)?,
            5 => buf = buf.get(4..)?,
            2 => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                let value = buf.get(..len)?;
                buf = &buf[len..];
                if field == u64::from(CHANNEL_TAG) {
                    // Protobuf keeps the last occurrence of a repeated scalar field.
                    found = Some(std::str::from_utf8(value).ok()?);
                }
            }
            _ => return None,
        }
    }
    found
}

fn put_string(buf: &mut BytesMut, tag: u32, value: &str) {
    put_bytes(buf, tag, value.as_bytes());
}

fn put_bytes(buf: &mut BytesMut, tag: u32, value: &[u8]) {
    if value.is_empty() {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Request, Response};

    #[test]
    fn envelope_matches_prost_encoding_of_msg() {
        let req = Request {
            request_id: "REQ_x".into(),
            raw_request: Bytes::from_static(b"\n\x04ping"),
            ..Default::default()
        };
        let ours = encode_envelope(REQUEST_TYPE_URL, &req);
        let theirs = Msg {
            type_url: REQUEST_TYPE_URL.into(),
            value: req.encode_to_vec().into(),
            channel: String::new(),
        }
        .encode_to_vec();
        assert_eq!(ours.as_ref(), theirs.as_slice());
        let routed = with_route_key(&ours, "Echo.REQ");
        let msg = decode_envelope(routed.clone()).unwrap();
        assert_eq!(msg.channel, "Echo.REQ");
        assert_eq!(route_key(&routed), Some("Echo.REQ"));
        assert_eq!(route_key(&ours), None);
    }

    #[test]
    fn empty_inner_message_omits_value() {
        let bytes = encode_envelope(RESPONSE_TYPE_URL, &Response::default());
        let msg = decode_envelope(bytes).unwrap();
        assert!(msg.value.is_empty());
        assert_eq!(encode_envelope_raw("t", b"").as_ref(), b"\x0a\x01t");
    }

    #[test]
    fn route_key_rejects_truncated_input() {
        let routed = with_route_key(&encode_envelope_raw("t", b"abc"), "M.REQ");
        for cut in 0..routed.len() {
            // Must not panic on any prefix; only the full payload has the key.
            let _ = route_key(&routed[..cut]);
        }
        assert_eq!(route_key(&routed[..routed.len() - 1]), None);
    }
}
