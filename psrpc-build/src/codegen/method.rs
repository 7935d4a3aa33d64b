//! One method as the client and server templates see it, and the topic-parameter helpers.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use crate::model::{Kind, MethodModel, Routing, TopicParam};
use crate::names::ident;

/// One method with everything the templates need.
pub(super) struct Method<'a> {
    pub(super) model: &'a MethodModel,
    pub(super) input: syn::Type,
    pub(super) output: syn::Type,
    /// The output's proto full name (`google.protobuf.Struct`): subscriptions name their
    /// messages with it, since not every Rust type implements `prost::Name`.
    pub(super) output_name: String,
    pub(super) konst: Ident,
    pub(super) docs: Vec<String>,
}

impl Method<'_> {
    pub(super) fn fn_ident(&self) -> Ident {
        ident(&self.model.snake)
    }

    /// `region: &RegionTopicType, room: &str`
    pub(super) fn topic_params(&self) -> Vec<TokenStream> {
        group_params(self.model.topics.as_deref().unwrap_or_default())
    }

    /// `&[region.as_ref(), room]`
    pub(super) fn topic_slice(&self) -> TokenStream {
        topic_slice(self.model.topics.as_deref().unwrap_or_default())
    }

    pub(super) fn info(&self) -> TokenStream {
        let name = &self.model.wire_name;
        let single = self.model.single_server;
        let base = match (self.model.kind, self.model.routing) {
            (Kind::Subscription, Routing::Queue) => {
                quote!(::psrpc::MethodInfo::queue_subscription(#name))
            }
            (Kind::Subscription, _) => quote!(::psrpc::MethodInfo::subscription(#name)),
            (Kind::Multi, _) => quote!(::psrpc::MethodInfo::multi(#name)),
            (Kind::Stream, _) if single => quote!(::psrpc::MethodInfo::new(
                #name,
                ::psrpc::MethodKind::Stream(::psrpc::Dispatch::SingleServer)
            )),
            (Kind::Stream, _) => quote!(::psrpc::MethodInfo::stream(#name)),
            (Kind::Unary, Routing::Affinity) => quote!(::psrpc::MethodInfo::affinity(#name)),
            (Kind::Unary, _) if single => quote!(::psrpc::MethodInfo::new(
                #name,
                ::psrpc::MethodKind::Unary(::psrpc::Dispatch::SingleServer)
            )),
            (Kind::Unary, _) => quote!(::psrpc::MethodInfo::unary(#name)),
        };
        if self.model.idempotent && self.model.kind != Kind::Subscription {
            quote!(#base.idempotent())
        } else {
            base
        }
    }

    /// How the method travels, for the docs.
    pub(super) fn routing_doc(&self) -> String {
        let routing = match (self.model.kind, self.model.routing) {
            (Kind::Subscription, Routing::Multi) => {
                "subscription: every subscriber gets every message"
            }
            (Kind::Subscription, _) => "queue subscription: each message goes to one subscriber",
            (Kind::Stream, _) if self.model.single_server => {
                "bidirectional stream, single server: no claim exchange"
            }
            (Kind::Stream, _) => "bidirectional stream with one server",
            (_, Routing::Multi) => "MULTI: every server answers",
            (_, Routing::Affinity) => {
                "AFFINITY: servers claim with an affinity, the caller picks one"
            }
            (_, Routing::Queue) if self.model.single_server => {
                "QUEUE, single server: no claim exchange"
            }
            (_, Routing::Queue) => "QUEUE: one server answers",
        };
        format!(" psrpc method `{}` ({routing}).", self.model.wire_name)
    }
}

pub(super) fn topic_slice(params: &[TopicParam]) -> TokenStream {
    let values = params.iter().map(|p| {
        let name = ident(&p.name);
        if p.type_param.is_some() {
            quote!(::core::convert::AsRef::<str>::as_ref(#name))
        } else {
            quote!(#name)
        }
    });
    quote!(&[#(#values),*])
}

/// Topic parameters as function arguments: `region: &RegionTopicType, room: &str`.
pub(super) fn group_params(params: &[TopicParam]) -> Vec<TokenStream> {
    params
        .iter()
        .map(|p| {
            let name = ident(&p.name);
            match &p.type_param {
                Some(tp) => {
                    let tp = format_ident!("{}", tp);
                    quote!(#name: &#tp)
                }
                None => quote!(#name: &str),
            }
        })
        .collect()
}

/// Clippy's limit is seven arguments including `self`; topic-heavy methods may exceed it.
pub(super) fn allow_many(args: usize) -> TokenStream {
    if args > 7 {
        quote!(#[allow(clippy::too_many_arguments)])
    } else {
        TokenStream::new()
    }
}
