//! What the generator knows about each psrpc service: the method options read from the
//! descriptors (prost drops extensions, so they come from prost-reflect), checked once before
//! any code is generated.

use std::collections::{BTreeMap, HashMap};

use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, ServiceDescriptor, Value};

use crate::Error;
use crate::names::{go_camel_case, is_identifier_like, shouty, snake, upper_camel};

/// Full name of the options extension.
const OPTIONS_EXTENSION: &str = "psrpc.options";

/// How a method is routed, after resolving the deprecated spellings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Routing {
    Queue,
    Affinity,
    Multi,
}

/// What a method is, from the caller's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One server answers (QUEUE or AFFINITY routing).
    Unary,
    /// Every server answers.
    Multi,
    /// Servers publish, clients subscribe.
    Subscription,
    /// A bidirectional stream with one server.
    Stream,
}

/// One topic parameter of a method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicParam {
    /// The parameter name in snake case.
    pub name: String,
    /// The generic type parameter (`RegionTopicType`) when the topics are typed.
    pub type_param: Option<String>,
}

/// One method, checked.
#[derive(Clone, Debug)]
pub(crate) struct MethodModel {
    /// The rpc name as written.
    pub proto_name: String,
    /// The method name on the wire.
    pub wire_name: String,
    /// The rpc name in snake case (unescaped).
    pub snake: String,
    pub kind: Kind,
    pub routing: Routing,
    pub single_server: bool,
    /// `None` for methods without topics.
    pub topics: Option<Vec<TopicParam>>,
    /// The topic group (snake case), if any.
    pub group: Option<String>,
    /// `option idempotency_level = NO_SIDE_EFFECTS` or `IDEMPOTENT`: calls may be retried
    /// after a timeout.
    pub idempotent: bool,
}

/// One service, checked.
#[derive(Clone, Debug)]
pub(crate) struct ServiceModel {
    /// The service name on the wire.
    pub wire_name: String,
    pub methods: Vec<MethodModel>,
}

impl ServiceModel {
    /// The distinct typed topic parameters of the service, in order of first use.
    pub(crate) fn type_params(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for param in self.methods.iter().flat_map(|m| m.topics.iter().flatten()) {
            if let Some(tp) = &param.type_param
                && !out.contains(tp)
            {
                out.push(tp.clone());
            }
        }
        out
    }

    /// The topic groups: name, shared parameters, member methods.
    pub(crate) fn groups(&self) -> Vec<(String, Vec<TopicParam>, Vec<&MethodModel>)> {
        let mut out: Vec<(String, Vec<TopicParam>, Vec<&MethodModel>)> = Vec::new();
        for method in &self.methods {
            let (Some(group), Some(params)) = (&method.group, &method.topics) else {
                continue;
            };
            match out.iter_mut().find(|(g, _, _)| g == group) {
                Some((_, _, members)) => members.push(method),
                None => out.push((group.clone(), params.clone(), vec![method])),
            }
        }
        out
    }
}

/// Services by (proto package, proto service name).
pub(crate) type Services = HashMap<(String, String), ServiceModel>;

/// Reads and checks every service of the pool.
pub(crate) fn read_services(pool: &DescriptorPool) -> Result<Services, Error> {
    let extension = pool.get_extension_by_name(OPTIONS_EXTENSION);
    let mut services = HashMap::new();
    let mut package_names: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for service in pool.services() {
        let model = read_service(&service, extension.as_ref())?;
        let package = service.package_name().to_owned();
        package_names
            .entry(package.clone())
            .or_default()
            .push((service.name().to_owned(), file_of(&service)));
        services.insert((package, service.name().to_owned()), model);
    }
    for (package, names) in &package_names {
        check_package_names(pool, package, names)?;
    }
    Ok(services)
}

fn file_of(service: &ServiceDescriptor) -> String {
    service.parent_file().name().to_owned()
}

fn read_service(
    service: &ServiceDescriptor,
    extension: Option<&prost_reflect::ExtensionDescriptor>,
) -> Result<ServiceModel, Error> {
    let mut methods = Vec::new();
    for method in service.methods() {
        let options = extension
            .filter(|ext| method.options().has_extension(ext))
            .and_then(|ext| method.options().get_extension(ext).as_message().cloned());
        methods.push(read_method(&method, options.as_ref())?);
    }
    let model = ServiceModel {
        wire_name: go_camel_case(service.name()),
        methods,
    };
    check_service(service, &model)?;
    Ok(model)
}

