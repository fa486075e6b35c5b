//! The route selection expression: parse arbitrary text, and evaluate a parsed expression
//! against an arbitrary body at an arbitrary depth limit. Input: the expression, a NUL
//! byte, the body (one byte of it chooses the depth limit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::routing::{Evaluation, SelectionExpression};

fuzz_target!(|data: &[u8]| {
    let (expression, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(expression) = std::str::from_utf8(expression) else {
        return;
    };
    // `client.max_json_depth` is 1–127 (the JSON parser's own limit is 128 levels).
    let (depth, body) = rest
        .split_first()
        .map_or((64, rest), |(d, b)| (*d as usize % 128, b));
    let body = String::from_utf8_lossy(body);
    let Ok(parsed) = SelectionExpression::parse(expression) else {
        return;
    };
    // The text is kept exactly, and parsing it again gives the same expression.
    assert_eq!(parsed.as_str(), expression);
    let again = SelectionExpression::parse(&parsed.to_string()).expect("reparse");
    assert_eq!(again.needs_body(), parsed.needs_body());
    let first = parsed.evaluate(&body, depth);
    // Evaluation is a pure function of its input.
    assert_eq!(first, again.evaluate(&body, depth));
    // "Not JSON" means the body is not a JSON object or array: never one the parser reads
    // (within the depth limit it is evaluated, past it `TooDeep`). Text that is not JSON
    // may open any number of brackets and still be "not JSON".
    if first == Evaluation::NotJson {
        let value = serde_json::from_str::<serde_json::Value>(&body);
        assert!(
            !matches!(
                value,
                Ok(serde_json::Value::Object(_) | serde_json::Value::Array(_))
            ),
            "a JSON object or array was reported as not JSON (depth limit {depth})"
        );
    }
    if !parsed.needs_body() {
        assert!(matches!(first, Evaluation::Value(_)), "{first:?}");
    }
});
