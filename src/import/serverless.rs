//! Serverless Framework `serverless.yml` → configuration: the `websocket` events of its
//! functions become routes, the functions `lambda` integrations.
//!
//! Variables are expanded first: `${self:a.b}`, `${opt:stage}` / `${opt:region}` (the
//! `--stage` / `--region` flags), `${sls:stage}`, `${env:NAME}` (the importing shell's
//! environment), `${aws:region}` / `${aws:accountId}`, with `, 'fallback'` alternatives and
//! nesting. Other sources (`ssm:`, `cf:`, `s3:`, `file(...)`) are left unresolved and
//! reported. CloudFormation intrinsics in values (`Ref: ConnectionsTable`) resolve against
//! `resources.Resources`, plus the resources Serverless itself would create: each function
//! as `<Name>LambdaFunction` and the API as `WebsocketsApi`.
//!
//! Serverless's own defaults apply: timeout 6 s, memory 1024 MB, function name
//! `<service>-<stage>-<function>`, code directory = the service directory, route selection
//! `$request.body.action`.

use std::collections::BTreeSet;

use super::intrinsics::{Pseudo, Resolver, UNRESOLVED, resource_type};
use super::report::Report;
use super::sam::{
    NO_MANAGE_CONNECTIONS, environment, grants_manage_connections, valid_stage, why_not,
};
use super::template::{Map, Node};
use super::write::{Authorizer, Config, Integration, Kind, Lambda, Management, Route};
use super::{Dirs, Names, Options, Refusal, check_runtime};

/// Serverless's defaults.
const DEFAULT_TIMEOUT_SECS: f64 = 6.0;
const DEFAULT_MEMORY_MB: u64 = 1024;
const DEFAULT_IDENTITY_SOURCE: &str = "route.request.header.Auth";

/// How deep variables may refer to each other before expansion stops.
const MAX_DEPTH: usize = 32;

/// Function keys the import reads.
const FUNCTION_READ: &[&str] = &[
    "handler",
    "runtime",
    "timeout",
    "memorySize",
    "environment",
    "name",
    "events",
    "description",
    "tags",
];

