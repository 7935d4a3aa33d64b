//! Protobuf messages that know their full name, for the type URLs of subscription envelopes.

/// A prost message with its full protobuf name (`package.Message`).
///
/// Subscription messages travel as `type.googleapis.com/<TYPE_NAME>` envelopes. `psrpc-build`
/// implements this for generated messages; this crate implements it for the well-known types
/// prost maps to Rust types (`String` is `google.protobuf.StringValue`, `()` is
/// `google.protobuf.Empty`, …).
///
/// ```
/// use psrpc::NamedMessage;
///
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Update {
///     #[prost(string, tag = "1")]
///     text: String,
/// }
/// impl NamedMessage for Update {
///     const TYPE_NAME: &'static str = "demo.Update";
/// }
/// assert_eq!(String::TYPE_NAME, "google.protobuf.StringValue");
/// ```
pub trait NamedMessage: prost::Message + Default + Send + Sync + 'static {
    /// The full protobuf name.
    const TYPE_NAME: &'static str;
}

macro_rules! named {
    ($($ty:ty => $name:literal),* $(,)?) => {
        $(impl NamedMessage for $ty {
            const TYPE_NAME: &'static str = $name;
        })*
    };
}

named! {
    String => "google.protobuf.StringValue",
    Vec<u8> => "google.protobuf.BytesValue",
    bytes::Bytes => "google.protobuf.BytesValue",
    bool => "google.protobuf.BoolValue",
    i32 => "google.protobuf.Int32Value",
    i64 => "google.protobuf.Int64Value",
    u32 => "google.protobuf.UInt32Value",
    u64 => "google.protobuf.UInt64Value",
    f32 => "google.protobuf.FloatValue",
    f64 => "google.protobuf.DoubleValue",
    () => "google.protobuf.Empty",
    prost_types::Timestamp => "google.protobuf.Timestamp",
    prost_types::Duration => "google.protobuf.Duration",
    prost_types::Struct => "google.protobuf.Struct",
    prost_types::Value => "google.protobuf.Value",
    prost_types::ListValue => "google.protobuf.ListValue",
    prost_types::Any => "google.protobuf.Any",
    prost_types::FieldMask => "google.protobuf.FieldMask",
}