fn flag(msg: &DynamicMessage, name: &str) -> bool {
    msg.get_field_by_name(name)
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

fn method_error(method: &MethodDescriptor, reason: impl Into<String>) -> Error {
    Error::InvalidMethod {
        file: method.parent_file().name().to_owned(),
        service: method.parent_service().name().to_owned(),
        method: method.name().to_owned(),
        reason: reason.into(),
    }
}

fn read_method(
    method: &MethodDescriptor,
    options: Option<&DynamicMessage>,
) -> Result<MethodModel, Error> {
    // No psrpc options at all: every field has its default.
    let Some(options) = options else {
        return finish_method(method, &Options::default(), None);
    };
    let params = options
        .has_field_by_name("topic_params")
        .then(|| options.get_field_by_name("topic_params"))
        .flatten()
        .and_then(|v| v.as_message().cloned());
    // The deprecated oneof wins over `type` when present, as in Go.
    let routing = if options.has_field_by_name("multi") {
        if flag(options, "multi") {
            Routing::Multi
        } else {
            Routing::Queue
        }
    } else if options.has_field_by_name("affinity_func") {
        if flag(options, "affinity_func") {
            Routing::Affinity
        } else {
            Routing::Queue
        }
    } else if options.has_field_by_name("queue") {
        Routing::Queue
    } else {
        match options
            .get_field_by_name("type")
            .and_then(|v| v.as_enum_number())
        {
            Some(1) => Routing::Affinity,
            Some(2) => Routing::Multi,
            _ => Routing::Queue,
        }
    };
    let opts = Options {
        subscription: flag(options, "subscription"),
        topics: flag(options, "topics"),
        stream: flag(options, "stream"),
        routing,
    };
    finish_method(method, &opts, params)
}

/// The options of a method in plain form.
struct Options {
    subscription: bool,
    topics: bool,
    stream: bool,
    routing: Routing,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            subscription: false,
            topics: false,
            stream: false,
            routing: Routing::Queue,
        }
    }
}

fn finish_method(
    method: &MethodDescriptor,
    opts: &Options,
    params: Option<DynamicMessage>,
) -> Result<MethodModel, Error> {
    let fail = |reason: &str| Err(method_error(method, reason));
    if method.is_client_streaming() || method.is_server_streaming() {
        if opts.subscription {
            return fail(
                "a subscription cannot use streaming types; remove `stream` from its input and output",
            );
        }
        return fail(
            "psrpc does not use gRPC streaming types; declare `option (psrpc.options).stream = true` with plain types instead",
        );
    }
    if opts.stream {
        if opts.routing == Routing::Multi {
            return fail("a stream cannot be MULTI: a stream talks to one server");
        }
        if opts.subscription {
            return fail("a method cannot be both a subscription and a stream");
        }
        if opts.routing == Routing::Affinity {
            return fail(
                "AFFINITY streams are not supported yet: the psrpc runtime has no stream affinity function; use QUEUE",
            );
        }
    }
    if opts.subscription && opts.routing == Routing::Affinity {
        return fail("a subscription cannot use AFFINITY routing; use QUEUE or MULTI");
    }
    if params.is_some() && !opts.topics {
        return fail("`topic_params` is set but `topics` is not; add `topics: true`");
    }
    let names: Vec<String> = params
        .as_ref()
        .and_then(|p| p.get_field_by_name("names"))
        .and_then(|v| {
            v.as_list().map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
        })
        .unwrap_or_default();
    let typed = params.as_ref().is_some_and(|p| flag(p, "typed"));
    let single_server = params.as_ref().is_some_and(|p| flag(p, "single_server"));
    let group = params
        .as_ref()
        .and_then(|p| p.get_field_by_name("group"))
        .and_then(|v| v.as_str().map(str::to_owned))
        .filter(|g| !g.is_empty());
    if single_server && opts.routing == Routing::Affinity {
        return fail(
            "`single_server` skips the claim exchange that AFFINITY routing needs; use one or the other",
        );
    }
    if single_server && opts.subscription {
        return fail("`single_server` has no meaning for a subscription");
    }
    if group.is_some() && opts.subscription {
        return fail("a subscription cannot be in a topic group: only handlers are registered");
    }
    let topics = if opts.topics {
        // Go's generator uses one parameter `topic` when no names are given.
        let names = if names.is_empty() {
            vec!["topic".to_owned()]
        } else {
            names
        };
        let mut params: Vec<TopicParam> = Vec::new();
        for name in &names {
            if !is_identifier_like(name) {
                return fail(&format!(
                    "topic parameter name {name:?} is not an identifier"
                ));
            }
            let param = TopicParam {
                name: snake(name),
                type_param: typed.then(|| format!("{}TopicType", upper_camel(name))),
            };
            if params.iter().any(|p| p.name == param.name) {
                return fail(&format!(
                    "topic parameter names collide after conversion to snake case: {:?}",
                    param.name
                ));
            }
            if matches!(param.name.as_str(), "req" | "opts" | "msg") {
                return fail(&format!(
                    "topic parameter name {:?} is reserved by the generated code",
                    param.name
                ));
            }
            params.push(param);
        }
        Some(params)
    } else {
        None
    };
    if !is_identifier_like(method.name()) {
        return fail("the method name is not an identifier");
    }
    let kind = if opts.subscription {
        Kind::Subscription
    } else if opts.stream {
        Kind::Stream
    } else if opts.routing == Routing::Multi {
        Kind::Multi
    } else {
        Kind::Unary
    };
    Ok(MethodModel {
        proto_name: method.name().to_owned(),
        wire_name: go_camel_case(method.name()),
        snake: snake(method.name()),
        kind,
        routing: opts.routing,
        single_server,
        topics,
        group: group.map(|g| snake(&g)),
        idempotent: idempotency_level(method) > 0,
    })
}

