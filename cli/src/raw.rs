//! An already-encoded protobuf message: the CLI encodes and decodes with descriptors known only
//! at run time, and hands the runtime bytes.

use bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, decode_varint, encode_key, encode_varint};

/// Protobuf bytes passed through unchanged.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Raw(pub(crate) Vec<u8>);

impl prost::Message for Raw {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Re-encode the field as it came, so decoding yields the original bytes.
        match wire_type {
            WireType::Varint => {
                let v = decode_varint(buf)?;
                encode_key(tag, wire_type, &mut self.0);
                encode_varint(v, &mut self.0);
            }
            WireType::SixtyFourBit => {
                let mut v = 0u64;
                prost::encoding::fixed64::merge(wire_type, &mut v, buf, ctx)?;
                encode_key(tag, wire_type, &mut self.0);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
            WireType::ThirtyTwoBit => {
                let mut v = 0u32;
                prost::encoding::fixed32::merge(wire_type, &mut v, buf, ctx)?;
                encode_key(tag, wire_type, &mut self.0);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
            WireType::LengthDelimited => {
                let mut v: Vec<u8> = Vec::new();
                prost::encoding::bytes::merge(wire_type, &mut v, buf, ctx)?;
                encode_key(tag, wire_type, &mut self.0);
                encode_varint(v.len() as u64, &mut self.0);
                self.0.extend_from_slice(&v);
            }
            // Groups (deprecated in proto2, absent from proto3) are dropped.
            WireType::StartGroup | WireType::EndGroup => {
                prost::encoding::skip_field(wire_type, tag, buf, ctx)?;
            }
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn decoding_gives_back_the_bytes() {
        let msg = prost_types::Duration {
            seconds: 300,
            nanos: -7,
        };
        let bytes = msg.encode_to_vec();
        let raw = Raw::decode(bytes.as_slice()).unwrap();
        assert_eq!(raw.0, bytes);
        assert_eq!(raw.encode_to_vec(), bytes);
        let any = prost_types::Any {
            type_url: "x".into(),
            value: vec![1, 2, 3],
        };
        let bytes = any.encode_to_vec();
        assert_eq!(Raw::decode(bytes.as_slice()).unwrap().0, bytes);
    }
}
