//! Importing the JSON configuration of the older Python "ProcMan"
//! (sheriff-bridge.md §5.6): `{"deputies": [URL...], "processes": [{name,
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
