//! Code generation: typed psrpc clients and servers per service (through prost-build's
//! service generator hook, so type paths match prost's). Messages get their `prost::Name`
//! impls from prost-build itself (`enable_type_names`).
//!
//! Code is built as tokens with `quote` and printed with `prettyplease`: tokens cannot produce
//! unbalanced or mis-escaped code, and raw identifiers and doc strings are escaped for us.

mod client;
mod docs;
mod generics;
mod method;
mod server;

use std::cell::RefCell;
use std::rc::Rc;

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use crate::Error;
use crate::model::{ServiceModel, Services};
use crate::names::{shouty, snake, upper_camel};

use self::client::client_code;
use self::docs::docs;
use self::generics::Generics;
use self::method::Method;
use self::server::server_code;

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
            output_name: proto.output_proto_type.trim_start_matches('.').to_owned(),
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
