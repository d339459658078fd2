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
