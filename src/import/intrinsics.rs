//! CloudFormation intrinsic functions, evaluated the way a template would be deployed, but
//! with names instead of AWS's generated ids.
//!
//! What a value turns into:
//! - `Ref` to a parameter: its `Default`; to a pseudo parameter: the `--region`,
//!   a placeholder account id, the stack name, `aws`; to a resource: its name property
//!   when it has one (`TableName` of a table, `FunctionName` of a function, `StageName` of a
//!   stage), else its logical id, which stands for the name AWS would have generated.
//! - `Fn::GetAtt X.Arn`: an ARN built from that name, so that the function named in an
//!   integration URI can be found again (`…:function:<name>`).
//! - `Fn::Sub`, `Fn::Join`, `Fn::Select`, `Fn::Split`, `Fn::If` with `Conditions`,
//!   `Fn::Equals`/`And`/`Or`/`Not`, `Fn::FindInMap`, `Fn::Base64`: as CloudFormation does.
//! - Anything that only AWS knows (`Fn::ImportValue`, `Fn::GetAZs`, an `ApiEndpoint`,
//!   a parameter without a default) is [`Unresolved`], with the reason, never guessed.
//!
//! Every `Ref`/`GetAtt` that reached a parameter, a pseudo parameter or a resource adds a
//! note, so the report can say how an environment variable got its value.

use std::fmt;

use base64::Engine as _;

use super::template::{Map, Node};

/// The private intrinsic that marks a value the loader could not produce (a serverless
/// variable nobody can resolve); evaluating it gives [`Unresolved`] with its text.
pub const UNRESOLVED: &str = "Switchboard::Unresolved";

/// How deep intrinsics may nest (and conditions refer to each other) before evaluation
/// stops: a cycle in the template would recurse forever otherwise.
const MAX_DEPTH: usize = 64;

/// A value that cannot be computed outside AWS, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved(pub String);

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Values of the pseudo parameters (`AWS::Region`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pseudo {
    /// `AWS::Region`.
    pub region: String,
    /// `AWS::AccountId` (a placeholder: there is no account).
    pub account_id: String,
    /// `AWS::StackName`.
    pub stack_name: String,
    /// `AWS::Partition`.
    pub partition: String,
}

impl Default for Pseudo {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            stack_name: "switchboard".into(),
            partition: "aws".into(),
        }
    }
}

/// Evaluates intrinsics against one template's parameters, resources, mappings and
/// conditions.
pub struct Resolver<'t> {
    /// `Resources`, after SAM's `Globals` were merged in.
    resources: &'t Map,
    /// `Parameters` (their `Default`s).
    parameters: &'t Map,
    /// `Mappings`, for `Fn::FindInMap`.
    mappings: &'t Map,
    /// `Conditions`, for `Fn::If` and `Condition`.
    conditions: &'t Map,
    /// Pseudo parameter values.
    pseudo: &'t Pseudo,
}

/// The result of one evaluation step: `None` is `AWS::NoValue` (the key or item goes away).
type Eval = Result<Option<Node>, Unresolved>;

fn unresolved<T>(message: impl Into<String>) -> Result<T, Unresolved> {
    Err(Unresolved(message.into()))
}

impl<'t> Resolver<'t> {
    /// A resolver over `doc`'s sections, with `resources` standing for its `Resources`.
    pub fn new(doc: &'t Node, resources: &'t Map, pseudo: &'t Pseudo) -> Self {
        static EMPTY: Map = Map::new();
        let section = |name: &str| doc.get(name).and_then(Node::as_map).unwrap_or(&EMPTY);
        Self {
            resources,
            parameters: section("Parameters"),
            mappings: section("Mappings"),
            conditions: section("Conditions"),
            pseudo,
        }
    }

    /// The pseudo parameter values in use.
    pub fn pseudo(&self) -> &Pseudo {
        self.pseudo
    }

    /// `node` with every intrinsic evaluated (`AWS::NoValue` at the top gives null).
    pub fn resolve(&self, node: &Node) -> Result<Node, Unresolved> {
        self.resolve_noted(node, &mut Vec::new())
    }

    /// [`Self::resolve`], adding a note for each parameter, pseudo parameter or resource
    /// the value came from.
    pub fn resolve_noted(&self, node: &Node, notes: &mut Vec<String>) -> Result<Node, Unresolved> {
        Ok(self.eval(node, 0, notes)?.unwrap_or(Node::Null))
    }

