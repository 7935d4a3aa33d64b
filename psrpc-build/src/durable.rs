//! Durable methods (`option (psrpc.durable)` of `psrpc/durable.proto`): reading the option and
//! generating a durable client and a worker trait for the services that have such methods.

use proc_macro2::TokenStream;
use prost_reflect::{DynamicMessage, MethodDescriptor};
use quote::{format_ident, quote};

use crate::Error;
use crate::model::{Kind, MethodModel, Routing};
use crate::names::ident;

/// Full name of the durable extension.
const DURABLE_EXTENSION: &str = "psrpc.durable";

/// A durable method's declared defaults (unset fields keep the runtime's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DurableDefaults {
    pub max_attempts: Option<u32>,
    pub backoff_initial_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub visibility_timeout_ms: Option<u64>,
    pub result_ttl_ms: Option<u64>,
    pub dead_letter: Option<bool>,
}

/// The durable option of a method, checked against what the method is.
pub(crate) fn read(
    method: &MethodDescriptor,
    model: &MethodModel,
) -> Result<Option<DurableDefaults>, Error> {
    let pool = method.parent_pool();
    let Some(ext) = pool.get_extension_by_name(DURABLE_EXTENSION) else {
        return Ok(None);
    };
    if !method.options().has_extension(&ext) {
        return Ok(None);
    }
    let fail = |reason: &str| Error::InvalidMethod {
        file: method.parent_file().name().to_owned(),
        service: method.parent_service().name().to_owned(),
        method: method.name().to_owned(),
        reason: reason.to_owned(),
    };
    if model.kind != Kind::Unary || model.routing != Routing::Queue || model.topics.is_some() {
        return Err(fail(
            "a durable method must be a plain unary method (QUEUE routing, no topics, no stream or subscription)",
        ));
    }
    if matches!(model.snake.as_str(), "new" | "inner") {
        return Err(fail(
            "a durable method cannot be named New or Inner (the client's own names)",
        ));
    }
    let options = method.options();
    let value = options.get_extension(&ext);
    let Some(opts) = value.as_message() else {
        return Ok(Some(DurableDefaults::default()));
    };
    let u64_of = |name: &str| field(opts, name).and_then(|v| v.as_u64());
    Ok(Some(DurableDefaults {
        max_attempts: field(opts, "max_attempts").and_then(|v| v.as_u32()),
        backoff_initial_ms: u64_of("backoff_initial_ms"),
        backoff_max_ms: u64_of("backoff_max_ms"),
        visibility_timeout_ms: u64_of("visibility_timeout_ms"),
        result_ttl_ms: u64_of("result_ttl_ms"),
        dead_letter: field(opts, "dead_letter").and_then(|v| v.as_bool()),
    }))
}

fn field(msg: &DynamicMessage, name: &str) -> Option<prost_reflect::Value> {
    msg.has_field_by_name(name)
        .then(|| msg.get_field_by_name(name).map(|v| v.into_owned()))
        .flatten()
}

/// A durable method as the templates need it.
pub(crate) struct DurableMethod<'a> {
    pub model: &'a MethodModel,
    pub defaults: &'a DurableDefaults,
    pub input: &'a syn::Type,
    pub output: &'a syn::Type,
}

fn opt_tokens<T: quote::ToTokens>(
    value: Option<T>,
    apply: impl Fn(T) -> TokenStream,
) -> TokenStream {
    value.map(apply).unwrap_or_default()
}

