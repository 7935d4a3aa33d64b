//! The server side of a service: the `<Service>ServerImpl` handler trait and the typed
//! `<Service>Server` (registration at start and per topic, topic groups, publishing).

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::docs::{doc_attrs, lead_docs};
use super::generics::Generics;
use super::method::{Method, allow_many, group_params};
use crate::model::{Kind, Routing, ServiceModel};
use crate::names::{ident, shouty};

pub(super) fn server_code(
    camel: &str,
    methods_mod: &Ident,
    service_docs: &[String],
    methods: &[Method<'_>],
    model: &ServiceModel,
    g: &Generics,
    stubs: bool,
) -> TokenStream {
    let server = format_ident!("{}Server", camel);
    let server_name = server.to_string();
    let trait_ident = format_ident!("{}ServerImpl", camel);
    let docs = doc_attrs(service_docs);
    let Generics {
        decl_tail,
        bounded_tail,
        unsized_tail,
        args_tail,
        phantom,
        ..
    } = g;

    let handlers = methods
        .iter()
        .filter(|m| m.model.kind != Kind::Subscription)
        .map(|m| {
            let fn_ident = m.fn_ident();
            let (input, output) = (&m.input, &m.output);
            let wire = &m.model.wire_name;
            let method_docs = lead_docs(&m.docs);
            let routing = m.routing_doc();
            let affinity = if m.model.routing == Routing::Affinity {
                let aff = format_ident!("{}_affinity", m.model.snake);
                let doc = format!(
                    " How well this server fits a `{wire}` request: the caller picks the highest; negative declines. Defaults to 1.0."
                );
                quote! {
                    #[doc = #doc]
                    fn #aff(&self, req: &#input) -> f32 {
                        let _ = req;
                        1.0
                    }
                }
            } else {
                quote!()
            };
            // With stubs, a handler defaults to `unimplemented` (the server does not register
            // it unless listed in `SERVED`); without, the implementation must provide it.
            let (stub_doc, body) = if stubs {
                let arg = if m.model.kind == Kind::Stream { quote!(stream) } else { quote!(req) };
                (
                    quote!(#[doc = " Defaults to an `unimplemented` error; list the method in `SERVED` when you implement it."]),
                    quote!({
                        let _ = (ctx, #arg);
                        ::core::future::ready(::core::result::Result::Err(::psrpc::Error::unimplemented(#wire)))
                    }),
                )
            } else {
                (quote!(), quote!(;))
            };
            if m.model.kind == Kind::Stream {
                return quote! {
                    #method_docs
                    #[doc = #routing]
                    /// Serves one stream (send responses, receive requests); it closes when this
                    /// returns, with the error on `Err`.
                    #stub_doc
                    fn #fn_ident(
                        &self,
                        ctx: ::psrpc::RequestContext,
                        stream: ::psrpc::stream::Stream<#output, #input>,
                    ) -> impl ::core::future::Future<Output = ::psrpc::Result<()>> + ::core::marker::Send
                    #body
                };
            }
            quote! {
                #method_docs
                #[doc = #routing]
                #stub_doc
                fn #fn_ident(
                    &self,
                    ctx: ::psrpc::RequestContext,
                    req: #input,
                ) -> impl ::core::future::Future<Output = ::psrpc::Result<#output>> + ::core::marker::Send
                #body
                #affinity
            }
        });

    // Registers one handler; `imp`, `srv` and `topics` are expressions of the caller.
    let register = |m: &Method<'_>, imp: TokenStream, srv: TokenStream, topics: TokenStream| {
        let fn_ident = m.fn_ident();
        let konst = &m.konst;
        let input = &m.input;
        if m.model.kind == Kind::Stream {
            let output = &m.output;
            return quote! {
                #srv.register_stream(
                    #methods_mod::#konst,
                    #topics,
                    {
                        let handler_impl = ::std::sync::Arc::clone(#imp);
                        move |ctx: ::psrpc::RequestContext, stream: ::psrpc::stream::Stream<#output, #input>| {
                            let handler_impl = ::std::sync::Arc::clone(&handler_impl);
                            async move { handler_impl.#fn_ident(ctx, stream).await }
                        }
                    },
                )
                .await
            };
        }
        let handler = quote! {
            {
                let handler_impl = ::std::sync::Arc::clone(#imp);
                move |ctx: ::psrpc::RequestContext, req: #input| {
                    let handler_impl = ::std::sync::Arc::clone(&handler_impl);
                    async move { handler_impl.#fn_ident(ctx, req).await }
                }
            }
        };
        if m.model.routing == Routing::Affinity {
            let aff = format_ident!("{}_affinity", m.model.snake);
            quote! {
                {
                    let affinity_impl = ::std::sync::Arc::clone(#imp);
                    #srv.register_unary_with_affinity(
                        #methods_mod::#konst,
                        #topics,
                        #handler,
                        ::std::sync::Arc::new(move |req: &#input| affinity_impl.#aff(req)),
                    )
                    .await
                }
            }
        } else {
            quote!(#srv.register_unary(#methods_mod::#konst, #topics, #handler).await)
        }
    };

    let trait_name = trait_ident.to_string();
    let handler_consts: Vec<&Ident> = methods
        .iter()
        .filter(|m| m.model.kind != Kind::Subscription)
        .map(|m| &m.konst)
        .collect();
    // The `SERVED` list exists with stubs, for services with handlers.
    let served_list = stubs && !handler_consts.is_empty();
    // `true` without a `SERVED` list: the implementation serves every handler.
    let serves = |m: &Method<'_>| {
        let konst = &m.konst;
        if served_list {
            quote!(<I as #trait_ident>::SERVED.contains(&#methods_mod::#konst))
        } else {
            quote!(true)
        }
    };
    let served_decl = if served_list {
        let doc = format!(
            " The methods this implementation serves, from `{methods_mod}`: the server registers these only, so it never takes calls it cannot serve. List exactly the handlers you implement."
        );
        quote! {
            #[doc = #doc]
            const SERVED: &'static [::psrpc::MethodInfo];
        }
    } else {
        quote!()
    };
    let check_served = if served_list {
        quote! {
            const HANDLERS: &[::psrpc::MethodInfo] = &[#(#methods_mod::#handler_consts),*];
            if let ::core::option::Option::Some(method) =
                <I as #trait_ident>::SERVED.iter().find(|m| !HANDLERS.contains(m))
            {
                return ::core::result::Result::Err(::psrpc::Error::new(
                    ::psrpc::ErrorCode::InvalidArgument,
                    ::std::format!(
                        "{}::SERVED lists {}, which is not a handler of service {}",
                        #trait_name,
                        method.name(),
                        #methods_mod::SERVICE,
                    ),
                ));
            }
        }
    } else {
        quote!()
    };

    let at_start = methods
        .iter()
        .filter(|m| m.model.kind != Kind::Subscription && m.model.topics.is_none())
        .map(|m| {
            let call = register(m, quote!(&implementation), quote!(server), quote!(&[]));
            if served_list {
                let serves = serves(m);
                quote!(if #serves { #call?; })
            } else {
                quote!(#call?;)
            }
        });

    let per_topic = methods
        .iter()
        .filter(|m| m.model.kind != Kind::Subscription && m.model.topics.is_some())
        .map(|m| {
            let reg = format_ident!("register_{}_topic", m.model.snake);
            let dereg = format_ident!("deregister_{}_topic", m.model.snake);
            let konst = &m.konst;
            let params = m.topic_params();
            let topics = m.topic_slice();
            let call = register(m, quote!(&self.implementation), quote!(self.server), topics.clone());
            let wire = &m.model.wire_name;
            let refuse = if served_list {
                let serves = serves(m);
                let msg = format!(
                    "method {wire} is not served by this implementation: it is not in {trait_name}::SERVED"
                );
                quote! {
                    if !#serves {
                        return ::core::result::Result::Err(::psrpc::Error::new(::psrpc::ErrorCode::Unimplemented, #msg));
                    }
                }
            } else {
                quote!()
            };
            let reg_doc = format!(" Starts serving `{wire}` on the given topic.");
            let dereg_doc = format!(
                " Stops serving `{wire}` on the given topic (running calls finish); true if it was served."
            );
            let allow = allow_many(params.len() + 1);
            quote! {
                #[doc = #reg_doc]
                ///
                /// # Errors
                /// `already_exists` if already served on this topic, `unavailable` after
                /// shutdown, or the bus error of a failed subscribe.
                #allow
                pub async fn #reg(&self, #(#params),*) -> ::psrpc::Result<()> {
                    #refuse
                    #call
                }

                #[doc = #dereg_doc]
                #allow
                pub fn #dereg(&self, #(#params),*) -> bool {
                    self.server.deregister(#methods_mod::#konst, #topics)
                }
            }
        });

    let groups = model.groups().into_iter().map(|(group, params, members)| {
        let reg = format_ident!("register_all_{}_topics", group);
        let dereg = format_ident!("deregister_all_{}_topics", group);
        let fn_params = group_params(&params);
        let args: Vec<Ident> = params.iter().map(|p| ident(&p.name)).collect();
        let steps = members.iter().enumerate().map(|(i, m)| {
            let r = format_ident!("register_{}_topic", m.snake);
            let undo = members[..i].iter().map(|done| {
                let d = format_ident!("deregister_{}_topic", done.snake);
                quote!(self.#d(#(#args),*);)
            });
            let step = quote! {
                if let ::core::result::Result::Err(err) = self.#r(#(#args),*).await {
                    #(#undo)*
                    return ::core::result::Result::Err(err);
                }
            };
            // A partial implementation registers the members it serves.
            if served_list {
                let konst = format_ident!("{}", shouty(&m.snake));
                quote!(if <I as #trait_ident>::SERVED.contains(&#methods_mod::#konst) { #step })
            } else {
                step
            }
        });
        let deregs = members.iter().map(|m| {
            let d = format_ident!("deregister_{}_topic", m.snake);
            quote!(self.#d(#(#args),*);)
        });
        let names: Vec<&str> = members.iter().map(|m| m.wire_name.as_str()).collect();
        let reg_doc = format!(
            " Starts serving every method of topic group `{group}` ({}) this implementation serves on the given topic; all or none.",
            names.join(", ")
        );
        let dereg_doc = format!(
            " Stops serving every method of topic group `{group}` ({}) on the given topic.",
            names.join(", ")
        );
        let allow = allow_many(params.len() + 1);
        quote! {
            #[doc = #reg_doc]
            ///
            /// # Errors
            /// The first registration error; the methods registered before it are deregistered.
            #allow
            pub async fn #reg(&self, #(#fn_params),*) -> ::psrpc::Result<()> {
                #(#steps)*
                ::core::result::Result::Ok(())
            }

            #[doc = #dereg_doc]
            #allow
            pub fn #dereg(&self, #(#fn_params),*) {
                #(#deregs)*
            }
        }
    });

    let publishers = methods
        .iter()
        .filter(|m| m.model.kind == Kind::Subscription)
        .map(|m| {
            let publish = format_ident!("publish_{}", m.model.snake);
            let output_name = &m.output_name;
            let konst = &m.konst;
            let output = &m.output;
            let params = m.topic_params();
            let topics = m.topic_slice();
            let method_docs = lead_docs(&m.docs);
            let routing = m.routing_doc();
            let allow = allow_many(params.len() + 2);
            quote! {
                #method_docs
                #[doc = #routing]
                /// Publishes `msg` to the subscribers.
                ///
                /// # Errors
                /// `invalid_argument` for a message over the bus limit, or a bus error.
                #allow
                pub async fn #publish(&self, #(#params,)* msg: &#output) -> ::psrpc::Result<()> {
                    self.server
                        .publish_named(#methods_mod::#konst, #topics, #output_name, msg)
                        .await
                }
            }
        });

    let trait_doc = if served_list {
        format!(
            " The handlers of `{camel}`: implement the methods you serve (with `async fn`) and list them in `SERVED`; the server registers those only."
        )
    } else {
        format!(" The handlers of `{camel}`: implement every method (with `async fn`).")
    };
    let server_doc = format!(
        " Server side: serves a [`{trait_ident}`] implementation, registers topic methods per topic and publishes to subscribers. Cloning gives another handle; dropping the last one kills it."
    );
    let served_error = if served_list {
        quote!(#[doc = " `invalid_argument` when `SERVED` lists a method that is not a handler of this service."])
    } else {
        quote!()
    };
    let new_doc = format!(
        " Serves `implementation` as `{camel}` on `bus`; methods without topics are served at once."
    );
    quote! {
        #[doc = #trait_doc]
        ///
        #docs
        pub trait #trait_ident: ::core::marker::Send + ::core::marker::Sync + 'static {
            #served_decl
            #(#handlers)*
        }

        #docs
        ///
        #[doc = #server_doc]
        #[must_use = "a server stops serving when its last handle is dropped"]
        pub struct #server<I #decl_tail> {
            server: ::psrpc::Server,
            implementation: ::std::sync::Arc<I>,
            _topics: #phantom,
        }

        impl<I #unsized_tail> ::core::clone::Clone for #server<I #args_tail> {
            fn clone(&self) -> Self {
                Self {
                    server: ::core::clone::Clone::clone(&self.server),
                    implementation: ::std::sync::Arc::clone(&self.implementation),
                    _topics: ::core::marker::PhantomData,
                }
            }
        }

        impl<I #unsized_tail> ::core::fmt::Debug for #server<I #args_tail> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#server_name).field("server", &self.server).finish_non_exhaustive()
            }
        }

        impl<I: #trait_ident #bounded_tail> #server<I #args_tail> {
            #[doc = #new_doc]
            ///
            /// # Errors
            /// The error of a failed registration (a bus error).
            #served_error
            pub async fn new(implementation: I, bus: impl ::psrpc::IntoBus) -> ::psrpc::Result<Self> {
                let server = ::psrpc::Server::new(#methods_mod::SERVICE, bus);
                Self::with_server(::std::sync::Arc::new(implementation), server).await
            }

            /// Like `new`, with server options.
            ///
            /// # Errors
            /// The error of a failed registration (a bus error).
            #served_error
            pub async fn with_options(
                implementation: I,
                bus: impl ::psrpc::IntoBus,
                options: ::psrpc::ServerOptions,
            ) -> ::psrpc::Result<Self> {
                let server = ::psrpc::Server::with_options(#methods_mod::SERVICE, bus, options);
                Self::with_server(::std::sync::Arc::new(implementation), server).await
            }

            /// Serves a shared implementation on a generic server, which must be a server of
            /// this service; methods without topics are served at once.
            ///
            /// # Errors
            /// The error of a failed registration (`already_exists`, or a bus error).
                #served_error
            pub async fn with_server(
                implementation: ::std::sync::Arc<I>,
                server: ::psrpc::Server,
            ) -> ::psrpc::Result<Self> {
                #check_served
                #(#at_start)*
                ::core::result::Result::Ok(Self { server, implementation, _topics: ::core::marker::PhantomData })
            }

            /// The generic server underneath.
            pub fn server(&self) -> &::psrpc::Server {
                &self.server
            }

            /// The implementation being served.
            pub fn implementation(&self) -> &::std::sync::Arc<I> {
                &self.implementation
            }

            #(#per_topic)*
            #(#groups)*
            #(#publishers)*

            /// Stops taking requests, lets running handlers finish and answer, then unsubscribes.
            pub async fn shutdown(&self) {
                self.server.shutdown().await
            }

            /// Stops at once: running handlers are abandoned and their callers told `unavailable`.
            pub async fn kill(&self) {
                self.server.kill().await
            }
        }
    }
}