    /// `node` evaluated to a scalar, as text.
    pub fn string(&self, node: &Node, notes: &mut Vec<String>) -> Result<String, Unresolved> {
        let value = self.resolve_noted(node, notes)?;
        scalar(&value)
    }

    /// What `Ref` of the resource `logical_id` gives: its name property or its logical id.
    pub fn resource_name(&self, logical_id: &str) -> String {
        match self.resources.get(logical_id) {
            Some(resource) => self.physical_name(logical_id, resource, 0, &mut Vec::new()),
            None => logical_id.to_owned(),
        }
    }

    fn eval(&self, node: &Node, depth: usize, notes: &mut Vec<String>) -> Eval {
        if depth > MAX_DEPTH {
            return unresolved("intrinsic functions nest too deeply (is there a cycle?)");
        }
        match node {
            Node::Map(map) => {
                if let Some((name, argument)) = intrinsic(map) {
                    return self.call(name, argument, depth + 1, notes);
                }
                let mut out = Map::new();
                for (key, value) in map.iter() {
                    if let Some(value) = self.eval(value, depth + 1, notes)? {
                        out.insert(key, value);
                    }
                }
                Ok(Some(Node::Map(out)))
            }
            Node::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(value) = self.eval(item, depth + 1, notes)? {
                        out.push(value);
                    }
                }
                Ok(Some(Node::List(out)))
            }
            other => Ok(Some(other.clone())),
        }
    }

    /// Evaluates `node` to a value that must exist (not `AWS::NoValue`).
    fn value(
        &self,
        node: &Node,
        depth: usize,
        notes: &mut Vec<String>,
    ) -> Result<Node, Unresolved> {
        match self.eval(node, depth, notes)? {
            Some(value) => Ok(value),
            None => unresolved("AWS::NoValue where a value is required"),
        }
    }

    fn text(
        &self,
        node: &Node,
        depth: usize,
        notes: &mut Vec<String>,
    ) -> Result<String, Unresolved> {
        scalar(&self.value(node, depth, notes)?)
    }

    fn call(&self, name: &str, argument: &Node, depth: usize, notes: &mut Vec<String>) -> Eval {
        match name {
            "Ref" => {
                let target = self.text(argument, depth, notes)?;
                self.reference(&target, depth, notes)
            }
            "Condition" => {
                let target = self.text(argument, depth, notes)?;
                Ok(Some(Node::Bool(self.condition(&target, depth, notes)?)))
            }
            "Fn::GetAtt" => {
                let (id, attribute) = match argument {
                    Node::String(s) => match s.split_once('.') {
                        Some((id, attribute)) => (id.to_owned(), attribute.to_owned()),
                        None => return unresolved(format!("Fn::GetAtt {s:?} names no attribute")),
                    },
                    Node::List(items) if items.len() == 2 => (
                        self.text(&items[0], depth, notes)?,
                        self.text(&items[1], depth, notes)?,
                    ),
                    other => {
                        return unresolved(format!(
                            "Fn::GetAtt takes \"Resource.Attribute\" or [Resource, Attribute], not {}",
                            other.kind()
                        ));
                    }
                };
                self.get_att(&id, &attribute, depth, notes).map(Some)
            }
            "Fn::Sub" => {
                let (template, variables) = match argument {
                    Node::String(s) => (s.clone(), None),
                    Node::List(items) if items.len() == 2 => {
                        (self.text(&items[0], depth, notes)?, items[1].as_map())
                    }
                    other => {
                        return unresolved(format!(
                            "Fn::Sub takes a string or [string, {{variables}}], not {}",
                            other.kind()
                        ));
                    }
                };
                self.sub(&template, variables, depth, notes)
                    .map(|s| Some(Node::String(s)))
            }
            "Fn::Join" => {
                let [delimiter, list] = arguments::<2>(name, argument)?;
                let delimiter = self.text(delimiter, depth, notes)?;
                let parts = self.list(list, depth, notes)?;
                let parts = parts.iter().map(scalar).collect::<Result<Vec<_>, _>>()?;
                Ok(Some(Node::String(parts.join(&delimiter))))
            }
            "Fn::Select" => {
                let [index, list] = arguments::<2>(name, argument)?;
                let index = self.text(index, depth, notes)?;
                let index: usize = index.trim().parse().or_else(|_| {
                    unresolved(format!("Fn::Select index {index:?} is not a number"))
                })?;
                let items = self.list(list, depth, notes)?;
                match items.into_iter().nth(index) {
                    Some(item) => Ok(Some(item)),
                    None => unresolved(format!(
                        "Fn::Select index {index} is past the end of the list"
                    )),
                }
            }
            "Fn::Split" => {
                let [delimiter, source] = arguments::<2>(name, argument)?;
                let delimiter = self.text(delimiter, depth, notes)?;
                let source = self.text(source, depth, notes)?;
                if delimiter.is_empty() {
                    return unresolved("Fn::Split needs a non-empty delimiter");
                }
                Ok(Some(Node::List(
                    source
                        .split(delimiter.as_str())
                        .map(|s| Node::String(s.to_owned()))
                        .collect(),
                )))
            }
            "Fn::If" => {
                let [condition, then, otherwise] = arguments::<3>(name, argument)?;
                let condition = self.text(condition, depth, notes)?;
                if self.condition(&condition, depth, notes)? {
                    self.eval(then, depth, notes)
                } else {
                    self.eval(otherwise, depth, notes)
                }
            }
            "Fn::Equals" => {
                let [a, b] = arguments::<2>(name, argument)?;
                let a = self.value(a, depth, notes)?;
                let b = self.value(b, depth, notes)?;
                let same = match (scalar(&a), scalar(&b)) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => a == b,
                };
                Ok(Some(Node::Bool(same)))
            }
            "Fn::Not" => {
                let [c] = arguments::<1>(name, argument)?;
                Ok(Some(Node::Bool(!self.boolean(c, depth, notes)?)))
            }
            "Fn::And" | "Fn::Or" => {
                let Some(items) = argument.as_list() else {
                    return unresolved(format!("{name} takes a list of conditions"));
                };
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    values.push(self.boolean(item, depth, notes)?);
                }
                let result = if name == "Fn::And" {
                    values.iter().all(|v| *v)
                } else {
                    values.iter().any(|v| *v)
                };
                Ok(Some(Node::Bool(result)))
            }
            "Fn::FindInMap" => {
                let Some(items) = argument.as_list().filter(|l| l.len() >= 3) else {
                    return unresolved(
                        "Fn::FindInMap takes [MapName, TopLevelKey, SecondLevelKey]",
                    );
                };
                let mut keys = Vec::with_capacity(3);
                for item in &items[..3] {
                    keys.push(self.text(item, depth, notes)?);
                }
                let found = self
                    .mappings
                    .get(&keys[0])
                    .and_then(|m| m.get(&keys[1]))
                    .and_then(|m| m.get(&keys[2]));
                match (found, items.get(3).and_then(|d| d.get("DefaultValue"))) {
                    (Some(value), _) | (None, Some(value)) => self.eval(value, depth, notes),
                    (None, None) => unresolved(format!(
                        "Fn::FindInMap: no {}.{}.{} in Mappings",
                        keys[0], keys[1], keys[2]
                    )),
                }
            }
            "Fn::Base64" => {
                let text = self.text(argument, depth, notes)?;
                Ok(Some(Node::String(
                    base64::engine::general_purpose::STANDARD.encode(text),
                )))
            }
            UNRESOLVED => unresolved(argument.as_str().unwrap_or("cannot be resolved")),
            "Fn::ImportValue" => {
                unresolved("Fn::ImportValue reads another stack's export, which only AWS has")
            }
            "Fn::GetAZs" | "Fn::Cidr" | "Fn::Transform" | "Fn::GetParam" => {
                unresolved(format!("{name} has no value outside AWS"))
            }
            other => unresolved(format!("{other} is not supported by switchboard import")),
        }
    }

    fn list(
        &self,
        node: &Node,
        depth: usize,
        notes: &mut Vec<String>,
    ) -> Result<Vec<Node>, Unresolved> {
        match self.value(node, depth, notes)? {
            Node::List(items) => Ok(items),
            other => unresolved(format!("expected a list, got {}", other.kind())),
        }
    }

    fn boolean(
        &self,
        node: &Node,
        depth: usize,
        notes: &mut Vec<String>,
    ) -> Result<bool, Unresolved> {
        match self.value(node, depth, notes)? {
            Node::Bool(b) => Ok(b),
            Node::String(s) if s == "true" || s == "false" => Ok(s == "true"),
            other => unresolved(format!("expected a condition, got {}", other.kind())),
        }
    }

    fn condition(
        &self,
        name: &str,
        depth: usize,
        notes: &mut Vec<String>,
    ) -> Result<bool, Unresolved> {
        let Some(definition) = self.conditions.get(name) else {
            return unresolved(format!("no condition named {name:?} in Conditions"));
        };
        self.boolean(definition, depth + 1, notes)
    }

    fn reference(&self, name: &str, depth: usize, notes: &mut Vec<String>) -> Eval {
        let p = self.pseudo;
        let pseudo = match name {
            "AWS::NoValue" => return Ok(None),
            "AWS::Region" => Some((p.region.clone(), "the region (--region)")),
            "AWS::AccountId" => Some((p.account_id.clone(), "a placeholder account id")),
            "AWS::StackName" => Some((p.stack_name.clone(), "the stack name (--stack-name)")),
            "AWS::StackId" => Some((
                format!(
                    "arn:{}:cloudformation:{}:{}:stack/{}/00000000-0000-0000-0000-000000000000",
                    p.partition, p.region, p.account_id, p.stack_name
                ),
                "a placeholder stack id",
            )),
            "AWS::Partition" => Some((p.partition.clone(), "the partition")),
            "AWS::URLSuffix" => Some(("amazonaws.com".to_owned(), "AWS's domain")),
            "AWS::NotificationARNs" => {
                return unresolved("AWS::NotificationARNs has no value outside AWS");
            }
            _ => None,
        };
        if let Some((value, what)) = pseudo {
            notes.push(format!("{name} → {value:?} ({what})"));
            return Ok(Some(Node::String(value)));
        }
        if let Some(parameter) = self.parameters.get(name) {
            let Some(default) = parameter.get("Default") else {
                return unresolved(format!(
                    "parameter {name} has no Default (set the value by hand)"
                ));
            };
            let value = self.value(default, depth, notes)?;
            let is_list = parameter
                .get("Type")
                .and_then(Node::as_str)
                .is_some_and(|t| t == "CommaDelimitedList" || t.starts_with("List<"));
            let value = match value {
                Node::String(s) if is_list => Node::List(
                    s.split(',')
                        .map(|part| Node::String(part.trim().to_owned()))
                        .collect(),
                ),
                other => other,
            };
            let shown = scalar(&value).unwrap_or_else(|_| value.kind().to_owned());
            notes.push(format!("!Ref {name} → {shown:?} (the parameter's Default)"));
            return Ok(Some(value));
        }
        if let Some(resource) = self.resources.get(name) {
            let value = self.physical_name(name, resource, depth, notes);
            return Ok(Some(Node::String(value)));
        }
        unresolved(format!(
            "!Ref {name}: no parameter or resource named {name}"
        ))
    }

    /// The name `Ref` gives for a resource, with a note saying where it came from.
    fn physical_name(
        &self,
        id: &str,
        resource: &Node,
        depth: usize,
        notes: &mut Vec<String>,
    ) -> String {
        let ty = resource_type(resource);
        let property = name_property(ty);
        let value = resource
            .get("Properties")
            .and_then(|p| p.get(&property))
            .map(|v| self.text(v, depth + 1, notes));
        match value {
            Some(Ok(name)) => {
                notes.push(format!("!Ref {id} → {name:?} (the {ty}'s {property})"));
                name
            }
            Some(Err(why)) => {
                notes.push(format!(
                    "!Ref {id} → {id:?} (the logical id: the {ty}'s {property} cannot be resolved: {why})"
                ));
                id.to_owned()
            }
            None => {
                notes.push(format!(
                    "!Ref {id} → {id:?} (the logical id: the {ty} has no {property}, so AWS would generate a name)"
                ));
                id.to_owned()
            }
        }
    }

    fn get_att(
        &self,
        id: &str,
        attribute: &str,
        depth: usize,
        notes: &mut Vec<String>,
    ) -> Result<Node, Unresolved> {
        let Some(resource) = self.resources.get(id) else {
            return unresolved(format!("!GetAtt {id}.{attribute}: no resource named {id}"));
        };
        let ty = resource_type(resource);
        let p = self.pseudo;
        let mut own = Vec::new();
        let name = self.physical_name(id, resource, depth, &mut own);
        let value = match (ty, attribute) {
            ("AWS::Serverless::Function" | "AWS::Lambda::Function", "Arn") => format!(
                "arn:{}:lambda:{}:{}:function:{name}",
                p.partition, p.region, p.account_id
            ),
            ("AWS::DynamoDB::Table" | "AWS::Serverless::SimpleTable", "Arn") => format!(
                "arn:{}:dynamodb:{}:{}:table/{name}",
                p.partition, p.region, p.account_id
            ),
            ("AWS::SQS::Queue", "Arn") => {
                format!(
                    "arn:{}:sqs:{}:{}:{name}",
                    p.partition, p.region, p.account_id
                )
            }
            ("AWS::SQS::Queue", "QueueName") => name.clone(),
            ("AWS::SNS::Topic", "TopicName") => name.clone(),
            ("AWS::S3::Bucket", "Arn") => format!("arn:{}:s3:::{name}", p.partition),
            ("AWS::IAM::Role", "Arn") => {
                format!("arn:{}:iam::{}:role/{name}", p.partition, p.account_id)
            }
            ("AWS::ApiGatewayV2::Api", "ApiId") => name.clone(),
            ("AWS::ApiGatewayV2::Api", "ApiEndpoint") => {
                return unresolved(format!(
                    "!GetAtt {id}.ApiEndpoint is AWS's address for the API; Switchboard's is ws://<[client] listen> (wss:// with [client.tls])"
                ));
            }
            _ => {
                return unresolved(format!(
                    "!GetAtt {id}.{attribute} ({ty}) has no value outside AWS"
                ));
            }
        };
        notes.append(&mut own);
        notes.push(format!("!GetAtt {id}.{attribute} → {value:?}"));
        Ok(Node::String(value))
    }

    fn sub(
        &self,
        template: &str,
        variables: Option<&Map>,
        depth: usize,
        notes: &mut Vec<String>,
    ) -> Result<String, Unresolved> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let Some(end) = after.find('}') else {
                return unresolved(format!("Fn::Sub {template:?}: `${{` without `}}`"));
            };
            let name = after[..end].trim();
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(value) = variables.and_then(|v| v.get(name)) {
                out.push_str(&self.text(value, depth, notes)?);
            } else if let (false, Some((id, attribute))) =
                (name.starts_with("AWS::"), name.split_once('.'))
            {
                out.push_str(&scalar(&self.get_att(id, attribute, depth, notes)?)?);
            } else {
                match self.reference(name, depth, notes)? {
                    Some(value) => out.push_str(&scalar(&value)?),
                    None => return unresolved("AWS::NoValue inside Fn::Sub"),
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The `(name, argument)` of an intrinsic call: a one-entry mapping whose key is `Ref`,
/// `Fn::…`, the private unresolved marker, or `Condition` with a string.
fn intrinsic(map: &Map) -> Option<(&str, &Node)> {
    if map.len() != 1 {
        return None;
    }
    let (key, value) = map.iter().next()?;
    let is_call = key == "Ref"
        || key.starts_with("Fn::")
        || key == UNRESOLVED
        || (key == "Condition" && value.as_str().is_some());
    is_call.then_some((key, value))
}

/// The `N` arguments of a function that takes a fixed list.
fn arguments<'a, const N: usize>(
    name: &str,
    argument: &'a Node,
) -> Result<[&'a Node; N], Unresolved> {
    argument
        .as_list()
        .filter(|items| items.len() == N)
        .map(|items| std::array::from_fn(|i| &items[i]))
        .ok_or_else(|| Unresolved(format!("{name} takes a list of {N}")))
}

/// A resolved scalar as text; lists and mappings are an error.
pub fn scalar(node: &Node) -> Result<String, Unresolved> {
    node.scalar_text()
        .ok_or_else(|| Unresolved(format!("expected a string, got {}", node.kind())))
}

/// The `Type` of a resource, or `""`.
pub fn resource_type(resource: &Node) -> &str {
    resource.get("Type").and_then(Node::as_str).unwrap_or("")
}

/// The property that names a resource of type `ty`: `TableName` for
/// `AWS::DynamoDB::Table`, `FunctionName` for `AWS::Lambda::Function`, ...
fn name_property(ty: &str) -> String {
    match ty {
        "AWS::Serverless::SimpleTable" => "TableName".into(),
        "AWS::ApiGatewayV2::Api" => "ApiName".into(),
        _ => format!("{}Name", ty.rsplit("::").next().unwrap_or(ty)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::template::parse_yaml;
    use super::*;

    const TEMPLATE: &str = r#"
Parameters:
  TableName: {Type: String, Default: simplechat_connections}
  Origins: {Type: CommaDelimitedList, Default: "a.example, b.example"}
  NoDefault: {Type: String}
  Env: {Type: String, Default: prod}
Mappings:
  Sizes: {prod: {memory: 256}}
Conditions:
  IsProd: !Equals [!Ref Env, prod]
  NotProd: !Not [!Condition IsProd]
  Both: !And [!Condition IsProd, !Equals [a, a]]
Resources:
  ConnectionsTable:
    Type: AWS::DynamoDB::Table
    Properties: {TableName: !Ref TableName}
  Unnamed: {Type: AWS::DynamoDB::Table}
  OnConnectFunction: {Type: AWS::Serverless::Function, Properties: {Handler: app.handler}}
  Named: {Type: AWS::Lambda::Function, Properties: {FunctionName: !Sub "${AWS::StackName}-named"}}
  Api: {Type: AWS::ApiGatewayV2::Api, Properties: {Name: chat, ProtocolType: WEBSOCKET}}
"#;

    fn with<T>(f: impl FnOnce(&Resolver<'_>) -> T) -> T {
        let doc = parse_yaml(TEMPLATE).unwrap();
        let resources = doc.get("Resources").unwrap().as_map().unwrap().clone();
        let pseudo = Pseudo {
            region: "eu-west-1".into(),
            ..Pseudo::default()
        };
        let resolver = Resolver::new(&doc, &resources, &pseudo);
        f(&resolver)
    }

    fn eval(expr: &str) -> Result<Node, Unresolved> {
        let node = parse_yaml(&format!("v: {expr}")).unwrap();
        with(|r| r.resolve(node.get("v").unwrap()))
    }

    fn text(expr: &str) -> String {
        scalar(&eval(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))).unwrap()
    }

    fn error(expr: &str) -> String {
        eval(expr).expect_err(expr).0
    }

    #[test]
    fn ref_parameters_pseudo_and_resources() {
        assert_eq!(text("!Ref TableName"), "simplechat_connections");
        assert_eq!(text("!Ref AWS::Region"), "eu-west-1");
        assert_eq!(text("!Ref AWS::AccountId"), "000000000000");
        assert_eq!(text("!Ref AWS::StackName"), "switchboard");
        assert_eq!(text("!Ref AWS::Partition"), "aws");
        assert_eq!(text("{Ref: ConnectionsTable}"), "simplechat_connections");
        assert_eq!(text("!Ref Unnamed"), "Unnamed");
        assert_eq!(text("!Ref OnConnectFunction"), "OnConnectFunction");
        assert_eq!(text("!Ref Named"), "switchboard-named");
        assert_eq!(
            eval("!Ref Origins").unwrap(),
            Node::List(vec![
                Node::String("a.example".into()),
                Node::String("b.example".into())
            ])
        );
        assert!(error("!Ref NoDefault").contains("no Default"));
        assert!(error("!Ref Nope").contains("no parameter or resource"));
    }

    #[test]
    fn ref_notes_say_where_a_value_came_from() {
        let node = parse_yaml("v: !Ref ConnectionsTable").unwrap();
        let mut notes = Vec::new();
        with(|r| r.resolve_noted(node.get("v").unwrap(), &mut notes)).unwrap();
        assert!(
            notes.iter().any(|n| n.contains("parameter's Default")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("AWS::DynamoDB::Table's TableName")),
            "{notes:?}"
        );
    }

    #[test]
    fn no_value_removes_the_key() {
        let value = eval("{a: 1, b: !Ref AWS::NoValue, c: [x, !Ref AWS::NoValue]}").unwrap();
        assert_eq!(value.get("b"), None);
        assert_eq!(value.get("c").unwrap().as_list().unwrap().len(), 1);
    }

    #[test]
    fn get_att_both_forms() {
        let arn = "arn:aws:lambda:eu-west-1:000000000000:function:OnConnectFunction";
        assert_eq!(text("!GetAtt OnConnectFunction.Arn"), arn);
        assert_eq!(text("!GetAtt [OnConnectFunction, Arn]"), arn);
        assert_eq!(text("{'Fn::GetAtt': [OnConnectFunction, Arn]}"), arn);
        assert_eq!(
            text("!GetAtt ConnectionsTable.Arn"),
            "arn:aws:dynamodb:eu-west-1:000000000000:table/simplechat_connections"
        );
        assert!(error("!GetAtt Api.ApiEndpoint").contains("Switchboard's is"));
        assert!(error("!GetAtt ConnectionsTable.StreamArn").contains("no value outside AWS"));
        assert!(error("!GetAtt Ghost.Arn").contains("no resource"));
    }

    #[test]
    fn sub_forms() {
        assert_eq!(
            text(
                r#"!Sub "arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${OnConnectFunction.Arn}/invocations""#
            ),
            "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:000000000000:function:OnConnectFunction/invocations"
        );
        assert_eq!(
            text("!Sub '${TableName}-${ConnectionsTable}'"),
            "simplechat_connections-simplechat_connections"
        );
        assert_eq!(
            text("!Sub 'keep ${!Literal} as is'"),
            "keep ${Literal} as is"
        );
        assert_eq!(
            text("!Sub ['${Name}/${AWS::Region}', {Name: !Ref Unnamed}]"),
            "Unnamed/eu-west-1"
        );
        assert_eq!(text("!Sub no variables"), "no variables");
        assert!(error("!Sub 'open ${x'").contains("without"));
    }

    #[test]
    fn join_select_split() {
        assert_eq!(
            text("!Join ['/', [integrations, !Ref OnConnectFunction]]"),
            "integrations/OnConnectFunction"
        );
        assert_eq!(text("!Join ['', [a, 1, true]]"), "a1true");
        assert_eq!(text("!Select [1, [a, b, c]]"), "b");
        assert_eq!(text("!Select ['0', !Split [',', 'x,y']]"), "x");
        assert_eq!(text("!Select [1, !Ref Origins]"), "b.example");
        assert!(error("!Select [5, [a]]").contains("past the end"));
        assert!(error("!Join [',']").contains("takes a list of 2"));
    }

    #[test]
    fn conditions_and_if() {
        assert_eq!(text("!If [IsProd, big, small]"), "big");
        assert_eq!(text("!If [NotProd, big, small]"), "small");
        assert_eq!(text("!If [Both, yes, no]"), "yes");
        assert!(
            eval("{a: !If [NotProd, x, !Ref AWS::NoValue]}")
                .unwrap()
                .get("a")
                .is_none()
        );
        assert!(error("!If [Missing, a, b]").contains("no condition"));
    }

    #[test]
    fn find_in_map_and_base64() {
        assert_eq!(text("!FindInMap [Sizes, prod, memory]"), "256");
        assert_eq!(text("!Base64 hi"), "aGk=");
        assert!(error("!FindInMap [Sizes, dev, memory]").contains("no Sizes.dev.memory"));
    }

    #[test]
    fn what_only_aws_knows_is_unresolved() {
        assert!(error("!ImportValue shared-table").contains("another stack"));
        assert!(error("!GetAZs ''").contains("outside AWS"));
        assert!(error("!Ref AWS::NotificationARNs").contains("outside AWS"));
        assert!(error("{'Fn::Whatever': 1}").contains("not supported"));
    }

    #[test]
    fn a_cycle_stops() {
        let doc = parse_yaml(
            "Resources:\n  A: {Type: AWS::DynamoDB::Table, Properties: {TableName: !Sub '${B}'}}\n  B: {Type: AWS::DynamoDB::Table, Properties: {TableName: !Sub '${A}'}}\n",
        )
        .unwrap();
        let resources = doc.get("Resources").unwrap().as_map().unwrap().clone();
        let pseudo = Pseudo::default();
        let r = Resolver::new(&doc, &resources, &pseudo);
        // Ref of a resource never fails: it falls back to the logical id with a note.
        let value = r
            .resolve(&Node::call("Ref", Node::String("A".into())))
            .unwrap();
        assert!(matches!(value, Node::String(_)));
    }
}
