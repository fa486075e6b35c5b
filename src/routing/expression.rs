//! Route selection expressions (`Api.RouteSelectionExpression`).
//!
//! This module owns two things: parsing a selection expression **once**
//! (at startup) into a compiled [`SelectionExpression`], and evaluating that
//! compiled form against each incoming message body. It does no I/O and keeps
//! no state between evaluations.
//!
//! # Grammar
//!
//! Modelled on the AWS API Gateway selection-expression grammar (see
//! `aws-websocket-apis.md` §1.2):
//!
//! * Static text is copied as is.
//! * `\$` is an escaped dollar sign, so `\$default` evaluates to the literal
//!   `$default`. A backslash before any other character (or at the end of the
//!   text) is kept literally and does not affect the character after it: `a\b`
//!   evaluates to `a\b`, and `\\$x` is a literal `\` followed by an escaped `$`.
//! * `$request.body<path>` (unbraced) runs until the first character that
//!   cannot continue the path: dot keys are made of ASCII alphanumerics, `_`
//!   and `-` (use `['...']` for any other key), and brackets `[...]` run to their closing `]` (quoted keys may
//!   contain anything). `${request.body<path>}` (braced) ends at `}`.
//! * `<path>` is a subset of Goessner `JSONPath`: dot keys (`.a.b`), bracket keys
//!   (`['a b']`, `["a"]`, with `\'`, `\"` and `\\` escapes inside the quotes),
//!   array indexes (`[0]`) and negative indexes counted from the end (`[-1]` is
//!   the last element). An empty path (`$request.body`) is the whole body.
//!   Wildcards, filters, scripts, slices, unions and recursive descent are
//!   rejected with an error naming their byte position.
//! * Any other variable (`$context.x`, `$foo`, `${}`), a lone `$` that starts no
//!   variable, an unterminated `${`, and the empty expression are errors.
//!
//! # Evaluation
//!
//! See [`SelectionExpression::evaluate`] for how values are stringified.

use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;

use serde_json::Value;

use super::body::{Needs, is_json};

/// The deepest nesting `serde_json` parses (its recursion limit is 128 levels, the 128th
/// already refused).
const PARSER_DEPTH_LIMIT: usize = 127;

/// The only variable namespace supported, written without its leading `$`.
const BODY_VARIABLE: &str = "request.body";

/// One step of a compiled `JSONPath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    /// Object member lookup (`.key`, `['key']`). Only resolves on objects.
    Key(String),
    /// Array index from the start (`[n]`). Only resolves on arrays.
    Index(usize),
    /// Array index from the end (`[-n]`, `n >= 1`). Only resolves on arrays.
    FromEnd(usize),
}

/// One compiled piece of an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Static text, already unescaped.
    Literal(String),
    /// A `$request.body` variable with its path (empty = whole body).
    Body(Box<[Segment]>),
}

/// A route selection expression, parsed once and evaluated per message.
///
/// Build it with [`SelectionExpression::parse`] (or [`str::parse`]); evaluate
/// it with [`SelectionExpression::evaluate`]. Evaluation never re-parses the
/// expression.
#[derive(Debug, Clone)]
pub struct SelectionExpression {
    /// The original text, as given to [`SelectionExpression::parse`].
    source: String,
    /// Compiled pieces, adjacent literals merged.
    parts: Box<[Part]>,
    /// True if any part is a `$request.body` variable.
    needs_body: bool,
    /// What of a body the `$request.body` variables read (parsing keeps only that).
    needs: Needs,
    /// Total length of the literal parts, used to size the result string.
    literal_len: usize,
}

/// The outcome of evaluating a [`SelectionExpression`] against a message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    /// The evaluated selection value (may be empty, e.g. when a path is missing).
    Value(String),
    /// The expression needs the body, but the body is not JSON, or is JSON but
    /// not an object or array (a bare string, number, boolean or null). AWS says
    /// such a body "cannot be evaluated"; the caller routes to `$default`.
    NotJson,
    /// The body is JSON nesting `[`/`{` deeper than the caller's `max_depth`; it was
    /// refused before being handed to the JSON parser. Text that is not JSON is
    /// never this, however many brackets it holds: it is [`Evaluation::NotJson`].
    TooDeep,
}

