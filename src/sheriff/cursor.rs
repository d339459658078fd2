//! A cursor over a text that knows its line and column: the one place the
//! config lexer learns where a token starts.

use super::error::Pos;

/// Characters of a text, one at a time, with the position of the next.
#[derive(Clone, Debug)]
pub struct Cursor<'a> {
    text: &'a str,
    at: usize,
    pos: Pos,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `text`, past a byte order mark if any.
    pub fn new(text: &'a str) -> Cursor<'a> {
        let at = if text.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
        Cursor { text, at, pos: Pos::START }
    }

    /// The next character, not consumed.
    pub fn peek(&self) -> Option<char> {
        self.text[self.at..].chars().next()
    }

    /// The character after the next one, not consumed.
    pub fn peek2(&self) -> Option<char> {
        self.text[self.at..].chars().nth(1)
    }

    /// Consume the next character.
    pub fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        self.pos.step(c);
        Some(c)
    }

    /// Consume characters while `keep` holds; the text they make up.
    pub fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let start = self.at;
        while self.peek().is_some_and(&keep) {
            self.bump();
        }
        &self.text[start..self.at]
    }

    /// The position of the next character.
    pub fn pos(&self) -> Pos {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_lines_and_columns() {
        let mut c = Cursor::new("\u{feff}ab\nc");
        assert_eq!((c.pos(), c.peek(), c.peek2()), (Pos::START, Some('a'), Some('b')));
        assert_eq!(c.take_while(|ch| ch.is_ascii_alphabetic()), "ab");
        assert_eq!(c.pos(), Pos { line: 1, col: 3 });
        assert_eq!(c.bump(), Some('\n'));
        assert_eq!(c.pos(), Pos { line: 2, col: 1 });
        assert_eq!((c.bump(), c.peek(), c.peek2(), c.bump()), (Some('c'), None, None, None));
        assert_eq!(c.pos(), Pos { line: 2, col: 2 });
    }
}
