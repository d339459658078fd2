//! The tokens of a sheriff configuration file (docs/fleet.md §5.3):
//! `#` comments to the end of the line, identifiers
//! `[A-Za-z_][A-Za-z0-9_-]*`, `"strings"` (`\n`, `\r`, `\t`, and `\c` = `c`;
//! no raw newline), unsigned integers and `= ; { }`.

use std::fmt;

use super::cursor::Cursor;
use super::error::{ConfigError, Pos};

/// One token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok<'a> {
    /// `[A-Za-z_][A-Za-z0-9_-]*`, borrowed from the text.
    Ident(&'a str),
    /// A string's value, escapes resolved.
    Str(String),
    /// An unsigned integer.
    Int(u64),
    /// `=`
    Assign,
    /// `;`
    Semi,
    /// `{`
    Open,
    /// `}`
    Close,
    /// The end of the text.
    End,
}

impl fmt::Display for Tok<'_> {
    /// How an error message names the token it found.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "'{s}'"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Int(n) => write!(f, "integer {n}"),
            Tok::Assign => f.write_str("'='"),
            Tok::Semi => f.write_str("';'"),
            Tok::Open => f.write_str("'{'"),
            Tok::Close => f.write_str("'}'"),
            Tok::End => f.write_str("end of file"),
        }
    }
}

/// A token and where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    /// The token.
    pub tok: Tok<'a>,
    /// Its first character.
    pub pos: Pos,
}

