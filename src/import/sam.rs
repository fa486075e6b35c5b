//! SAM / CloudFormation → configuration: the WebSocket `AWS::ApiGatewayV2::Api`, its
//! routes, integrations, route responses, stages and authorizers, and the functions behind
//! them (`AWS::Serverless::Function` after `Globals.Function`, `AWS::Lambda::Function`).
//!
//! A route is followed as API Gateway would: `Target: integrations/<id>` → the
//! `AWS::ApiGatewayV2::Integration` → its `IntegrationUri` (the
//! `arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{arn}/invocations` form or
//! a bare ARN) → the function named after `:function:`. Anything that breaks that chain
//! drops the route into the report, with the reason; nothing here panics on a template.

use std::collections::{BTreeMap, BTreeSet};

use super::intrinsics::{Pseudo, Resolver, Unresolved, resource_type};
use super::report::{EnvLine, Report};
use super::template::{Map, Node};
use super::write::{Authorizer, Config, Integration, Kind, Lambda, Management, Route};
use super::{Dirs, Names, Options, Refusal, check_runtime};

const API: &str = "AWS::ApiGatewayV2::Api";
const ROUTE: &str = "AWS::ApiGatewayV2::Route";
const INTEGRATION: &str = "AWS::ApiGatewayV2::Integration";
const ROUTE_RESPONSE: &str = "AWS::ApiGatewayV2::RouteResponse";
const STAGE: &str = "AWS::ApiGatewayV2::Stage";
const AUTHORIZER: &str = "AWS::ApiGatewayV2::Authorizer";
const SAM_FUNCTION: &str = "AWS::Serverless::Function";
const LAMBDA_FUNCTION: &str = "AWS::Lambda::Function";

/// SAM's defaults for a function without `Timeout` / `MemorySize`.
const DEFAULT_TIMEOUT_SECS: f64 = 3.0;
const DEFAULT_MEMORY_MB: u64 = 128;

/// Function properties the import reads, and ones it skips without a word.
const FUNCTION_READ: &[&str] = &[
    "Handler",
    "Runtime",
    "CodeUri",
    "InlineCode",
    "Code",
    "Timeout",
    "MemorySize",
    "Environment",
    "FunctionName",
    "PackageType",
    "Description",
    "Tags",
];

/// Translates a parsed template.
pub(crate) fn translate(
    doc: &Node,
    file_name: &str,
    dirs: &Dirs,
    options: &Options,
) -> Result<(Config, Report), Refusal> {
    let Some(raw) = doc.get("Resources") else {
        return Err(Refusal::NotWebSocket(
            "the template has no Resources".into(),
        ));
    };
    let Some(raw) = raw.as_map() else {
        return Err(Refusal::Invalid("`Resources` is not a mapping".into()));
    };
    let is_sam = transforms(doc)
        .iter()
        .any(|t| t.starts_with("AWS::Serverless"));
    let mut report = Report::new(format!(
        "{file_name} ({})",
        if is_sam { "SAM" } else { "CloudFormation" }
    ));
    for transform in transforms(doc) {
        if !transform.starts_with("AWS::Serverless") {
            report.skip(
                format!("Transform {transform}"),
                "macros are not run: the template is read as written",
            );
        }
    }
    let pseudo = Pseudo {
        region: options.region.clone().unwrap_or_else(|| "us-east-1".into()),
        stack_name: options
            .stack_name
            .clone()
            .unwrap_or_else(|| "switchboard".into()),
        ..Pseudo::default()
    };
    let present = with_conditions(doc, raw, &pseudo, &mut report);
    let resources = with_globals(doc.get("Globals"), &present, &mut report);
    let r = Resolver::new(doc, &resources, &pseudo);
    let mut t = Translation {
        r: &r,
        resources: &resources,
        dirs,
        report,
        done: BTreeSet::new(),
        names: Names::default(),
        functions: BTreeMap::new(),
        integrations: Vec::new(),
    };
    let api = t.choose_api(options)?;
    let management = Management {
        region: pseudo.region.clone(),
        access_key: options.access_key.clone(),
    };
    let config = t.translate_api(&api, management);
    t.leftovers(doc);
    Ok((config, t.report))
}

/// The transforms a template declares (`Transform` is a string or a list).
fn transforms(doc: &Node) -> Vec<String> {
    match doc.get("Transform") {
        Some(Node::String(s)) => vec![s.clone()],
        Some(Node::List(items)) => items.iter().filter_map(Node::scalar_text).collect(),
        _ => Vec::new(),
    }
}

/// State of one translation.
struct Translation<'a, 't> {
    /// Evaluates intrinsics.
    r: &'a Resolver<'t>,
    /// `Resources` with `Globals` merged.
    resources: &'a Map,
    /// Where code directories are relative to.
    dirs: &'a Dirs,
    /// What is being reported.
    report: Report,
    /// Logical ids already accounted for (translated, or reported with their own reason).
    done: BTreeSet<String>,
    /// Integration names handed out.
    names: Names,
    /// Function logical id → its integration name and settings, or why it cannot run.
    functions: BTreeMap<String, Result<(String, Lambda), String>>,
    /// Integrations written, in order of first use.
    integrations: Vec<Integration>,
}

/// Where an `AWS::ApiGatewayV2::Integration` leads.
#[derive(Debug, Clone)]
enum Target {
    /// A function of this template (logical id).
    Function(String),
    /// An HTTP endpoint.
    Http {
        url: String,
        mode: &'static str,
        timeout_ms: Option<u64>,
    },
    /// A mock.
    Mock,
}

impl Translation<'_, '_> {
    fn of_type(&self, ty: &str) -> Vec<(String, Node)> {
        self.resources
            .iter()
            .filter(|(_, r)| resource_type(r) == ty)
            .map(|(id, r)| (id.to_owned(), r.clone()))
            .collect()
    }

