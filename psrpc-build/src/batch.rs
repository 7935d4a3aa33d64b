//! Batch methods (scatter/gather, `psrpc::batch`) on generated clients: `batch_<method>` on
//! `<Service>Client` for plain QUEUE methods, and `batch_<method>`, `resume_batch_<method>`,
//! `attach_batch_<method>` on `<Service>DurableClient` for durable methods.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use crate::model::{Kind, MethodModel, Routing};

/// A method as the batch templates need it.
pub(crate) struct BatchMethod<'a> {
    pub model: &'a MethodModel,
    pub input: &'a syn::Type,
    pub output: &'a syn::Type,
    /// The method's `MethodInfo` constant in the service's methods module.
    pub konst: &'a Ident,
}

/// Plain unary QUEUE methods without topics: the ones a queue batch can spread over a fleet.
fn queue_batchable(m: &MethodModel) -> bool {
    m.kind == Kind::Unary && m.routing == Routing::Queue && m.topics.is_none()
}

/// The batch methods of one service; `client` when the plain client is generated.
pub(crate) fn batch_code(
    camel: &str,
    methods_mod: &Ident,
    methods: &[BatchMethod<'_>],
    client: bool,
) -> TokenStream {
    let b = quote!(::psrpc::batch);
    let mut out = TokenStream::new();

    let queue_fns: Vec<TokenStream> = methods
        .iter()
        .filter(|m| client && queue_batchable(m.model))
        .map(|m| {
            let name = format_ident!("batch_{}", m.model.snake);
            let (input, output, konst) = (m.input, m.output, m.konst);
            let doc = format!(
                " Calls `{}` once per request, spread over the servers of the queue, as one batch: results stream back as they complete (at most once each; see `psrpc::batch`).",
                m.model.wire_name
            );
            quote! {
                #[doc = #doc]
                ///
                /// # Errors
                /// An empty batch or one over `options.max_size`.
                pub async fn #name(
                    &self,
                    requests: impl ::core::iter::IntoIterator<Item = #input>,
                    options: #b::BatchOptions,
                ) -> ::core::result::Result<#b::Batch<#output>, #b::BatchError> {
                    #b::Batch::queue(self.client(), &#methods_mod::#konst, &[], requests, options).await
                }
            }
        })
        .collect();
    if !queue_fns.is_empty() {
        let client = format_ident!("{}Client", camel);
        out.extend(quote! {
            impl #client {
                #(#queue_fns)*
            }
        });
    }

    let durable_fns: Vec<TokenStream> = methods
        .iter()
        .filter(|m| m.model.durable.is_some())
        .map(|m| {
            let snake = &m.model.snake;
            let wire = &m.model.wire_name;
            let (input, output) = (m.input, m.output);
            let batch = format_ident!("batch_{}", snake);
            let resume = format_ident!("resume_batch_{}", snake);
            let attach = format_ident!("attach_batch_{}", snake);
            let options = format_ident!("batch_{}_options", snake);
            let task_options = format_ident!("{}_options", snake);
            let doc_options = format!(" Batch options carrying the declared task defaults of `{wire}`.");
            let doc_batch = format!(
                " Enqueues one durable `{wire}` task per request as one batch (start the options from [`Self::{options}`]): results stream back as they complete; keep the batch ID to resume after a restart."
            );
            let doc_resume = format!(
                " Re-attaches to `{wire}` batch `batch_id` with its requests: yields what finished meanwhile, awaits the rest, enqueues what was never enqueued."
            );
            let doc_attach = format!(" Re-attaches to `{wire}` batch `batch_id` to gather its results.");
            quote! {
                #[doc = #doc_options]
                pub fn #options() -> #b::BatchOptions {
                    #b::BatchOptions::new().task(Self::#task_options().task)
                }

                #[doc = #doc_batch]
                ///
                /// # Errors
                /// An empty or oversized batch, a bad or used batch ID, or a carrier error.
                pub async fn #batch(
                    &self,
                    requests: impl ::core::iter::IntoIterator<Item = #input>,
                    options: #b::BatchOptions,
                ) -> ::core::result::Result<#b::Batch<#output>, #b::BatchError> {
                    #b::Batch::durable(self.inner(), #wire, requests, options).await
                }

                #[doc = #doc_resume]
                ///
                /// # Errors
                /// An unknown, cancelled or different batch, or a carrier error.
                pub async fn #resume(
                    &self,
                    batch_id: &str,
                    requests: impl ::core::iter::IntoIterator<Item = #input>,
                    options: #b::BatchOptions,
                ) -> ::core::result::Result<#b::Batch<#output>, #b::BatchError> {
                    #b::Batch::resume(self.inner(), batch_id, #wire, requests, options).await
                }

                #[doc = #doc_attach]
                ///
                /// # Errors
                /// An unknown or cancelled batch, or a carrier error.
                pub async fn #attach(
                    &self,
                    batch_id: &str,
                    options: #b::BatchOptions,
                ) -> ::core::result::Result<#b::Batch<#output>, #b::BatchError> {
                    #b::Batch::attach(self.inner(), batch_id, options).await
                }
            }
        })
        .collect();
    if !durable_fns.is_empty() {
        let client = format_ident!("{}DurableClient", camel);
        out.extend(quote! {
            impl #client {
                #(#durable_fns)*
            }
        });
    }
    out
}