/// Why a selection expression failed to parse. Every variant names the byte
/// offset (into the expression text) where the problem was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionError {
    /// The expression text is empty.
    #[error(
        "selection expression is empty (expected text or a `$request.body` variable at byte 0)"
    )]
    Empty,
    /// A `${` with no matching `}`.
    #[error("unterminated `${{` starting at byte {position}: expected a closing `}}`")]
    UnterminatedBrace {
        /// Byte offset of the `$` of the `${`.
        position: usize,
    },
    /// A variable other than `$request.body...`.
    #[error(
        "unsupported variable `{name}` at byte {position}: only `$request.body` variables are supported (write `\\$` for a literal dollar sign)"
    )]
    UnknownVariable {
        /// The variable as written (including `$` and any braces).
        name: String,
        /// Byte offset of its `$`.
        position: usize,
    },
    /// A `$` that starts no variable (e.g. at the end of the text).
    #[error("lone `$` at byte {position}: write `\\$` for a literal dollar sign")]
    LoneDollar {
        /// Byte offset of the `$`.
        position: usize,
    },
    /// A `JSONPath` feature outside the supported subset.
    #[error("unsupported JSONPath feature at byte {position}: {feature}")]
    Unsupported {
        /// Which feature (wildcard, filter, slice, ...).
        feature: &'static str,
        /// Byte offset where it starts.
        position: usize,
    },
    /// A `.` not followed by a key.
    #[error("empty key after `.` at byte {position}")]
    EmptyKey {
        /// Byte offset of the `.`.
        position: usize,
    },
    /// A `[` with no matching `]`.
    #[error("unterminated `[` at byte {position}: expected a closing `]`")]
    UnterminatedBracket {
        /// Byte offset of the `[`.
        position: usize,
    },
    /// A quoted bracket key with no closing quote.
    #[error("unterminated quoted key starting at byte {position}")]
    UnterminatedQuote {
        /// Byte offset of the opening quote.
        position: usize,
    },
    /// An array index that is not a valid integer (`[-]`, `[-0]`, overflow).
    #[error("invalid array index `{text}` at byte {position}")]
    InvalidIndex {
        /// The index text as written.
        text: String,
        /// Byte offset where the index starts.
        position: usize,
    },
    /// A character that does not fit the grammar at that point.
    #[error("unexpected character `{found}` at byte {position}")]
    UnexpectedChar {
        /// The offending character.
        found: char,
        /// Its byte offset.
        position: usize,
    },
}

impl SelectionExpression {
    /// Parses and compiles a selection expression.
    ///
    /// # Errors
    ///
    /// Returns an [`ExpressionError`] naming the byte position of the first
    /// problem: empty text, unterminated `${`, a variable other than
    /// `$request.body`, or a `JSONPath` outside the supported subset.
    pub fn parse(text: &str) -> Result<Self, ExpressionError> {
        if text.is_empty() {
            return Err(ExpressionError::Empty);
        }
        let mut parser = Parser::new(text);
        let mut parts: Vec<Part> = Vec::new();
        let mut literal = String::new();
        // Start of the raw (not yet copied) run of static text.
        let mut raw_start = 0;
        while let Some(byte) = parser.peek() {
            match byte {
                b'\\' if parser.peek_at(1) == Some(b'$') => {
                    literal.push_str(parser.slice(raw_start, parser.pos));
                    literal.push('$');
                    parser.pos += 2;
                    raw_start = parser.pos;
                }
                b'$' => {
                    literal.push_str(parser.slice(raw_start, parser.pos));
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    let path = parser.parse_variable()?;
                    parts.push(Part::Body(path));
                    raw_start = parser.pos;
                }
                _ => parser.pos += 1,
            }
        }
        literal.push_str(parser.slice(raw_start, parser.pos));
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }

