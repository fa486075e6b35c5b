//! Loading a template into one tree, [`Node`], whatever it was written in.
//!
//! YAML goes through `saphyr`, which hands user tags back as they were written, so the
//! CloudFormation short forms become their long forms here: `!Ref X` → `{Ref: X}`,
//! `!Condition X` → `{Condition: X}`, any other `!Name v` → `{"Fn::Name": v}`. After this
//! step nothing downstream knows whether a template was YAML or JSON. JSON goes through
//! `serde_json` (better error positions than a YAML parser reading JSON, and tabs are
//! fine), into the same tree with keys in the order written.
//!
//! Owns parsing only: no intrinsic is evaluated here (that is `intrinsics`).

use std::fmt;

use saphyr::{LoadableYamlNode, ScalarOwned, YamlOwned};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// One value of a template: what YAML and JSON have in common.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    String(String),
    /// A sequence.
    List(Vec<Node>),
    /// A mapping, keys in the order written.
    Map(Map),
}

/// A mapping with string keys that keeps the order of the source (resources are reported
/// in the order the template lists them).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Map(Vec<(String, Node)>);

impl Map {
    /// An empty mapping.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key` (in place when present, else at the end).
    pub fn insert(&mut self, key: impl Into<String>, value: Node) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Entries in source order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, Node)> for Map {
    fn from_iter<I: IntoIterator<Item = (String, Node)>>(iter: I) -> Self {
        let mut map = Map::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl Node {
    /// A one-entry mapping, the long form of an intrinsic function.
    pub fn call(name: &str, argument: Node) -> Node {
        Node::Map(Map(vec![(name.to_owned(), argument)]))
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    /// The mapping, if this is one.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Node::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The list, if this is one.
    pub fn as_list(&self) -> Option<&[Node]> {
        match self {
            Node::List(l) => Some(l),
            _ => None,
        }
    }

    /// `self[key]` for a mapping; `None` otherwise.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map().and_then(|m| m.get(key))
    }

    /// A scalar as text (`3`, `true`, `abc`); `None` for null, lists and mappings.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Node::Bool(b) => Some(b.to_string()),
            Node::Int(i) => Some(i.to_string()),
            Node::Float(f) => Some(f.to_string()),
            Node::String(s) => Some(s.clone()),
            Node::Null | Node::List(_) | Node::Map(_) => None,
        }
    }

    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) | Node::Float(_) => "a number",
            Node::String(_) => "a string",
            Node::List(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

/// Parses YAML text (the first document), turning CloudFormation short-form tags into
/// their long forms. The error names the line and column.
pub fn parse_yaml(text: &str) -> Result<Node, String> {
    let docs = YamlOwned::load_from_str(text).map_err(|e| {
        let at = e.marker();
        format!(
            "{} at line {}, column {}",
            e.info(),
            at.line(),
            at.col() + 1
        )
    })?;
    match docs.into_iter().next() {
        Some(doc) => from_yaml(doc),
        None => Ok(Node::Null),
    }
}

fn from_yaml(yaml: YamlOwned) -> Result<Node, String> {
    Ok(match yaml {
        YamlOwned::Value(scalar) => match scalar {
            ScalarOwned::Null => Node::Null,
            ScalarOwned::Boolean(b) => Node::Bool(b),
            ScalarOwned::Integer(i) => Node::Int(i),
            ScalarOwned::FloatingPoint(f) => Node::Float(f.into_inner()),
            ScalarOwned::String(s) => Node::String(s),
        },
        YamlOwned::Representation(text, _, _) => Node::String(text),
        YamlOwned::Sequence(items) => {
            Node::List(items.into_iter().map(from_yaml).collect::<Result<_, _>>()?)
        }
        YamlOwned::Mapping(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key = from_yaml(key)?;
                let key = key
                    .scalar_text()
                    .ok_or_else(|| format!("a mapping key must be a scalar, not {}", key.kind()))?;
                map.insert(key, from_yaml(value)?);
            }
            Node::Map(map)
        }
        YamlOwned::Tagged(tag, inner) => {
            let inner = from_yaml(*inner)?;
            if tag.handle == "!" {
                let name = match tag.suffix.as_str() {
                    "Ref" => "Ref".to_owned(),
                    "Condition" => "Condition".to_owned(),
                    other => format!("Fn::{other}"),
                };
                Node::call(&name, inner)
            } else {
                // `!!str` and other core-schema tags: saphyr already typed the scalar.
                inner
            }
        }
        YamlOwned::Alias(_) => return Err("an alias to an unknown anchor".into()),
        YamlOwned::BadValue => return Err("a value that is not valid YAML".into()),
    })
}

/// Parses JSON text, keeping the order of keys.
pub fn parse_json(text: &str) -> Result<Node, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(i64::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Node, A::Error> {
        let mut map = Map::new();
        while let Some((key, value)) = access.next_entry::<String, Node>()? {
            map.insert(key, value);
        }
        Ok(Node::Map(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Node {
        Node::String(text.into())
    }

    #[test]
    fn short_forms_become_long_forms() {
        let doc = parse_yaml(
            "a: !Ref Table\n\
             b: !GetAtt Fn.Arn\n\
             c: !Sub 'arn:${AWS::Region}'\n\
             d: !Join ['/', [integrations, !Ref Integ]]\n\
             e: !If [IsProd, 1, 2]\n\
             f: !Condition IsProd\n\
             g: !!str 3\n",
        )
        .unwrap();
        assert_eq!(doc.get("a"), Some(&Node::call("Ref", s("Table"))));
        assert_eq!(doc.get("b"), Some(&Node::call("Fn::GetAtt", s("Fn.Arn"))));
        assert_eq!(
            doc.get("c"),
            Some(&Node::call("Fn::Sub", s("arn:${AWS::Region}")))
        );
        assert_eq!(
            doc.get("d"),
            Some(&Node::call(
                "Fn::Join",
                Node::List(vec![
                    s("/"),
                    Node::List(vec![s("integrations"), Node::call("Ref", s("Integ"))])
                ])
            ))
        );
        assert_eq!(
            doc.get("e"),
            Some(&Node::call(
                "Fn::If",
                Node::List(vec![s("IsProd"), Node::Int(1), Node::Int(2)])
            ))
        );
        assert_eq!(doc.get("f"), Some(&Node::call("Condition", s("IsProd"))));
        assert_eq!(doc.get("g"), Some(&s("3")));
    }

    #[test]
    fn yaml_and_json_give_the_same_tree() {
        let yaml =
            parse_yaml("Resources:\n  B: {Type: x, N: 3, F: 1.5, T: true, Z: null}\n  A: [1]\n")
                .unwrap();
        let json = parse_json(
            r#"{"Resources": {"B": {"Type": "x", "N": 3, "F": 1.5, "T": true, "Z": null}, "A": [1]}}"#,
        )
        .unwrap();
        assert_eq!(yaml, json);
        let keys: Vec<&str> = json
            .get("Resources")
            .unwrap()
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["B", "A"], "source order is kept");
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_yaml("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.contains("line"), "{err}");
        let err = parse_json("{\"a\": }").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn anchors_and_aliases_expand() {
        let doc = parse_yaml("a: &x {k: v}\nb: *x\n").unwrap();
        assert_eq!(doc.get("a"), doc.get("b"));
    }
}