    /// The WebSocket API to import: `--api`, else the first; every other API is reported.
    fn choose_api(&mut self, options: &Options) -> Result<String, Refusal> {
        let mut websocket = Vec::new();
        let mut others = Vec::new();
        for (id, resource) in self.of_type(API) {
            let protocol = props(&resource)
                .get("ProtocolType")
                .map(|p| self.r.string(p, &mut Vec::new()));
            match protocol {
                Some(Ok(p)) if p == "WEBSOCKET" => websocket.push(id),
                Some(Ok(p)) => others.push(format!("{id} (ProtocolType {p})")),
                Some(Err(e)) => others.push(format!("{id} (ProtocolType unresolved: {e})")),
                None => others.push(format!("{id} (no ProtocolType)")),
            }
        }
        for (id, resource) in self.resources.iter() {
            let ty = resource_type(resource);
            if matches!(
                ty,
                "AWS::Serverless::Api" | "AWS::Serverless::HttpApi" | "AWS::ApiGateway::RestApi"
            ) {
                others.push(format!("{id} ({ty})"));
            }
        }
        let chosen = match &options.api {
            Some(wanted) if websocket.contains(wanted) => wanted.clone(),
            Some(wanted) => {
                return Err(Refusal::NotWebSocket(format!(
                    "--api {wanted} is not a WebSocket AWS::ApiGatewayV2::Api of this template (WebSocket APIs: {})",
                    if websocket.is_empty() {
                        "none".to_owned()
                    } else {
                        websocket.join(", ")
                    }
                )));
            }
            None => match websocket.first() {
                Some(first) => first.clone(),
                None if others.is_empty() => {
                    return Err(Refusal::NotWebSocket(
                        "no AWS::ApiGatewayV2::Api with ProtocolType: WEBSOCKET (no API at all)"
                            .into(),
                    ));
                }
                None => {
                    return Err(Refusal::NotWebSocket(format!(
                        "no AWS::ApiGatewayV2::Api with ProtocolType: WEBSOCKET; found {}",
                        others.join(", ")
                    )));
                }
            },
        };
        for other in websocket.iter().filter(|id| **id != chosen) {
            self.report.skip(
                format!("{other} ({API})"),
                format!("another WebSocket API: a configuration serves one; import it into another file with --api {other}"),
            );
            self.done.insert(other.clone());
        }
        Ok(chosen)
    }

    fn translate_api(&mut self, api: &str, management: Management) -> Config {
        self.done.insert(api.to_owned());
        let resource = self.resources.get(api).cloned().unwrap_or(Node::Null);
        let p = props(&resource);
        let route_selection_expression = match p.get("RouteSelectionExpression") {
            Some(node) => match self.r.string(node, &mut Vec::new()) {
                Ok(expression) => Some(expression),
                Err(why) => {
                    self.report
                        .skip(format!("{api} RouteSelectionExpression"), why.0);
                    None
                }
            },
            None => {
                self.report.notes.push(format!(
                    "{api} has no RouteSelectionExpression: the default $request.body.action is used"
                ));
                None
            }
        };
        if p.get("ApiKeySelectionExpression").is_some() {
            self.report.skip(
                format!("{api} ApiKeySelectionExpression"),
                "API keys are configured in [auth.api_keys] (selection_expression and keys), not written by the import",
            );
        }
        let api_ref = self.r.resource_name(api);

        let integrations = self.api_integrations(&api_ref);
        let two_way = self.two_way_routes(&api_ref);
        let authorizers = self.api_authorizers(&api_ref);
        let mut routes = Vec::new();
        let mut used_authorizers = BTreeSet::new();
        for (id, resource) in self.belonging(ROUTE, &api_ref) {
            self.done.insert(id.clone());
            if let Some(route) = self.route(
                &id,
                &resource,
                &integrations,
                &two_way,
                &mut used_authorizers,
            ) {
                routes.push(route);
            }
        }
        let mut written_authorizers = Vec::new();
        for (id, authorizer) in authorizers {
            self.done.insert(id.clone());
            if !used_authorizers.contains(&id) {
                self.report.skip(
                    format!("{id} ({AUTHORIZER})"),
                    "not used by the $connect route",
                );
                continue;
            }
            self.report.skip(
                format!("authorizer {id}"),
                format!(
                    "not translated, because {}; a commented-out [auth] block is in the file",
                    authorizer.why
                ),
            );
            written_authorizers.push(authorizer);
        }
        let stages = self.stages(&api_ref);
        if !self
            .integrations
            .iter()
            .any(|i| matches!(&i.kind, Kind::Lambda(l) if l.manage_connections))
        {
            self.report.notes.push(NO_MANAGE_CONNECTIONS.into());
        }
        Config {
            stages,
            route_selection_expression,
            routes,
            integrations: std::mem::take(&mut self.integrations),
            authorizers: written_authorizers,
            management,
        }
    }

    /// Resources of type `ty` whose `ApiId` is the API.
    fn belonging(&mut self, ty: &str, api_ref: &str) -> Vec<(String, Node)> {
        let mut out = Vec::new();
        for (id, resource) in self.of_type(ty) {
            let api_id = props(&resource)
                .get("ApiId")
                .map(|node| self.r.string(node, &mut Vec::new()));
            match api_id {
                Some(Ok(value)) if value == api_ref => out.push((id, resource)),
                Some(Ok(value)) => {
                    self.report.skip(
                        format!("{id} ({ty})"),
                        format!("belongs to another API ({value})"),
                    );
                    self.done.insert(id);
                }
                Some(Err(why)) => {
                    self.report.skip(
                        format!("{id} ({ty})"),
                        format!("its ApiId cannot be resolved: {why}"),
                    );
                    self.done.insert(id);
                }
                None => {
                    self.report.skip(format!("{id} ({ty})"), "has no ApiId");
                    self.done.insert(id);
                }
            }
        }
        out
    }

