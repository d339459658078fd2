//! Importing the JSON configuration of the older Python "ProcMan"
//! (docs/fleet.md §5.6): `{"deputies": [URL...], "processes": [{name,
//! command, working_dir, host, autostart, auto_restart}]}` becomes a
//! [`Config`], with warnings for what does not carry over.
//!
//! Warnings read `FILE:LINE:COL: warning: MSG`, errors are
//! [`ConfigError`]s; both point at the JSON value concerned.
//!
//! serde_json reads the text twice. First into a `serde_json::Value`,
//! thrown away: that checks the whole text (RFC 8259: escapes, surrogates,
//! numbers) and bounds its nesting ([`MAX_DEPTH`]). Then as
//! [`RawValue`]s, slices of the text: serde_json names a place only in its
//! own errors, so a value's place is where its slice starts. Only objects
//! the importer reads (the top level and each process) are checked for
//! duplicate keys; the first pass keeps the last of two silently.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::config::{Action, CmdDef, Config, ConfigError, Pos, Script, Step, Target};

/// The stop signal of every imported command: the old tool sent SIGTERM...
pub const IMPORT_STOP_SIGNAL: i32 = 15;
/// ...to the process group, then SIGKILL this many seconds later.
pub const IMPORT_STOP_TIME_ALLOWED: u32 = 5;
/// The script that starts the processes marked `autostart`.
pub const AUTOSTART_SCRIPT: &str = "autostart";
/// How deep arrays and objects may nest: serde_json's recursion limit
/// (it refuses the 128th level). The second pass skips values without
/// recursing, so the first pass's bound is the only one needed.
pub const MAX_DEPTH: usize = 127;

/// `s` in single quotes for `sh`: `'` becomes `'\''`.
pub fn sh_single_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `s` in double quotes, with `\`, `"` and `$` backslash-escaped (the
/// quoting a deputy's `exec_str` splitting undoes, §4.6).
pub fn double_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '$') {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// The `exec` for an old `command` run in `dir`: the command itself if it
/// has no space and there is no directory, else
/// `sh -c "cd 'DIR' && exec COMMAND"` (the old tool ran commands with a
/// space through a shell).
pub fn exec_for(command: &str, dir: Option<&str>) -> String {
    if !command.contains(' ') && dir.is_none() {
        return command.to_string();
    }
    let mut s = String::new();
    if let Some(d) = dir {
        s.push_str("cd ");
        s.push_str(&sh_single_quote(d));
        s.push_str(" && ");
    }
    s.push_str("exec ");
    s.push_str(command);
    format!("sh -c {}", double_quote(&s))
}

/// An object's members in the order written, as (key, value); a key's
/// slice includes its quotes.
struct Members<'a>(Vec<(&'a RawValue, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// One `"key": value` of an object.
struct Member<'a> {
    key: String,
    key_pos: Pos,
    value: &'a RawValue,
}

/// `v` read as a `T`, or `None` if it is another kind of value (the first
/// pass has checked the text, so nothing else can go wrong).
fn read<'a, T: Deserialize<'a>>(v: &'a RawValue) -> Option<T> {
    serde_json::from_str(v.get()).ok()
}

/// What kind of value `v` is, for error messages: its first character
/// decides, the text being valid JSON.
fn kind(v: &RawValue) -> &'static str {
    match v.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

struct Import<'a> {
    file: &'a str,
    /// The text after a byte order mark, as serde_json reads it.
    text: &'a str,
    /// Where each line of `text` starts, so that a place costs one line's
    /// walk, not the whole text's.
    line_starts: Vec<usize>,
    warnings: Vec<String>,
}