        let needs_body = parts.iter().any(|p| matches!(p, Part::Body(_)));
        let mut needs = Needs::default();
        for part in &parts {
            if let Part::Body(path) = part {
                needs.add(path);
            }
        }
        let literal_len = parts
            .iter()
            .map(|p| match p {
                Part::Literal(s) => s.len(),
                Part::Body(_) => 0,
            })
            .sum();
        Ok(Self {
            source: text.to_owned(),
            parts: parts.into_boxed_slice(),
            needs_body,
            needs,
            literal_len,
        })
    }

    /// Evaluates the expression against one message body.
    ///
    /// * With no `$request.body` variable the expression is static: the body
    ///   is not looked at and the (unescaped) text is returned.
    /// * Otherwise the body's `[`/`{` nesting is pre-scanned (outside strings);
    ///   deeper than `max_depth` gives [`Evaluation::TooDeep`] if the body is JSON
    ///   (checked by a scan that does not recurse), [`Evaluation::NotJson`] if it
    ///   is not. Within the limit the body is parsed as JSON once, keeping only
    ///   the members the paths read ([`Needs`]); if that fails (including
    ///   `serde_json`'s own recursion limit of 128), or the top level is not an
    ///   object or array, the result is [`Evaluation::NotJson`].
    /// * A path that does not resolve contributes `""`. Keys only resolve on
    ///   objects and indexes only on arrays (`[0]` on an object, or `.0` on an
    ///   array, resolves to nothing).
    ///
    /// Stringification of a resolved value:
    /// * string: its contents, without quotes;
    /// * number: as `serde_json` writes it (`1`, `-3`, `2.5`, `1000.0` for `1e3`);
    /// * boolean: `true` / `false`;
    /// * null: `""` (like a missing path);
    /// * array: `[` + elements stringified by these same rules, joined by
    ///   `", "`, + `]` — so `["a",1,null]` becomes `[a, 1, ]` (AWS:
    ///   "`[item1, item2]`");
    /// * object: its compact JSON text, e.g. `{"x":1}`.
    #[must_use]
    pub fn evaluate(&self, body: &str, max_depth: usize) -> Evaluation {
        let root = if self.needs_body {
            if nesting_exceeds(body, max_depth) {
                // Rare: only text with that many brackets is scanned a second time.
                return if is_json(body) {
                    Evaluation::TooDeep
                } else {
                    Evaluation::NotJson
                };
            }
            // Parsing skips unread members without serde_json's recursion limit; keep that
            // limit for the whole body, so whether a body is JSON does not depend on the
            // expression (configurations cap `max_depth` below it, so this rarely scans).
            if max_depth > PARSER_DEPTH_LIMIT && nesting_exceeds(body, PARSER_DEPTH_LIMIT) {
                return Evaluation::NotJson;
            }
            match self.needs.parse(body) {
                Some(value @ (Value::Object(_) | Value::Array(_))) => Some(value),
                _ => return Evaluation::NotJson,
            }
        } else {
            None
        };

        let mut out = String::with_capacity(self.literal_len);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Body(path) => {
                    if let Some(value) = root.as_ref().and_then(|r| resolve(r, path)) {
                        stringify(value, &mut out);
                    }
                }
            }
        }
        Evaluation::Value(out)
    }

    /// The original expression text, exactly as given to [`Self::parse`].
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True if the expression has at least one `$request.body` variable (so
    /// evaluation parses the body); false for a static expression.
    #[must_use]
    pub fn needs_body(&self) -> bool {
        self.needs_body
    }
}

impl FromStr for SelectionExpression {
    type Err = ExpressionError;