    /// Every integration of the API: where it leads, or why it leads nowhere.
    fn api_integrations(&mut self, api_ref: &str) -> BTreeMap<String, Result<Target, String>> {
        let mut out = BTreeMap::new();
        for (id, resource) in self.belonging(INTEGRATION, api_ref) {
            self.done.insert(id.clone());
            let target = self.integration_target(&id, &resource);
            out.insert(id, target);
        }
        out
    }

    fn integration_target(&mut self, id: &str, resource: &Node) -> Result<Target, String> {
        let p = props(resource);
        let ty = match p.get("IntegrationType") {
            Some(node) => self.r.string(node, &mut Vec::new()).map_err(|e| e.0)?,
            None => return Err(format!("integration {id} has no IntegrationType")),
        };
        let uri = p
            .get("IntegrationUri")
            .map(|node| self.r.string(node, &mut Vec::new()));
        let timeout_ms = p
            .get("TimeoutInMillis")
            .and_then(|node| self.r.string(node, &mut Vec::new()).ok())
            .and_then(|t| t.parse::<u64>().ok());
        for unsupported in [
            "RequestTemplates",
            "TemplateSelectionExpression",
            "RequestParameters",
            "ContentHandlingStrategy",
        ] {
            if p.get(unsupported).is_some() {
                self.report.skip(
                    format!("{id} {unsupported}"),
                    "mapping templates and parameters are not translated",
                );
            }
        }
        match ty.as_str() {
            "AWS_PROXY" | "AWS" => {
                if ty == "AWS" {
                    self.report.skip(
                        format!("{id} IntegrationType AWS"),
                        "a non-proxy Lambda integration: written as a lambda integration, which gets the proxy event",
                    );
                }
                let uri = match uri {
                    Some(Ok(uri)) => uri,
                    Some(Err(why)) => {
                        return Err(format!(
                            "integration {id}'s IntegrationUri cannot be resolved: {why}"
                        ));
                    }
                    None => return Err(format!("integration {id} has no IntegrationUri")),
                };
                let Some(name) = function_of_uri(&uri) else {
                    return Err(format!(
                        "integration {id}'s IntegrationUri {uri:?} names no Lambda function"
                    ));
                };
                match self.function_by_name(&name) {
                    Some(function) => {
                        if let Some(ms) = timeout_ms {
                            self.report.notes.push(format!(
                                "{id} TimeoutInMillis = {ms}: the lambda integration's timeout_ms comes from the function's Timeout"
                            ));
                        }
                        Ok(Target::Function(function))
                    }
                    None => Err(format!(
                        "integration {id} calls the function {name:?}, which this template does not define"
                    )),
                }
            }
            "HTTP_PROXY" | "HTTP" => match uri {
                Some(Ok(url)) => {
                    if ty == "HTTP" {
                        self.report.skip(
                            format!("{id} IntegrationType HTTP"),
                            "templates are not translated: written as an http integration in passthrough mode",
                        );
                    }
                    Ok(Target::Http {
                        url,
                        mode: "passthrough",
                        timeout_ms,
                    })
                }
                Some(Err(why)) => Err(format!(
                    "integration {id}'s IntegrationUri cannot be resolved: {why}"
                )),
                None => Err(format!("integration {id} has no IntegrationUri")),
            },
            "MOCK" => Ok(Target::Mock),
            other => Err(format!(
                "integration {id} has IntegrationType {other}, which the import does not know"
            )),
        }
    }

    /// The logical id of the function whose name (FunctionName or logical id) is `name`.
    fn function_by_name(&self, name: &str) -> Option<String> {
        self.resources
            .iter()
            .filter(|(_, r)| is_function(r))
            .find(|(id, _)| *id == name || self.r.resource_name(id) == name)
            .map(|(id, _)| id.to_owned())
    }

    /// Route logical ids with a `$default` route response (two-way routes).
    fn two_way_routes(&mut self, api_ref: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (id, resource) in self.belonging(ROUTE_RESPONSE, api_ref) {
            self.done.insert(id.clone());
            let p = props(&resource);
            let key = p
                .get("RouteResponseKey")
                .map(|k| self.r.string(k, &mut Vec::new()));
            let route = p.get("RouteId").map(|k| self.r.string(k, &mut Vec::new()));
            match (key, route) {
                (Some(Ok(key)), Some(Ok(route))) if key == "$default" => {
                    out.insert(route);
                }
                (Some(Ok(key)), _) if key != "$default" => {
                    self.report.skip(
                        format!("{id} ({ROUTE_RESPONSE})"),
                        format!("RouteResponseKey {key}: only $default (two_way) is translated"),
                    );
                }
                _ => self.report.skip(
                    format!("{id} ({ROUTE_RESPONSE})"),
                    "its RouteId or RouteResponseKey cannot be resolved",
                ),
            }
            if p.get("ResponseModels").is_some() {
                self.report
                    .skip(format!("{id} ResponseModels"), "models are not translated");
            }
        }
        out
    }