/// Splits a configuration text into tokens.
#[derive(Clone, Debug)]
pub struct Lexer<'a> {
    cur: Cursor<'a>,
    file: &'a str,
}

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl<'a> Lexer<'a> {
    /// A lexer over `text`; errors name `file`.
    pub fn new(text: &'a str, file: &'a str) -> Lexer<'a> {
        Lexer { cur: Cursor::new(text), file }
    }

    fn error(&self, pos: Pos, msg: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, pos, msg)
    }

    /// The next token, past whitespace and comments.
    pub fn next_token(&mut self) -> Result<Token<'a>, ConfigError> {
        loop {
            self.cur.take_while(char::is_whitespace);
            if self.cur.peek() != Some('#') {
                break;
            }
            self.cur.take_while(|c| c != '\n');
        }
        let pos = self.cur.pos();
        let Some(c) = self.cur.peek() else { return Ok(Token { tok: Tok::End, pos }) };
        let tok = match c {
            '=' | ';' | '{' | '}' => {
                self.cur.bump();
                match c {
                    '=' => Tok::Assign,
                    ';' => Tok::Semi,
                    '{' => Tok::Open,
                    _ => Tok::Close,
                }
            }
            '"' => Tok::Str(self.string(pos)?),
            c if ident_start(c) => Tok::Ident(self.cur.take_while(ident_char)),
            c if c.is_ascii_digit() => {
                let digits = self.cur.take_while(|c| c.is_ascii_digit());
                let n = digits.parse().map_err(|_| self.error(pos, format!("integer {digits} is too large")))?;
                Tok::Int(n)
            }
            '-' if self.cur.peek2().is_some_and(|c| c.is_ascii_digit()) => {
                return Err(self.error(pos, "negative numbers are not allowed"));
            }
            c => return Err(self.error(pos, format!("unexpected character {c:?}"))),
        };
        Ok(Token { tok, pos })
    }

    /// The rest of a string whose opening quote is at `start`.
    fn string(&mut self, start: Pos) -> Result<String, ConfigError> {
        self.cur.bump();
        let mut s = String::new();
        loop {
            let at = self.cur.pos();
            match self.cur.bump() {
                None => return Err(self.error(start, "string not closed before the end of the file")),
                Some('\n') => return Err(self.error(start, "string not closed before the end of the line")),
                Some('"') => return Ok(s),
                Some('\\') => match self.cur.bump() {
                    None => return Err(self.error(start, "string not closed before the end of the file")),
                    // `\` then a line break would hide a raw newline in the string
                    Some('\n') => return Err(self.error(at, "line break after '\\' in a string (write \\n)")),
                    Some('n') => s.push('\n'),
                    Some('r') => s.push('\r'),
                    Some('t') => s.push('\t'),
                    Some(c) => s.push(c),
                },
                Some(c) => s.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sheriff::testutil::expect_errors;

    fn toks(text: &str) -> Result<Vec<(Tok<'_>, u32, u32)>, ConfigError> {
        let mut lx = Lexer::new(text, "t.cfg");
        let mut out = Vec::new();
        loop {
            let t = lx.next_token()?;
            if t.tok == Tok::End {
                return Ok(out);
            }
            out.push((t.tok, t.pos.line, t.pos.col));
        }
    }

    fn err(text: &str) -> String {
        toks(text).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn every_token() {
        let t = toks("cmd \"a b\" {x_1-y = 42; } # c { \"\n  _z;").unwrap();
        assert_eq!(
            t,
            vec![
                (Tok::Ident("cmd"), 1, 1),
                (Tok::Str("a b".into()), 1, 5),
                (Tok::Open, 1, 11),
                (Tok::Ident("x_1-y"), 1, 12),
                (Tok::Assign, 1, 18),
                (Tok::Int(42), 1, 20),
                (Tok::Semi, 1, 22),
                (Tok::Close, 1, 24),
                (Tok::Ident("_z"), 2, 3),
                (Tok::Semi, 2, 5),
            ]
        );
        // an identifier cannot start with a digit or '-': 9a is 9 then a
        assert_eq!(toks("9a").unwrap(), vec![(Tok::Int(9), 1, 1), (Tok::Ident("a"), 1, 2)]);
        assert_eq!(toks("007").unwrap(), vec![(Tok::Int(7), 1, 1)]);
        assert_eq!(toks(&u64::MAX.to_string()).unwrap(), vec![(Tok::Int(u64::MAX), 1, 1)]);
        // a comment at the end of the text, CRLF line ends, a byte order mark
        assert_eq!(toks("\u{feff}a\r\nb # end").unwrap(), vec![(Tok::Ident("a"), 1, 1), (Tok::Ident("b"), 2, 1)]);
        assert_eq!(toks("").unwrap(), vec![]);
        assert_eq!(toks("# only\n#comments").unwrap(), vec![]);
    }

    #[test]
    fn strings() {
        let one = |t: &str| match toks(t).unwrap().as_slice() {
            [(Tok::Str(s), 1, 1)] => s.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(one(r#""\n\r\t""#), "\n\r\t");
        assert_eq!(one(r#""\"\\\q\$""#), "\"\\q$");
        assert_eq!(one(r##""# not a comment; {}""##), "# not a comment; {}");
        assert_eq!(one("\"tab\there é\""), "tab\there é");
        assert_eq!(one("\"\""), "");
    }

    #[test]
    fn errors() {
        let cases = [
            ("a\n  \"open\nx\"", "t.cfg:2:3: string not closed before the end of the line"),
            ("\"open", "t.cfg:1:1: string not closed before the end of the file"),
            ("x \"ends in \\", "t.cfg:1:3: string not closed before the end of the file"),
            ("\"a\\\nb\"", "t.cfg:1:3: line break after '\\' in a string (write \\n)"),
            ("a = -5;", "t.cfg:1:5: negative numbers are not allowed"),
            ("a - b", "t.cfg:1:3: unexpected character '-'"),
            ("\n é", "t.cfg:2:2: unexpected character 'é'"),
            ("x 18446744073709551616", "t.cfg:1:3: integer 18446744073709551616 is too large"),
            ("'single'", "t.cfg:1:1: unexpected character '\\''"),
        ];
        expect_errors(&cases, err);
    }

    #[test]
    fn describes_tokens() {
        let all = [Tok::Ident("wait"), Tok::Str("a\"".into()), Tok::Int(3), Tok::Assign, Tok::Semi, Tok::Open];
        let shown: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["'wait'", "string \"a\\\"\"", "integer 3", "'='", "';'", "'{'"]);
        assert_eq!((Tok::Close.to_string(), Tok::End.to_string()), ("'}'".into(), "end of file".into()));
    }
}
