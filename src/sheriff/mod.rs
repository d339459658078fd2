//! The sheriff CLI's configuration layer (sheriff-bridge.md §5.3–§5.6):
//! the config file and its scripts ([`config`]), and the import of the
//! older JSON "ProcMan" format ([`json`]). Pure: no I/O beyond reading a
//! file.
//!
//! Floors, from the ground: `error` (positions and [`config::ConfigError`],
//! re-exported by [`config`]) and `cursor` (walking a text by line and
//! column); `lex` (config tokens) and `jsonvalue` (a strict JSON reader
//! that keeps positions); [`config`] (parse, save, validate); [`json`] (the
//! import, on top of [`config`]).

pub mod config;
mod cursor;
mod error;
pub mod json;
mod jsonvalue;
mod lex;

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