    /// The API's authorizers, as commented-out blocks.
    fn api_authorizers(&mut self, api_ref: &str) -> Vec<(String, Authorizer)> {
        let mut out = Vec::new();
        for (id, resource) in self.belonging(AUTHORIZER, api_ref) {
            let p = props(&resource);
            let ty = p
                .get("AuthorizerType")
                .and_then(|t| self.r.string(t, &mut Vec::new()).ok());
            let mut sources = Vec::new();
            for source in p
                .get("IdentitySource")
                .and_then(Node::as_list)
                .unwrap_or(&[])
            {
                match self.r.string(source, &mut Vec::new()) {
                    Ok(s)
                        if s.starts_with("route.request.header.")
                            || s.starts_with("route.request.querystring.") =>
                    {
                        sources.push(s)
                    }
                    Ok(s) => self.report.skip(
                        format!("{id} IdentitySource {s}"),
                        "the gateway's authorizer checks headers and query strings only",
                    ),
                    Err(why) => self.report.skip(format!("{id} IdentitySource"), why.0),
                }
            }
            let function = match p
                .get("AuthorizerUri")
                .map(|u| self.r.string(u, &mut Vec::new()))
            {
                Some(Ok(uri)) => {
                    match function_of_uri(&uri).and_then(|n| self.function_by_name(&n)) {
                        Some(function) => {
                            self.done.insert(function.clone());
                            let description = match self.function(&function) {
                                Ok((_, l)) => format!(
                                    "{function} (runtime {}, handler {}, code {})",
                                    l.runtime, l.handler, l.code_dir
                                ),
                                Err(why) => format!("{function} ({why})"),
                            };
                            Some(description)
                        }
                        None => Some(format!(
                            "AuthorizerUri {uri:?}, not a function of this template"
                        )),
                    }
                }
                Some(Err(why)) => Some(format!("AuthorizerUri unresolved: {why}")),
                None => None,
            };
            let why = format!(
                "it is a {} authorizer calling a Lambda function, and [auth] can call an HTTP endpoint (authorizer = \"http\") or verify JWTs, not a lambda integration",
                ty.as_deref().unwrap_or("REQUEST")
            );
            out.push((
                id.clone(),
                Authorizer {
                    name: id,
                    why,
                    identity_sources: sources,
                    function,
                },
            ));
        }
        out
    }

    fn route(
        &mut self,
        id: &str,
        resource: &Node,
        integrations: &BTreeMap<String, Result<Target, String>>,
        two_way: &BTreeSet<String>,
        used_authorizers: &mut BTreeSet<String>,
    ) -> Option<Route> {
        let p = props(resource);
        let key = match p.get("RouteKey").map(|k| self.r.string(k, &mut Vec::new())) {
            Some(Ok(key)) => key,
            Some(Err(why)) => {
                self.report.skip(
                    format!("route {id}"),
                    format!("its RouteKey cannot be resolved: {why}"),
                );
                return None;
            }
            None => {
                self.report.skip(format!("route {id}"), "has no RouteKey");
                return None;
            }
        };
        let what = format!("route {key} ({id})");
        let target = match p.get("Target").map(|t| self.r.string(t, &mut Vec::new())) {
            Some(Ok(target)) => target,
            Some(Err(why)) => {
                self.report
                    .skip(&what, format!("its Target cannot be resolved: {why}"));
                return None;
            }
            None => {
                self.report.skip(&what, "has no Target (no integration)");
                return None;
            }
        };
        let integration_id = target.strip_prefix("integrations/").unwrap_or(&target);
        let destination = match integrations.get(integration_id) {
            Some(Ok(destination)) => destination.clone(),
            Some(Err(why)) => {
                self.report.skip(&what, why);
                return None;
            }
            None => {
                self.report.skip(
                    &what,
                    format!("its Target {target:?} is not an integration of this API"),
                );
                return None;
            }
        };
        let integration = match self.integration(integration_id, &destination) {
            Ok(name) => name,
            Err(why) => {
                self.report.skip(&what, why);
                return None;
            }
        };
        match p
            .get("AuthorizationType")
            .map(|a| self.r.string(a, &mut Vec::new()))
        {
            Some(Ok(a)) if a == "CUSTOM" => {
                match p
                    .get("AuthorizerId")
                    .map(|a| self.r.string(a, &mut Vec::new()))
                {
                    Some(Ok(authorizer)) => {
                        self.report.skip(
                            format!("{what} authorization"),
                            format!("CUSTOM with authorizer {authorizer}, which is not translated: the route is open until [auth] is set"),
                        );
                        used_authorizers.insert(authorizer);
                    }
                    _ => self.report.skip(
                        format!("{what} authorization"),
                        "CUSTOM without a resolvable AuthorizerId",
                    ),
                }
            }
            Some(Ok(a)) if a == "AWS_IAM" => self.report.skip(
                format!("{what} authorization"),
                "AWS_IAM: Switchboard has no IAM; use [auth] (an HTTP authorizer or JWTs) instead",
            ),
            Some(Ok(a)) if a == "NONE" => {}
            Some(Ok(a)) => self.report.skip(
                format!("{what} authorization"),
                format!("AuthorizationType {a} is unknown"),
            ),
            Some(Err(why)) => self.report.skip(format!("{what} authorization"), why.0),
            None => {}
        }
        if p.get("ApiKeyRequired")
            .is_some_and(|v| self.r.resolve(v) == Ok(Node::Bool(true)))
        {
            self.report.skip(
                format!("{what} ApiKeyRequired"),
                "API keys are gateway-wide in Switchboard: set [auth.api_keys] required = true with your keys",
            );
        }
        for unsupported in [
            "RequestModels",
            "ModelSelectionExpression",
            "RequestParameters",
        ] {
            if p.get(unsupported).is_some() {
                self.report
                    .skip(format!("{what} {unsupported}"), "not translated");
            }
        }
        let two_way = two_way.contains(id);
        self.report.translated.push(format!(
            "route {key} → integration {integration}{}",
            if two_way {
                " (two-way: a $default route response)"
            } else {
                ""
            }
        ));
        Some(Route {
            key,
            integration,
            two_way,
        })
    }