impl<'a> Import<'a> {
    fn error(&self, pos: Pos, msg: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, pos, msg)
    }

    fn warn(&mut self, pos: Pos, msg: impl fmt::Display) {
        self.warnings.push(format!("{}:{pos}: warning: {msg}", self.file));
    }

    /// The place `offset` bytes into the text.
    fn pos_at(&self, offset: usize) -> Pos {
        // line_starts[0] is 0, so line >= 1
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let col = Pos::at(&self.text[start..], offset - start).col;
        Pos { line: u32::try_from(line).unwrap_or(u32::MAX), col }
    }

    /// Where `v` starts: `serde_json::from_str` borrows every `&RawValue`
    /// from the text it reads, and that text is a slice of `self.text`.
    fn pos(&self, v: &RawValue) -> Pos {
        self.pos_at(v.get().as_ptr().addr() - self.text.as_ptr().addr())
    }

    /// serde_json's complaint as ours: its message without its own
    /// " at line L column C", at that place with the column counted in
    /// characters (serde_json counts bytes).
    fn json_error(&self, e: &serde_json::Error) -> ConfigError {
        let line_start = self.line_starts.get(e.line().saturating_sub(1)).copied().unwrap_or(0);
        let pos = self.pos_at(line_start + e.column().saturating_sub(1));
        let full = e.to_string();
        let msg = full.strip_suffix(&format!(" at line {} column {}", e.line(), e.column())).unwrap_or(&full);
        if msg == "recursion limit exceeded" {
            return self.error(pos, format!("arrays and objects nested more than {MAX_DEPTH} deep"));
        }
        self.error(pos, msg)
    }

    /// The members of an object, or the error for a value that is not one
    /// or that has a key twice.
    fn members(&self, v: &'a RawValue, what: &str) -> Result<Vec<Member<'a>>, ConfigError> {
        let Some(Members(raw)) = read(v) else {
            return Err(self.error(self.pos(v), format!("{what} must be an object, not {}", kind(v))));
        };
        let mut members: Vec<Member> = Vec::with_capacity(raw.len());
        for (key, value) in raw {
            // a key is always a string
            let (key, key_pos) = (read::<String>(key).unwrap_or_default(), self.pos(key));
            if let Some(first) = members.iter().find(|m| m.key == key) {
                return Err(self.error(key_pos, format!("duplicate key {key:?} (first at {})", first.key_pos)));
            }
            members.push(Member { key, key_pos, value });
        }
        Ok(members)
    }

    /// A member that must be a non-empty string.
    fn text(&self, obj: &RawValue, m: Option<&Member>, key: &str) -> Result<(String, Pos), ConfigError> {
        let Some(m) = m else { return Err(self.error(self.pos(obj), format!("process has no {key:?}"))) };
        let pos = self.pos(m.value);
        match read::<String>(m.value) {
            Some(s) if s.is_empty() => Err(self.error(pos, format!("{key:?} is empty"))),
            Some(s) => Ok((s, pos)),
            None => Err(self.error(pos, format!("{key:?} must be a string, not {}", kind(m.value)))),
        }
    }

    /// A member that may be absent or null (false), else a boolean.
    fn flag(&self, m: Option<&Member>, key: &str) -> Result<bool, ConfigError> {
        let Some(m) = m else { return Ok(false) };
        match read::<Option<bool>>(m.value) {
            Some(b) => Ok(b.unwrap_or(false)),
            None => Err(self.error(self.pos(m.value), format!("{key:?} must be true or false, not {}", kind(m.value)))),
        }
    }
}