    /// Same as [`SelectionExpression::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SelectionExpression {
    /// Writes the original expression text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Characters allowed in a dot key (and in an unbraced variable name).
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Byte cursor over the expression text. All reads are bounds-checked.
struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            bytes: src.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.pos.checked_add(offset)?).copied()
    }

    /// `src[start..end]`, or `""` if that is not a valid char range (cannot
    /// happen: the parser only splits at ASCII bytes).
    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.src.get(start..end).unwrap_or("")
    }

    fn unexpected(&self) -> ExpressionError {
        let found = self
            .src
            .get(self.pos..)
            .and_then(|s| s.chars().next())
            .unwrap_or(char::REPLACEMENT_CHARACTER);
        ExpressionError::UnexpectedChar {
            found,
            position: self.pos,
        }
    }

    /// Parses a variable starting at the `$` under the cursor, leaving the
    /// cursor just past it.
    fn parse_variable(&mut self) -> Result<Box<[Segment]>, ExpressionError> {
        let start = self.pos;
        let braced = self.peek_at(1) == Some(b'{');
        let name_start = start + if braced { 2 } else { 1 };
        let rest = self.src.get(name_start..).unwrap_or("");

        if !braced
            && !matches!(rest.bytes().next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ExpressionError::LoneDollar { position: start });
        }

        let after_name = rest.as_bytes().get(BODY_VARIABLE.len()).copied();
        let is_body = rest.starts_with(BODY_VARIABLE)
            && if braced {
                matches!(after_name, None | Some(b'.' | b'[' | b'}'))
            } else {
                !matches!(after_name, Some(b) if is_key_byte(b))
            };

        if !is_body {
            return Err(if braced {
                match rest.find('}') {
                    None => ExpressionError::UnterminatedBrace { position: start },
                    Some(end) => ExpressionError::UnknownVariable {
                        name: format!("${{{}}}", rest.get(..end).unwrap_or("")),
                        position: start,
                    },
                }
            } else {
                let len = rest
                    .bytes()
                    .take_while(|&b| is_key_byte(b) || b == b'.')
                    .count();
                ExpressionError::UnknownVariable {
                    name: format!("${}", rest.get(..len).unwrap_or("")),
                    position: start,
                }
            });
        }

        self.pos = name_start + BODY_VARIABLE.len();
        let path = self.parse_path()?;
        if braced {
            match self.peek() {
                Some(b'}') => self.pos += 1,
                None => return Err(ExpressionError::UnterminatedBrace { position: start }),
                Some(_) => return Err(self.unexpected()),
            }
        } else if self.peek() == Some(b']') {
            return Err(self.unexpected());
        }
        Ok(path.into_boxed_slice())
    }

    /// Parses `.key` / `[...]` segments until something else comes.
    fn parse_path(&mut self) -> Result<Vec<Segment>, ExpressionError> {
        let mut segments = Vec::new();
        loop {
            match self.peek() {
                Some(b'.') => {
                    let dot = self.pos;
                    self.pos += 1;
                    let key_start = self.pos;
                    while matches!(self.peek(), Some(b) if is_key_byte(b)) {
                        self.pos += 1;
                    }
                    if self.pos == key_start {
                        return Err(match self.peek() {
                            Some(b'*') => ExpressionError::Unsupported {
                                feature: "wildcard `*`",
                                position: self.pos,
                            },
                            Some(b'.') => ExpressionError::Unsupported {
                                feature: "recursive descent `..`",
                                position: dot,
                            },
                            // Dot keys are ASCII; name the non-ASCII char.
                            Some(b) if !b.is_ascii() => self.unexpected(),
                            _ => ExpressionError::EmptyKey { position: dot },
                        });
                    }
                    segments.push(Segment::Key(self.slice(key_start, self.pos).to_owned()));
                }
                Some(b'[') => segments.push(self.parse_bracket()?),
                _ => return Ok(segments),
            }
        }
    }

    /// Parses `[...]` under the cursor.
    fn parse_bracket(&mut self) -> Result<Segment, ExpressionError> {
        let open = self.pos;
        self.pos += 1;
        let unsupported = |feature, position| ExpressionError::Unsupported { feature, position };
        let segment = match self.peek() {
            None => return Err(ExpressionError::UnterminatedBracket { position: open }),
            Some(quote @ (b'\'' | b'"')) => Segment::Key(self.parse_quoted(quote)?),
            Some(b'-' | b'0'..=b'9') => self.parse_index()?,
            Some(b'*') => return Err(unsupported("wildcard `[*]`", self.pos)),
            Some(b'?') => return Err(unsupported("filter `[?(...)]`", self.pos)),
            Some(b'(') => return Err(unsupported("script expression `[(...)]`", self.pos)),
            Some(b':') => return Err(unsupported("array slice `[start:end]`", self.pos)),
            Some(_) => return Err(self.unexpected()),
        };
        match self.peek() {
            Some(b']') => {
                self.pos += 1;
                Ok(segment)
            }
            None => Err(ExpressionError::UnterminatedBracket { position: open }),
            Some(b',') => Err(unsupported("union `[a,b]`", self.pos)),
            Some(b':') => Err(unsupported("array slice `[start:end]`", self.pos)),
            Some(_) => Err(self.unexpected()),
        }
    }

    /// Parses a quoted key starting at the quote under the cursor.
    fn parse_quoted(&mut self, quote: u8) -> Result<String, ExpressionError> {
        let open = self.pos;
        self.pos += 1;
        let mut key = String::new();
        let mut run_start = self.pos;
        loop {
            match self.peek() {
                None => return Err(ExpressionError::UnterminatedQuote { position: open }),
                Some(b'\\') => match self.peek_at(1) {
                    Some(escaped) if escaped == quote || escaped == b'\\' => {
                        key.push_str(self.slice(run_start, self.pos));
                        key.push(char::from(escaped));
                        self.pos += 2;
                        run_start = self.pos;
                    }
                    _ => self.pos += 1,
                },
                Some(b) if b == quote => {
                    key.push_str(self.slice(run_start, self.pos));
                    self.pos += 1;
                    return Ok(key);
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Parses `-?[0-9]+` under the cursor.
    fn parse_index(&mut self) -> Result<Segment, ExpressionError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        while matches!(self.peek(), Some(b) if b.is_ascii_digit()) {
            self.pos += 1;
        }
        let invalid = || ExpressionError::InvalidIndex {
            text: self.slice(start, self.pos).to_owned(),
            position: start,
        };
        let n: usize = self
            .slice(digits_start, self.pos)
            .parse()
            .map_err(|_| invalid())?;
        match (negative, n) {
            (false, n) => Ok(Segment::Index(n)),
            (true, 0) => Err(invalid()),
            (true, n) => Ok(Segment::FromEnd(n)),
        }
    }
}

/// True if `body` nests `[`/`{` (outside JSON strings) deeper than `max_depth`.
/// Linear, allocation-free, and stops at the first excess.
fn nesting_exceeds(body: &str, max_depth: usize) -> bool {
    let mut depth: usize = 0;
    let mut in_string = false;
    let mut escaped = false;
    for b in body.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Follows `path` from `root`; `None` if any step does not resolve.
fn resolve<'v>(root: &'v Value, path: &[Segment]) -> Option<&'v Value> {
    path.iter()
        .try_fold(root, |value, segment| match (segment, value) {
            (Segment::Key(key), Value::Object(map)) => map.get(key),
            (Segment::Index(i), Value::Array(items)) => items.get(*i),
            (Segment::FromEnd(n), Value::Array(items)) => items.get(items.len().checked_sub(*n)?),
            _ => None,
        })
}

/// Appends the selection-value form of `value` (see [`SelectionExpression::evaluate`]).
fn stringify(value: &Value, out: &mut String) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // Writing to a String cannot fail.
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => out.push_str(s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                stringify(item, out);
            }
            out.push(']');
        }
        Value::Object(_) => {
            let _ = write!(out, "{value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWS_BODY: &str = r#"{"service":"chat","action":"join","data":{"room":"room1234"}}"#;

    const RICH_BODY: &str = r#"{
        "service": "chat", "action": "join", "data": {"room": "room1234"},
        "items": ["a", "b", "c"], "a b": "spaced", "quote\"d": "q", "it's": "apos",
        "n": 1, "neg": -3, "f": 2.5, "e": 1e3, "t": true, "fa": false, "nul": null,
        "arr": [1, "two", null, [3, 4], {"k": "v"}], "pair": ["item1", "item2"],
        "obj": {"x": 1, "y": [true]}, "empty": {}, "none": [],
        "nested": [{"id": "first"}, {"id": "last"}], "dash-key": "dk", "0": "zero",
        "ключ": "значение", "br]ace}": "odd"
    }"#;

    fn eval(expr: &str, body: &str) -> Evaluation {
        SelectionExpression::parse(expr)
            .unwrap_or_else(|e| panic!("{expr:?} should parse: {e}"))
            .evaluate(body, 64)
    }

    fn value(s: &str) -> Evaluation {
        Evaluation::Value(s.to_owned())
    }

    #[test]
    fn aws_developer_guide_table() {
        let cases = [
            ("$request.body.action", "join"),
            ("${request.body.action}", "join"),
            (
                "${request.body.service}/${request.body.action}",
                "chat/join",
            ),
            (
                "${request.body.action}-${request.body.invalidPath}",
                "join-",
            ),
            ("action", "action"),
            (r"\$default", "$default"),
        ];
        for (expr, expected) in cases {
            assert_eq!(eval(expr, AWS_BODY), value(expected), "expression {expr:?}");
        }
    }

    #[test]
    fn paths_and_stringification() {
        let cases = [
            // nested keys, dot and bracket forms
            ("$request.body.data.room", "room1234"),
            ("${request.body.data.room}", "room1234"),
            ("$request.body['data']['room']", "room1234"),
            (r#"$request.body["data"].room"#, "room1234"),
            // array indexes
            ("$request.body.items[0]", "a"),
            ("$request.body.items[1]", "b"),
            ("$request.body.items[-1]", "c"),
            ("$request.body.items[-3]", "a"),
            ("$request.body.items[-4]", ""),
            ("$request.body.items[3]", ""),
            ("$request.body.nested[1].id", "last"),
            ("$request.body.nested[-2]['id']", "first"),
            // bracket keys with spaces, quotes, brackets, non-ASCII
            ("$request.body['a b']", "spaced"),
            (r#"${request.body["a b"]}"#, "spaced"),
            (r#"${request.body["quote\"d"]}"#, "q"),
            (r"${request.body['it\'s']}", "apos"),
            (r#"$request.body["it's"]"#, "apos"),
            ("${request.body['br]ace}']}", "odd"),
            ("$request.body['ключ']", "значение"),
            ("$request.body.dash-key", "dk"),
            ("$request.body.0", "zero"),
            // stringification
            ("$request.body.n", "1"),
            ("$request.body.neg", "-3"),
            ("$request.body.f", "2.5"),
            ("$request.body.e", "1000.0"),
            ("$request.body.t", "true"),
            ("$request.body.fa", "false"),
            ("$request.body.nul", ""),
            ("$request.body.pair", "[item1, item2]"),
            ("$request.body.arr", r#"[1, two, , [3, 4], {"k":"v"}]"#),
            ("$request.body.obj", r#"{"x":1,"y":[true]}"#),
            ("$request.body.empty", "{}"),
            ("$request.body.none", "[]"),
            // missing paths
            ("$request.body.missing", ""),
            ("$request.body.data.room.deeper", ""),
            ("$request.body.items.x", ""),
            ("$request.body.data[0]", ""),
            ("$request.body.items.0", ""),
            ("x${request.body.missing}y", "xy"),
            // variable boundaries and mixing with static text
            ("$request.body.action!", "join!"),
            ("$request.body.action}", "join}"),
            ("$request.body.action/$request.body.service", "join/chat"),
            ("pre-${request.body.action}-post", "pre-join-post"),
            ("héllo $request.body.action", "héllo join"),
            // escapes
            (r"\$request.body.action", "$request.body.action"),
            (r"a\b", r"a\b"),
            (r"trailing\", r"trailing\"),
            (r"\\$default", r"\$default"),
            (r"\${request.body.action}", "${request.body.action}"),
        ];
        for (expr, expected) in cases {
            assert_eq!(
                eval(expr, RICH_BODY),
                value(expected),
                "expression {expr:?}"
            );
        }
    }

    #[test]
    fn whole_body() {
        let cases = [
            (r#"{"a": 1, "b": "x"}"#, r#"{"a":1,"b":"x"}"#),
            (r#" [1, "x", null] "#, "[1, x, ]"),
            ("[]", "[]"),
        ];
        for (body, expected) in cases {
            assert_eq!(
                eval("$request.body", body),
                value(expected),
                "body {body:?}"
            );
            assert_eq!(
                eval("${request.body}", body),
                value(expected),
                "body {body:?}"
            );
        }
    }

    #[test]
    fn non_json_and_scalar_bodies_are_not_json() {
        let bodies = [
            "not json",
            "",
            "   ",
            r#""hi""#,
            "42",
            "2.5",
            "true",
            "null",
            r#"{"action":"#,
            r#"{"action":"join"} trailing"#,
            "[1,]",
        ];
        for body in bodies {
            assert_eq!(
                eval("$request.body.action", body),
                Evaluation::NotJson,
                "body {body:?}"
            );
            assert_eq!(
                eval("x-${request.body}", body),
                Evaluation::NotJson,
                "body {body:?}"
            );
        }
    }

    #[test]
    fn static_expressions_ignore_the_body() {
        let deep = "[".repeat(100_000);
        let cases = [
            ("action", "action"),
            (r"\$default", "$default"),
            ("a\\b", "a\\b"),
        ];
        for (expr, expected) in cases {
            let parsed = SelectionExpression::parse(expr).expect("parses");
            assert!(!parsed.needs_body());
            for body in ["not json", "\"hi\"", "", deep.as_str(), AWS_BODY] {
                assert_eq!(
                    parsed.evaluate(body, 1),
                    value(expected),
                    "{expr:?} on {body:?}"
                );
            }
        }
    }

    #[test]
    fn pruned_parse_selects_what_a_full_parse_selects() {
        // The reference: parse the whole body into a Value, then resolve each path.
        fn full(expr: &SelectionExpression, body: &str) -> Evaluation {
            let root = match serde_json::from_str::<Value>(body) {
                Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
                _ if expr.needs_body => return Evaluation::NotJson,
                _ => Value::Null,
            };
            let mut out = String::new();
            for part in &expr.parts {
                match part {
                    Part::Literal(text) => out.push_str(text),
                    Part::Body(path) => {
                        if let Some(v) = resolve(&root, path) {
                            stringify(v, &mut out);
                        }
                    }
                }
            }
            Evaluation::Value(out)
        }
        let expressions = [
            "$request.body.action",
            "$request.body",
            "${request.body.a.b}-${request.body.a}",
            "$request.body[0]",
            "$request.body[-1].id",
            "${request.body.list[1]}/${request.body.list[-2].x}",
            "$request.body['a b'].c",
            "static",
        ];
        let bodies = [
            r#"{"action":"echo","pad":"x"}"#,
            r#"{"action":{"nested":[1,"two",null,{"k":true}]},"x":1}"#,
            r#"{"a":{"b":3.5e2,"c":[]},"a":{"b":"dup"}}"#,
            r#"[{"id":1},{"id":"z"},7]"#,
            r#"[]"#,
            r#"{"list":[0,{"x":"y"},2,3],"a b":{"c":"spaced"}}"#,
            r#"{"a b":{"c":"escaped key"},"action":"é"}"#,
            r#""just a string""#,
            "42",
            "null",
            r#"{"action":"echo""#,
            r#"{"action":"echo"} x"#,
            "",
            r#"{"action":-0,"n":18446744073709551616}"#,
        ];
        for e in expressions {
            let expr = SelectionExpression::parse(e).expect("parses");
            for body in bodies {
                assert_eq!(expr.evaluate(body, 64), full(&expr, body), "{e} on {body}");
            }
        }
    }

    #[test]
    fn parser_depth_limit_is_serde_jsons() {
        let nested = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(serde_json::from_str::<Value>(&nested(PARSER_DEPTH_LIMIT)).is_ok());
        assert!(serde_json::from_str::<Value>(&nested(PARSER_DEPTH_LIMIT + 1)).is_err());
    }

    #[test]
    fn depth_guard() {
        let expr = SelectionExpression::parse("$request.body.action").expect("parses");
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let cases: Vec<(String, usize, Evaluation)> = vec![
            // Too deep only when it is JSON ...
            (deep(100_000), 64, Evaluation::TooDeep),
            (
                format!("{}1{}", r#"{"a":"#.repeat(20_000), "}".repeat(20_000)),
                64,
                Evaluation::TooDeep,
            ),
            // ... text that is not JSON goes to `$default`, whatever brackets it holds.
            ("{".repeat(65) + " hello", 64, Evaluation::NotJson),
            (
                "[".repeat(65) + "hello" + &"]".repeat(65),
                64,
                Evaluation::NotJson,
            ),
            ("[".repeat(100_000), 64, Evaluation::NotJson),
            (r#"{"a":"#.repeat(100_000), 64, Evaluation::NotJson),
            (deep(65) + "]", 64, Evaluation::NotJson),
            (deep(65) + " trailing", 64, Evaluation::NotJson),
            (r#"{"action":[[1]]"#.to_owned(), 2, Evaluation::NotJson),
            (
                format!("{}{}", "[".repeat(65), "]".repeat(65)),
                64,
                Evaluation::TooDeep,
            ),
            (
                format!("{}{}", "[".repeat(64), "]".repeat(64)),
                64,
                value(""),
            ),
            (r#"{"action":[[1]]}"#.to_owned(), 3, value("[[1]]")),
            (r#"{"action":[[1]]}"#.to_owned(), 2, Evaluation::TooDeep),
            // brackets inside strings (even with escaped quotes) do not count
            (
                r#"{"action":"[[[[{{{{\"[[[["}"#.to_owned(),
                1,
                value(r#"[[[[{{{{"[[[["#),
            ),
            // within max_depth but beyond serde_json's own limit of 128
            (
                "[".repeat(200) + &"]".repeat(200),
                1000,
                Evaluation::NotJson,
            ),
            (
                "[".repeat(128) + &"]".repeat(128),
                1000,
                Evaluation::NotJson,
            ),
            ("[".repeat(127) + &"]".repeat(127), 1000, value("")),
        ];
        for (body, max_depth, expected) in cases {
            let shown: String = body.chars().take(40).collect();
            assert_eq!(
                expr.evaluate(&body, max_depth),
                expected,
                "body {shown:?}, max {max_depth}"
            );
        }
    }

    #[test]
    fn parse_errors() {
        use ExpressionError as E;
        let unsupported = |feature, position| E::Unsupported { feature, position };
        let unknown = |name: &str, position| E::UnknownVariable {
            name: name.to_owned(),
            position,
        };
        let cases = [
            ("", E::Empty),
            (
                "${request.body.action",
                E::UnterminatedBrace { position: 0 },
            ),
            (
                "x-${request.body.action",
                E::UnterminatedBrace { position: 2 },
            ),
            ("${request.body", E::UnterminatedBrace { position: 0 }),
            ("${context.x", E::UnterminatedBrace { position: 0 }),
            ("${", E::UnterminatedBrace { position: 0 }),
            ("$context.x", unknown("$context.x", 0)),
            ("a/$context.x/b", unknown("$context.x", 2)),
            ("${context.x}", unknown("${context.x}", 0)),
            ("$foo", unknown("$foo", 0)),
            ("$request.bodyx", unknown("$request.bodyx", 0)),
            ("$request.body-x", unknown("$request.body-x", 0)),
            ("${request.bodyx}", unknown("${request.bodyx}", 0)),
            ("${}", unknown("${}", 0)),
            ("$request", unknown("$request", 0)),
            ("cost: 5$", E::LoneDollar { position: 7 }),
            ("$ x", E::LoneDollar { position: 0 }),
            ("$request.body.items[*]", unsupported("wildcard `[*]`", 20)),
            ("$request.body.*", unsupported("wildcard `*`", 14)),
            (
                "$request.body..action",
                unsupported("recursive descent `..`", 13),
            ),
            (
                "$request.body.items[?(@.a)]",
                unsupported("filter `[?(...)]`", 20),
            ),
            (
                "$request.body.items[(@.length-1)]",
                unsupported("script expression `[(...)]`", 20),
            ),
            (
                "$request.body.items[0:2]",
                unsupported("array slice `[start:end]`", 21),
            ),
            (
                "$request.body.items[:2]",
                unsupported("array slice `[start:end]`", 20),
            ),
            ("$request.body.items[0,1]", unsupported("union `[a,b]`", 21)),
            ("$request.body['a','b']", unsupported("union `[a,b]`", 17)),
            ("$request.body.", E::EmptyKey { position: 13 }),
            ("${request.body.}", E::EmptyKey { position: 14 }),
            (
                "$request.body.items[",
                E::UnterminatedBracket { position: 19 },
            ),
            (
                "$request.body.items[0",
                E::UnterminatedBracket { position: 19 },
            ),
            ("$request.body['abc", E::UnterminatedQuote { position: 14 }),
            (
                r#"${request.body["a}"#,
                E::UnterminatedQuote { position: 15 },
            ),
            (
                "$request.body.items[-0]",
                E::InvalidIndex {
                    text: "-0".into(),
                    position: 20,
                },
            ),
            (
                "$request.body.items[-]",
                E::InvalidIndex {
                    text: "-".into(),
                    position: 20,
                },
            ),
            (
                "$request.body.items[99999999999999999999999]",
                E::InvalidIndex {
                    text: "99999999999999999999999".into(),
                    position: 20,
                },
            ),
            (
                "$request.body.items[x]",
                E::UnexpectedChar {
                    found: 'x',
                    position: 20,
                },
            ),
            (
                "$request.body.items[ 0]",
                E::UnexpectedChar {
                    found: ' ',
                    position: 20,
                },
            ),
            (
                "$request.body.items[0 ]",
                E::UnexpectedChar {
                    found: ' ',
                    position: 21,
                },
            ),
            (
                "${request.body.a b}",
                E::UnexpectedChar {
                    found: ' ',
                    position: 16,
                },
            ),
            (
                "${request.body.ключ}",
                E::UnexpectedChar {
                    found: 'к',
                    position: 15,
                },
            ),
            (
                "$request.body.a]",
                E::UnexpectedChar {
                    found: ']',
                    position: 15,
                },
            ),
        ];
        for (expr, expected) in cases {
            assert_eq!(
                SelectionExpression::parse(expr).err(),
                Some(expected),
                "expression {expr:?}"
            );
        }
    }

    #[test]
    fn error_messages_name_the_position() {
        let cases = [
            ("ab$request.body.items[*]", "byte 22"),
            ("ab${request.body.action", "byte 2"),
            ("route-$context.x", "byte 6"),
            ("", "byte 0"),
        ];
        for (expr, needle) in cases {
            let message = SelectionExpression::parse(expr)
                .expect_err("should fail")
                .to_string();
            assert!(
                message.contains(needle),
                "{message:?} should contain {needle:?}"
            );
        }
        let message = SelectionExpression::parse("$context.x")
            .expect_err("fails")
            .to_string();
        assert!(message.contains("$context.x"), "{message:?}");
    }

    #[test]
    fn accessors_fromstr_clone_display() {
        let text = "${request.body.service}/${request.body.action}";
        let expr: SelectionExpression = text.parse().expect("parses");
        assert_eq!(expr.as_str(), text);
        assert_eq!(expr.to_string(), text);
        assert!(expr.needs_body());
        let copy = expr.clone();
        assert_eq!(copy.evaluate(AWS_BODY, 8), value("chat/join"));
        assert!(!format!("{expr:?}").is_empty());
        assert_eq!(
            "$context.x".parse::<SelectionExpression>().err(),
            SelectionExpression::parse("$context.x").err()
        );
        let escaped = SelectionExpression::parse(r"\$default").expect("parses");
        assert_eq!(escaped.as_str(), r"\$default");
    }

    /// Cheap stand-in for fuzzing: every prefix of tricky inputs must parse or
    /// fail cleanly, and evaluation on odd bodies must not panic.
    #[test]
    fn never_panics_on_prefixes() {
        let exprs = [
            r#"${request.body['ключ \'x\' "y"']}-$request.body.a[-1][0]["b"]\$\x\"#,
            "$request.body.items[?(@.a)][*]..x.*[0:1][1,2]${context}$",
            "é$ü${é}${request.body.é}$request.body['é",
        ];
        let big = format!("{{\"a\":{}1{}}}", "[".repeat(300), "]".repeat(300));
        let bodies = [
            AWS_BODY,
            RICH_BODY,
            "\"\\",
            "[\"\\\"[",
            "{\"a\":[-1]}",
            big.as_str(),
        ];
        for expr in exprs {
            for (end, _) in expr.char_indices().chain([(expr.len(), ' ')]) {
                let prefix = &expr[..end];
                if let Ok(parsed) = SelectionExpression::parse(prefix) {
                    for body in bodies {
                        for (b_end, _) in body.char_indices().step_by(7) {
                            let _ = parsed.evaluate(&body[..b_end], 500);
                        }
                        let _ = parsed.evaluate(body, 0);
                        let _ = parsed.evaluate(body, usize::MAX);
                    }
                }
            }
        }
    }
}
