//! The method options of `psrpc/options.proto` (extension 2198 on `MethodOptions`).
//!
//! These are the Rust types of the messages `psrpc-build` reads from `.proto` files, with the
//! field numbers of Go psrpc v0.7. Most users never touch them; they are here for tools that
//! inspect descriptors themselves.
//!
//! ```
//! use prost::Message;
//! use psrpc::options::{Options, Routing, TopicParamOptions};
//!
//! let opts = Options {
//!     topics: true,
//!     topic_params: Some(TopicParamOptions {
//!         names: vec!["region".into()],
//!         ..Default::default()
//!     }),
//!     r#type: Routing::Affinity as i32,
//!     ..Default::default()
//! };
//! let decoded = Options::decode(opts.encode_to_vec().as_slice()).unwrap();
//! assert_eq!(decoded.effective_routing(), Routing::Affinity);
//! ```

/// The field number of the `psrpc.options` extension on `google.protobuf.MethodOptions`.
pub const EXTENSION_NUMBER: u32 = 2198;

/// `psrpc.Routing`: how the calls of a method find their server(s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Routing {
    /// One server answers; requests go through a queue (the default).
    Queue = 0,
    /// Every server claims the request with an affinity; the caller picks one.
    Affinity = 1,
    /// Every server answers; for subscriptions, every subscriber gets every message.
    Multi = 2,
}

/// `psrpc.Options`: the psrpc options of one method.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Options {
    /// The method is a subscription: servers publish the output type, clients subscribe.
    #[prost(bool, tag = "1")]
    pub subscription: bool,
    /// The method is served per topic.
    #[prost(bool, tag = "2")]
    pub topics: bool,
    /// Names and handling of the topic parameters.
    #[prost(message, optional, tag = "3")]
    pub topic_params: Option<TopicParamOptions>,
    /// The method is a bidirectional stream.
    #[prost(bool, tag = "4")]
    pub stream: bool,
    /// The deprecated spellings of `type` (oneof `routing`); when set, they win over `type`.
    #[prost(oneof = "DeprecatedRouting", tags = "5, 6, 7")]
    pub routing: Option<DeprecatedRouting>,
    /// How calls are routed (a [`Routing`] value).
    #[prost(enumeration = "Routing", tag = "8")]
    pub r#type: i32,
}

impl Options {
    /// The routing these options select: a deprecated `routing` spelling when present, else
    /// `type` (unknown values count as the default, QUEUE).
    pub fn effective_routing(&self) -> Routing {
        match self.routing {
            Some(DeprecatedRouting::Multi(true)) => Routing::Multi,
            Some(DeprecatedRouting::AffinityFunc(true)) => Routing::Affinity,
            // `queue = true`, or a deprecated flag set to false: plain queue routing.
            Some(_) => Routing::Queue,
            None => Routing::try_from(self.r#type).unwrap_or(Routing::Queue),
        }
    }
}

impl prost::Name for Options {
    const NAME: &'static str = "Options";
    const PACKAGE: &'static str = "psrpc";

    fn type_url() -> String {
        crate::wire::type_url_for(&Self::full_name())
    }
}

/// The oneof `routing` of [`Options`]: deprecated spellings of `type`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Oneof)]
pub enum DeprecatedRouting {
    /// `multi = true`: same as `type = MULTI`.
    #[prost(bool, tag = "5")]
    Multi(bool),
    /// `affinity_func = true`: same as `type = AFFINITY`.
    #[prost(bool, tag = "6")]
    AffinityFunc(bool),
    /// `queue = true`: same as `type = QUEUE`.
    #[prost(bool, tag = "7")]
    Queue(bool),
}

/// `psrpc.TopicParamOptions`: the topic parameters of a method.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TopicParamOptions {
    /// Methods of one group are registered and deregistered together.
    #[prost(string, tag = "1")]
    pub group: String,
    /// The topic parameters, in order; one parameter `topic` when empty.
    #[prost(string, repeated, tag = "2")]
    pub names: Vec<String>,
    /// The parameters are distinct string-like types instead of strings.
    #[prost(bool, tag = "3")]
    pub typed: bool,
    /// Skip the claim exchange: every server registered on the topic handles the call.
    #[prost(bool, tag = "4")]
    pub single_server: bool,
}

impl prost::Name for TopicParamOptions {
    const NAME: &'static str = "TopicParamOptions";
    const PACKAGE: &'static str = "psrpc";

    fn type_url() -> String {
        crate::wire::type_url_for(&Self::full_name())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn deprecated_spellings_win_over_type() {
        let multi = Options {
            routing: Some(DeprecatedRouting::Multi(true)),
            r#type: Routing::Affinity as i32,
            ..Default::default()
        };
        assert_eq!(multi.effective_routing(), Routing::Multi);
        let affinity = Options {
            routing: Some(DeprecatedRouting::AffinityFunc(true)),
            ..Default::default()
        };
        assert_eq!(affinity.effective_routing(), Routing::Affinity);
        assert_eq!(Options::default().effective_routing(), Routing::Queue);
    }

    #[test]
    fn field_numbers_match_the_proto() {
        // subscription=1, topics=2, multi=5 (oneof), type=8 in tag-order encoding.
        let opts = Options {
            subscription: true,
            topics: true,
            routing: Some(DeprecatedRouting::Multi(true)),
            r#type: Routing::Multi as i32,
            ..Default::default()
        };
        assert_eq!(opts.encode_to_vec(), [0x08, 1, 0x10, 1, 0x28, 1, 0x40, 2]);
    }
}
