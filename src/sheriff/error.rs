//! Positions in a sheriff configuration (or an imported JSON file) and the
//! one error type that names them: every complaint about a user's file says
//! `FILE:LINE:COL: MSG`, so editors can jump to the offending token.

use std::fmt;

/// A place in a text: 1-based line and column, the column counted in
/// characters (a tab is one). [`Pos::NONE`] (0:0) means "no place": the
/// file as a whole, e.g. when it cannot be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1, in characters.
    pub col: u32,
}

impl Pos {
    /// No place in the text (0:0): the error concerns the whole file.
    pub const NONE: Pos = Pos { line: 0, col: 0 };
    /// The first character of a text.
    pub const START: Pos = Pos { line: 1, col: 1 };

    /// The place `offset` bytes into `text` (clamped to its end, and to a
    /// character boundary below it).
    pub fn at(text: &str, offset: usize) -> Pos {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut pos = Pos::START;
        for c in text[..end].chars() {
            pos.step(c);
        }
        pos
    }

    /// Move past `c`: a newline starts the next line.
    pub fn step(&mut self, c: char) {
        if c == '\n' {
            self.line = self.line.saturating_add(1);
            self.col = 1;
        } else {
            self.col = self.col.saturating_add(1);
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// What is wrong with a configuration, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as the caller gave it.
    pub file: String,
    /// The offending token ([`Pos::NONE`] for the whole file).
    pub pos: Pos,
    /// What is wrong, without file or position.
    pub msg: String,
}

impl ConfigError {
    /// An error in `file` at `pos`.
    pub fn new(file: &str, pos: Pos, msg: impl Into<String>) -> ConfigError {
        ConfigError { file: file.to_string(), pos, msg: msg.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.pos, self.msg)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let t = "ab\n\tcé\nd";
        assert_eq!(Pos::at(t, 0), Pos { line: 1, col: 1 });
        assert_eq!(Pos::at(t, 2), Pos { line: 1, col: 3 });
        assert_eq!(Pos::at(t, 3), Pos { line: 2, col: 1 });
        // a tab is one column, and so is a two-byte character
        assert_eq!(Pos::at(t, 5), Pos { line: 2, col: 3 });
        assert_eq!(Pos::at(t, 7), Pos { line: 2, col: 4 });
        // inside a character: its start; past the end: the end
        assert_eq!(Pos::at(t, 6), Pos { line: 2, col: 3 });
        assert_eq!(Pos::at(t, 99), Pos { line: 3, col: 2 });
    }

    #[test]
    fn display() {
        let e = ConfigError::new("robot.cfg", Pos { line: 3, col: 14 }, "unknown attribute 'colour'");
        assert_eq!(e.to_string(), "robot.cfg:3:14: unknown attribute 'colour'");
        assert_eq!(ConfigError::new("x", Pos::NONE, "cannot read").to_string(), "x:0:0: cannot read");
    }
}
