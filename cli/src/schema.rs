//! The `.proto` given with `--proto`, compiled at run time: services, methods, their psrpc
//! options, and JSON ⇄ protobuf for their messages.

use std::path::{Path, PathBuf};

use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, ReflectMessage,
    SerializeOptions,
};
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};

use crate::Fail;

/// Serves the psrpc options under both spellings, so users need not have them.
struct EmbeddedOptions;

impl FileResolver for EmbeddedOptions {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match name {
            "psrpc/options.proto" | "options.proto" => {
                File::from_source(name, psrpc_build_options::OPTIONS)
            }
            "psrpc/durable.proto" => File::from_source(name, psrpc_build_options::DURABLE),
            _ => Err(protox::Error::file_not_found(name)),
        }
    }
}

mod psrpc_build_options {
    pub(super) const OPTIONS: &str = include_str!("../../options-proto/psrpc/options.proto");
    pub(super) const DURABLE: &str = include_str!("../../options-proto/psrpc/durable.proto");
}

/// How a method travels, read from its psrpc options.
#[derive(Clone, Debug)]
pub(crate) struct Method {
    /// psrpc's service name (the proto service's short name).
    pub(crate) service: String,
    pub(crate) info: psrpc::MethodInfo,
    pub(crate) stream: bool,
    pub(crate) input: MessageDescriptor,
    pub(crate) output: MessageDescriptor,
    pub(crate) pool: DescriptorPool,
}

/// Compiles `proto` (with `includes` and its own directory) and finds `SERVICE.METHOD`.
pub(crate) fn load(proto: &Path, includes: &[PathBuf], target: &str) -> Result<Method, Fail> {
    let (service_name, method_name) = target
        .rsplit_once('.')
        .filter(|(s, m)| !s.is_empty() && !m.is_empty())
        .ok_or_else(|| format!("method must be SERVICE.METHOD, got {target:?}"))?;
    if !proto.is_file() {
        return Err(format!("no such .proto file: {}", proto.display()));
    }
    let dir = proto
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut chain = ChainFileResolver::new();
    for include in includes.iter().chain(std::iter::once(&dir)) {
        chain.add(IncludeFileResolver::new(include.clone()));
    }
    chain.add(GoogleFileResolver::new());
    chain.add(EmbeddedOptions);
    let name = proto
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("bad file name: {}", proto.display()))?;
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true);
    compiler
        .open_file(name)
        .map_err(|err| format!("cannot compile {}: {err}", proto.display()))?;
    let pool = compiler.descriptor_pool();
    let service = pool
        .services()
        .find(|s| s.full_name() == service_name || s.name() == service_name)
        .ok_or_else(|| {
            let known: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
            format!(
                "unknown service {service_name:?} in {} (it declares: {})",
                proto.display(),
                known.join(", ")
            )
        })?;
    let method = service
        .methods()
        .find(|m| m.name() == method_name)
        .ok_or_else(|| {
            let known: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
            format!(
                "unknown method {method_name:?} of {} (it has: {})",
                service.full_name(),
                known.join(", ")
            )
        })?;
    let (info, stream) = method_info(&pool, &method);
    Ok(Method {
        service: service.name().to_owned(),
        info,
        stream,
        input: method.input(),
        output: method.output(),
        pool,
    })
}

/// The runtime's description of a method, from its `(psrpc.options)`.
fn method_info(pool: &DescriptorPool, method: &MethodDescriptor) -> (psrpc::MethodInfo, bool) {
    // The runtime wants a 'static name; a CLI run makes one call.
    let name: &'static str = Box::leak(method.name().to_owned().into_boxed_str());
    let options = pool
        .get_extension_by_name("psrpc.options")
        .filter(|ext| method.options().has_extension(ext))
        .and_then(|ext| method.options().get_extension(&ext).as_message().cloned());
    let Some(options) = options else {
        return (psrpc::MethodInfo::unary(name), false);
    };
    let flag = |field: &str| {
        options.has_field_by_name(field)
            && options
                .get_field_by_name(field)
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
    };
    // The deprecated oneof wins over `type` when set (as Go reads it).
    let routing = if options.has_field_by_name("multi") {
        if flag("multi") { 2 } else { 0 }
    } else if options.has_field_by_name("affinity_func") {
        if flag("affinity_func") { 1 } else { 0 }
    } else if options.has_field_by_name("queue") {
        0
    } else {
        options
            .get_field_by_name("type")
            .and_then(|v| v.as_enum_number())
            .unwrap_or(0)
    };
    let info = if flag("subscription") {
        if routing == 0 {
            psrpc::MethodInfo::queue_subscription(name)
        } else {
            psrpc::MethodInfo::subscription(name)
        }
    } else {
        match routing {
            1 => psrpc::MethodInfo::affinity(name),
            2 => psrpc::MethodInfo::multi(name),
            _ => psrpc::MethodInfo::unary(name),
        }
    };
    (info, flag("stream"))
}

/// Parses `json` as a `desc` message.
pub(crate) fn from_json(desc: &MessageDescriptor, json: &str) -> Result<DynamicMessage, Fail> {
    let mut de = serde_json::Deserializer::from_str(json);
    let msg = DynamicMessage::deserialize(desc.clone(), &mut de)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|err| format!("JSON does not match {}: {err}", desc.full_name()))?;
    Ok(msg)
}

/// Decodes `bytes` as a `desc` message, as JSON.
pub(crate) fn to_json(desc: &MessageDescriptor, bytes: &[u8]) -> Result<serde_json::Value, Fail> {
    let msg = DynamicMessage::decode(desc.clone(), bytes)
        .map_err(|err| format!("answer is not a valid {}: {err}", desc.full_name()))?;
    message_json(&msg)
}

fn message_json(msg: &DynamicMessage) -> Result<serde_json::Value, Fail> {
    let options = SerializeOptions::new().skip_default_fields(false);
    msg.serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|err| format!("cannot print {}: {err}", msg.descriptor().full_name()))
}

/// An error detail as JSON: decoded when its type is in the pool, else its type and bytes.
pub(crate) fn detail_json(pool: &DescriptorPool, any: &prost_types::Any) -> serde_json::Value {
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if let Some(desc) = pool.get_message_by_name(name)
        && let Ok(serde_json::Value::Object(mut fields)) = to_json(&desc, &any.value)
    {
        fields.insert("@type".into(), any.type_url.clone().into());
        return serde_json::Value::Object(fields);
    }
    let hex: String = any.value.iter().map(|b| format!("{b:02x}")).collect();
    serde_json::json!({ "@type": any.type_url, "value_hex": hex })
}