/// `Type::default()` followed by a setter call per field (options types are
/// `#[non_exhaustive]`, so generated code cannot write them as struct literals).
fn struct_with_defaults(ty: TokenStream, setters: &[TokenStream]) -> TokenStream {
    quote!(<#ty as ::core::default::Default>::default() #(#setters)*)
}

/// The durable client, worker trait, queue settings and worker builder of one service.
pub(crate) fn durable_code(
    camel: &str,
    service_snake: &str,
    methods_mod: &proc_macro2::Ident,
    methods: &[DurableMethod<'_>],
) -> TokenStream {
    let client = format_ident!("{}DurableClient", camel);
    let worker_trait = format_ident!("{}DurableWorker", camel);
    let config_fn = format_ident!("{}_durable_queue_config", service_snake);
    let worker_fn = format_ident!("{}_durable_worker", service_snake);
    let d = quote!(::psrpc::durable);

    let visibility = methods
        .iter()
        .filter_map(|m| m.defaults.visibility_timeout_ms)
        .max();
    let ttl = methods
        .iter()
        .filter_map(|m| m.defaults.result_ttl_ms)
        .max();
    let config_fields = [
        opt_tokens(
            visibility,
            |ms| quote!(.visibility_timeout(::core::time::Duration::from_millis(#ms))),
        ),
        opt_tokens(
            ttl,
            |ms| quote!(.result_ttl(::core::time::Duration::from_millis(#ms))),
        ),
    ];
    let config_value = struct_with_defaults(quote!(#d::QueueConfig), &config_fields);

    let client_methods = methods.iter().map(|m| {
        let wire = &m.model.wire_name;
        let (input, output) = (m.input, m.output);
        let call = ident(&m.model.snake);
        let enqueue = format_ident!("enqueue_{}", m.model.snake);
        let enqueue_with = format_ident!("enqueue_{}_with", m.model.snake);
        let options = format_ident!("{}_options", m.model.snake);
        let task = format_ident!("{}_task", m.model.snake);
        let dd = m.defaults;
        let fields = [
            opt_tokens(dd.max_attempts, |v| quote!(.max_attempts(#v))),
            opt_tokens(dd.backoff_initial_ms, |v| {
                quote!(.backoff_initial(::core::time::Duration::from_millis(#v)))
            }),
            opt_tokens(dd.backoff_max_ms, |v| {
                quote!(.backoff_max(::core::time::Duration::from_millis(#v)))
            }),
            opt_tokens(dd.result_ttl_ms, |v| {
                quote!(.result_ttl(::core::time::Duration::from_millis(#v)))
            }),
            opt_tokens(dd.dead_letter, |v| quote!(.dead_letter(#v))),
        ];
        let task_value = struct_with_defaults(quote!(#d::TaskOptions), &fields);
        let doc_enqueue = format!(" Enqueues a `{wire}` task with its declared defaults; resolves once the carrier persisted it.");
        let doc_with = format!(" Enqueues a `{wire}` task with these options (start from [`Self::{options}`]).");
        let doc_options = format!(" The declared defaults of `{wire}`.");
        let doc_call = format!(" Enqueues a `{wire}` task and waits up to `timeout` for its result.");
        let doc_task = format!(" The `{wire}` task `task_id`: wait for its result or fetch it.");
        quote! {
            #[doc = #doc_options]
            pub fn #options() -> #d::EnqueueOptions {
                #d::EnqueueOptions::with_task(#task_value)
            }

            #[doc = #doc_enqueue]
            ///
            /// # Errors
            /// An oversized task or a carrier error.
            pub async fn #enqueue(&self, req: &#input) -> ::core::result::Result<#d::TaskHandle<#output>, #d::DurableError> {
                self.inner.enqueue(#wire, req, Self::#options()).await
            }

            #[doc = #doc_with]
            ///
            /// # Errors
            /// An oversized task, a bad idempotency key or a carrier error.
            pub async fn #enqueue_with(&self, req: &#input, options: #d::EnqueueOptions) -> ::core::result::Result<#d::TaskHandle<#output>, #d::DurableError> {
                self.inner.enqueue(#wire, req, options).await
            }

            #[doc = #doc_call]
            ///
            /// # Errors
            /// As the enqueue, the task's final error, or a timeout (the task may still finish).
            pub async fn #call(&self, req: &#input, timeout: ::core::time::Duration) -> ::core::result::Result<#output, #d::DurableError> {
                self.inner.call(#wire, req, Self::#options(), timeout).await
            }

            #[doc = #doc_task]
            pub fn #task(&self, task_id: impl ::core::convert::Into<::std::string::String>) -> #d::TaskHandle<#output> {
                self.inner.handle(task_id.into())
            }
        }
    });

    let trait_fns = methods.iter().map(|m| {
        let call = ident(&m.model.snake);
        let (input, output) = (m.input, m.output);
        let doc = format!(" Runs one `{}` task; an error is retried up to the attempt limit.", m.model.wire_name);
        quote! {
            #[doc = #doc]
            fn #call(
                &self,
                ctx: #d::TaskContext,
                req: #input,
            ) -> impl ::core::future::Future<Output = ::psrpc::Result<#output>> + ::core::marker::Send;
        }
    });

    let registrations = methods.iter().map(|m| {
        let call = ident(&m.model.snake);
        let wire = &m.model.wire_name;
        let input = m.input;
        quote! {
            .handle(#wire, {
                let imp = ::std::sync::Arc::clone(&imp);
                move |ctx: #d::TaskContext, req: #input| {
                    let imp = ::std::sync::Arc::clone(&imp);
                    async move { imp.#call(ctx, req).await }
                }
            })
        }
    });

    let client_doc = format!(
        " Durable (queued, at-least-once) calls of the `{camel}` service: tasks survive worker crashes and broker restarts, results can be awaited or fetched by task ID."
    );
    let trait_doc =
        format!(" The handlers of the durable methods of `{camel}`, run by [`{worker_fn}`].");
    let config_doc = format!(
        " The queue settings of `{camel}`'s durable methods (their largest visibility timeout and result TTL)."
    );
    let worker_doc = format!(
        " A worker of `{camel}`'s durable queue running `imp`'s handlers: tune it with `.options(…)`, run it with `.start()`."
    );
    quote! {
        #[doc = #config_doc]
        pub fn #config_fn() -> #d::QueueConfig {
            #config_value
        }

        #[doc = #client_doc]
        #[derive(Clone, Debug)]
        pub struct #client {
            inner: #d::DurableClient,
        }

        impl #client {
            /// Opens the service's durable queue on `carrier`.
            ///
            /// # Errors
            /// The carrier could not open the queue.
            pub async fn new(carrier: ::std::sync::Arc<dyn #d::Carrier>) -> ::core::result::Result<Self, #d::DurableError> {
                let inner = #d::DurableClient::with_config(carrier, #methods_mod::SERVICE, &#config_fn()).await?;
                ::core::result::Result::Ok(Self { inner })
            }

            /// The untyped client underneath.
            pub fn inner(&self) -> &#d::DurableClient {
                &self.inner
            }

            #(#client_methods)*
        }

        #[doc = #trait_doc]
        pub trait #worker_trait: ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#trait_fns)*
        }

        #[doc = #worker_doc]
        pub fn #worker_fn<W: #worker_trait>(carrier: ::std::sync::Arc<dyn #d::Carrier>, imp: W) -> #d::Worker {
            let imp = ::std::sync::Arc::new(imp);
            let options = #d::WorkerOptions::default().queue(#config_fn());
            #d::Worker::new(carrier, #methods_mod::SERVICE)
                .options(options)
                #(#registrations)*
        }
    }
}
