//! Code generation: typed psrpc clients and servers per service (through prost-build's
//! service generator hook, so type paths match prost's). Messages get their `prost::Name`
//! impls from prost-build itself (`enable_type_names`).
//!
//! Code is built as tokens with `quote` and printed with `prettyplease`: tokens cannot produce
//! unbalanced or mis-escaped code, and raw identifiers and doc strings are escaped for us.

use std::cell::RefCell;
use std::rc::Rc;

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use crate::Error;
use crate::model::{Kind, MethodModel, Routing, ServiceModel, Services, TopicParam};
use crate::names::{ident, shouty, snake, upper_camel};

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Parts {
    pub client: bool,
    pub server: bool,
    /// Default handlers plus the `SERVED` list (`Builder::generate_default_stubs`).
    pub default_stubs: bool,
}

/// The prost-build hook: appends the psrpc code of each service to its package module.
pub(crate) struct PsrpcGenerator {
    pub services: Rc<Services>,
    pub parts: Parts,
    /// prost's hook cannot fail; errors are collected and reported after generation.
    pub errors: Rc<RefCell<Vec<Error>>>,
}

impl prost_build::ServiceGenerator for PsrpcGenerator {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        let key = (service.package.clone(), service.proto_name.clone());
        let result = match self.services.get(&key) {
            Some(model) => service_code(&service, model, self.parts),
            None => Err(Error::Generate(format!(
                "no psrpc model for service {}.{}",
                service.package, service.proto_name
            ))),
        };
        match result {
            Ok(code) => buf.push_str(&code),
            Err(err) => self.errors.borrow_mut().push(err),
        }
    }
}

/// Prints tokens as a formatted Rust file.
pub(crate) fn print(tokens: TokenStream) -> Result<String, Error> {
    let file = syn::parse2::<syn::File>(tokens)
        .map_err(|e| Error::Generate(format!("generated code does not parse: {e}")))?;
    Ok(prettyplease::unparse(&file))
}

fn parse_type(path: &str) -> Result<syn::Type, Error> {
    syn::parse_str(path).map_err(|e| Error::Generate(format!("bad type path {path:?}: {e}")))
}