    /// The integration name for a destination, writing the integration the first time.
    fn integration(
        &mut self,
        integration_id: &str,
        destination: &Target,
    ) -> Result<String, String> {
        match destination {
            Target::Function(function) => {
                let (name, lambda) = self.function(function)?;
                if !self.integrations.iter().any(|i| i.name == name) {
                    self.report.translated.push(format!(
                        "integration {name}: lambda, function {function} ({}, {})",
                        lambda.runtime, lambda.handler
                    ));
                    self.integrations.push(Integration {
                        name: name.clone(),
                        kind: Kind::Lambda(lambda),
                    });
                }
                Ok(name)
            }
            Target::Http {
                url,
                mode,
                timeout_ms,
            } => {
                let name = self.names.take(&integration_id.to_lowercase());
                self.report
                    .translated
                    .push(format!("integration {name}: http {url} ({mode})"));
                self.integrations.push(Integration {
                    name: name.clone(),
                    kind: Kind::Http {
                        url: url.clone(),
                        mode,
                        timeout_ms: *timeout_ms,
                    },
                });
                Ok(name)
            }
            Target::Mock => {
                let name = self.names.take(&integration_id.to_lowercase());
                self.report.translated.push(format!(
                    "integration {name}: mock (answers 200, empty body; its IntegrationResponses are not translated)"
                ));
                self.integrations.push(Integration {
                    name: name.clone(),
                    kind: Kind::Mock,
                });
                Ok(name)
            }
        }
    }

    /// A function's integration name and settings (computed once, with its report lines).
    fn function(&mut self, id: &str) -> Result<(String, Lambda), String> {
        if let Some(done) = self.functions.get(id) {
            return done.clone();
        }
        self.done.insert(id.to_owned());
        let result = self.lambda(id);
        self.functions.insert(id.to_owned(), result.clone());
        if let Err(why) = &result {
            self.report.skip(
                format!(
                    "{id} ({})",
                    resource_type(self.resources.get(id).unwrap_or(&Node::Null))
                ),
                why,
            );
        }
        result
    }

    fn lambda(&mut self, id: &str) -> Result<(String, Lambda), String> {
        let resource = self.resources.get(id).cloned().unwrap_or(Node::Null);
        let p = props(&resource).clone();
        let r = self.r;
        let text = |key: &str| -> Option<Result<String, Unresolved>> {
            p.get(key).map(|v| r.string(v, &mut Vec::new()))
        };
        if let Some(Ok(package)) = text("PackageType")
            && package == "Image"
        {
            return Err("a container image function (PackageType: Image): the lambda integration runs code from a directory".into());
        }
        let runtime = match text("Runtime") {
            Some(Ok(runtime)) => runtime,
            Some(Err(why)) => return Err(format!("its Runtime cannot be resolved: {why}")),
            None => return Err("no Runtime".into()),
        };
        check_runtime(&runtime)?;
        let handler = match text("Handler") {
            Some(Ok(handler)) => handler,
            Some(Err(why)) => return Err(format!("its Handler cannot be resolved: {why}")),
            None => return Err("no Handler".into()),
        };
        let wanted = id
            .strip_suffix("Function")
            .filter(|s| !s.is_empty())
            .unwrap_or(id);
        let name = self.names.take(&wanted.to_lowercase());
        let code_dir = self.code_dir(id, &name, &p)?;
        let timeout_secs = match text("Timeout") {
            Some(Ok(t)) => t
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("Timeout {t:?} is not a number"))?,
            Some(Err(why)) => return Err(format!("its Timeout cannot be resolved: {why}")),
            None => DEFAULT_TIMEOUT_SECS,
        };
        let memory_mb = match text("MemorySize") {
            Some(Ok(m)) => m
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("MemorySize {m:?} is not a number"))?,
            Some(Err(why)) => return Err(format!("its MemorySize cannot be resolved: {why}")),
            None => DEFAULT_MEMORY_MB,
        };
        let function_name = r.resource_name(id);
        let manage_connections = self.may_manage_connections(&p);
        if manage_connections {
            self.report.notes.push(format!(
                "{id} is allowed execute-api:ManageConnections: its environment gets the [management.sigv4] key pair as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            ));
        }
        let variables = p.get("Environment").and_then(|e| e.get("Variables"));
        let environment = environment(r, id, variables, &mut self.report);
        let skipped: Vec<&str> = p
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !FUNCTION_READ.contains(k))
            .collect();
        for (properties, why) in skipped_properties(&skipped) {
            self.report.skip(format!("{id} {properties}"), why);
        }
        Ok((
            name,
            Lambda {
                runtime,
                handler,
                code_dir,
                timeout_ms: (timeout_secs * 1000.0).round() as u64,
                memory_mb,
                function_name,
                environment,
                manage_connections,
            },
        ))
    }

    /// Whether a function's IAM permissions allow `execute-api:ManageConnections`: its
    /// `Policies`, its `Role`, and `AWS::IAM::Policy`/`ManagedPolicy` resources of this
    /// template attached to that role.
    fn may_manage_connections(&self, p: &Map) -> bool {
        if p.get("Policies").is_some_and(grants_manage_connections) {
            return true;
        }
        let Some(role) = p.get("Role").and_then(referenced_id) else {
            return false;
        };
        if self
            .resources
            .get(&role)
            .is_some_and(grants_manage_connections)
        {
            return true;
        }
        self.resources.iter().any(|(_, resource)| {
            matches!(
                resource_type(resource),
                "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy"
            ) && props(resource)
                .get("Roles")
                .is_some_and(|roles| mentions(roles, &role))
                && grants_manage_connections(resource)
        })
    }

    /// `code_dir` from `CodeUri` (SAM) or `Code` (Lambda); code that is not on disk gets a
    /// directory named after the integration, and a report line saying what to put there.
    fn code_dir(&mut self, id: &str, name: &str, p: &Map) -> Result<String, String> {
        let placeholder = self.dirs.code_dir(name);
        let code = p.get("CodeUri").or_else(|| p.get("Code"));
        let path = match code.map(|c| self.r.resolve(c)) {
            Some(Ok(Node::String(path))) if path.starts_with("s3://") => {
                self.report.skip(
                    format!("{id} code"),
                    format!("in S3 ({path}): unpack it into {placeholder}"),
                );
                return Ok(placeholder);
            }
            Some(Ok(Node::String(path))) => path,
            Some(Ok(Node::Map(map))) if map.get("ZipFile").is_some() => {
                self.report.skip(
                    format!("{id} code"),
                    format!("inline (Code.ZipFile): save it as a file in {placeholder}"),
                );
                return Ok(placeholder);
            }
            Some(Ok(Node::Map(map))) if map.get("ImageUri").is_some() => {
                return Err("a container image function (Code.ImageUri): the lambda integration runs code from a directory".into());
            }
            Some(Ok(Node::Map(_))) => {
                self.report.skip(
                    format!("{id} code"),
                    format!("in S3: unpack it into {placeholder}"),
                );
                return Ok(placeholder);
            }
            Some(Ok(other)) => return Err(format!("its code location is {}", other.kind())),
            Some(Err(why)) => return Err(format!("its code location cannot be resolved: {why}")),
            None if p.get("InlineCode").is_some() => {
                self.report.skip(
                    format!("{id} code"),
                    format!("inline (InlineCode): save it as a file in {placeholder}"),
                );
                return Ok(placeholder);
            }
            None => return Err("no CodeUri or Code".into()),
        };
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".zip") || lower.ends_with(".jar") {
            self.report.skip(
                format!("{id} code"),
                format!("an archive ({path}): unpack it into {placeholder}"),
            );
            return Ok(placeholder);
        }
        Ok(self.dirs.code_dir(&path))
    }

    /// `[api] stages` from the API's stages.
    fn stages(&mut self, api_ref: &str) -> Vec<String> {
        let mut stages = Vec::new();
        for (id, resource) in self.belonging(STAGE, api_ref) {
            self.done.insert(id.clone());
            let p = props(&resource);
            match p
                .get("StageName")
                .map(|s| self.r.string(s, &mut Vec::new()))
            {
                Some(Ok(name)) if valid_stage(&name) => {
                    self.report.translated.push(format!("stage {name} ({id})"));
                    stages.push(name);
                }
                Some(Ok(name)) => self.report.skip(
                    format!("stage {name:?} ({id})"),
                    "a stage name must be 1-128 characters of A-Z a-z 0-9 - _",
                ),
                Some(Err(why)) => self.report.skip(
                    format!("stage {id}"),
                    format!("its StageName cannot be resolved: {why}"),
                ),
                None => self.report.skip(format!("stage {id}"), "has no StageName"),
            }
            let hints = [
                ("StageVariables", "stage variables are not supported"),
                (
                    "DefaultRouteSettings",
                    "throttling and logging per stage: see [limits] (route_messages) and [access_log]",
                ),
                ("RouteSettings", "per-route throttling: see [limits] routes"),
                (
                    "AccessLogSettings",
                    "see [access_log] (format takes the same $context variables)",
                ),
            ];
            for (property, why) in hints {
                if p.get(property).is_some() {
                    self.report.skip(format!("{id} {property}"), why);
                }
            }
        }
        if stages.is_empty() {
            self.report.notes.push(
                "no usable AWS::ApiGatewayV2::Stage: [api] stages keeps the default (prod)".into(),
            );
        }
        stages
    }

    /// Reports every resource nobody accounted for, and the outputs.
    fn leftovers(&mut self, doc: &Node) {
        for (id, resource) in self.resources.iter() {
            if self.done.contains(id) {
                continue;
            }
            let ty = resource_type(resource);
            self.report.skip(format!("{id} ({ty})"), why_not(ty));
            if ty == "AWS::DynamoDB::Table" || ty == "AWS::Serverless::SimpleTable" {
                let name = self.r.resource_name(id);
                self.report.notes.push(format!(
                    "create the table {name:?} ({id}) in the DynamoDB your handlers reach (AWS, or DynamoDB Local with AWS_ENDPOINT_URL_DYNAMODB in [lambda.environment])"
                ));
            }
        }
        if let Some(outputs) = doc.get("Outputs").and_then(Node::as_map) {
            for (id, output) in outputs.iter() {
                let value = output
                    .get("Value")
                    .map(|v| self.r.string(v, &mut Vec::new()));
                let shown = match value {
                    Some(Ok(v)) => format!(" = {v:?}"),
                    Some(Err(_)) | None => String::new(),
                };
                self.report.skip(
                    format!("output {id}{shown}"),
                    "outputs describe the AWS deployment; Switchboard's client URL is ws://<[client] listen>/<stage>",
                );
            }
        }
    }
}