/// Translates a parsed `serverless.yml`.
pub(crate) fn translate(
    raw: &Node,
    file_name: &str,
    dirs: &Dirs,
    options: &Options,
) -> Result<(Config, Report), Refusal> {
    let mut report = Report::new(format!("{file_name} (Serverless Framework)"));
    let mut vars = Variables {
        doc: raw,
        options,
        stage: options.stage.clone().unwrap_or_else(|| "dev".into()),
        region: options.region.clone().unwrap_or_else(|| "us-east-1".into()),
    };
    let provider = |key: &str| raw.get("provider").and_then(|p| p.get(key));
    if options.stage.is_none()
        && let Some(stage) = provider("stage")
    {
        vars.stage = vars.text(stage, "provider.stage", &mut report, "dev");
    }
    if options.region.is_none()
        && let Some(region) = provider("region")
    {
        vars.region = vars.text(region, "provider.region", &mut report, "us-east-1");
    }
    let doc = vars.expand(raw, 0);
    let service = match doc.get("service") {
        Some(Node::String(s)) => s.clone(),
        // Serverless v1 allowed `service: {name: …}`.
        Some(node) => node
            .get("name")
            .and_then(Node::as_str)
            .unwrap_or("service")
            .to_owned(),
        None => {
            return Err(Refusal::Invalid(
                "not a serverless.yml: no `service`".into(),
            ));
        }
    };
    let stage = vars.stage.clone();
    let provider = doc
        .get("provider")
        .cloned()
        .unwrap_or(Node::Map(Map::new()));
    let Some(functions) = doc.get("functions").and_then(Node::as_map) else {
        return Err(Refusal::NotWebSocket("no `functions`".into()));
    };
    let has_websocket = functions
        .iter()
        .any(|(_, f)| !websocket_events(f).is_empty());
    if !has_websocket {
        return Err(Refusal::NotWebSocket(
            "no function has a `websocket` event".into(),
        ));
    }
    if let Some(name) = provider.get("name").and_then(Node::as_str)
        && name != "aws"
    {
        return Err(Refusal::Invalid(format!(
            "provider.name is {name:?}: only aws has WebSocket APIs"
        )));
    }

    // CloudFormation resources for intrinsics: the file's own and the ones Serverless adds.
    let cfn = doc
        .get("resources")
        .cloned()
        .unwrap_or(Node::Map(Map::new()));
    let mut resources = cfn
        .get("Resources")
        .and_then(Node::as_map)
        .cloned()
        .unwrap_or_default();
    let own: BTreeSet<String> = resources.iter().map(|(id, _)| id.to_owned()).collect();
    for (key, function) in functions.iter() {
        let name = function_name(&service, &stage, key, function);
        let mut props = Map::new();
        props.insert("FunctionName", Node::String(name));
        let mut resource = Map::new();
        resource.insert("Type", Node::String("AWS::Lambda::Function".into()));
        resource.insert("Properties", Node::Map(props));
        resources.insert(
            format!("{}LambdaFunction", normalize(key)),
            Node::Map(resource),
        );
    }
    let mut api = Map::new();
    api.insert("Type", Node::String("AWS::ApiGatewayV2::Api".into()));
    resources.insert("WebsocketsApi", Node::Map(api));
    let pseudo = Pseudo {
        region: vars.region.clone(),
        stack_name: format!("{service}-{stage}"),
        ..Pseudo::default()
    };
    let r = Resolver::new(&cfn, &resources, &pseudo);

    let mut names = Names::default();
    let mut routes: Vec<Route> = Vec::new();
    let mut integrations = Vec::new();
    let mut authorizers = Vec::new();
    let mut authorizer_functions = BTreeSet::new();
    for (key, function) in functions.iter() {
        let events = websocket_events(function);
        for other in other_events(function) {
            report.skip(
                format!("function {key} event {other}"),
                "only websocket events are translated",
            );
        }
        if events.is_empty() {
            continue;
        }
        let lambda = match lambda(
            &r,
            &service,
            &stage,
            key,
            function,
            &provider,
            dirs,
            &mut report,
        ) {
            Ok(lambda) => lambda,
            Err(why) => {
                report.skip(format!("function {key}"), &why);
                for event in &events {
                    report.skip(
                        format!("route {}", event.route),
                        format!("its function {key}: {why}"),
                    );
                }
                continue;
            }
        };
        let name = names.take(key);
        report.translated.push(format!(
            "integration {name}: lambda, function {key} ({}, {})",
            lambda.runtime, lambda.handler
        ));
        integrations.push(Integration {
            name: name.clone(),
            kind: Kind::Lambda(lambda),
        });
        for event in events {
            if routes.iter().any(|r| r.key == event.route) {
                report.skip(
                    format!("route {} of function {key}", event.route),
                    "another function already has this route",
                );
                continue;
            }
            if let Some(authorizer) = &event.authorizer {
                if event.route == "$connect" {
                    let (written, function) = authorizer_block(authorizer, functions, &mut report);
                    if let Some(function) = function {
                        authorizer_functions.insert(function);
                    }
                    report.skip(
                        format!("authorizer {}", written.name),
                        format!("not translated, because {}; a commented-out [auth] block is in the file; the route is open until [auth] is set", written.why),
                    );
                    authorizers.push(written);
                } else {
                    report.skip(
                        format!("route {} authorizer", event.route),
                        "an authorizer is allowed on $connect only",
                    );
                }
            }
            report.translated.push(format!(
                "route {} → integration {name}{}",
                event.route,
                if event.two_way {
                    " (two-way: routeResponseSelectionExpression $default)"
                } else {
                    ""
                }
            ));
            routes.push(Route {
                key: event.route,
                integration: name.clone(),
                two_way: event.two_way,
            });
        }
    }
    for function in &authorizer_functions {
        if let Some(f) = functions.get(function) {
            let variables = merged_environment(&provider, f);
            environment(&r, function, variables.as_ref(), &mut report);
        }
    }
    for (key, function) in functions.iter() {
        if websocket_events(function).is_empty() && !authorizer_functions.contains(key) {
            report.skip(format!("function {key}"), "no websocket event");
        }
    }

    explain_variables(raw, &mut report);
    if !integrations
        .iter()
        .any(|i| matches!(&i.kind, Kind::Lambda(l) if l.manage_connections))
    {
        report.notes.push(NO_MANAGE_CONNECTIONS.into());
    }

    let route_selection_expression = match provider.get("websocketsApiRouteSelectionExpression") {
        Some(node) => match r.string(node, &mut Vec::new()) {
            Ok(expression) => Some(expression),
            Err(why) => {
                report.skip("provider.websocketsApiRouteSelectionExpression", why.0);
                None
            }
        },
        None => Some("$request.body.action".to_owned()),
    };
    let stages = if valid_stage(&stage) {
        report.translated.push(format!("stage {stage}"));
        vec![stage.clone()]
    } else {
        report.skip(
            format!("stage {stage:?}"),
            "a stage name must be 1-128 characters of A-Z a-z 0-9 - _",
        );
        Vec::new()
    };
    for key in ["iam", "iamRoleStatements", "iamManagedPolicies", "role"] {
        if provider.get(key).is_some() {
            report.skip(
                format!("provider.{key}"),
                "IAM does not exist here: the functions run with the AWS credentials you give them",
            );
        }
    }
    if provider
        .get("logs")
        .and_then(|l| l.get("websocket"))
        .is_some()
    {
        report.skip("provider.logs.websocket", "see [access_log]");
    }
    if let Some(plugins) = doc.get("plugins").and_then(Node::as_list) {
        for plugin in plugins.iter().filter_map(Node::scalar_text) {
            report.skip(format!("plugin {plugin}"), "plugins are not run");
        }
    }
    for (id, resource) in resources.iter().filter(|(id, _)| own.contains(*id)) {
        let ty = resource_type(resource);
        report.skip(format!("{id} ({ty})"), why_not(ty));
    }
    if let Some(outputs) = cfn.get("Outputs").and_then(Node::as_map) {
        for (id, _) in outputs.iter() {
            report.skip(
                format!("output {id}"),
                "outputs describe the AWS deployment",
            );
        }
    }
    Ok((
        Config {
            stages,
            route_selection_expression,
            routes,
            integrations,
            authorizers,
            management: Management {
                region: vars.region.clone(),
                access_key: options.access_key.clone(),
            },
        },
        report,
    ))
}

