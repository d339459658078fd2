//! The sheriff CLI's configuration layer (sheriff-bridge.md §5.3–§5.6):
//! the config file and its scripts, and the import of the older JSON
//! "ProcMan" format. Pure: no I/O beyond reading a file.
//!
//! Floors: [`error`] (positions and the error type), [`cursor`] (walking a
//! text by line and column); [`lex`] (config tokens), [`jsonvalue`] (a
//! strict JSON reader); [`config`] (parse, save, validate); [`json`] (the
//! import, on top of [`config`]).

pub mod config;
pub mod cursor;
pub mod error;
pub mod json;
pub mod jsonvalue;
pub mod lex;

/// Helpers for the unit tests of this module.
#[cfg(test)]
mod testutil {
    /// Check a table of (input, expected error) against `error`, reporting
    /// every mismatch at once.
    pub fn expect_errors<S: AsRef<str>>(cases: &[(S, &str)], error: impl Fn(&str) -> String) {
        let wrong: Vec<String> = cases
            .iter()
            .map(|(text, want)| (text.as_ref(), want, error(text.as_ref())))
            .filter(|(_, want, got)| got != *want)
            .map(|(text, want, got)| format!("{text:?}\n  gives {got}\n  wants {want}"))
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