/// Import a ProcMan JSON text (§5.6): each process becomes a top-level
/// command (`name` with `/` turned into `_`, `host` as the deputy,
/// `stop_signal = 15; stop_time_allowed = 5;`), `auto_restart` becomes
/// `auto_respawn`, and the `autostart` ones are started, in order, by a
/// generated script `"autostart"`. Warnings: `deputies` dropped,
/// `auto_restart` true, `$` in a command or directory, a renamed `name`,
/// and unknown keys (ignored). Errors: anything that is not such a file
/// (in serde_json's words, e.g. `trailing comma`), nesting deeper than
/// [`MAX_DEPTH`], a missing or empty `name`, `command` or `host`, a value
/// of the wrong type, a key given twice, and two names giving the same
/// command id. Command positions are those of their `name` values.
pub fn import(text: &str, file: &str) -> Result<(Config, Vec<String>), ConfigError> {
    // RFC 8259 §8.1: a parser may ignore a byte order mark; serde_json does not.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let line_starts = std::iter::once(0).chain(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1)).collect();
    let mut im = Import { file, text, line_starts, warnings: Vec::new() };
    // the first pass (see the top of this file): errors only
    serde_json::from_str::<serde_json::Value>(text).map_err(|e| im.json_error(&e))?;
    let root: &RawValue = serde_json::from_str(text).map_err(|e| im.json_error(&e))?;
    let mut processes = None;
    for m in im.members(root, "the top level")? {
        match m.key.as_str() {
            "processes" => processes = Some(m.value),
            "deputies" => {
                let urls = match read::<Vec<&RawValue>>(m.value) {
                    Some(a) => format!(" ({} URLs)", a.len()),
                    None => String::new(),
                };
                im.warn(m.key_pos, format!("\"deputies\" dropped{urls}: deputies are found over LCM"));
            }
            k => im.warn(m.key_pos, format!("unknown key {k:?} ignored")),
        }
    }
    let Some(processes) = processes else { return Err(im.error(im.pos(root), "no \"processes\"")) };
    let Some(list) = read::<Vec<&RawValue>>(processes) else {
        return Err(im.error(im.pos(processes), format!("\"processes\" must be an array, not {}", kind(processes))));
    };
    let mut cfg = Config::default();
    let mut starts = Vec::new();
    let mut seen: HashMap<String, Pos> = HashMap::new();
    for p in list {
        let ms = im.members(p, "a process")?;
        let get = |key: &str| ms.iter().find(|m| m.key == key);
        for m in &ms {
            if !matches!(m.key.as_str(), "name" | "command" | "working_dir" | "host" | "autostart" | "auto_restart") {
                im.warn(m.key_pos, format!("unknown key {:?} ignored", m.key));
            }
        }
        let (name, name_pos) = im.text(p, get("name"), "name")?;
        let (command, command_pos) = im.text(p, get("command"), "command")?;
        let (host, _) = im.text(p, get("host"), "host")?;
        // absent, null and "" mean "not given"
        let dir = match get("working_dir") {
            None => None,
            Some(m) => match read::<Option<String>>(m.value) {
                Some(d) => d.filter(|d| !d.is_empty()),
                None => {
                    let msg = format!("\"working_dir\" must be a string, not {}", kind(m.value));
                    return Err(im.error(im.pos(m.value), msg));
                }
            },
        };
        let dir = dir.as_deref();
        let autostart = im.flag(get("autostart"), "autostart")?;
        let auto_restart = im.flag(get("auto_restart"), "auto_restart")?;

        let id = name.replace('/', "_");
        if let Some(first) = seen.get(&id) {
            return Err(im.error(name_pos, format!("duplicate command id {id:?} (first at {first})")));
        }
        seen.insert(id.clone(), name_pos);
        if id != name {
            im.warn(name_pos, format!("name {name:?} becomes command id {id:?} ('/' is not allowed)"));
        }
        if command.contains('$') || dir.is_some_and(|d| d.contains('$')) {
            im.warn(command_pos, format!("command of {id:?} contains '$': stock deputies expand it even when escaped"));
        }
        if auto_restart && let Some(m) = get("auto_restart") {
            im.warn(
                im.pos(m.value),
                format!(
                    "auto_restart of {id:?} becomes auto_respawn, which restarts after every exit \
                     (the old tool only retried failed spawns)"
                ),
            );
        }
        if autostart && let Some(m) = get("autostart") {
            starts.push(Action {
                step: Step::Start { target: Target::Cmd(id.clone()), wait: None },
                pos: im.pos(m.value),
            });
        }
        let mut cmd = CmdDef::new(&id, &exec_for(&command, dir), &host);
        cmd.auto_respawn = auto_restart;
        cmd.stop_signal = IMPORT_STOP_SIGNAL;
        cmd.stop_time_allowed = IMPORT_STOP_TIME_ALLOWED;
        cmd.pos = name_pos;
        cfg.cmds.push(cmd);
    }
    if let Some(first) = starts.first() {
        let pos = first.pos;
        cfg.scripts.push(Script { name: AUTOSTART_SCRIPT.to_string(), actions: starts, pos });
    }
    Ok((cfg, im.warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::exec;
    use crate::sheriff::config::{self, WaitFor};
    use crate::sheriff::testutil::expect_errors;

    const OLD: &str = r#"
{
    "deputies": [
        "http://k9.lan:8000",
        "http://base:8000"
    ],
    "processes": [
        {
            "name": "ticker",
            "command": "sh -c 'while :; do echo \"tick\"; sleep 2; done'",
            "working_dir": "/var/tmp",
            "host": "k9.lan",
            "autostart": true,
            "auto_restart": false
        },
        {
            "name": "cams/left",
            "command": "camera_driver",
            "host": "k9.lan",
            "autostart": false,
            "auto_restart": true
        },
        {
            "name": "logger",
            "command": "logger --dir $HOME/logs",
            "working_dir": "/home/o'brien",
            "host": "base",
            "autostart": true
        }
    ]
}"#;

    fn at(line: u32, col: u32) -> Pos {
        Pos { line, col }
    }

    fn err(text: &str) -> String {
        match import(text, "old.json") {
            Ok(c) => format!("no error, imported: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// The warnings for a text that imports.
    fn warnings(text: &str) -> Vec<String> {
        match import(text, "old.json") {
            Ok((_, w)) => w,
            Err(e) => panic!("{e}"),
        }
    }

    fn one(process: &str) -> String {
        format!("{{\"processes\": [{process}]}}")
    }

    #[test]
    fn the_old_example() {
        let (cfg, warnings) = import(OLD, "old.json").unwrap();
        let def = |id: &str, exec: &str, deputy: &str, respawn: bool, pos: Pos| config::CmdDef {
            auto_respawn: respawn,
            stop_signal: 15,
            stop_time_allowed: 5,
            pos,
            ..config::CmdDef::new(id, exec, deputy)
        };
        assert_eq!(
            cfg.cmds,
            [
                def(
                    "ticker",
                    r#"sh -c "cd '/var/tmp' && exec sh -c 'while :; do echo \"tick\"; sleep 2; done'""#,
                    "k9.lan",
                    false,
                    at(9, 21)
                ),
                def("cams_left", "camera_driver", "k9.lan", true, at(17, 21)),
                def(
                    "logger",
                    r#"sh -c "cd '/home/o'\\''brien' && exec logger --dir \$HOME/logs""#,
                    "base",
                    false,
                    at(24, 21)
                ),
            ]
        );
        let start =
            |id: &str, pos: Pos| Action { step: Step::Start { target: Target::Cmd(id.into()), wait: None }, pos };
        assert_eq!(
            cfg.scripts,
            [Script {
                name: "autostart".into(),
                pos: at(13, 26),
                actions: vec![start("ticker", at(13, 26)), start("logger", at(28, 26))]
            }]
        );
        assert_eq!(
            warnings,
            [
                "old.json:3:5: warning: \"deputies\" dropped (2 URLs): deputies are found over LCM",
                "old.json:17:21: warning: name \"cams/left\" becomes command id \"cams_left\" ('/' is not allowed)",
                "old.json:21:29: warning: auto_restart of \"cams_left\" becomes auto_respawn, which restarts after \
                 every exit (the old tool only retried failed spawns)",
                "old.json:25:24: warning: command of \"logger\" contains '$': stock deputies expand it even when escaped",
            ]
        );
        assert_eq!(config::validate(&cfg, "old.json"), Ok(()));
        // step 3: escaped for the config file, and read back the same
        let saved = config::save(&cfg);
        assert!(
            saved.contains(
                r#"    exec = "sh -c \"cd '/var/tmp' && exec sh -c 'while :; do echo \\\"tick\\\"; sleep 2; done'\"";"#
            ),
            "{saved}"
        );
        assert!(
            saved.contains("script \"autostart\" {\n    start cmd \"ticker\";\n    start cmd \"logger\";\n}\n"),
            "{saved}"
        );
        let back = config::parse(&saved, "saved.cfg").unwrap();
        let execs: Vec<&str> = back.cmds.iter().map(|c| c.exec.as_str()).collect();
        assert_eq!(execs, cfg.cmds.iter().map(|c| c.exec.as_str()).collect::<Vec<_>>());
        assert_eq!(back.cmd("ticker").map(|c| (c.stop_signal, c.stop_time_allowed)), Some((15, 5)));
    }

    /// What a deputy runs for an exec (§4.6 splitting, no variables set).
    fn argv(exec_str: &str) -> Vec<String> {
        let e = exec::split(exec_str.as_bytes(), &|_| None).unwrap();
        e.argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect()
    }

    #[test]
    fn exec_quoting() {
        assert_eq!(exec_for("camera_driver", None), "camera_driver");
        assert_eq!(exec_for("a\tb", None), "a\tb");
        assert_eq!(exec_for("echo hi", None), r#"sh -c "exec echo hi""#);
        assert_eq!(exec_for("prog", Some("/srv")), r#"sh -c "cd '/srv' && exec prog""#);
        assert_eq!(exec_for("x", Some("it's")), r#"sh -c "cd 'it'\\''s' && exec x""#);
        assert_eq!(exec_for(r#"printf '%s\n' "$X""#, None), r#"sh -c "exec printf '%s\\n' \"\$X\"""#);
        assert_eq!(sh_single_quote("a'b'"), r"'a'\''b'\'''");
        assert_eq!(double_quote(r#"\"$"#), r#""\\\"\$""#);
        // a deputy's splitting gives the shell exactly the script we meant
        for (command, dir, script) in [
            ("echo hi", None, "exec echo hi"),
            (r#"printf '%s\n' "$X" \$Y"#, None, r#"exec printf '%s\n' "$X" \$Y"#),
            (
                "sh -c 'while :; do echo \"tick\"; done'",
                Some("/var/o'dd dir"),
                "cd '/var/o'\\''dd dir' && exec sh -c 'while :; do echo \"tick\"; done'",
            ),
        ] {
            assert_eq!(argv(&exec_for(command, dir)), ["sh", "-c", script], "{command}");
        }
    }

    #[test]
    fn options_and_warnings() {
        let (cfg, w) = import(&one(r#"{"name": "a", "command": "a", "host": "h"}"#), "old.json").unwrap();
        assert_eq!(
            (cfg.cmds[0].exec.as_str(), cfg.cmds[0].auto_respawn, cfg.scripts.len(), w.len()),
            ("a", false, 0, 0)
        );
        // null and "" mean "not given"
        let (cfg, w) = import(
            &one(r#"{"name": "a", "command": "a", "host": "h", "working_dir": null, "autostart": null, "auto_restart": null}"#),
            "old.json",
        )
        .unwrap();
        assert_eq!((cfg.cmds[0].exec.as_str(), cfg.scripts.len(), w.len()), ("a", 0, 0));
        let (cfg, _) =
            import(&one(r#"{"name": "a", "command": "a", "host": "h", "working_dir": ""}"#), "old.json").unwrap();
        assert_eq!(cfg.cmds[0].exec, "a");
        // no deputies key, no warning; an empty list or a non-list still warns
        assert_eq!(warnings(r#"{"processes": []}"#), Vec::<String>::new());
        assert_eq!(
            warnings(r#"{"deputies": [], "processes": []}"#),
            ["old.json:1:2: warning: \"deputies\" dropped (0 URLs): deputies are found over LCM"]
        );
        assert_eq!(
            warnings(r#"{"deputies": "x", "processes": []}"#),
            ["old.json:1:2: warning: \"deputies\" dropped: deputies are found over LCM"]
        );
        // unknown keys are ignored with a warning
        assert_eq!(
            warnings(
                "{\"version\": 2, \"processes\": [\n  {\"name\": \"a\", \"command\": \"a\", \"host\": \"h\", \"env\": {}}]}"
            ),
            [
                "old.json:1:2: warning: unknown key \"version\" ignored",
                "old.json:2:46: warning: unknown key \"env\" ignored"
            ]
        );
        // '$' in the directory warns too
        assert_eq!(
            warnings(&one(r#"{"name": "a", "command": "a", "host": "h", "working_dir": "$HOME"}"#)),
            ["old.json:1:41: warning: command of \"a\" contains '$': stock deputies expand it even when escaped"]
        );
        // autostart alone: the script, and no warning
        let (cfg, w) =
            import(&one(r#"{"name": "a/b", "command": "a", "host": "h", "autostart": true}"#), "old.json").unwrap();
        assert_eq!(cfg.scripts[0].actions[0].step, Step::Start { target: Target::Cmd("a_b".into()), wait: None });
        assert_eq!(w.len(), 1, "{w:?}");
        let waits = cfg.scripts[0]
            .actions
            .iter()
            .filter(|a| matches!(a.step, Step::Start { wait: Some(WaitFor::Running), .. }));
        assert_eq!(waits.count(), 0);
    }

    /// Every prefix of the old example and every one-character change to
    /// it imports or fails at a place inside the text: no panics.
    #[test]
    fn damaged_files() {
        let mut texts: Vec<String> = (0..=OLD.len()).filter_map(|i| OLD.get(..i)).map(String::from).collect();
        for (i, c) in OLD.char_indices() {
            for with in ['"', '{', '}', '[', ']', ',', ':', '\\', '/', '1', 'é', ' '] {
                texts.push(format!("{}{with}{}", &OLD[..i], &OLD[i + c.len_utf8()..]));
            }
        }
        let mut good = 0;
        for t in &texts {
            match import(t, "d.json") {
                Ok((cfg, _)) => {
                    good += 1;
                    assert_eq!(config::validate(&cfg, "d.json"), Ok(()), "{t}");
                }
                Err(e) => assert!(
                    e.pos.line >= 1 && e.pos.line as usize <= t.matches('\n').count() + 1 && e.pos.col >= 1,
                    "{e} in {t}"
                ),
            }
        }
        assert!(good > 100, "{good} imported");
    }

    #[test]
    fn errors() {
        let p = |fields: &str| one(&format!("{{{fields}}}"));
        let cases: Vec<(String, &str)> = vec![
            ("[]".into(), "old.json:1:1: the top level must be an object, not an array"),
            ("{}".into(), "old.json:1:1: no \"processes\""),
            ("\n {\"deputies\": []}".into(), "old.json:2:2: no \"processes\""),
            (r#"{"processes": {}}"#.into(), "old.json:1:15: \"processes\" must be an array, not an object"),
            (one("1"), "old.json:1:16: a process must be an object, not a number"),
            (p(r#""command": "a", "host": "h""#), "old.json:1:16: process has no \"name\""),
            (p(r#""name": "a", "host": "h""#), "old.json:1:16: process has no \"command\""),
            (p(r#""name": "a", "command": "a""#), "old.json:1:16: process has no \"host\""),
            (p(r#""name": "", "command": "a", "host": "h""#), "old.json:1:25: \"name\" is empty"),
            (p(r#""name": "a", "command": "", "host": "h""#), "old.json:1:41: \"command\" is empty"),
            (p(r#""name": "a", "command": "a", "host": """#), "old.json:1:54: \"host\" is empty"),
            (p(r#""name": 7, "command": "a", "host": "h""#), "old.json:1:25: \"name\" must be a string, not a number"),
            (
                p(r#""name": "a", "command": ["a"], "host": "h""#),
                "old.json:1:41: \"command\" must be a string, not an array",
            ),
            (p(r#""name": "a", "command": "a", "host": null"#), "old.json:1:54: \"host\" must be a string, not null"),
            (
                p(r#""name": "a", "command": "a", "host": "h", "working_dir": 1"#),
                "old.json:1:74: \"working_dir\" must be a string, not a number",
            ),
            (
                p(r#""name": "a", "command": "a", "host": "h", "autostart": "yes""#),
                "old.json:1:72: \"autostart\" must be true or false, not a string",
            ),
            (
                p(r#""name": "a", "command": "a", "host": "h", "auto_restart": 1"#),
                "old.json:1:75: \"auto_restart\" must be true or false, not a number",
            ),
            (
                "{\"processes\": [\n{\"name\": \"a/b\", \"command\": \"a\", \"host\": \"h\"},\n\
                 {\"name\": \"a_b\", \"command\": \"a\", \"host\": \"h\"}]}"
                    .into(),
                "old.json:3:10: duplicate command id \"a_b\" (first at 2:10)",
            ),
            (
                "{\"processes\": [],\n \"processes\": []}".into(),
                "old.json:2:2: duplicate key \"processes\" (first at 1:2)",
            ),
            (
                p(r#""name": "a", "command": "a", "host": "h", "name": "b""#),
                "old.json:1:59: duplicate key \"name\" (first at 1:17)",
            ),
        ];
        expect_errors(&cases, err);
    }

    /// serde_json's own errors, in its words, at its place with the column
    /// counted in characters.
    #[test]
    fn syntax_errors() {
        let cases = [
            ("", "old.json:1:1: EOF while parsing a value"),
            ("{\"processes\": [}", "old.json:1:16: expected value"),
            ("{\"processes\": [1,]}", "old.json:1:18: trailing comma"),
            ("{\"processes\": [1 2]}", "old.json:1:18: expected `,` or `]`"),
            ("{\"processes\": [],}", "old.json:1:18: trailing comma"),
            ("{\"processes\" []}", "old.json:1:14: expected `:`"),
            ("{\"processes\": [] \"x\": 1}", "old.json:1:18: expected `,` or `}`"),
            ("{1: 2}", "old.json:1:2: key must be a string"),
            ("{} x", "old.json:1:4: trailing characters"),
            ("nul", "old.json:1:3: EOF while parsing a value"),
            ("'a'", "old.json:1:1: expected value"),
            ("// c\n{}", "old.json:1:1: expected value"),
            ("[01]", "old.json:1:3: invalid number"),
            ("[1e999]", "old.json:1:6: number out of range"),
            ("\"ab", "old.json:1:3: EOF while parsing a string"),
            ("\"a\tb\"", "old.json:1:3: control character (\\u0000-\\u001F) found while parsing a string"),
            ("\"\\x\"", "old.json:1:3: invalid escape"),
            ("[\"\\ud800\"]", "old.json:1:9: unexpected end of hex escape"),
            ("\"\\udc00\"", "old.json:1:7: lone leading surrogate in hex escape"),
            // a two-byte character is one column
            ("{\"é\": [x]}", "old.json:1:8: expected value"),
            ("{\"processes\": [],\n\"x\": [é]}", "old.json:2:7: expected value"),
        ];
        expect_errors(&cases, err);
        // a byte order mark is skipped, and is no column
        assert_eq!(err("\u{feff}[]"), "old.json:1:1: the top level must be an object, not an array");
        // escapes are resolved
        let (cfg, _) =
            import(&one(r#"{"name": "caf\u00e9", "command": "\ud83d\ude00", "host": "\"h\""}"#), "old.json").unwrap();
        assert_eq!(
            (cfg.cmds[0].id.as_str(), cfg.cmds[0].exec.as_str(), cfg.cmds[0].deputy.as_str()),
            ("café", "😀", "\"h\"")
        );
    }

    /// Nesting deeper than MAX_DEPTH is refused wherever it is, even in
    /// a value that would be ignored; far deeper nesting gives the same
    /// error, not a stack overflow.
    #[test]
    fn nesting() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let at = |n: usize| format!("{{\"processes\": [], \"x\": {}}}", nested(n));
        assert_eq!(warnings(&at(MAX_DEPTH - 1)), ["old.json:1:19: warning: unknown key \"x\" ignored"]);
        // the object is the first level and the first bracket is in column
        // 24: the 127th bracket is one level too many
        let deepest = 23 + MAX_DEPTH;
        assert_eq!(err(&at(MAX_DEPTH)), format!("old.json:1:{deepest}: arrays and objects nested more than 127 deep"));
        assert_eq!(err(&at(1_000_000)), format!("old.json:1:{deepest}: arrays and objects nested more than 127 deep"));
        assert_eq!(err(&"[".repeat(1_000_000)), "old.json:1:128: arrays and objects nested more than 127 deep");
    }
}
