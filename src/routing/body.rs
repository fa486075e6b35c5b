//! Parsing a message body for route selection, keeping only what the selection expression
//! reads.
//!
//! A selection expression usually reads one short path (`$request.body.action`) of a body
//! that may carry kilobytes of payload. [`Needs`] is the tree of paths an expression reads,
//! built once; [`Needs::parse`] walks the body with `serde_json` (so the whole body is
//! still checked to be JSON) and builds a [`Value`] holding only those branches: other
//! members are skipped without allocating; an array some index path reads keeps every
//! element (walked with the union of those paths, scalars there becoming `null`), so
//! indexes, including from the end, still count right; and a needed leaf is kept whole.
//! Resolving a path in that pruned value gives what it gives in the full one.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::expression::Segment;

/// The parts of a body some paths read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Needs {
    /// A path ends here: keep this value whole.
    whole: bool,
    /// Object members read below this point.
    keys: Vec<(String, Needs)>,
    /// What array elements need below this point (any index path), if any.
    items: Option<Box<Needs>>,
}

impl Needs {
    /// Adds one path (empty: the whole body).
    pub(super) fn add(&mut self, path: &[Segment]) {
        let Some((first, rest)) = path.split_first() else {
            self.whole = true;
            return;
        };
        let child = match first {
            Segment::Key(key) => {
                let at = match self.keys.iter().position(|(k, _)| k == key) {
                    Some(at) => at,
                    None => {
                        self.keys.push((key.clone(), Needs::default()));
                        self.keys.len() - 1
                    }
                };
                &mut self.keys[at].1
            }
            // Which element `[-n]` is depends on the length: every element gets the union.
            Segment::Index(_) | Segment::FromEnd(_) => self.items.get_or_insert_default(),
        };
        child.add(rest);
    }

    /// Parses `body` as JSON, keeping only what these paths read; `None` if it is not JSON.
    pub(super) fn parse(&self, body: &str) -> Option<Value> {
        let mut de = serde_json::Deserializer::from_str(body);
        let value = self.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(value)
    }
}

impl<'de> DeserializeSeed<'de> for &Needs {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        if self.whole {
            return serde::Deserialize::deserialize(de);
        }
        de.deserialize_any(self)
    }
}

/// Below a node that is not kept whole: objects and arrays are walked, scalars are dropped
/// (a path that continues past a scalar resolves to nothing).
impl<'de> Visitor<'de> for &Needs {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(Key(key)) = map.next_key()? {
            match self.keys.iter().find(|(k, _)| *k == key) {
                // A later duplicate replaces an earlier one, as in a full parse.
                Some((name, needs)) => {
                    let value = map.next_value_seed(needs)?;
                    kept.insert(name.clone(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut kept = Vec::new();
        match &self.items {
            Some(needs) => {
                while let Some(item) = seq.next_element_seed(&**needs)? {
                    kept.push(item);
                }
            }
            // No index below: the elements can go, only the array's kind matters.
            None => while seq.next_element::<IgnoredAny>()?.is_some() {},
        }
        Ok(Value::Array(kept))
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        de.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn needs(paths: &[&[Segment]]) -> Needs {
        let mut n = Needs::default();
        for p in paths {
            n.add(p);
        }
        n
    }

    fn key(k: &str) -> Segment {
        Segment::Key(k.to_owned())
    }

    #[test]
    fn keeps_only_the_read_member() {
        let n = needs(&[&[key("action")]]);
        let v = n
            .parse(r#"{"pad":"xxxx","action":"echo","data":{"a":[1,2]}}"#)
            .unwrap();
        assert_eq!(v, json!({"action": "echo"}));
    }

    #[test]
    fn a_needed_leaf_is_kept_whole_and_duplicates_keep_the_last() {
        let n = needs(&[&[key("a")]]);
        assert_eq!(
            n.parse(r#"{"a":1,"a":{"x":[true]}}"#).unwrap(),
            json!({"a": {"x": [true]}})
        );
    }

    #[test]
    fn arrays_keep_their_length_for_indexes_from_the_end() {
        let n = needs(&[&[key("list"), Segment::FromEnd(1), key("id")]]);
        let v = n
            .parse(r#"{"list":[{"id":1,"junk":2},7,{"id":"last"}]}"#)
            .unwrap();
        assert_eq!(
            v,
            json!({"list": [{"id": 1}, null, {"id": "last"}]}),
            "elements are walked with the union of index paths; scalars become null"
        );
    }

    #[test]
    fn escaped_keys_match_their_unescaped_text() {
        let n = needs(&[&[key("a b")]]);
        assert_eq!(
            n.parse(r#"{"a\u0020b":"yes"}"#).unwrap(),
            json!({"a b": "yes"})
        );
    }

    #[test]
    fn invalid_json_anywhere_is_refused() {
        let n = needs(&[&[key("action")]]);
        assert!(n.parse(r#"{"action":"echo","pad":tru}"#).is_none());
        assert!(n.parse(r#"{"action":"echo"} trailing"#).is_none());
        assert!(
            n.parse(r#"{"action":"echo","s":"bad \q escape"}"#)
                .is_none()
        );
        assert!(n.parse("").is_none());
    }

    #[test]
    fn the_whole_body_when_a_path_is_empty() {
        let n = needs(&[&[key("a")], &[]]);
        let body = r#"{"a":1,"b":[2,{"c":3}]}"#;
        assert_eq!(
            n.parse(body).unwrap(),
            serde_json::from_str::<Value>(body).unwrap()
        );
    }
}
