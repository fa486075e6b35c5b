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
//!
//! [`is_json`] answers one question the parser cannot for a body nested past its
//! recursion limit: is this text JSON at all? It is only asked of bodies the depth
//! pre-scan refused, so the common case still parses once.

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

/// Whether `body` is exactly one JSON value (RFC 8259 grammar, whitespace around it
/// allowed), however deeply it nests. A loop with one bit of stack per open container:
/// no recursion, so nesting cannot overflow the stack; it stops at the first byte that
/// cannot continue a JSON text. It checks the grammar only (a `\u` escape is any four hex
/// digits, a number any length).
pub(super) fn is_json(body: &str) -> bool {
    let mut scan = Scan {
        bytes: body.as_bytes(),
        at: 0,
    };
    // One bit per open container: set for an object, clear for an array.
    let mut open: Vec<u64> = Vec::new();
    let mut depth = 0usize;
    'value: loop {
        // A value is expected here.
        scan.skip_whitespace();
        match scan.next() {
            Some(b'{') => {
                scan.skip_whitespace();
                if scan.eat(b'}') {
                    // An empty object is a whole value.
                } else {
                    if !scan.member_key() {
                        return false;
                    }
                    push(&mut open, &mut depth, true);
                    continue 'value;
                }
            }
            Some(b'[') => {
                scan.skip_whitespace();
                if !scan.eat(b']') {
                    push(&mut open, &mut depth, false);
                    continue 'value;
                }
            }
            Some(b'"') => {
                if !scan.string_rest() {
                    return false;
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                scan.at -= 1;
                if !scan.number() {
                    return false;
                }
            }
            Some(b't') => {
                if !scan.literal(b"rue") {
                    return false;
                }
            }
            Some(b'f') => {
                if !scan.literal(b"alse") {
                    return false;
                }
            }
            Some(b'n') => {
                if !scan.literal(b"ull") {
                    return false;
                }
            }
            _ => return false,
        }
        // A value ended: close containers, or go on to the next element or member.
        loop {
            scan.skip_whitespace();
            if depth == 0 {
                return scan.at == scan.bytes.len();
            }
            let in_object = open[(depth - 1) / 64] & (1 << ((depth - 1) % 64)) != 0;
            match (scan.next(), in_object) {
                (Some(b','), false) => continue 'value,
                (Some(b','), true) => {
                    scan.skip_whitespace();
                    if !scan.member_key() {
                        return false;
                    }
                    continue 'value;
                }
                (Some(b']'), false) | (Some(b'}'), true) => depth -= 1,
                _ => return false,
            }
        }
    }
}

/// Opens a container in the bit stack `open` (an object if `object`).
fn push(open: &mut Vec<u64>, depth: &mut usize, object: bool) {
    let (word, bit) = (*depth / 64, *depth % 64);
    if word == open.len() {
        open.push(0);
    }
    if object {
        open[word] |= 1 << bit;
    } else {
        open[word] &= !(1 << bit);
    }
    *depth += 1;
}

/// A cursor over the bytes of a body, for [`is_json`].
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn next(&mut self) -> Option<u8> {
        let b = self.bytes.get(self.at).copied();
        self.at += 1;
        b
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        if found {
            self.at += 1;
        }
        found
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// `"key"` then `:` (whitespace allowed around the colon), at the start of a member.
    fn member_key(&mut self) -> bool {
        if !self.eat(b'"') || !self.string_rest() {
            return false;
        }
        self.skip_whitespace();
        self.eat(b':')
    }

    /// The rest of a string after its opening quote.
    fn string_rest(&mut self) -> bool {
        loop {
            match self.next() {
                Some(b'"') => return true,
                Some(b'\\') => match self.next() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => {
                        for _ in 0..4 {
                            if !self.next().is_some_and(|h| h.is_ascii_hexdigit()) {
                                return false;
                            }
                        }
                    }
                    _ => return false,
                },
                Some(0x00..=0x1f) | None => return false,
                Some(_) => {}
            }
        }
    }

    /// A number: `-`? (`0` | [1-9][0-9]*) (`.` [0-9]+)? ([eE] [+-]? [0-9]+)?
    fn number(&mut self) -> bool {
        self.eat(b'-');
        match self.next() {
            Some(b'0') => {}
            Some(b'1'..=b'9') => self.digits(),
            _ => return false,
        }
        if self.eat(b'.') {
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return false;
            }
            self.digits();
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return false;
            }
            self.digits();
        }
        true
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    /// The rest of `true`, `false` or `null` after its first letter.
    fn literal(&mut self, rest: &[u8]) -> bool {
        let found = self.bytes[self.at.min(self.bytes.len())..].starts_with(rest);
        self.at += rest.len();
        found
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
    fn is_json_agrees_with_serde_json_within_its_recursion_limit() {
        let bodies = [
            r#"{"action":"echo"}"#,
            r#" { "a" : [ 1 , -2.5e+3 , true , false , null , "s\"\\\/\b\f\n\r\t\u00e9" ] } "#,
            r#"[]"#,
            r#"{}"#,
            r#"[[],{},[{}]]"#,
            r#""just a string""#,
            "0",
            "-0.0e0",
            "null",
            "é",
            "",
            "   ",
            "{",
            "[1,]",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{1:2}"#,
            "[1 2]",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "tru",
            "nul",
            "truex",
            r#""\x""#,
            r#""\u12g4""#,
            "\"tab\there\"",
            r#"{"a":1} {"b":2}"#,
            "[1]]",
            "[1}",
            r#"{"a":1]"#,
            "hello",
            "{{ hello",
        ];
        for body in bodies {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok();
            assert_eq!(is_json(body), serde, "{body:?}");
        }
    }

    #[test]
    fn is_json_at_any_depth() {
        // (body, is it JSON?)
        let deep = |n: usize, open: &str, close: &str| open.repeat(n) + &close.repeat(n);
        let cases = [
            (deep(65, "[", "]"), true),
            (deep(100_000, "[", "]"), true),
            (deep(100_000, r#"{"a":"#, "}"), false), // `{"a":}` is missing a value
            (
                format!("{}1{}", r#"{"a":"#.repeat(20_000), "}".repeat(20_000)),
                true,
            ),
            (
                format!("{}1{}", r#"[{"a":"#.repeat(200), "}]".repeat(200)),
                true,
            ),
            (
                format!("{}1{}", r#"[{"a":"#.repeat(200), "]}".repeat(200)),
                false,
            ),
            ("[".repeat(100_000), false),
            (deep(100_000, "[", "]") + "]", false),
            ("{".repeat(65) + " hello", false),
            ("[".repeat(65) + "hello" + &"]".repeat(65), false),
        ];
        for (body, want) in cases {
            let shown: String = body.chars().take(30).collect();
            assert_eq!(is_json(&body), want, "{shown:?}… ({} bytes)", body.len());
        }
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