/// Doc attributes from proto comments. Lines are trimmed so indented text never becomes a
/// doctest, and fenced blocks are marked `text` for the same reason.
fn doc_attrs(lines: &[String]) -> TokenStream {
    let mut fenced = false;
    let lines = lines.iter().map(|line| {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("```") {
            fenced = !fenced;
            if fenced {
                return format!(" ```text {rest}").trim_end().to_owned();
            }
        }
        if line.is_empty() {
            String::new()
        } else {
            format!(" {line}")
        }
    });
    let lines: Vec<String> = lines.collect();
    quote! { #(#[doc = #lines])* }
}

/// The proto comments of an item, or `fallback` when it has none.
fn docs(comments: &prost_build::Comments, fallback: String) -> Vec<String> {
    let mut lines: Vec<String> = comments
        .leading
        .iter()
        .flat_map(|c| c.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    while lines.first().is_some_and(|l| l.trim().is_empty()) {
        lines.remove(0);
    }
    if lines.is_empty() {
        lines.push(fallback);
    }
    lines
}

/// One method with everything the templates need.
struct Method<'a> {
    model: &'a MethodModel,
    input: syn::Type,
    output: syn::Type,
    konst: Ident,
    docs: Vec<String>,
}

impl Method<'_> {
    fn fn_ident(&self) -> Ident {
        ident(&self.model.snake)
    }

    /// `region: &RegionTopicType, room: &str`
    fn topic_params(&self) -> Vec<TokenStream> {
        self.model
            .topics
            .iter()
            .flatten()
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

    /// `&[region.as_ref(), room]`
    fn topic_slice(&self) -> TokenStream {
        topic_slice(self.model.topics.as_deref().unwrap_or_default())
    }

    fn info(&self) -> TokenStream {
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
    fn routing_doc(&self) -> String {
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

fn topic_slice(params: &[TopicParam]) -> TokenStream {
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

fn group_params(params: &[TopicParam]) -> Vec<TokenStream> {
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
fn allow_many(args: usize) -> TokenStream {
    if args > 7 {
        quote!(#[allow(clippy::too_many_arguments)])
    } else {
        TokenStream::new()
    }
}

fn service_code(
    service: &prost_build::Service,
    model: &ServiceModel,
    parts: Parts,
) -> Result<String, Error> {
    let mut methods = Vec::new();
    for m in &model.methods {
        let proto = service
            .methods
            .iter()
            .find(|pm| pm.proto_name == m.proto_name)
            .ok_or_else(|| Error::Generate(format!("method {} not found", m.proto_name)))?;
        methods.push(Method {
            model: m,
            input: parse_type(&proto.input_type)?,
            output: parse_type(&proto.output_type)?,
            konst: format_ident!("{}", shouty(&m.snake)),
            docs: docs(&proto.comments, String::new()),
        });
    }
    let camel = upper_camel(&service.proto_name);
    let methods_mod = format_ident!("{}_methods", snake(&service.proto_name));
    let wire = &model.wire_name;
    let service_docs = docs(
        &service.comments,
        format!("The `{}` psrpc service.", service.proto_name),
    );

    let consts = methods.iter().map(|m| {
        let konst = &m.konst;
        let info = m.info();
        let doc = m.routing_doc();
        quote! {
            #[doc = #doc]
            pub const #konst: ::psrpc::MethodInfo = #info;
        }
    });
    let mod_doc = format!(
        " Wire names and routing of the methods of the `{}` psrpc service.",
        service.proto_name
    );
    let service_doc = format!(" The service name on the wire: `{wire}`.");
    let mut out = quote! {
        #[doc = #mod_doc]
        pub mod #methods_mod {
            #[doc = #service_doc]
            pub const SERVICE: &str = #wire;
            #(#consts)*
        }
    };

    let type_params: Vec<Ident> = model
        .type_params()
        .iter()
        .map(|tp| format_ident!("{}", tp))
        .collect();
    let generics = Generics::new(&type_params);
    if parts.client {
        out.extend(client_code(
            &camel,
            &methods_mod,
            &service_docs,
            &methods,
            &generics,
        ));
    }
    if parts.server {
        out.extend(server_code(
            &camel,
            &methods_mod,
            &service_docs,
            &methods,
            model,
            &generics,
            parts.default_stubs,
        ));
    }
    let durable: Vec<_> = methods
        .iter()
        .filter_map(|m| {
            let defaults = m.model.durable.as_ref()?;
            Some(crate::durable::DurableMethod {
                model: m.model,
                defaults,
                input: &m.input,
                output: &m.output,
            })
        })
        .collect();
    if !durable.is_empty() {
        let service_snake = snake(&service.proto_name);
        out.extend(crate::durable::durable_code(
            &camel,
            &service_snake,
            &methods_mod,
            &durable,
        ));
    }
    let batchable: Vec<_> = methods
        .iter()
        .map(|m| crate::batch::BatchMethod {
            model: m.model,
            input: &m.input,
            output: &m.output,
            konst: &m.konst,
        })
        .collect();
    out.extend(crate::batch::batch_code(
        &camel,
        &methods_mod,
        &batchable,
        parts.client,
    ));
    print(out)
}

/// The typed-topic generic parameters of a service, in their several spellings.
struct Generics {
    /// `<A: ?Sized = str, B: ?Sized = str>` (struct declaration), or nothing.
    decl: TokenStream,
    /// `A: ?Sized = str, B: ?Sized = str` after another parameter.
    decl_tail: TokenStream,
    /// `<A: ?Sized + AsRef<str>>` (impl with bounds).
    bounded: TokenStream,
    bounded_tail: TokenStream,
    /// `<A: ?Sized>` (impl without bounds).
    unsized_: TokenStream,
    unsized_tail: TokenStream,
    /// `<A, B>`
    args: TokenStream,
    args_tail: TokenStream,
    /// `PhantomData<fn(&A, &B)>`
    phantom: TokenStream,
}

impl Generics {
    fn new(tps: &[Ident]) -> Self {
        let phantom = quote!(::core::marker::PhantomData<fn(#(&#tps),*)>);
        let decl_tail = quote!(#(, #tps: ?::core::marker::Sized = str)*);
        let bounded_tail = quote!(#(, #tps: ?::core::marker::Sized + ::core::convert::AsRef<str>)*);
        let unsized_tail = quote!(#(, #tps: ?::core::marker::Sized)*);
        let args_tail = quote!(#(, #tps)*);
        if tps.is_empty() {
            Generics {
                decl: TokenStream::new(),
                decl_tail,
                bounded: TokenStream::new(),
                bounded_tail,
                unsized_: TokenStream::new(),
                unsized_tail,
                args: TokenStream::new(),
                args_tail,
                phantom,
            }
        } else {
            Generics {
                decl: quote!(<#(#tps: ?::core::marker::Sized = str),*>),
                decl_tail,
                bounded: quote!(<#(#tps: ?::core::marker::Sized + ::core::convert::AsRef<str>),*>),
                bounded_tail,
                unsized_: quote!(<#(#tps: ?::core::marker::Sized),*>),
                unsized_tail,
                args: quote!(<#(#tps),*>),
                args_tail,
                phantom,
            }
        }
    }
}

fn client_code(
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
        let method_docs = doc_attrs(&m.docs);
        let routing = m.routing_doc();
        match m.model.kind {
            Kind::Unary => {
                let allow = allow_many(params.len() + 3);
                quote! {
                    #method_docs
                    ///
                    #[doc = #routing]
                    ///
                    /// # Errors
                    /// The server's error, or `deadline_exceeded`, `unavailable` (no server),
                    /// `canceled` (client closed) or a bus error.
                    #allow
                    pub async fn #fn_ident(
                        &self,
                        #(#params,)*
                        req: &#input,
                        opts: ::psrpc::CallOptions,
                    ) -> ::psrpc::Result<#output> {
                        self.client
                            .request::<#input, #output>(#methods_mod::#konst, #topics, req, opts)
                            .await
                    }
                }
            }
            Kind::Multi => {
                let allow = allow_many(params.len() + 3);
                quote! {
                    #method_docs
                    ///
                    #[doc = #routing]
                    /// The stream yields each server's result until the call's timeout.
                    ///
                    /// # Errors
                    /// `canceled` if the client is closed, or a bus error.
                    #allow
                    pub async fn #fn_ident(
                        &self,
                        #(#params,)*
                        req: &#input,
                        opts: ::psrpc::CallOptions,
                    ) -> ::psrpc::Result<::psrpc::client::MultiResponses<#output>> {
                        self.client
                            .request_multi::<#input, #output>(#methods_mod::#konst, #topics, req, opts)
                            .await
                    }
                }
            }
            Kind::Stream => {
                let allow = allow_many(params.len() + 2);
                quote! {
                    #method_docs
                    ///
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
                let allow = allow_many(params.len() + 1);
                quote! {
                    #method_docs
                    ///
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
                        self.client.subscribe::<#output>(#methods_mod::#konst, #topics).await
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

fn server_code(
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
            let method_docs = doc_attrs(&m.docs);
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
                    ///
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
                ///
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
            let konst = &m.konst;
            let output = &m.output;
            let params = m.topic_params();
            let topics = m.topic_slice();
            let method_docs = doc_attrs(&m.docs);
            let routing = m.routing_doc();
            let allow = allow_many(params.len() + 2);
            quote! {
                #method_docs
                ///
                #[doc = #routing]
                /// Publishes `msg` to the subscribers.
                ///
                /// # Errors
                /// `invalid_argument` for a message over the bus limit, or a bus error.
                #allow
                pub async fn #publish(&self, #(#params,)* msg: &#output) -> ::psrpc::Result<()> {
                    self.server.publish(#methods_mod::#konst, #topics, msg).await
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