/// The standard `idempotency_level` method option: 0 unknown, 1 no side effects, 2 idempotent.
fn idempotency_level(method: &MethodDescriptor) -> i32 {
    let options = method.options();
    if !options.has_field_by_name("idempotency_level") {
        return 0;
    }
    options
        .get_field_by_name("idempotency_level")
        .and_then(|v| v.as_enum_number())
        .unwrap_or(0)
}

/// Rejects names that collide once converted, within a service.
fn check_service(service: &ServiceDescriptor, model: &ServiceModel) -> Result<(), Error> {
    let service_error = |reason: String| Error::InvalidService {
        file: file_of(service),
        service: service.name().to_owned(),
        reason,
    };
    // Generated names per namespace, each with the rpc it comes from.
    let mut client: HashMap<String, String> = ["new", "with_options", "from_client", "client"]
        .into_iter()
        .map(|n| (n.to_owned(), "(generated)".to_owned()))
        .collect();
    let mut server_impl: HashMap<String, String> = HashMap::new();
    let mut server: HashMap<String, String> = [
        "new",
        "with_options",
        "with_server",
        "server",
        "implementation",
        "shutdown",
        "kill",
    ]
    .into_iter()
    .map(|n| (n.to_owned(), "(generated)".to_owned()))
    .collect();
    let mut consts: HashMap<String, String> =
        [("SERVICE".to_owned(), "(generated)".to_owned())].into();
    let mut wire: HashMap<String, String> = HashMap::new();
    let insert = |set: &mut HashMap<String, String>,
                  name: String,
                  owner: &str|
     -> Result<(), Error> {
        match set.get(&name) {
            Some(other) => Err(service_error(format!(
                "method {owner} and {other} both generate `{name}`: the names collide after case conversion"
            ))),
            None => {
                set.insert(name, owner.to_owned());
                Ok(())
            }
        }
    };
    for m in &model.methods {
        let owner = m.proto_name.as_str();
        insert(&mut wire, m.wire_name.clone(), owner)?;
        insert(&mut consts, shouty(&m.snake), owner)?;
        match m.kind {
            Kind::Subscription => {
                insert(&mut client, format!("subscribe_{}", m.snake), owner)?;
                insert(&mut server, format!("publish_{}", m.snake), owner)?;
            }
            Kind::Unary | Kind::Multi | Kind::Stream => {
                insert(&mut client, m.snake.clone(), owner)?;
                insert(&mut server_impl, m.snake.clone(), owner)?;
                if m.routing == Routing::Affinity {
                    insert(&mut server_impl, format!("{}_affinity", m.snake), owner)?;
                }
                if m.topics.is_some() {
                    insert(&mut server, format!("register_{}_topic", m.snake), owner)?;
                    insert(&mut server, format!("deregister_{}_topic", m.snake), owner)?;
                }
            }
        }
    }
    let mut groups: HashMap<String, Vec<TopicParam>> = HashMap::new();
    for m in &model.methods {
        let (Some(group), Some(params)) = (&m.group, &m.topics) else {
            continue;
        };
        match groups.get(group) {
            Some(first) if first != params => {
                return Err(service_error(format!(
                    "all members of topic group {group:?} must have the same topic parameters; {} differs",
                    m.proto_name
                )));
            }
            Some(_) => {}
            None => {
                groups.insert(group.clone(), params.clone());
                insert(
                    &mut server,
                    format!("register_all_{group}_topics"),
                    &m.proto_name,
                )?;
                insert(
                    &mut server,
                    format!("deregister_all_{group}_topics"),
                    &m.proto_name,
                )?;
            }
        }
    }
    Ok(())
}

/// Rejects generated package-level names that collide with each other or with prost's.
fn check_package_names(
    pool: &DescriptorPool,
    package: &str,
    services: &[(String, String)],
) -> Result<(), Error> {
    // prost's names at package level: types in UpperCamel, modules of nested types in snake.
    let mut taken: HashMap<String, String> = HashMap::new();
    for msg in pool.all_messages() {
        if msg.package_name() == package && msg.parent_message().is_none() {
            taken.insert(upper_camel(msg.name()), format!("message {}", msg.name()));
            taken.insert(snake(msg.name()), format!("message {}", msg.name()));
        }
    }
    for en in pool.all_enums() {
        if en.package_name() == package && en.parent_message().is_none() {
            taken.insert(upper_camel(en.name()), format!("enum {}", en.name()));
        }
    }
    for (service, file) in services {
        let camel = upper_camel(service);
        let generated = [
            format!("{camel}Client"),
            format!("{camel}ServerImpl"),
            format!("{camel}Server"),
            format!("{}_methods", snake(service)),
        ];
        for name in generated {
            if let Some(other) = taken.get(&name) {
                return Err(Error::InvalidService {
                    file: file.clone(),
                    service: service.clone(),
                    reason: format!(
                        "the generated name `{name}` collides with {other} after case conversion"
                    ),
                });
            }
            taken.insert(name, format!("service {service}"));
        }
    }
    Ok(())
}