/// Says, for each environment value that came from Serverless variables, what was written
/// (`${self:custom.tableName}`), since the expansion left no other trace.
fn explain_variables(raw: &Node, report: &mut Report) {
    for line in report.environment.iter_mut().filter(|l| l.how.is_empty()) {
        let written = raw
            .get("functions")
            .and_then(|f| f.get(&line.function))
            .and_then(|f| f.get("environment"))
            .and_then(|e| e.get(&line.name))
            .or_else(|| {
                raw.get("provider")
                    .and_then(|p| p.get("environment"))
                    .and_then(|e| e.get(&line.name))
            });
        if let Some(Node::String(text)) = written
            && text.contains("${")
        {
            line.how.push(format!("expanded from {text}"));
        }
    }
}

/// One `websocket` event.
#[derive(Debug, Clone, PartialEq)]
struct WebsocketEvent {
    /// The route key.
    route: String,
    /// `routeResponseSelectionExpression: $default`.
    two_way: bool,
    /// The `authorizer` value, as written.
    authorizer: Option<Node>,
}

fn events(function: &Node) -> &[Node] {
    function
        .get("events")
        .and_then(Node::as_list)
        .unwrap_or(&[])
}

fn websocket_events(function: &Node) -> Vec<WebsocketEvent> {
    let mut out = Vec::new();
    for event in events(function) {
        match event.get("websocket") {
            Some(Node::String(route)) => out.push(WebsocketEvent {
                route: route.clone(),
                two_way: false,
                authorizer: None,
            }),
            Some(Node::Map(m)) => {
                let Some(route) = m.get("route").and_then(Node::scalar_text) else {
                    continue;
                };
                out.push(WebsocketEvent {
                    route,
                    two_way: m
                        .get("routeResponseSelectionExpression")
                        .and_then(Node::as_str)
                        == Some("$default"),
                    authorizer: m.get("authorizer").cloned(),
                });
            }
            _ => {}
        }
    }
    out
}

