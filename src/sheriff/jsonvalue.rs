//! A small strict JSON reader (RFC 8259) that remembers where each value
//! starts, so the JSON import can name the offending value by line and
//! column (serde_json reports positions for syntax errors only). Duplicate
//! keys, trailing commas, comments, control characters in strings, lone
//! surrogates and nesting deeper than [`MAX_DEPTH`] are errors.

use super::cursor::Cursor;
use super::error::{ConfigError, Pos};

/// How deep arrays and objects may nest.
pub const MAX_DEPTH: usize = 128;

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// A number, as written (checked against the JSON grammar).
    Number(String),
    /// A string, escapes resolved.
    Str(String),
    /// An array.
    Array(Vec<Json>),
    /// An object's members in the order written (keys are unique).
    Object(Vec<Member>),
}

/// A value and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Json {
    /// The value.
    pub value: Value,
    /// Its first character.
    pub pos: Pos,
}

/// One `"key": value` of an object.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The key.
    pub key: String,
    /// Where the key starts.
    pub key_pos: Pos,
    /// The value.
    pub value: Json,
}

impl Value {
    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

struct Reader<'a> {
    cur: Cursor<'a>,
    file: &'a str,
}

impl Reader<'_> {
    fn error(&self, pos: Pos, msg: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, pos, msg)
    }

    /// The error for the next character when `wanted` should come.
    fn unexpected(&self, wanted: &str) -> ConfigError {
        let found = match self.cur.peek() {
            Some(c) => format!("{c:?}"),
            None => "end of file".into(),
        };
        self.error(self.cur.pos(), format!("expected {wanted}, found {found}"))
    }

    fn skip_space(&mut self) {
        self.cur.take_while(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    }

    /// Consume `c` (after whitespace) if it is next.
    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        let there = self.cur.peek() == Some(c);
        if there {
            self.cur.bump();
        }
        there
    }

    fn value(&mut self, depth: usize) -> Result<Json, ConfigError> {
        self.skip_space();
        let pos = self.cur.pos();
        let value = match self.cur.peek() {
            Some('{' | '[') if depth >= MAX_DEPTH => {
                return Err(self.error(pos, format!("arrays and objects nested more than {MAX_DEPTH} deep")));
            }
            Some('{') => self.object(depth)?,
            Some('[') => self.array(depth)?,
            Some('"') => Value::Str(self.string()?),
            Some('-' | '0'..='9') => Value::Number(self.number()?),
            Some(c) if c.is_ascii_alphabetic() => {
                let word = self.cur.take_while(|c| c.is_ascii_alphanumeric());
                match word {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    "null" => Value::Null,
                    _ => return Err(self.error(pos, format!("expected a value, found {word:?}"))),
                }
            }
            _ => return Err(self.unexpected("a value")),
        };
        Ok(Json { value, pos })
    }

    fn array(&mut self, depth: usize) -> Result<Value, ConfigError> {
        self.cur.bump();
        let mut items = Vec::new();
        if self.eat(']') {
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            if self.eat(']') {
                return Ok(Value::Array(items));
            }
            if !self.eat(',') {
                return Err(self.unexpected("',' or ']'"));
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ConfigError> {
        self.cur.bump();
        let mut members: Vec<Member> = Vec::new();
        if self.eat('}') {
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_space();
            let key_pos = self.cur.pos();
            if self.cur.peek() != Some('"') {
                return Err(self.unexpected("a key string"));
            }
            let key = self.string()?;
            if let Some(first) = members.iter().find(|m| m.key == key) {
                return Err(self.error(key_pos, format!("duplicate key {key:?} (first at {})", first.key_pos)));
            }
            if !self.eat(':') {
                return Err(self.unexpected("':'"));
            }
            let value = self.value(depth + 1)?;
            members.push(Member { key, key_pos, value });
            if self.eat('}') {
                return Ok(Value::Object(members));
            }
            if !self.eat(',') {
                return Err(self.unexpected("',' or '}'"));
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<String, ConfigError> {
        let mut s = String::new();
        let digit = |c: char| c.is_ascii_digit();
        if self.cur.peek() == Some('-') {
            self.cur.bump();
            s.push('-');
        }
        match self.cur.peek() {
            Some('0') => {
                self.cur.bump();
                s.push('0');
            }
            Some('1'..='9') => s.push_str(self.cur.take_while(digit)),
            _ => return Err(self.unexpected("a digit")),
        }
        if self.cur.peek() == Some('.') {
            self.cur.bump();
            s.push('.');
            if !self.cur.peek().is_some_and(digit) {
                return Err(self.unexpected("a digit after '.'"));
            }
            s.push_str(self.cur.take_while(digit));
        }
        if let Some(e @ ('e' | 'E')) = self.cur.peek() {
            self.cur.bump();
            s.push(e);
            if let Some(sign @ ('+' | '-')) = self.cur.peek() {
                self.cur.bump();
                s.push(sign);
            }
            if !self.cur.peek().is_some_and(digit) {
                return Err(self.unexpected("a digit in the exponent"));
            }
            s.push_str(self.cur.take_while(digit));
        }
        if self.cur.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '.') {
            return Err(self.unexpected("the end of the number"));
        }
        Ok(s)
    }

    fn string(&mut self) -> Result<String, ConfigError> {
        let start = self.cur.pos();
        self.cur.bump();
        let mut s = String::new();
        loop {
            let at = self.cur.pos();
            match self.cur.bump() {
                None => return Err(self.error(start, "string not closed before the end of the file")),
                Some('"') => return Ok(s),
                Some(c) if c < ' ' => {
                    return Err(self.error(at, format!("control character {c:?} in a string (escape it)")));
                }
                Some('\\') => {
                    let c = match self.cur.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => self.unicode(at)?,
                        _ => return Err(self.error(at, "unknown escape in a string")),
                    };
                    s.push(c);
                }
                Some(c) => s.push(c),
            }
        }
    }

    /// Four hex digits.
    fn hex4(&mut self, at: Pos) -> Result<u32, ConfigError> {
        let mut n = 0;
        for _ in 0..4 {
            let d = self.cur.bump().and_then(|c| c.to_digit(16));
            n = n * 16 + d.ok_or_else(|| self.error(at, "\\u needs four hex digits"))?;
        }
        Ok(n)
    }

    /// The rest of a `\u` escape that starts at `at` (a surrogate pair is
    /// two escapes).
    fn unicode(&mut self, at: Pos) -> Result<char, ConfigError> {
        let hi = self.hex4(at)?;
        let code = match hi {
            0xd800..=0xdbff => {
                if self.cur.peek() != Some('\\') || self.cur.peek2() != Some('u') {
                    return Err(self.error(at, "lone surrogate in \\u escape"));
                }
                self.cur.bump();
                self.cur.bump();
                let lo = self.hex4(at)?;
                if !(0xdc00..=0xdfff).contains(&lo) {
                    return Err(self.error(at, "lone surrogate in \\u escape"));
                }
                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
            }
            0xdc00..=0xdfff => return Err(self.error(at, "lone surrogate in \\u escape")),
            _ => hi,
        };
        char::from_u32(code).ok_or_else(|| self.error(at, "invalid \\u escape"))
    }
}

/// Read one JSON text; errors name `file` and the place.
pub fn parse(text: &str, file: &str) -> Result<Json, ConfigError> {
    let mut r = Reader { cur: Cursor::new(text), file };
    let v = r.value(0)?;
    r.skip_space();
    if r.cur.peek().is_some() {
        return Err(r.unexpected("the end of the file"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sheriff::testutil::expect_errors;

    fn p(t: &str) -> Value {
        parse(t, "t.json").unwrap().value
    }

    fn err(t: &str) -> String {
        parse(t, "t.json").err().map(|e| e.to_string()).unwrap_or_default()
    }

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    #[test]
    fn values_and_positions() {
        let j =
            parse(" {\"a\": [1, -0.5e+3, true],\n \"b\" : null, \"c\":\"x\",\"d\":{}, \"e\":[]} ", "t.json").unwrap();
        assert_eq!(j.pos, Pos { line: 1, col: 2 });
        let Value::Object(m) = j.value else { panic!("not an object") };
        let keys: Vec<(&str, Pos, Pos)> = m.iter().map(|m| (m.key.as_str(), m.key_pos, m.value.pos)).collect();
        let at = |line, col| Pos { line, col };
        assert_eq!(
            keys,
            [
                ("a", at(1, 3), at(1, 8)),
                ("b", at(2, 2), at(2, 8)),
                ("c", at(2, 14), at(2, 18)),
                ("d", at(2, 22), at(2, 26)),
                ("e", at(2, 30), at(2, 34))
            ]
        );
        let Value::Array(a) = &m[0].value.value else { panic!("not an array") };
        let items: Vec<(&Value, Pos)> = a.iter().map(|j| (&j.value, j.pos)).collect();
        assert_eq!(
            items,
            [
                (&Value::Number("1".into()), at(1, 9)),
                (&Value::Number("-0.5e+3".into()), at(1, 12)),
                (&Value::Bool(true), at(1, 21))
            ]
        );
        assert_eq!((m[1].value.value.kind(), m[3].value.value.kind()), ("null", "an object"));
        assert_eq!(p("false"), Value::Bool(false));
        assert_eq!(p("\u{feff}0"), Value::Number("0".into()));
        assert_eq!(p("1E9"), Value::Number("1E9".into()));
    }

    #[test]
    fn strings() {
        assert_eq!(p(r#""\"\\\/\b\f\n\r\t""#), s("\"\\/\u{8}\u{c}\n\r\t"));
        assert_eq!(p(r#""\u00e9\u20AC""#), s("é€"));
        assert_eq!(p(r#""\ud83d\ude00""#), s("😀"));
        assert_eq!(p("\"é 😀\""), s("é 😀"));
    }

    #[test]
    fn errors() {
        let cases = [
            ("", "t.json:1:1: expected a value, found end of file"),
            ("[1,]", "t.json:1:4: expected a value, found ']'"),
            ("[1 2]", "t.json:1:4: expected ',' or ']', found '2'"),
            ("{\"a\":1,}", "t.json:1:8: expected a key string, found '}'"),
            ("{\"a\" 1}", "t.json:1:6: expected ':', found '1'"),
            ("{\"a\":1 \"b\":2}", "t.json:1:8: expected ',' or '}', found '\"'"),
            ("{\"a\":1,\n \"a\":2}", "t.json:2:2: duplicate key \"a\" (first at 1:2)"),
            ("{} x", "t.json:1:4: expected the end of the file, found 'x'"),
            ("nul", "t.json:1:1: expected a value, found \"nul\""),
            ("'a'", "t.json:1:1: expected a value, found '\\''"),
            ("// c\n1", "t.json:1:1: expected a value, found '/'"),
            ("01", "t.json:1:2: expected the end of the number, found '1'"),
            ("-", "t.json:1:2: expected a digit, found end of file"),
            ("1.", "t.json:1:3: expected a digit after '.', found end of file"),
            ("1e+", "t.json:1:4: expected a digit in the exponent, found end of file"),
            ("\"ab", "t.json:1:1: string not closed before the end of the file"),
            ("\"a\tb\"", "t.json:1:3: control character '\\t' in a string (escape it)"),
            ("\"\\x\"", "t.json:1:2: unknown escape in a string"),
            ("\"\\u12\"", "t.json:1:2: \\u needs four hex digits"),
            ("\"\\ud800\"", "t.json:1:2: lone surrogate in \\u escape"),
            ("\"\\ud800\\u0041\"", "t.json:1:2: lone surrogate in \\u escape"),
            ("\"\\udc00\"", "t.json:1:2: lone surrogate in \\u escape"),
        ];
        expect_errors(&cases, err);
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(err(&deep), format!("t.json:1:{}: arrays and objects nested more than 128 deep", MAX_DEPTH + 1));
        // as deep as allowed is fine
        assert!(parse(&format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH)), "t").is_ok());
    }
}
