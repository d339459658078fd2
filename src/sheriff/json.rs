//! Importing the JSON configuration of the older Python "ProcMan"
//! (docs/fleet.md §5.6): `{"deputies": [URL...], "processes": [{name,
//! command, working_dir, host, autostart, auto_restart}]}` becomes a
//! [`Config`], with warnings for what does not carry over.
//!
//! Warnings read `FILE:LINE:COL: warning: MSG`, errors are
//! [`ConfigError`]s; both point at the JSON value concerned.

use std::collections::HashMap;

use super::config::{Action, CmdDef, Config, ConfigError, Pos, Script, Step, Target};
use super::jsonvalue::{self, Json, Member, Value};

/// The stop signal of every imported command: the old tool sent SIGTERM...
pub const IMPORT_STOP_SIGNAL: i32 = 15;
/// ...to the process group, then SIGKILL this many seconds later.
pub const IMPORT_STOP_TIME_ALLOWED: u32 = 5;
/// The script that starts the processes marked `autostart`.
pub const AUTOSTART_SCRIPT: &str = "autostart";

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

struct Import<'a> {
    file: &'a str,
    warnings: Vec<String>,
}

impl Import<'_> {
    fn error(&self, pos: Pos, msg: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, pos, msg)
    }

    fn warn(&mut self, pos: Pos, msg: impl std::fmt::Display) {
        self.warnings.push(format!("{}:{pos}: warning: {msg}", self.file));
    }

    /// A member that must be a non-empty string.
    fn text<'j>(&self, obj: &'j Json, m: Option<&'j Member>, key: &str) -> Result<(&'j str, Pos), ConfigError> {
        let Some(m) = m else { return Err(self.error(obj.pos, format!("process has no {key:?}"))) };
        match &m.value.value {
            Value::Str(s) if s.is_empty() => Err(self.error(m.value.pos, format!("{key:?} is empty"))),
            Value::Str(s) => Ok((s, m.value.pos)),
            v => Err(self.error(m.value.pos, format!("{key:?} must be a string, not {}", v.kind()))),
        }
    }

    /// A member that may be absent or null (false), else a boolean.
    fn flag(&self, m: Option<&Member>, key: &str) -> Result<bool, ConfigError> {
        match m.map(|m| &m.value) {
            None | Some(Json { value: Value::Null, .. }) => Ok(false),
            Some(Json { value: Value::Bool(b), .. }) => Ok(*b),
            Some(j) => Err(self.error(j.pos, format!("{key:?} must be true or false, not {}", j.value.kind()))),
        }
    }
}

/// The members of an object, or the error for a value that is not one.
fn members<'j>(j: &'j Json, file: &str, what: &str) -> Result<&'j [Member], ConfigError> {
    match &j.value {
        Value::Object(m) => Ok(m),
        v => Err(ConfigError::new(file, j.pos, format!("{what} must be an object, not {}", v.kind()))),
    }
}

/// Import a ProcMan JSON text (§5.6): each process becomes a top-level
/// command (`name` with `/` turned into `_`, `host` as the deputy,
/// `stop_signal = 15; stop_time_allowed = 5;`), `auto_restart` becomes
/// `auto_respawn`, and the `autostart` ones are started, in order, by a
/// generated script `"autostart"`. Warnings: `deputies` dropped,
/// `auto_restart` true, `$` in a command or directory, a renamed `name`,
/// and unknown keys (ignored). Errors: anything that is not such a file,
/// a missing or empty `name`, `command` or `host`, a value of the wrong
/// type, and two names giving the same command id. Command positions are
/// those of their `name` values.
pub fn import(text: &str, file: &str) -> Result<(Config, Vec<String>), ConfigError> {
    let root = jsonvalue::parse(text, file)?;
    let mut im = Import { file, warnings: Vec::new() };
    let mut processes = None;
    for m in members(&root, file, "the top level")? {
        match m.key.as_str() {
            "processes" => processes = Some(&m.value),
            "deputies" => {
                let urls = match &m.value.value {
                    Value::Array(a) => format!(" ({} URLs)", a.len()),
                    _ => String::new(),
                };
                im.warn(m.key_pos, format!("\"deputies\" dropped{urls}: deputies are found over LCM"));
            }
            k => im.warn(m.key_pos, format!("unknown key {k:?} ignored")),
        }
    }
    let Some(processes) = processes else { return Err(im.error(root.pos, "no \"processes\"")) };
    let Value::Array(list) = &processes.value else {
        return Err(im.error(processes.pos, format!("\"processes\" must be an array, not {}", processes.value.kind())));
    };
    let mut cfg = Config::default();
    let mut starts = Vec::new();
    let mut seen: HashMap<String, Pos> = HashMap::new();
    for p in list {
        let ms = members(p, file, "a process")?;
        let get = |key: &str| ms.iter().find(|m| m.key == key);
        for m in ms {
            if !matches!(m.key.as_str(), "name" | "command" | "working_dir" | "host" | "autostart" | "auto_restart") {
                im.warn(m.key_pos, format!("unknown key {:?} ignored", m.key));
            }
        }
        let (name, name_pos) = im.text(p, get("name"), "name")?;
        let (command, command_pos) = im.text(p, get("command"), "command")?;
        let (host, _) = im.text(p, get("host"), "host")?;
        let dir = match get("working_dir").map(|m| &m.value) {
            None | Some(Json { value: Value::Null, .. }) => None,
            Some(Json { value: Value::Str(d), .. }) if d.is_empty() => None,
            Some(Json { value: Value::Str(d), .. }) => Some(d.as_str()),
            Some(j) => return Err(im.error(j.pos, format!("\"working_dir\" must be a string, not {}", j.value.kind()))),
        };
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
                m.value.pos,
                format!(
                    "auto_restart of {id:?} becomes auto_respawn, which restarts after every exit \
                     (the old tool only retried failed spawns)"
                ),
            );
        }
        if autostart && let Some(m) = get("autostart") {
            starts.push(Action { step: Step::Start { target: Target::Cmd(id.clone()), wait: None }, pos: m.value.pos });
        }
        let mut cmd = CmdDef::new(&id, &exec_for(command, dir), host);
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
            // the reader's errors come through
            ("{\"processes\": [}".into(), "old.json:1:16: expected a value, found '}'"),
            ("".into(), "old.json:1:1: expected a value, found end of file"),
        ];
        expect_errors(&cases, err);
    }
}