fn other_events(function: &Node) -> Vec<String> {
    events(function)
        .iter()
        .filter_map(Node::as_map)
        .flat_map(|m| m.iter().map(|(k, _)| k.to_owned()).collect::<Vec<_>>())
        .filter(|k| k != "websocket")
        .collect()
}

/// The function's deployed name: `name`, else `<service>-<stage>-<key>`.
fn function_name(service: &str, stage: &str, key: &str, function: &Node) -> String {
    function
        .get("name")
        .and_then(Node::scalar_text)
        .unwrap_or_else(|| format!("{service}-{stage}-{key}"))
}

/// Serverless's logical-id normalization: first letter up, `-` → `Dash`, `_` → `Underscore`.
fn normalize(key: &str) -> String {
    let mut out = String::new();
    for (i, c) in key.chars().enumerate() {
        match c {
            '-' => out.push_str("Dash"),
            '_' => out.push_str("Underscore"),
            c if i == 0 => out.extend(c.to_uppercase()),
            c => out.push(c),
        }
    }
    out
}

/// `provider.environment` with the function's `environment` over it.
fn merged_environment(provider: &Node, function: &Node) -> Option<Node> {
    let global = provider.get("environment").and_then(Node::as_map);
    let local = function.get("environment").and_then(Node::as_map);
    if global.is_none() && local.is_none() {
        return None;
    }
    let mut out = global.cloned().unwrap_or_default();
    for (k, v) in local.into_iter().flat_map(Map::iter) {
        out.insert(k, v.clone());
    }
    Some(Node::Map(out))
}

