//! The typed client of a service: `<Service>Client`, one method per rpc.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::docs::{doc_attrs, lead_docs};
use super::generics::Generics;
use super::method::{Method, allow_many};
use crate::model::Kind;

pub(super) fn client_code(
    camel: &str,
    methods_mod: &Ident,
    service_docs: &[String],
    methods: &[Method<'_>],
    g: &Generics,
) -> TokenStream {
    let client = format_ident!("{}Client", camel);
    let client_name = client.to_string();
    let docs = doc_attrs(service_docs);
    let Generics {
        decl,
        bounded,
        unsized_,
        args,
        phantom,
        ..
    } = g;
    let typed_doc = if g.args.is_empty() {
        quote!()
    } else {
        quote! {
            ///
            /// The topic parameters are typed: each `…TopicType` parameter is any string-like type
            /// (`str` by default), as in Go psrpc's typed topics.
        }
    };
    let calls = methods.iter().map(|m| {
        let fn_ident = m.fn_ident();
        let konst = &m.konst;
        let (input, output) = (&m.input, &m.output);
        let params = m.topic_params();
        let topics = m.topic_slice();
        let method_docs = lead_docs(&m.docs);
        let routing = m.routing_doc();
        match m.model.kind {
            // Unary and MULTI calls differ only in their docs, result and runtime call.
            Kind::Unary | Kind::Multi => {
                let allow = allow_many(params.len() + 3);
                let (about, result, call) = if m.model.kind == Kind::Unary {
                    (
                        quote! {
                            ///
                            /// # Errors
                            /// The server's error, or `deadline_exceeded`, `unavailable` (no server),
                            /// `canceled` (client closed) or a bus error.
                        },
                        quote!(#output),
                        format_ident!("request"),
                    )
                } else {
                    (
                        quote! {
                            /// The stream yields each server's result until the call's timeout.
                            ///
                            /// # Errors
                            /// `canceled` if the client is closed, or a bus error.
                        },
                        quote!(::psrpc::client::MultiResponses<#output>),
                        format_ident!("request_multi"),
                    )
                };
                quote! {
                    #method_docs
                    #[doc = #routing]
                    #about
                    #allow
                    pub async fn #fn_ident(
                        &self,
                        #(#params,)*
                        req: &#input,
                        opts: ::psrpc::CallOptions,
                    ) -> ::psrpc::Result<#result> {
                        self.client
                            .#call::<#input, #output>(#methods_mod::#konst, #topics, req, opts)
                            .await
                    }
                }
            }
            Kind::Stream => {
                let allow = allow_many(params.len() + 2);
                quote! {
                    #method_docs
                    #[doc = #routing]
                    /// Opens the stream: send requests, receive responses; the call options'
                    /// timeout bounds the opening.
                    ///
                    /// # Errors
                    /// As for a unary call, for the opening.
                    #allow
                    pub async fn #fn_ident(
                        &self,
                        #(#params,)*
                        opts: ::psrpc::CallOptions,
                    ) -> ::psrpc::Result<::psrpc::stream::Stream<#input, #output>> {
                        self.client
                            .open_stream::<#input, #output>(#methods_mod::#konst, #topics, opts)
                            .await
                    }
                }
            }
            Kind::Subscription => {
                let sub = format_ident!("subscribe_{}", m.model.snake);
                let output_name = &m.output_name;
                let allow = allow_many(params.len() + 1);
                quote! {
                    #method_docs
                    #[doc = #routing]
                    /// Returns once the subscription is live; dropping it unsubscribes.
                    ///
                    /// # Errors
                    /// The bus error of a failed subscribe.
                    #allow
                    pub async fn #sub(
                        &self,
                        #(#params),*
                    ) -> ::psrpc::Result<::psrpc::client::TypedSubscription<#output>> {
                        self.client
                            .subscribe_named::<#output>(#methods_mod::#konst, #topics, #output_name)
                            .await
                    }
                }
            }
        }
    });
    let new_doc = format!(" A client of `{camel}` on `bus`, with default options.");
    quote! {
        #docs
        ///
        /// Client side: one method per rpc. Cloning gives another handle of the same client.
        #typed_doc
        #[must_use = "a client closes when its last handle is dropped"]
        pub struct #client #decl {
            client: ::psrpc::Client,
            _topics: #phantom,
        }

        impl #unsized_ ::core::clone::Clone for #client #args {
            fn clone(&self) -> Self {
                Self { client: ::core::clone::Clone::clone(&self.client), _topics: ::core::marker::PhantomData }
            }
        }

        impl #unsized_ ::core::fmt::Debug for #client #args {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#client_name).field("client", &self.client).finish()
            }
        }

        impl #bounded #client #args {
            #[doc = #new_doc]
            ///
            /// # Errors
            /// The bus error of a failed subscribe to the reply channels.
            pub async fn new(bus: impl ::psrpc::IntoBus) -> ::psrpc::Result<Self> {
                Self::with_options(bus, ::core::default::Default::default()).await
            }

            /// A client on `bus` with `options`.
            ///
            /// # Errors
            /// The bus error of a failed subscribe to the reply channels.
            pub async fn with_options(
                bus: impl ::psrpc::IntoBus,
                options: ::psrpc::ClientOptions,
            ) -> ::psrpc::Result<Self> {
                let client = ::psrpc::Client::with_options(#methods_mod::SERVICE, bus, options).await?;
                ::core::result::Result::Ok(Self::from_client(client))
            }

            /// Wraps a generic client, which must be a client of this service.
            pub fn from_client(client: ::psrpc::Client) -> Self {
                Self { client, _topics: ::core::marker::PhantomData }
            }

            /// The generic client underneath.
            pub fn client(&self) -> &::psrpc::Client {
                &self.client
            }

            #(#calls)*
        }
    }
}
