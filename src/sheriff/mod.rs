//! The sheriff (`daemonproxy-sheriff`): holds the desired state of every
//! command on every deputy, sends the orders, shows status and runs
//! scripts (docs/fleet.md §5). It reaches daemonproxy only through
//! deputies (bridges) on LCM.
//!
//! Floors: configuration — `error` (positions and [`config::ConfigError`],
//! re-exported by [`config`]) and `cursor` (walking a text by line and
//! column), `lex` (config tokens), [`config`] (parse, save, validate; pure,
//! no I/O beyond reading a file), [`json`] (import of the older JSON
//! "ProcMan" format, read by serde_json);
//! [`model`] (the fleet and the decisions, no I/O), [`view`] (selections and
//! tables), [`script`] (running scripts); [`engine`] (the sheriff on LCM),
//! [`serve`] (the long-running sheriff and its control socket);
//! [`snapshot`] (the fleet copied out for the web side), [`metrics`]
//! (/metrics text) and [`http`] (the page and JSON API of `serve --http`).

pub mod config;
mod cursor;
pub mod engine;
mod error;
pub mod http;
pub mod json;
mod lex;
pub mod metrics;
pub mod model;
pub mod script;
pub mod serve;
pub mod snapshot;
pub mod view;

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