/// A function's `Environment.Variables`, each resolved (or with the reason it is not),
/// and one report line per variable.
pub(crate) fn environment(
    r: &Resolver<'_>,
    function: &str,
    variables: Option<&Node>,
    report: &mut Report,
) -> Vec<(String, Result<String, String>)> {
    let Some(variables) = variables else {
        return Vec::new();
    };
    let variables = if is_call(variables) {
        match r.resolve(variables) {
            Ok(resolved) => resolved,
            Err(why) => {
                report.skip(format!("{function} environment"), why.0);
                return Vec::new();
            }
        }
    } else {
        variables.clone()
    };
    let Node::Map(map) = variables else {
        report.skip(format!("{function} environment"), "not a mapping");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (var, value) in map.iter() {
        let mut how = Vec::new();
        let value = r.string(value, &mut how).map_err(|e| e.0);
        report.environment.push(EnvLine {
            function: function.to_owned(),
            name: var.to_owned(),
            value: value.clone(),
            how,
        });
        out.push((var.to_owned(), value));
    }
    out
}

/// The note when no function may call `@connections`.
pub(crate) const NO_MANAGE_CONNECTIONS: &str = "no function is allowed execute-api:ManageConnections: a handler that calls @connections needs AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the [management.sigv4] pair) in its environment";

/// Whether an IAM policy (anywhere inside `node`) allows `execute-api:ManageConnections`.
pub(crate) fn grants_manage_connections(node: &Node) -> bool {
    match node {
        Node::String(s) => {
            s.eq_ignore_ascii_case("execute-api:ManageConnections")
                || s.eq_ignore_ascii_case("execute-api:*")
        }
        Node::List(items) => items.iter().any(grants_manage_connections),
        Node::Map(map) => map.iter().any(|(_, v)| grants_manage_connections(v)),
        _ => false,
    }
}

/// The logical id a `Ref` or `Fn::GetAtt` names.
fn referenced_id(node: &Node) -> Option<String> {
    if let Some(id) = node.get("Ref").and_then(Node::as_str) {
        return Some(id.to_owned());
    }
    match node.get("Fn::GetAtt")? {
        Node::String(s) => s.split_once('.').map(|(id, _)| id.to_owned()),
        Node::List(items) => items.first().and_then(Node::as_str).map(str::to_owned),
        _ => None,
    }
}

/// Whether `node` refers to the resource `id` anywhere inside.
fn mentions(node: &Node, id: &str) -> bool {
    if referenced_id(node).as_deref() == Some(id) || node.as_str() == Some(id) {
        return true;
    }
    match node {
        Node::List(items) => items.iter().any(|i| mentions(i, id)),
        Node::Map(map) => map.iter().any(|(_, v)| mentions(v, id)),
        _ => false,
    }
}

/// Whether a node is an intrinsic call (`{Ref: …}`, `{"Fn::…": …}`).
fn is_call(node: &Node) -> bool {
    node.as_map()
        .is_some_and(|m| m.len() == 1 && m.iter().any(|(k, _)| k == "Ref" || k.starts_with("Fn::")))
}

fn props(resource: &Node) -> &Map {
    static EMPTY: Map = Map::new();
    resource
        .get("Properties")
        .and_then(Node::as_map)
        .unwrap_or(&EMPTY)
}

fn is_function(resource: &Node) -> bool {
    matches!(resource_type(resource), SAM_FUNCTION | LAMBDA_FUNCTION)
}

pub(crate) fn valid_stage(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The function name inside a Lambda integration URI
/// (`arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{arn}/invocations`) or a
/// bare function ARN (`arn:aws:lambda:{region}:{account}:function:{name}[:{qualifier}]`).
pub fn function_of_uri(uri: &str) -> Option<String> {
    let arn = match (uri.find("/functions/"), uri.rfind("/invocations")) {
        (Some(start), Some(end)) if start + "/functions/".len() <= end => {
            &uri[start + "/functions/".len()..end]
        }
        _ => uri,
    };
    let name = match arn.split_once(":function:") {
        Some((_, rest)) => rest.split(':').next().unwrap_or(rest),
        None if !arn.contains(':') && !arn.contains('/') => arn,
        None => return None,
    };
    (!name.is_empty()).then(|| name.to_owned())
}

/// Function properties other than code, handler, runtime, sizes and environment, grouped
/// by the reason they are left out.
fn skipped_properties(properties: &[&str]) -> Vec<(String, &'static str)> {
    let groups: [(&[&str], &str); 3] = [
        (
            &[
                "Role",
                "Policies",
                "PermissionsBoundary",
                "AssumeRolePolicyDocument",
            ],
            "IAM does not exist here: the function runs with the AWS credentials you give it",
        ),
        (
            &["Events"],
            "SAM events (other triggers) are not run by the gateway",
        ),
        (
            &["Layers"],
            "layers are not fetched: put what they hold in the code directory",
        ),
    ];
    let mut out = Vec::new();
    let mut rest: Vec<&str> = properties.to_vec();
    for (members, why) in groups {
        let here: Vec<&str> = properties
            .iter()
            .copied()
            .filter(|p| members.contains(p))
            .collect();
        if !here.is_empty() {
            rest.retain(|p| !here.contains(p));
            out.push((here.join(", "), why));
        }
    }
    if !rest.is_empty() {
        out.push((rest.join(", "), "not translated"));
    }
    out
}

/// Why a resource type has no place in the configuration.
pub(crate) fn why_not(ty: &str) -> &'static str {
    match ty {
        "AWS::DynamoDB::Table" | "AWS::Serverless::SimpleTable" => {
            "a DynamoDB table: run it yourself (AWS or DynamoDB Local); the functions find it through their environment"
        }
        "AWS::IAM::Role" | "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy" => {
            "IAM does not exist here: the functions run with the AWS credentials you give them"
        }
        "AWS::Lambda::Permission" => "not needed: the gateway calls its integrations itself",
        "AWS::ApiGatewayV2::Deployment" => {
            "not needed: the gateway serves the configuration it loads"
        }
        "AWS::ApiGatewayV2::DomainName" | "AWS::ApiGatewayV2::ApiMapping" => {
            "custom domains: put your own DNS and TLS ([client.tls]) in front"
        }
        "AWS::Logs::LogGroup" => "logs go to stdout ([log]) and the access log ([access_log])",
        SAM_FUNCTION | LAMBDA_FUNCTION => "a function no route of the WebSocket API calls",
        _ => "no Switchboard equivalent",
    }
}

/// `Resources` without those whose `Condition` is false (CloudFormation would not create
/// them). A condition that cannot be evaluated keeps its resource, with a note.
pub fn with_conditions(doc: &Node, resources: &Map, pseudo: &Pseudo, report: &mut Report) -> Map {
    let r = Resolver::new(doc, resources, pseudo);
    resources
        .iter()
        .filter(|(id, resource)| {
            let Some(condition) = resource.get("Condition").and_then(Node::as_str) else {
                return true;
            };
            match r.resolve(&Node::call("Condition", Node::String(condition.to_owned()))) {
                Ok(Node::Bool(false)) => {
                    report.notes.push(format!(
                        "{id}: left out, its Condition {condition} is false"
                    ));
                    false
                }
                Ok(_) => true,
                Err(why) => {
                    report.notes.push(format!(
                        "{id}: its Condition {condition} cannot be evaluated ({why}); kept"
                    ));
                    true
                }
            }
        })
        .map(|(id, resource)| (id.to_owned(), resource.clone()))
        .collect()
}

/// `Resources` with SAM's `Globals.Function` merged into each `AWS::Serverless::Function`:
/// the resource's scalars win, mappings are merged (resource keys win), and lists get the
/// global entries first. Other `Globals` sections are reported.
pub fn with_globals(globals: Option<&Node>, resources: &Map, report: &mut Report) -> Map {
    let Some(globals) = globals.and_then(Node::as_map) else {
        return resources.clone();
    };
    for (section, _) in globals.iter().filter(|(s, _)| *s != "Function") {
        report.skip(
            format!("Globals.{section}"),
            "only Globals.Function applies to a WebSocket API's functions",
        );
    }
    let Some(function) = globals.get("Function") else {
        return resources.clone();
    };
    resources
        .iter()
        .map(|(id, resource)| {
            if resource_type(resource) != SAM_FUNCTION {
                return (id.to_owned(), resource.clone());
            }
            let mut resource = resource.as_map().cloned().unwrap_or_default();
            let local = resource
                .get("Properties")
                .cloned()
                .unwrap_or(Node::Map(Map::new()));
            resource.insert("Properties", merge(function, &local));
            (id.to_owned(), Node::Map(resource))
        })
        .collect()
}

/// SAM's Globals rule for one value: `local` over `global`.
pub fn merge(global: &Node, local: &Node) -> Node {
    match (global, local) {
        (Node::Map(g), Node::Map(l)) if !is_call(global) && !is_call(local) => {
            let mut out = g.clone();
            for (key, value) in l.iter() {
                let merged = match g.get(key) {
                    Some(gv) => merge(gv, value),
                    None => value.clone(),
                };
                out.insert(key, merged);
            }
            Node::Map(out)
        }
        (Node::List(g), Node::List(l)) => Node::List(g.iter().chain(l).cloned().collect()),
        (_, local) => local.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::template::parse_yaml;
    use super::*;

    #[test]
    fn uris_name_their_function() {
        let cases = [
            (
                "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:000000000000:function:OnConnect/invocations",
                Some("OnConnect"),
            ),
            (
                "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:1:function:Fn:live/invocations",
                Some("Fn"),
            ),
            ("arn:aws:lambda:eu-west-1:1:function:Bare", Some("Bare")),
            ("JustAName", Some("JustAName")),
            ("https://example.com/hook", None),
            ("arn:aws:sqs:us-east-1:1:queue", None),
        ];
        for (uri, expected) in cases {
            assert_eq!(function_of_uri(uri).as_deref(), expected, "{uri}");
        }
    }

    #[test]
    fn globals_merge_like_sam() {
        let doc = parse_yaml(
            r#"
Globals:
  Function:
    Runtime: nodejs18.x
    Timeout: 10
    Environment: {Variables: {TABLE_NAME: global, LOG_LEVEL: info}}
    Layers: [arn:global]
  Api: {Cors: "*"}
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: nodejs20.x
      Environment: {Variables: {TABLE_NAME: local}}
      Layers: [arn:local]
  Other:
    Type: AWS::Lambda::Function
    Properties: {Runtime: python3.12}
"#,
        )
        .unwrap();
        let mut report = Report::default();
        let merged = with_globals(
            doc.get("Globals"),
            doc.get("Resources").unwrap().as_map().unwrap(),
            &mut report,
        );
        let p = merged.get("Fn").unwrap().get("Properties").unwrap();
        assert_eq!(
            p.get("Runtime").unwrap().as_str(),
            Some("nodejs20.x"),
            "scalars: the resource wins"
        );
        assert_eq!(
            p.get("Timeout"),
            Some(&Node::Int(10)),
            "missing scalars come from Globals"
        );
        let vars = p.get("Environment").unwrap().get("Variables").unwrap();
        assert_eq!(
            vars.get("TABLE_NAME").unwrap().as_str(),
            Some("local"),
            "maps: the resource's key wins"
        );
        assert_eq!(
            vars.get("LOG_LEVEL").unwrap().as_str(),
            Some("info"),
            "maps are merged"
        );
        let layers: Vec<&str> = p
            .get("Layers")
            .unwrap()
            .as_list()
            .unwrap()
            .iter()
            .filter_map(Node::as_str)
            .collect();
        assert_eq!(layers, ["arn:global", "arn:local"], "lists: globals first");
        let other = merged.get("Other").unwrap().get("Properties").unwrap();
        assert_eq!(
            other.get("Timeout"),
            None,
            "only AWS::Serverless::Function gets Globals"
        );
        assert!(
            report
                .not_translated
                .iter()
                .any(|l| l.starts_with("Globals.Api"))
        );
    }

    #[test]
    fn resources_whose_condition_is_false_are_left_out() {
        let doc = parse_yaml(
            r#"
Parameters: {Env: {Type: String, Default: dev}}
Conditions:
  IsProd: !Equals [!Ref Env, prod]
  IsDev: !Not [!Condition IsProd]
Resources:
  Always: {Type: AWS::SNS::Topic}
  ProdOnly: {Type: AWS::SNS::Topic, Condition: IsProd}
  DevOnly: {Type: AWS::SNS::Topic, Condition: IsDev}
  Unknown: {Type: AWS::SNS::Topic, Condition: Nope}
"#,
        )
        .unwrap();
        let mut report = Report::default();
        let kept = with_conditions(
            &doc,
            doc.get("Resources").unwrap().as_map().unwrap(),
            &Pseudo::default(),
            &mut report,
        );
        let ids: Vec<&str> = kept.iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["Always", "DevOnly", "Unknown"]);
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.starts_with("ProdOnly: left out"))
        );
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.starts_with("Unknown: its Condition Nope cannot"))
        );
    }

    #[test]
    fn an_intrinsic_is_replaced_not_merged() {
        let global = parse_yaml("a: {x: 1}").unwrap();
        let local = parse_yaml("a: !Ref Thing").unwrap();
        let merged = merge(&global, &local);
        assert_eq!(merged.get("a"), local.get("a"));
    }
}