#[allow(clippy::too_many_arguments)]
fn lambda(
    r: &Resolver<'_>,
    service: &str,
    stage: &str,
    key: &str,
    function: &Node,
    provider: &Node,
    dirs: &Dirs,
    report: &mut Report,
) -> Result<Lambda, String> {
    let text = |node: Option<&Node>, what: &str| -> Result<Option<String>, String> {
        node.map(|n| r.string(n, &mut Vec::new()))
            .transpose()
            .map_err(|why| format!("its {what} cannot be resolved: {why}"))
    };
    if function.get("image").is_some() {
        return Err(
            "a container image function (image): the lambda integration runs code from a directory"
                .into(),
        );
    }
    let handler = text(function.get("handler"), "handler")?.ok_or("no handler")?;
    let runtime = text(
        function.get("runtime").or_else(|| provider.get("runtime")),
        "runtime",
    )?
    .ok_or("no runtime (set provider.runtime or the function's runtime)")?;
    check_runtime(&runtime)?;
    let number = |node: Option<&Node>, what: &str| -> Result<Option<f64>, String> {
        match text(node, what)? {
            Some(t) => t
                .trim()
                .parse::<f64>()
                .map(Some)
                .map_err(|_| format!("{what} {t:?} is not a number")),
            None => Ok(None),
        }
    };
    let timeout = number(
        function.get("timeout").or_else(|| provider.get("timeout")),
        "timeout",
    )?
    .unwrap_or(DEFAULT_TIMEOUT_SECS);
    let memory = number(
        function
            .get("memorySize")
            .or_else(|| provider.get("memorySize")),
        "memorySize",
    )?
    .map_or(DEFAULT_MEMORY_MB, |m| m as u64);
    let package = function.get("package").or_else(|| provider.get("package"));
    if let Some(artifact) = package.and_then(|p| p.get("artifact")) {
        report.skip(
            format!("function {key} package.artifact"),
            format!(
                "{}: the code directory is the service directory; unpack the artifact there if it differs",
                artifact.scalar_text().unwrap_or_default()
            ),
        );
    }
    let variables = merged_environment(provider, function);
    let environment = environment(r, key, variables.as_ref(), report);
    let manage_connections = [
        provider.get("iam"),
        provider.get("iamRoleStatements"),
        function.get("iamRoleStatements"),
    ]
    .into_iter()
    .flatten()
    .any(grants_manage_connections);
    if manage_connections {
        report.notes.push(format!(
            "function {key} is allowed execute-api:ManageConnections: its environment gets the [management.sigv4] key pair as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        ));
    }
    let skipped: Vec<&str> = function
        .as_map()
        .into_iter()
        .flat_map(Map::iter)
        .map(|(k, _)| k)
        .filter(|k| !FUNCTION_READ.contains(k) && *k != "package")
        .collect();
    if !skipped.is_empty() {
        report.skip(
            format!("function {key} {}", skipped.join(", ")),
            "not translated",
        );
    }
    Ok(Lambda {
        runtime,
        handler,
        code_dir: dirs.code_dir("."),
        timeout_ms: (timeout * 1000.0).round() as u64,
        memory_mb: memory,
        function_name: function_name(service, stage, key, function),
        environment,
        manage_connections,
    })
}

/// A commented-out authorizer from a `websocket` event's `authorizer` (a function name, an
/// ARN, or `{name|arn, identitySource}`), and the function of this file it names.
fn authorizer_block(
    value: &Node,
    functions: &Map,
    report: &mut Report,
) -> (Authorizer, Option<String>) {
    let (target, sources) = match value {
        Node::Map(m) => (
            m.get("name")
                .or_else(|| m.get("arn"))
                .and_then(Node::scalar_text),
            match m.get("identitySource") {
                Some(Node::List(items)) => items.iter().filter_map(Node::scalar_text).collect(),
                Some(other) => other.scalar_text().into_iter().collect(),
                None => vec![DEFAULT_IDENTITY_SOURCE.to_owned()],
            },
        ),
        other => (
            other.scalar_text(),
            vec![DEFAULT_IDENTITY_SOURCE.to_owned()],
        ),
    };
    let target = target.unwrap_or_else(|| "authorizer".to_owned());
    let mut accepted = Vec::new();
    for source in sources {
        if source.starts_with("route.request.header.")
            || source.starts_with("route.request.querystring.")
        {
            accepted.push(source);
        } else {
            report.skip(
                format!("authorizer {target} identitySource {source}"),
                "the gateway's authorizer checks headers and query strings only",
            );
        }
    }
    let local = functions.get(&target).map(|f| (target.clone(), f));
    let function = match &local {
        Some((key, f)) => Some(format!(
            "{key} (handler {}{})",
            f.get("handler")
                .and_then(Node::scalar_text)
                .unwrap_or_default(),
            f.get("runtime")
                .and_then(Node::scalar_text)
                .map(|r| format!(", runtime {r}"))
                .unwrap_or_default()
        )),
        None => Some(format!("{target} (not a function of this file)")),
    };
    (
        Authorizer {
            name: target,
            why: "it calls a Lambda function, and [auth] can call an HTTP endpoint (authorizer = \"http\") or verify JWTs, not a lambda integration".into(),
            identity_sources: accepted,
            function,
        },
        local.map(|(k, _)| k),
    )
}

/// Expands Serverless variables over a document.
struct Variables<'a> {
    /// The document as written (`self:` refers to it).
    doc: &'a Node,
    /// `opt:` and `env:` come from here.
    options: &'a Options,
    /// `sls:stage` / `opt:stage`.
    stage: String,
    /// `aws:region` / `opt:region`.
    region: String,
}

impl Variables<'_> {
    /// `node` expanded to text, or `fallback` with a report line.
    fn text(&self, node: &Node, what: &str, report: &mut Report, fallback: &str) -> String {
        match self.expand(node, 0) {
            Node::Map(m) if m.get(UNRESOLVED).is_some() => {
                report.skip(
                    what,
                    format!(
                        "{}; {fallback:?} is used",
                        m.get(UNRESOLVED)
                            .and_then(Node::as_str)
                            .unwrap_or("unresolved")
                    ),
                );
                fallback.to_owned()
            }
            other => other.scalar_text().unwrap_or_else(|| fallback.to_owned()),
        }
    }

    /// Every string of `node` with its variables expanded; an unresolvable one becomes the
    /// private unresolved intrinsic, so whatever reads it reports why.
    fn expand(&self, node: &Node, depth: usize) -> Node {
        match node {
            Node::String(s) if s.contains("${") => match self.string(s, depth) {
                Ok(value) => value,
                Err(why) => Node::call(UNRESOLVED, Node::String(why)),
            },
            Node::List(items) => Node::List(items.iter().map(|i| self.expand(i, depth)).collect()),
            Node::Map(map) => Node::Map(
                map.iter()
                    .map(|(k, v)| (k.to_owned(), self.expand(v, depth)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// A string with `${…}` in it: a lone variable keeps its value's type, otherwise the
    /// pieces are joined as text.
    fn string(&self, s: &str, depth: usize) -> Result<Node, String> {
        if depth > MAX_DEPTH {
            return Err("variables nest too deeply (is there a cycle?)".into());
        }
        if s.starts_with("${") && closing(s) == Some(s.len() - 1) {
            return self.variable(&s[2..s.len() - 1], depth);
        }
        let mut out = String::new();
        let mut rest = s;
        while let Some(at) = rest.find("${") {
            let end = closing(&rest[at..]).ok_or_else(|| format!("{s:?}: `${{` without `}}`"))?;
            let inner = &rest[at + 2..at + end];
            let value = self.variable(inner, depth)?;
            let text = value
                .scalar_text()
                .ok_or_else(|| format!("${{{inner}}} is {}, inside a string", value.kind()))?;
            out.push_str(&rest[..at]);
            out.push_str(&text);
            rest = &rest[at + end + 1..];
        }
        out.push_str(rest);
        Ok(Node::String(out))
    }

    /// The value of what is inside `${…}`: alternatives separated by commas, the first
    /// that resolves wins.
    fn variable(&self, inner: &str, depth: usize) -> Result<Node, String> {
        // Nested variables inside the expression first (`${self:custom.${opt:stage}}`).
        let inner = if inner.contains("${") {
            match self.string(inner, depth + 1)? {
                Node::String(s) => s,
                other => other.scalar_text().unwrap_or_default(),
            }
        } else {
            inner.to_owned()
        };
        let mut first_error = None;
        for alternative in split_alternatives(&inner) {
            let alternative = alternative.trim();
            match self.source(alternative, depth) {
                Ok(value) => return Ok(value),
                Err(why) => {
                    first_error.get_or_insert(why);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| format!("${{{inner}}} is empty")))
    }

    fn source(&self, text: &str, depth: usize) -> Result<Node, String> {
        if let Some(quoted) = text
            .strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .or_else(|| text.strip_prefix('"').and_then(|t| t.strip_suffix('"')))
        {
            return Ok(Node::String(quoted.to_owned()));
        }
        if let Ok(n) = text.parse::<i64>() {
            return Ok(Node::Int(n));
        }
        let Some((source, path)) = text.split_once(':') else {
            return Err(format!("${{{text}}}: not a variable the import knows"));
        };
        match source {
            "self" => {
                let mut node = self.doc;
                for part in path.split('.').filter(|p| !p.is_empty()) {
                    node = node
                        .get(part)
                        .ok_or_else(|| format!("${{self:{path}}}: no such key"))?;
                }
                match self.expand(node, depth + 1) {
                    Node::Map(m) if m.get(UNRESOLVED).is_some() => Err(m
                        .get(UNRESOLVED)
                        .and_then(Node::as_str)
                        .unwrap_or("unresolved")
                        .to_owned()),
                    value => Ok(value),
                }
            }
            "opt" => match path {
                "stage" => self.options.stage.clone(),
                "region" => self.options.region.clone(),
                _ => None,
            }
            .map(Node::String)
            .ok_or_else(|| format!("${{opt:{path}}}: not given (--stage / --region are the options the import takes)")),
            "sls" if path == "stage" => Ok(Node::String(self.stage.clone())),
            "aws" if path == "region" => Ok(Node::String(self.region.clone())),
            "aws" if path == "accountId" => Ok(Node::String("000000000000".into())),
            "env" => self
                .options
                .env
                .get(path)
                .map(|v| Node::String(v.clone()))
                .ok_or_else(|| format!("${{env:{path}}}: not set in the environment")),
            other => Err(format!(
                "${{{other}:{path}}}: {other} variables are not resolved by the import"
            )),
        }
    }
}

/// The offset of the `}` closing the `${` at the start of `text`.
fn closing(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            depth += 1;
            i += 2;
            continue;
        }
        if bytes[i] == b'}' && depth > 0 {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

/// Splits `a, 'b, c', d` on the commas outside quotes and nested `${}`.
fn split_alternatives(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quote = None;
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match (c, quote) {
            ('\'' | '"', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            ('{', None) => depth += 1,
            ('}', None) => depth = depth.saturating_sub(1),
            (',', None) if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::super::template::parse_yaml;
    use super::super::write::AccessKey;
    use super::*;

    fn options() -> Options {
        Options {
            format: None,
            region: None,
            stack_name: None,
            stage: None,
            api: None,
            out_dir: PathBuf::from("."),
            env: BTreeMap::from([("TABLE".to_owned(), "from-env".to_owned())]),
            access_key: AccessKey {
                id: "AKIATEST".into(),
                secret: "secret".into(),
            },
        }
    }

    fn expand(doc: &str, value: &str, stage: Option<&str>) -> Node {
        let doc = parse_yaml(doc).unwrap();
        let mut opts = options();
        opts.stage = stage.map(str::to_owned);
        let vars = Variables {
            doc: &doc,
            options: &opts,
            stage: stage.unwrap_or("dev").to_owned(),
            region: "us-east-1".into(),
        };
        vars.expand(&Node::String(value.into()), 0)
    }

    const DOC: &str = "service: chat\nprovider: {stage: prod}\ncustom: {tables: {prod: chat-prod}, list: [a, b]}\n";

    fn s(text: &str) -> Node {
        Node::String(text.into())
    }

    #[test]
    fn variables_expand() {
        assert_eq!(expand(DOC, "${self:service}-conn", None), s("chat-conn"));
        assert_eq!(expand(DOC, "${opt:stage, 'dev'}", None), s("dev"));
        assert_eq!(expand(DOC, "${opt:stage, 'dev'}", Some("qa")), s("qa"));
        assert_eq!(
            expand(DOC, "${opt:stage, self:provider.stage}", None),
            s("prod")
        );
        assert_eq!(expand(DOC, "${sls:stage}", Some("qa")), s("qa"));
        assert_eq!(expand(DOC, "${env:TABLE}", None), s("from-env"));
        assert_eq!(expand(DOC, "${env:NOPE, \"dflt\"}", None), s("dflt"));
        assert_eq!(
            expand(DOC, "${self:custom.tables.${self:provider.stage}}", None),
            s("chat-prod")
        );
        assert_eq!(expand(DOC, "${aws:region}", None), s("us-east-1"));
        assert_eq!(
            expand(DOC, "${self:custom.list}", None),
            Node::List(vec![s("a"), s("b")])
        );
    }

    #[test]
    fn unknown_variables_are_marked_unresolved() {
        for value in [
            "${ssm:/chat/table}",
            "${opt:stage}",
            "${self:nope}",
            "${file(./x.yml)}",
        ] {
            let node = expand(DOC, value, None);
            assert!(node.get(UNRESOLVED).is_some(), "{value}: {node:?}");
        }
    }

    #[test]
    fn logical_ids_are_normalized() {
        assert_eq!(normalize("connectHandler"), "ConnectHandler");
        assert_eq!(normalize("send-message_x"), "SendDashmessageUnderscorex");
    }

    #[test]
    fn alternatives_split_outside_quotes() {
        assert_eq!(split_alternatives("a, 'b, c', d"), ["a", " 'b, c'", " d"]);
    }
}
