//! Property tests of what psrpc reads from the wire and how it names channels.
//!
//! - The decoders (`wire::decode_envelope`, `wire::route_key` and the inner messages) never
//!   panic on arbitrary bytes, truncated input or huge declared lengths, and round-trip what
//!   the encoders write.
//! - The sanitiser only outputs `[0-9A-Za-z_+]`, is injective (a decoder recovers the input),
//!   and so no topic can bring `|`, `.`, `*`, `>` or spaces into a channel name.

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;
use psrpc::Channel;
use psrpc::channel::{ChannelKind, sanitize};
use psrpc::wire::{self, ClaimRequest, ClaimResponse, Msg, Request, Response};

/// Decodes the sanitiser's output back to the input; `None` if it is not a valid spelling.
fn unsanitize(s: &str) -> Option<String> {
    let mut out = String::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let escape = match (c, bytes.get(i + 1)) {
            (b'u', Some(b'+')) => Some(4),
            (b'U', Some(b'+')) => Some(8),
            _ => None,
        };
        match escape {
            Some(digits) => {
                let hex = s.get(i + 2..i + 2 + digits)?;
                if !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return None;
                }
                out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
                i += 2 + digits;
            }
            None if c.is_ascii_alphanumeric() || c == b'_' => {
                out.push(c as char);
                i += 1;
            }
            None => return None,
        }
    }
    Some(out)
}

/// A varint, for hand-made length prefixes.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// Every inner decoder the runtime runs on received bytes; none may panic.
fn decode_all(bytes: &[u8]) {
    let b = Bytes::copy_from_slice(bytes);
    let _ = Request::decode(b.clone());
    let _ = Response::decode(b.clone());
    let _ = ClaimRequest::decode(b.clone());
    let _ = ClaimResponse::decode(b.clone());
    let _ = wire::StreamFrame::decode(b);
}

fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        // Mostly separators and wildcards, the characters that matter here.
        proptest::collection::vec(
            proptest::sample::select(vec!['|', '.', '*', '>', ' ', 'a', 'u', 'U', '+', '0', '_']),
            0..12
        )
        .prop_map(|cs| cs.into_iter().collect()),
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    (
        any::<String>(),
        any::<String>(),
        any::<i64>(),
        any::<i64>(),
        any::<bool>(),
        proptest::collection::btree_map(any::<String>(), any::<String>(), 0..4),
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(
            |(request_id, client_id, sent_at, expiry, multi, metadata, raw, x_direct)| Request {
                request_id,
                client_id,
                sent_at,
                expiry,
                multi,
                metadata,
                raw_request: raw.into(),
                x_direct,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = wire::route_key(&bytes);
        if let Ok(msg) = wire::decode_envelope(Bytes::from(bytes.clone())) {
            decode_all(&msg.value);
            // Whenever both succeed they agree on the route key (the last field 3 wins).
            if let Some(key) = wire::route_key(&bytes) {
                prop_assert_eq!(key, msg.channel.as_str());
            }
        }
        decode_all(&bytes);
    }

    #[test]
    fn huge_declared_lengths_are_errors(
        tag in 1u32..20,
        len in (1u64 << 20)..u64::MAX,
        tail in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut bytes = varint(u64::from(tag << 3 | 2));
        bytes.extend(varint(len));
        bytes.extend(&tail);
        prop_assert!(wire::decode_envelope(Bytes::from(bytes.clone())).is_err());
        prop_assert_eq!(wire::route_key(&bytes), None);
        decode_all(&bytes);
    }

    #[test]
    fn envelopes_round_trip_and_every_prefix_is_safe(
        type_url in any::<String>(),
        value in proptest::collection::vec(any::<u8>(), 0..256),
        key in any::<String>(),
    ) {
        let plain = wire::encode_envelope_raw(&type_url, &value);
        let msg = wire::decode_envelope(plain.clone()).unwrap();
        prop_assert_eq!(&msg.type_url, &type_url);
        prop_assert_eq!(msg.value.as_ref(), value.as_slice());
        prop_assert_eq!(wire::route_key(&plain), None);

        let routed = wire::with_route_key(&plain, &key);
        let msg = wire::decode_envelope(routed.clone()).unwrap();
        prop_assert_eq!(&msg.channel, &key);
        let expected = (!key.is_empty()).then_some(key.as_str());
        prop_assert_eq!(wire::route_key(&routed), expected);
        // Byte-identical to prost's own encoding of the envelope.
        let theirs = Msg { type_url, value: value.into(), channel: key }.encode_to_vec();
        prop_assert_eq!(routed.as_ref(), theirs.as_slice());

        for cut in 0..routed.len() {
            let _ = wire::route_key(&routed[..cut]);
            let _ = wire::decode_envelope(routed.slice(..cut));
        }
    }

    #[test]
    fn requests_round_trip_and_truncations_do_not_panic(req in arb_request()) {
        let payload = wire::encode_envelope(wire::REQUEST_TYPE_URL, &req);
        let msg = wire::decode_envelope(payload.clone()).unwrap();
        prop_assert_eq!(msg.type_url.as_str(), wire::REQUEST_TYPE_URL);
        prop_assert_eq!(Request::decode(msg.value).unwrap(), req);
        for cut in 0..payload.len() {
            if let Ok(msg) = wire::decode_envelope(payload.slice(..cut)) {
                decode_all(&msg.value);
            }
        }
    }

    #[test]
    fn sanitize_is_injective_and_uses_a_safe_alphabet(part in topic()) {
        let out = sanitize(&part);
        prop_assert!(out.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'+'), "{}", out);
        prop_assert_eq!(unsanitize(&out), Some(part.clone()));
        if part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            prop_assert_eq!(out, part);
        }
    }

    #[test]
    fn sanitize_never_merges_two_parts(a in topic(), b in topic()) {
        prop_assume!(a != b);
        prop_assert_ne!(sanitize(&a), sanitize(&b));
    }

    #[test]
    fn topics_cannot_escape_their_part(
        topics in proptest::collection::vec(topic(), 0..4),
        method in topic(),
        queue in any::<bool>(),
    ) {
        let parts = topics.iter().filter(|t| !t.is_empty()).count();
        for ch in [
            Channel::request("Svc", method.as_str(), topics.clone(), queue),
            Channel::claim_response("Svc", method.as_str(), topics.clone()),
            Channel::server_stream("Svc", method.as_str(), topics.clone()),
        ] {
            let pipe = ch.pipe_name();
            // Service, method (when not empty), each non-empty topic, then the kind.
            let expected = 1 + usize::from(!method.is_empty()) + parts;
            prop_assert_eq!(pipe.matches('|').count(), expected, "{}", pipe);
            let suffix = format!("|{}", ch.kind().suffix());
            prop_assert!(pipe.ends_with(&suffix), "{}", pipe);
            let subject = ch.nats_subject();
            let queue_part = usize::from(ch.is_queue() && ch.kind() == ChannelKind::Request);
            prop_assert_eq!(subject.matches('.').count(), 1 + parts + queue_part, "{}", subject);
            prop_assert!(!subject.contains(['*', '>', ' ', '|']), "{}", subject);
        }
        for ch in [
            Channel::response("Svc", method.as_str()),
            Channel::claim("Svc", method.as_str()),
            Channel::client_stream("Svc", method.as_str()),
        ] {
            let subject = ch.nats_subject();
            prop_assert_eq!(subject.matches('.').count(), 3, "{}", subject);
            prop_assert!(!subject.contains(['*', '>', ' ', '|']), "{}", subject);
        }
    }
}
