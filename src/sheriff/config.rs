//! The sheriff's configuration file (docs/fleet.md §5.3) and its
//! scripts (§5.4): [`parse`] and [`load`] read one, [`save`] writes one
//! back in the same syntax, [`validate`] checks scripts before they run.
//! No I/O beyond reading the file.
//!
//! The [`Config`] is flat: every command carries its normalised group path
//! (`"a/b"`, `""` at the top), and [`save`] nests the groups again. Its
//! commands are in *tree order*: a group opened twice in a file is merged
//! at its first place, so `parse(save(c))` gives `c` back (positions
//! aside).

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::path::Path;

use super::lex::{Lexer, Tok, Token};
use super::model::{MAX_CMDS_PER_DEPUTY, MAX_DEPUTY_ID, ORDERS_BUDGET, desired_len};
use crate::procman::codec::MAX_STRING;

pub use super::error::{ConfigError, Pos};

/// Can `text` (a command's `what`) go on the wire, at most `max` bytes
/// and without NUL? The message says why not.
fn wire_text(what: &str, text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        let limit = if max == MAX_STRING { "a message carries" } else { "a deputy id may be" };
        return Err(format!("{what} is {} bytes, longer than {limit} ({max})", text.len()));
    }
    if text.contains('\0') {
        return Err(format!("{what} contains a NUL character"));
    }
    Ok(())
}

/// `stop_signal` when none is given (SIGINT).
pub const DEFAULT_STOP_SIGNAL: i32 = 2;
/// `stop_time_allowed` when none is given, in seconds.
pub const DEFAULT_STOP_TIME_ALLOWED: u32 = 7;
/// The largest `stop_signal` (SIGRTMAX on Linux; the wire holds an int8).
pub const MAX_SIGNAL: i32 = 64;
/// How deep groups may nest in a file.
pub const MAX_DEPTH: usize = 64;

/// A command as the configuration defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmdDef {
    /// The command id: non-empty, no `/`, unique in the configuration.
    pub id: String,
    /// What the deputy runs (`exec_str`, split by the deputy, §4.6).
    pub exec: String,
    /// The deputy that runs it.
    pub deputy: String,
    /// Normalised group path (`"a/b"`); `""` at the top level.
    pub group: String,
    /// Restart it whenever it exits.
    pub auto_respawn: bool,
    /// The signal that stops it (1..=64, default 2).
    pub stop_signal: i32,
    /// Seconds from the stop signal to SIGKILL (>= 1, default 7).
    pub stop_time_allowed: u32,
    /// Where its id is written ([`Pos::NONE`] if it comes from elsewhere).
    pub pos: Pos,
}

impl CmdDef {
    /// A top-level command with the default attributes.
    pub fn new(id: &str, exec: &str, deputy: &str) -> CmdDef {
        CmdDef {
            id: id.to_string(),
            exec: exec.to_string(),
            deputy: deputy.to_string(),
            group: String::new(),
            auto_respawn: false,
            stop_signal: DEFAULT_STOP_SIGNAL,
            stop_time_allowed: DEFAULT_STOP_TIME_ALLOWED,
            pos: Pos::NONE,
        }
    }
}

/// The status a script waits for (§5.4 "Waits").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitFor {
    /// `"running"`: every target `Running`, `Stopped (OK)` or `Stopped (Error)`.
    Running,
    /// `"stopped"`: every target `Stopped (OK)` or `Stopped (Error)`.
    Stopped,
}

impl WaitFor {
    /// The word in the file: `running` or `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitFor::Running => "running",
            WaitFor::Stopped => "stopped",
        }
    }

    /// The status a (quoted) word names, exactly as written.
    pub fn from_word(w: &str) -> Option<WaitFor> {
        match w {
            "running" => Some(WaitFor::Running),
            "stopped" => Some(WaitFor::Stopped),
            _ => None,
        }
    }
}

/// What a script action applies to (§5.4 "Targets").
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every command.
    Everything,
    /// One command, by id.
    Cmd(String),
    /// Every command whose group path starts with these components
    /// (normalised, never empty when parsed); see [`group_matches`].
    Group(String),
}

/// One step of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `start TARGET [wait "STATUS"]`
    Start {
        /// What to start.
        target: Target,
        /// What to wait for afterwards.
        wait: Option<WaitFor>,
    },
    /// `stop TARGET [wait "STATUS"]`
    Stop {
        /// What to stop.
        target: Target,
        /// What to wait for afterwards.
        wait: Option<WaitFor>,
    },
    /// `restart TARGET [wait "STATUS"]`
    Restart {
        /// What to restart.
        target: Target,
        /// What to wait for afterwards.
        wait: Option<WaitFor>,
    },
    /// `wait ms N`: sleep N milliseconds (unsigned, so never negative).
    WaitMs(u64),
    /// `wait (cmd|group) X status "STATUS"` (never [`Target::Everything`]
    /// in a valid configuration).
    WaitStatus {
        /// What to wait for.
        target: Target,
        /// The status to wait for.
        status: WaitFor,
    },
    /// `run_script "NAME"`: run that script inline.
    RunScript(String),
}

/// A step and where it is written (its first word).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// What to do.
    pub step: Step,
    /// Where.
    pub pos: Pos,
}

/// A named script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// Its name (unique in the configuration).
    pub name: String,
    /// Its steps, in order.
    pub actions: Vec<Action>,
    /// Where its name is written.
    pub pos: Pos,
}

/// A whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The commands, in tree order (see the module comment).
    pub cmds: Vec<CmdDef>,
    /// The scripts, in file order.
    pub scripts: Vec<Script>,
}

impl Config {
    /// The command with this id.
    pub fn cmd(&self, id: &str) -> Option<&CmdDef> {
        self.cmds.iter().find(|c| c.id == id)
    }

    /// The script with this name.
    pub fn script(&self, name: &str) -> Option<&Script> {
        self.scripts.iter().find(|s| s.name == name)
    }
}

impl fmt::Display for WaitFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Target {
    /// As in the file: `everything`, `cmd "ID"`, `group "PATH"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Everything => f.write_str("everything"),
            Target::Cmd(id) => write!(f, "cmd {}", quote(id)),
            Target::Group(p) => write!(f, "group {}", quote(p)),
        }
    }
}

impl fmt::Display for Step {
    /// As in the file, without the final `;`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, target, wait) = match self {
            Step::Start { target, wait } => ("start", target, wait),
            Step::Stop { target, wait } => ("stop", target, wait),
            Step::Restart { target, wait } => ("restart", target, wait),
            Step::WaitMs(ms) => return write!(f, "wait ms {ms}"),
            Step::WaitStatus { target, status } => return write!(f, "wait {target} status \"{status}\""),
            Step::RunScript(name) => return write!(f, "run_script {}", quote(name)),
        };
        write!(f, "{verb} {target}")?;
        match wait {
            Some(w) => write!(f, " wait \"{w}\""),
            None => Ok(()),
        }
    }
}

/// The non-empty components of a group path.
fn components(p: &str) -> impl Iterator<Item = &str> {
    p.split('/').filter(|c| !c.is_empty())
}

/// A group path with `/` stripped at both ends and `//` collapsed.
pub fn normalise_group(p: &str) -> String {
    components(p).collect::<Vec<_>>().join("/")
}

/// Whether group `path` lies in group `prefix`, component by component:
/// `"a"` matches `"a"` and `"a/b"` but not `"ab"`; `""` matches every
/// path. Both are normalised first.
pub fn group_matches(prefix: &str, path: &str) -> bool {
    let mut path = components(path);
    components(prefix).all(|c| path.next() == Some(c))
}

/// The attributes of a `cmd` block.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attr {
    Exec,
    Deputy,
    AutoRespawn,
    Group,
    StopSignal,
    StopTimeAllowed,
}

impl Attr {
    /// The attribute a name gives (`host` is libbot2's `deputy`).
    fn named(name: &str) -> Option<Attr> {
        Some(match name {
            "exec" => Attr::Exec,
            "deputy" | "host" => Attr::Deputy,
            "auto_respawn" => Attr::AutoRespawn,
            "group" => Attr::Group,
            "stop_signal" => Attr::StopSignal,
            "stop_time_allowed" => Attr::StopTimeAllowed,
            _ => return None,
        })
    }
}

/// An attribute's value as written.
enum Value {
    Str(String),
    Int(u64),
}

/// Store the value of attribute `name`, or say what is wrong with it.
fn set(cmd: &mut CmdDef, attr: Attr, name: &str, value: Value) -> Result<(), String> {
    match (attr, value) {
        (Attr::Exec, Value::Str(s)) if s.trim().is_empty() => return Err("exec is empty".into()),
        (Attr::Exec, Value::Str(s)) => {
            wire_text("exec", &s, MAX_STRING)?;
            cmd.exec = s;
        }
        (Attr::Deputy, Value::Str(s)) if s.is_empty() => return Err(format!("{name} is empty")),
        (Attr::Deputy, Value::Str(s)) => {
            wire_text(name, &s, MAX_DEPUTY_ID)?;
            cmd.deputy = s;
        }
        (Attr::AutoRespawn, Value::Str(s)) => {
            cmd.auto_respawn = s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("yes");
        }
        // the enclosing group wins
        (Attr::Group, Value::Str(_)) => {}
        (Attr::StopSignal, Value::Int(n)) => match i32::try_from(n) {
            Ok(n) if (1..=MAX_SIGNAL).contains(&n) => cmd.stop_signal = n,
            _ => return Err(format!("stop_signal must be a signal number from 1 to {MAX_SIGNAL}")),
        },
        (Attr::StopTimeAllowed, Value::Int(n)) => match u32::try_from(n) {
            Ok(n) if n >= 1 => cmd.stop_time_allowed = n,
            Ok(_) => return Err("stop_time_allowed must be at least 1 (seconds)".into()),
            Err(_) => return Err(format!("stop_time_allowed must be at most {} (seconds)", u32::MAX)),
        },
        (Attr::StopSignal | Attr::StopTimeAllowed, Value::Str(s)) => {
            return Err(format!("{name} takes an integer, found string {s:?}"));
        }
        (Attr::Exec | Attr::Deputy | Attr::AutoRespawn | Attr::Group, Value::Int(n)) => {
            return Err(format!("{name} takes a string, found integer {n}"));
        }
    }
    Ok(())
}

struct Parser<'a> {
    lex: Lexer<'a>,
    next: Token<'a>,
    file: &'a str,
    cfg: Config,
    ids: HashMap<String, Pos>,
    script_names: HashMap<String, Pos>,
}

impl<'a> Parser<'a> {
    fn error(&self, pos: Pos, msg: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, pos, msg)
    }

    /// The error for the next token when `wanted` should come.
    fn unexpected(&self, wanted: &str) -> ConfigError {
        self.error(self.next.pos, format!("expected {wanted}, found {}", self.next.tok))
    }

    /// Consume the next token; where it was.
    fn advance(&mut self) -> Result<Pos, ConfigError> {
        let t = self.lex.next_token()?;
        Ok(std::mem::replace(&mut self.next, t).pos)
    }

    /// Whether the next token is the identifier `word`.
    fn at_word(&self, word: &str) -> bool {
        self.next.tok == Tok::Ident(word)
    }

    fn punct(&mut self, p: Tok<'static>, wanted: &str) -> Result<Pos, ConfigError> {
        if self.next.tok != p {
            return Err(self.unexpected(wanted));
        }
        self.advance()
    }

    fn string(&mut self, wanted: &str) -> Result<(String, Pos), ConfigError> {
        let Tok::Str(s) = &mut self.next.tok else { return Err(self.unexpected(wanted)) };
        let s = std::mem::take(s);
        Ok((s, self.advance()?))
    }

    fn int(&mut self, wanted: &str) -> Result<(u64, Pos), ConfigError> {
        let Tok::Int(n) = self.next.tok else { return Err(self.unexpected(wanted)) };
        Ok((n, self.advance()?))
    }

    /// `file := { "cmd" cmd | "group" group | "script" script }`
    fn file(&mut self) -> Result<(), ConfigError> {
        loop {
            match self.next.tok {
                Tok::End => return Ok(()),
                Tok::Ident("cmd") => {
                    self.advance()?;
                    self.cmd("")?;
                }
                Tok::Ident("group") => {
                    self.advance()?;
                    self.group("", 1)?;
                }
                Tok::Ident("script") => {
                    self.advance()?;
                    self.script()?;
                }
                _ => return Err(self.unexpected("cmd, group or script")),
            }
        }
    }

    /// `group := STRING "{" { "cmd" cmd | "group" group } "}"`, at `depth`
    /// (1 = top level) inside `parent`.
    fn group(&mut self, parent: &str, depth: usize) -> Result<(), ConfigError> {
        let (name, pos) = self.string("a group name")?;
        if name.trim().is_empty() {
            return Err(self.error(pos, "empty group name"));
        }
        if name.contains('/') {
            return Err(self.error(pos, format!("'/' in group name {name:?} (nest groups instead)")));
        }
        if depth > MAX_DEPTH {
            return Err(self.error(pos, format!("groups nested more than {MAX_DEPTH} deep")));
        }
        let path = if parent.is_empty() { name } else { format!("{parent}/{name}") };
        self.punct(Tok::Open, "'{' after the group name")?;
        loop {
            match self.next.tok {
                Tok::Close => {
                    self.advance()?;
                    return Ok(());
                }
                Tok::Ident("cmd") => {
                    self.advance()?;
                    self.cmd(&path)?;
                }
                Tok::Ident("group") => {
                    self.advance()?;
                    self.group(&path, depth + 1)?;
                }
                _ => return Err(self.unexpected("cmd, group or '}'")),
            }
        }
    }

    /// `cmd := STRING "{" { attr "=" value ";" } "}"` in group `group`.
    fn cmd(&mut self, group: &str) -> Result<(), ConfigError> {
        let (id, pos) = self.string("a command id")?;
        if id.is_empty() {
            return Err(self.error(pos, "empty command id"));
        }
        if id.contains('/') {
            return Err(self.error(pos, format!("'/' in command id {id:?}")));
        }
        wire_text("the command id", &id, MAX_STRING).map_err(|m| self.error(pos, m))?;
        if let Some(first) = self.ids.get(&id) {
            return Err(self.error(pos, format!("duplicate command id {id:?} (first at {first})")));
        }
        self.punct(Tok::Open, "'{' after the command id")?;
        let mut cmd = CmdDef::new(&id, "", "");
        cmd.group = group.to_string();
        cmd.pos = pos;
        // the first name and place of each attribute given
        let mut given: Vec<(Attr, &str, Pos)> = Vec::new();
        loop {
            let name = match self.next.tok {
                Tok::Ident(name) => name,
                Tok::Close => break,
                _ => return Err(self.unexpected("an attribute name or '}'")),
            };
            let name_pos = self.advance()?;
            let Some(attr) = Attr::named(name) else {
                return Err(self.error(
                    name_pos,
                    format!(
                        "unknown attribute '{name}' (exec, deputy, host, auto_respawn, group, stop_signal, \
                         stop_time_allowed)"
                    ),
                ));
            };
            if let Some(&(_, first, at)) = given.iter().find(|g| g.0 == attr) {
                let msg = if first == name {
                    format!("{name} given twice (first at {at})")
                } else {
                    format!("{name} given after {first} (at {at}): they are the same attribute")
                };
                return Err(self.error(name_pos, msg));
            }
            given.push((attr, name, name_pos));
            self.punct(Tok::Assign, &format!("'=' after {name}"))?;
            let value_pos = self.next.pos;
            let value = match &mut self.next.tok {
                Tok::Str(s) => Value::Str(std::mem::take(s)),
                Tok::Int(n) => Value::Int(*n),
                _ => return Err(self.unexpected(&format!("a value for {name}"))),
            };
            self.advance()?;
            set(&mut cmd, attr, name, value).map_err(|msg| self.error(value_pos, msg))?;
            self.punct(Tok::Semi, &format!("';' after the value of {name}"))?;
        }
        self.advance()?;
        if cmd.exec.is_empty() {
            return Err(self.error(pos, format!("command {id:?} has no exec")));
        }
        if cmd.deputy.is_empty() {
            return Err(self.error(pos, format!("command {id:?} has no deputy (or host)")));
        }
        self.ids.insert(id, pos);
        self.cfg.cmds.push(cmd);
        Ok(())
    }

    /// `script := STRING "{" { action } "}"`
    fn script(&mut self) -> Result<(), ConfigError> {
        let (name, pos) = self.string("a script name")?;
        if name.is_empty() {
            return Err(self.error(pos, "empty script name"));
        }
        if let Some(first) = self.script_names.get(&name) {
            return Err(self.error(pos, format!("duplicate script {name:?} (first at {first})")));
        }
        self.punct(Tok::Open, "'{' after the script name")?;
        let mut actions = Vec::new();
        while self.next.tok != Tok::Close {
            actions.push(self.action()?);
        }
        self.advance()?;
        self.script_names.insert(name.clone(), pos);
        self.cfg.scripts.push(Script { name, actions, pos });
        Ok(())
    }

    /// One `action` and its `;`.
    fn action(&mut self) -> Result<Action, ConfigError> {
        let pos = self.next.pos;
        let step = match self.next.tok {
            Tok::Ident(verb @ ("start" | "stop" | "restart")) => {
                self.advance()?;
                let target = self.target()?;
                let wait = if self.at_word("wait") {
                    self.advance()?;
                    Some(self.status()?)
                } else if self.next.tok != Tok::Semi {
                    return Err(self.unexpected("'wait' or ';'"));
                } else {
                    None
                };
                match verb {
                    "start" => Step::Start { target, wait },
                    "stop" => Step::Stop { target, wait },
                    _ => Step::Restart { target, wait },
                }
            }
            Tok::Ident("wait") => {
                self.advance()?;
                if self.at_word("ms") {
                    self.advance()?;
                    Step::WaitMs(self.int("a number of milliseconds after 'wait ms'")?.0)
                } else if self.at_word("cmd") || self.at_word("group") {
                    let target = self.target()?;
                    if !self.at_word("status") {
                        return Err(self.unexpected("'status'"));
                    }
                    self.advance()?;
                    Step::WaitStatus { target, status: self.status()? }
                } else {
                    return Err(self.unexpected("ms, cmd or group after 'wait'"));
                }
            }
            Tok::Ident("run_script") => {
                self.advance()?;
                Step::RunScript(self.string("a script name after 'run_script'")?.0)
            }
            _ => return Err(self.unexpected("start, stop, restart, wait, run_script or '}'")),
        };
        self.punct(Tok::Semi, "';' at the end of the action")?;
        Ok(Action { step, pos })
    }

    /// `"everything" | ("cmd"|"group") STRING`
    fn target(&mut self) -> Result<Target, ConfigError> {
        if self.at_word("everything") {
            self.advance()?;
            Ok(Target::Everything)
        } else if self.at_word("cmd") {
            self.advance()?;
            Ok(Target::Cmd(self.string("a command id after 'cmd'")?.0))
        } else if self.at_word("group") {
            self.advance()?;
            let (p, pos) = self.string("a group path after 'group'")?;
            let p = normalise_group(&p);
            if p.is_empty() {
                return Err(self.error(pos, "empty group path"));
            }
            Ok(Target::Group(p))
        } else {
            Err(self.unexpected("everything, cmd or group"))
        }
    }

    /// `"running"` or `"stopped"`.
    fn status(&mut self) -> Result<WaitFor, ConfigError> {
        let (s, pos) = self.string("\"running\" or \"stopped\"")?;
        WaitFor::from_word(&s)
            .ok_or_else(|| self.error(pos, format!("expected \"running\" or \"stopped\", found {s:?}")))
    }
}

/// Parse a configuration text; errors name `file` and the offending
/// token. Scripts are not checked against the commands: see [`validate`].
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let mut lex = Lexer::new(text, file);
    let next = lex.next_token()?;
    let mut p = Parser { lex, next, file, cfg: Config::default(), ids: HashMap::new(), script_names: HashMap::new() };
    p.file()?;
    let mut cfg = p.cfg;
    let order = tree_order(&cfg.cmds);
    let mut slots: Vec<Option<CmdDef>> = cfg.cmds.into_iter().map(Some).collect();
    cfg.cmds = order.into_iter().filter_map(|i| slots.get_mut(i)?.take()).collect();
    Ok(cfg)
}

/// Read a file as UTF-8 text. An I/O error is reported at [`Pos::NONE`]
/// (`FILE:0:0: ...`, as no place in the file is at fault); bytes that are
/// not UTF-8 at the place of the first one.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ConfigError::new(&file, Pos::NONE, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let text = std::str::from_utf8(&e.as_bytes()[..good]).unwrap_or_default();
        ConfigError::new(&file, Pos::at(text, good), "not UTF-8 text")
    })
}

/// Read and [`parse`] a configuration file (see [`read_text`] for the
/// errors of reading).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse(&read_text(path)?, &path.display().to_string())
}

/// The indices of `cmds` in tree order: depth first, every group at the
/// place where its first command appears.
fn tree_order(cmds: &[CmdDef]) -> Vec<usize> {
    enum Entry {
        Cmd(usize),
        Group(usize),
    }
    // levels[0] is the top; a flat arena, so nothing recurses (a group path
    // from a deputy's report may be very deep)
    let mut levels: Vec<Vec<Entry>> = vec![Vec::new()];
    let mut child: HashMap<(usize, &str), usize> = HashMap::new();
    for (i, c) in cmds.iter().enumerate() {
        let mut at = 0;
        for name in components(&c.group) {
            at = match child.get(&(at, name)) {
                Some(&k) => k,
                None => {
                    let k = levels.len();
                    levels.push(Vec::new());
                    levels[at].push(Entry::Group(k));
                    child.insert((at, name), k);
                    k
                }
            };
        }
        levels[at].push(Entry::Cmd(i));
    }
    let mut out = Vec::with_capacity(cmds.len());
    let mut stack = vec![(0, 0)];
    while let Some((level, next)) = stack.pop() {
        let Some(entry) = levels[level].get(next) else { continue };
        stack.push((level, next + 1));
        match *entry {
            Entry::Cmd(i) => out.push(i),
            Entry::Group(k) => stack.push((k, 0)),
        }
    }
    out
}

/// `s` as a config string: quoted, `\` and `"` escaped, and newline,
/// carriage return and tab written as `\n`, `\r`, `\t` (a raw newline could
/// not be read back).
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '"' => q.push_str("\\\""),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn indent(depth: usize) -> String {
    "    ".repeat(depth.min(MAX_DEPTH))
}

/// One `cmd` block at `depth`: attributes sorted, empty and default ones
/// left out.
fn write_cmd(out: &mut String, c: &CmdDef, depth: usize) {
    let pad = indent(depth);
    let _ = writeln!(out, "{pad}cmd {} {{", quote(&c.id));
    let mut attr = |name: &str, value: String| {
        let _ = writeln!(out, "{pad}    {name} = {value};");
    };
    if c.auto_respawn {
        attr("auto_respawn", quote("true"));
    }
    if !c.deputy.is_empty() {
        attr("deputy", quote(&c.deputy));
    }
    if !c.exec.is_empty() {
        attr("exec", quote(&c.exec));
    }
    // a signal the file cannot hold is one a deputy replaces by SIGINT (§4.7)
    if c.stop_signal != DEFAULT_STOP_SIGNAL && (1..=MAX_SIGNAL).contains(&c.stop_signal) {
        attr("stop_signal", c.stop_signal.to_string());
    }
    if c.stop_time_allowed != DEFAULT_STOP_TIME_ALLOWED && c.stop_time_allowed != 0 {
        attr("stop_time_allowed", c.stop_time_allowed.to_string());
    }
    let _ = writeln!(out, "{pad}}}");
}

/// The configuration as a file in the syntax [`parse`] reads: commands in
/// tree order with their groups nested again (a top-level item, then a
/// blank line), attributes sorted, empty or default ones omitted
/// (`auto_respawn` false, `stop_signal` 2, `stop_time_allowed` 7, and
/// values a file cannot hold: `stop_signal` outside 1..=64,
/// `stop_time_allowed` 0), strings escaped as [`parse`] reads them, and the
/// scripts last, in their order. Comments are not kept.
pub fn save(cfg: &Config) -> String {
    let mut out = String::new();
    let mut open: Vec<&str> = Vec::new();
    for c in tree_order(&cfg.cmds).into_iter().filter_map(|i| cfg.cmds.get(i)) {
        let path: Vec<&str> = components(&c.group).collect();
        let keep = open.iter().zip(&path).take_while(|(a, b)| a == b).count();
        while open.len() > keep {
            open.pop();
            let _ = writeln!(out, "{}}}", indent(open.len()));
        }
        if open.is_empty() && !out.is_empty() {
            out.push('\n');
        }
        for name in path.get(keep..).unwrap_or_default() {
            let _ = writeln!(out, "{}group {} {{", indent(open.len()), quote(name));
            open.push(name);
        }
        write_cmd(&mut out, c, open.len());
    }
    while open.pop().is_some() {
        let _ = writeln!(out, "{}}}", indent(open.len()));
    }
    for s in &cfg.scripts {
        if !out.is_empty() {
            out.push('\n');
        }
        let _ = writeln!(out, "script {} {{", quote(&s.name));
        for a in &s.actions {
            let _ = writeln!(out, "    {};", a.step);
        }
        out.push_str("}\n");
    }
    out
}

/// Check the scripts before any runs (§5.4 "Before running"): every
/// command, group and script they name exists (a group exists when a
/// command is in it or below it), `wait ... status` names a command or a
/// group, script names are unique, and no `run_script` chain comes back to
/// a script it started from. The error is at the offending action (or
/// script). Negative waits cannot occur: [`Step::WaitMs`] is unsigned and
/// the lexer refuses `-`.
///
/// Every command can go on the wire: its id, exec and group path within a
/// message's string ([`MAX_STRING`], no NUL), its deputy id within
/// [`MAX_DEPUTY_ID`], and each deputy's commands within one orders
/// message ([`MAX_CMDS_PER_DEPUTY`], [`ORDERS_BUDGET`] bytes); the error
/// is at the command's id.
pub fn validate(cfg: &Config, file: &str) -> Result<(), ConfigError> {
    let error = |pos: Pos, msg: String| ConfigError::new(file, pos, msg);
    let mut per_deputy: HashMap<&str, (usize, usize)> = HashMap::new();
    for c in &cfg.cmds {
        let fits = wire_text("the command id", &c.id, MAX_STRING)
            .and_then(|_| wire_text("exec", &c.exec, MAX_STRING))
            .and_then(|_| wire_text("the group path", &c.group, MAX_STRING))
            .and_then(|_| wire_text("the deputy id", &c.deputy, MAX_DEPUTY_ID));
        fits.map_err(|m| error(c.pos, format!("command {}: {m}", short(&c.id))))?;
        let (n, bytes) = per_deputy.entry(&c.deputy).or_default();
        *n += 1;
        *bytes += desired_len(&c.id, &c.exec, &c.group);
        if *n > MAX_CMDS_PER_DEPUTY {
            let msg =
                format!("deputy {:?} has more than {MAX_CMDS_PER_DEPUTY} commands (one orders message)", c.deputy);
            return Err(error(c.pos, msg));
        }
        if *bytes > ORDERS_BUDGET {
            let msg = format!(
                "deputy {:?}'s commands up to {} take more than the {ORDERS_BUDGET} bytes one orders message carries",
                c.deputy,
                short(&c.id)
            );
            return Err(error(c.pos, msg));
        }
    }
    let ids: HashSet<&str> = cfg.cmds.iter().map(|c| c.id.as_str()).collect();
    // every group path that holds a command, at any depth, and "" if any
    let mut groups: HashSet<String> = HashSet::new();
    for c in &cfg.cmds {
        let mut path = String::new();
        groups.insert(String::new());
        for name in components(&c.group) {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(name);
            groups.insert(path.clone());
        }
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, s) in cfg.scripts.iter().enumerate() {
        if let Some(&first) = index.get(s.name.as_str()) {
            let at = cfg.scripts[first].pos;
            return Err(error(s.pos, format!("duplicate script {:?} (first at {at})", s.name)));
        }
        index.insert(&s.name, i);
    }
    let check = |target: &Target, pos: Pos| match target {
        Target::Everything => Ok(()),
        Target::Cmd(id) if ids.contains(id.as_str()) => Ok(()),
        Target::Cmd(id) => Err(error(pos, format!("unknown command {id:?}"))),
        Target::Group(p) if groups.contains(&normalise_group(p)) => Ok(()),
        Target::Group(p) => Err(error(pos, format!("unknown group {p:?}: no command is in it"))),
    };
    for a in cfg.scripts.iter().flat_map(|s| &s.actions) {
        match &a.step {
            Step::Start { target, .. } | Step::Stop { target, .. } | Step::Restart { target, .. } => {
                check(target, a.pos)?;
            }
            Step::WaitStatus { target: Target::Everything, .. } => {
                return Err(error(a.pos, "'wait ... status' needs cmd or group, not everything".into()));
            }
            Step::WaitStatus { target, .. } => check(target, a.pos)?,
            Step::WaitMs(_) => {}
            Step::RunScript(name) if index.contains_key(name.as_str()) => {}
            Step::RunScript(name) => return Err(error(a.pos, format!("unknown script {name:?}"))),
        }
    }
    find_cycle(cfg, &index).map_or(Ok(()), |(pos, msg)| Err(error(pos, msg)))
}

/// A command id for a message: quoted, cut to 40 characters.
fn short(id: &str) -> String {
    match id.char_indices().nth(40) {
        Some((i, _)) => format!("{:?}...", &id[..i]),
        None => format!("{id:?}"),
    }
}

/// The first `run_script` that closes a cycle, depth first from each
/// script in order: its place and a message naming the cycle.
fn find_cycle(cfg: &Config, index: &HashMap<&str, usize>) -> Option<(Pos, String)> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Running,
        Done,
    }
    let mut mark = vec![Mark::New; cfg.scripts.len()];
    for root in 0..cfg.scripts.len() {
        if mark[root] != Mark::New {
            continue;
        }
        mark[root] = Mark::Running;
        // (script, index of its next action to look at)
        let mut stack = vec![(root, 0)];
        while let Some(&(s, from)) = stack.last() {
            let next = cfg.scripts[s].actions.iter().enumerate().skip(from).find_map(|(k, a)| match &a.step {
                Step::RunScript(name) => Some((k, a.pos, index.get(name.as_str()).copied())),
                _ => None,
            });
            let Some((k, pos, called)) = next else {
                mark[s] = Mark::Done;
                stack.pop();
                continue;
            };
            if let Some(top) = stack.last_mut() {
                top.1 = k + 1;
            }
            let Some(t) = called else { continue };
            match mark[t] {
                Mark::New => {
                    mark[t] = Mark::Running;
                    stack.push((t, 0));
                }
                Mark::Running => {
                    let from = stack.iter().position(|&(x, _)| x == t).unwrap_or(0);
                    let mut names: Vec<&str> =
                        stack[from..].iter().map(|&(x, _)| cfg.scripts[x].name.as_str()).collect();
                    names.push(&cfg.scripts[t].name);
                    return Some((pos, format!("run_script cycle: {}", names.join(" -> "))));
                }
                Mark::Done => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sheriff::testutil::expect_errors;

    /// The example of docs/fleet.md §5.3, verbatim.
    const EXAMPLE: &str = r#"cmd "hw-interface" { exec = "hw_driver --port /dev/ttyUSB0"; deputy = "robot"; auto_respawn = "true"; }
group "perception" {
    cmd "camera-left" { exec = "camera --side left"; deputy = "robot"; stop_signal = 15; stop_time_allowed = 3; }
    group "mapping" { cmd "mapper" { exec = "MAP_DIR=${HOME}/maps mapper"; deputy = "base-station"; } }
}
script "bringup" {
    start cmd "hw-interface" wait "running";
    wait ms 500;
    start group "perception";                     # includes perception/mapping
    wait group "perception/mapping" status "running";
}
script "cycle" { stop everything wait "stopped"; run_script "bringup"; restart cmd "camera-left"; }
"#;

    /// What `save` writes for [`EXAMPLE`].
    const EXAMPLE_SAVED: &str = r#"cmd "hw-interface" {
    auto_respawn = "true";
    deputy = "robot";
    exec = "hw_driver --port /dev/ttyUSB0";
}

group "perception" {
    cmd "camera-left" {
        deputy = "robot";
        exec = "camera --side left";
        stop_signal = 15;
        stop_time_allowed = 3;
    }
    group "mapping" {
        cmd "mapper" {
            deputy = "base-station";
            exec = "MAP_DIR=${HOME}/maps mapper";
        }
    }
}

script "bringup" {
    start cmd "hw-interface" wait "running";
    wait ms 500;
    start group "perception";
    wait group "perception/mapping" status "running";
}

script "cycle" {
    stop everything wait "stopped";
    run_script "bringup";
    restart cmd "camera-left";
}
"#;

    fn at(line: u32, col: u32) -> Pos {
        Pos { line, col }
    }

    fn cfg(text: &str) -> Config {
        match parse(text, "c.cfg") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn err(text: &str) -> String {
        match parse(text, "c.cfg") {
            Ok(c) => format!("no error, parsed: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// The configuration without positions (they change with the layout).
    fn plain(mut c: Config) -> Config {
        c.cmds.iter_mut().for_each(|c| c.pos = Pos::NONE);
        for s in &mut c.scripts {
            s.pos = Pos::NONE;
            s.actions.iter_mut().for_each(|a| a.pos = Pos::NONE);
        }
        c
    }

    fn cmd(id: &str, exec: &str, deputy: &str, group: &str, pos: Pos) -> CmdDef {
        CmdDef { group: group.into(), pos, ..CmdDef::new(id, exec, deputy) }
    }

    fn act(step: Step, pos: Pos) -> Action {
        Action { step, pos }
    }

    fn ids(c: &Config) -> Vec<(&str, &str)> {
        c.cmds.iter().map(|c| (c.id.as_str(), c.group.as_str())).collect()
    }

    fn the_cmd(text: &str) -> CmdDef {
        let c = cfg(text);
        assert_eq!(c.cmds.len(), 1, "{c:?}");
        c.cmds[0].clone()
    }

    fn steps(text: &str) -> Vec<Step> {
        let c = cfg(&format!("cmd \"a\" {{ exec = \"x\"; deputy = \"d\"; }}\nscript \"s\" {{ {text} }}"));
        c.scripts[0].actions.iter().map(|a| a.step.clone()).collect()
    }

    #[test]
    fn the_spec_example() {
        let c = cfg(EXAMPLE);
        let hw = CmdDef {
            auto_respawn: true,
            ..cmd("hw-interface", "hw_driver --port /dev/ttyUSB0", "robot", "", at(1, 5))
        };
        let cam = CmdDef {
            stop_signal: 15,
            stop_time_allowed: 3,
            ..cmd("camera-left", "camera --side left", "robot", "perception", at(3, 9))
        };
        let mapper = cmd("mapper", "MAP_DIR=${HOME}/maps mapper", "base-station", "perception/mapping", at(4, 27));
        let bringup = Script {
            name: "bringup".into(),
            pos: at(6, 8),
            actions: vec![
                act(Step::Start { target: Target::Cmd("hw-interface".into()), wait: Some(WaitFor::Running) }, at(7, 5)),
                act(Step::WaitMs(500), at(8, 5)),
                act(Step::Start { target: Target::Group("perception".into()), wait: None }, at(9, 5)),
                act(
                    Step::WaitStatus { target: Target::Group("perception/mapping".into()), status: WaitFor::Running },
                    at(10, 5),
                ),
            ],
        };
        let cycle = Script {
            name: "cycle".into(),
            pos: at(12, 8),
            actions: vec![
                act(Step::Stop { target: Target::Everything, wait: Some(WaitFor::Stopped) }, at(12, 18)),
                act(Step::RunScript("bringup".into()), at(12, 50)),
                act(Step::Restart { target: Target::Cmd("camera-left".into()), wait: None }, at(12, 72)),
            ],
        };
        assert_eq!(c, Config { cmds: vec![hw, cam, mapper], scripts: vec![bringup, cycle] });
        assert_eq!(validate(&c, "c.cfg"), Ok(()));
        assert_eq!(c.cmd("mapper").map(|m| m.pos), Some(at(4, 27)));
        assert_eq!(c.script("cycle").map(|s| s.actions.len()), Some(3));
        assert!(c.cmd("nope").is_none() && c.script("nope").is_none());
    }

    #[test]
    fn saving_the_spec_example() {
        let c = cfg(EXAMPLE);
        let saved = save(&c);
        assert_eq!(saved, EXAMPLE_SAVED);
        assert_eq!(plain(cfg(&saved)), plain(c));
    }

    #[test]
    fn attributes() {
        let c = the_cmd("cmd \"a\" { host = \"h\"; exec = \"x\"; }");
        assert_eq!(c, cmd("a", "x", "h", "", at(1, 5)));
        assert_eq!((c.auto_respawn, c.stop_signal, c.stop_time_allowed), (false, 2, 7));
        let respawn = |v: &str| the_cmd(&format!("cmd \"a\" {{ exec = \"x\"; deputy = \"d\"; auto_respawn = {v}; }}"));
        for v in ["\"true\"", "\"TRUE\"", "\"True\"", "\"yes\"", "\"Yes\"", "\"YES\""] {
            assert!(respawn(v).auto_respawn, "{v}");
        }
        for v in ["\"false\"", "\"no\"", "\"1\"", "\"\"", "\"on\"", "\"truely\""] {
            assert!(!respawn(v).auto_respawn, "{v}");
        }
        // the enclosing group wins over a group attribute, at the top too
        let c = cfg("group \"g\" { cmd \"a\" { group = \"other\"; exec = \"x\"; deputy = \"d\"; } }\n\
                     cmd \"b\" { group = \"other\"; exec = \"x\"; deputy = \"d\"; }");
        assert_eq!(ids(&c), [("a", "g"), ("b", "")]);
        // limits of the integers
        let c =
            the_cmd("cmd \"a\" { stop_signal = 64; stop_time_allowed = 4294967295; exec = \"x\"; deputy = \"d\"; }");
        assert_eq!((c.stop_signal, c.stop_time_allowed), (64, u32::MAX));
        let c = the_cmd("cmd \"a\" { stop_signal = 1; stop_time_allowed = 1; exec = \"x\"; deputy = \"d\"; }");
        assert_eq!((c.stop_signal, c.stop_time_allowed), (1, 1));
        // any string may be an id or a value, but for '/' in ids
        let c = the_cmd("cmd \"cam left #1 {x}\" { exec = \"a \\\"b\\\" \\\\ c\\td\"; deputy = \"é\"; }");
        assert_eq!((c.id.as_str(), c.exec.as_str(), c.deputy.as_str()), ("cam left #1 {x}", "a \"b\" \\ c\td", "é"));
    }

    #[test]
    fn layout_and_comments() {
        assert_eq!(cfg(""), Config::default());
        assert_eq!(cfg("# nothing\n\n   # at all\n"), Config::default());
        let spread = cfg("# head\ncmd # id next\n\"a\"\n{\nexec\n=\n# value next\n\"x\"\n;deputy=\"d\";}#tail");
        assert_eq!(spread.cmds, [cmd("a", "x", "d", "", at(3, 1))]);
        let packed = cfg("cmd\"a\"{exec=\"x\";deputy=\"d\";}group\"g\"{}script\"s\"{wait ms 1;}");
        assert_eq!((ids(&packed), packed.scripts[0].actions[0].step.clone()), (vec![("a", "")], Step::WaitMs(1)));
        // CRLF line ends and a byte order mark
        let crlf = cfg("\u{feff}cmd \"a\" {\r\n  exec = \"x\";\r\n  deputy = \"d\";\r\n}\r\n");
        assert_eq!(crlf.cmds, [cmd("a", "x", "d", "", at(1, 5))]);
        // empty groups and scripts are allowed
        let c = cfg("group \"e\" { group \"f\" { } }\nscript \"nothing\" { }");
        assert_eq!((c.cmds.len(), c.scripts[0].name.as_str(), c.scripts[0].actions.len()), (0, "nothing", 0));
    }

    #[test]
    fn groups_nest_and_merge() {
        let c = cfg("cmd \"t1\" { exec = \"x\"; deputy = \"d\"; }\n\
                     group \"a\" { cmd \"a1\" { exec = \"x\"; deputy = \"d\"; }\n\
                                   group \"b\" { cmd \"ab1\" { exec = \"x\"; deputy = \"d\"; } } }\n\
                     cmd \"t2\" { exec = \"x\"; deputy = \"d\"; }\n\
                     group \"c\" { cmd \"c1\" { exec = \"x\"; deputy = \"d\"; } }\n\
                     group \"a\" { group \"b\" { cmd \"ab2\" { exec = \"x\"; deputy = \"d\"; } }\n\
                                   cmd \"a2\" { exec = \"x\"; deputy = \"d\"; } }\n\
                     group \" spaced \" { cmd \"s\" { exec = \"x\"; deputy = \"d\"; } }");
        // a group opened again is merged at its first place
        assert_eq!(
            ids(&c),
            [
                ("t1", ""),
                ("a1", "a"),
                ("ab1", "a/b"),
                ("ab2", "a/b"),
                ("a2", "a"),
                ("t2", ""),
                ("c1", "c"),
                ("s", " spaced ")
            ]
        );
        // positions stay those of the file
        assert_eq!(c.cmd("ab2").map(|c| c.pos), Some(at(6, 29)));
        let saved = save(&c);
        assert_eq!(saved.matches("group \"a\"").count(), 1, "{saved}");
        assert_eq!(plain(cfg(&saved)), plain(c));
    }

    #[test]
    fn script_actions() {
        let t = |s: &str| Target::Cmd(s.into());
        let g = |s: &str| Target::Group(s.into());
        assert_eq!(
            steps(
                "start cmd \"a\"; stop cmd \"a\"; restart cmd \"a\"; \
                 start everything wait \"running\"; stop group \"g\" wait \"stopped\"; \
                 restart group \"g\" wait \"running\"; stop cmd \"a\" wait \"running\"; start cmd \"a\" wait \"stopped\";"
            ),
            [
                Step::Start { target: t("a"), wait: None },
                Step::Stop { target: t("a"), wait: None },
                Step::Restart { target: t("a"), wait: None },
                Step::Start { target: Target::Everything, wait: Some(WaitFor::Running) },
                Step::Stop { target: g("g"), wait: Some(WaitFor::Stopped) },
                Step::Restart { target: g("g"), wait: Some(WaitFor::Running) },
                Step::Stop { target: t("a"), wait: Some(WaitFor::Running) },
                Step::Start { target: t("a"), wait: Some(WaitFor::Stopped) },
            ]
        );
        assert_eq!(
            steps(
                "wait ms 0; wait ms 18446744073709551615; wait cmd \"a\" status \"stopped\"; \
                 wait group \"/a//b/\" status \"running\"; run_script \"other\"; start group \"x/\";"
            ),
            [
                Step::WaitMs(0),
                Step::WaitMs(u64::MAX),
                Step::WaitStatus { target: t("a"), status: WaitFor::Stopped },
                Step::WaitStatus { target: g("a/b"), status: WaitFor::Running },
                Step::RunScript("other".into()),
                Step::Start { target: g("x"), wait: None },
            ]
        );
        // "\c" gives c in a status string too
        assert_eq!(
            steps("wait cmd \"a\" status \"r\\unning\";"),
            [Step::WaitStatus { target: t("a"), status: WaitFor::Running }]
        );
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let ok = "{ exec = \"x\"; deputy = \"d\"; }";
        let cases: Vec<(String, &str)> = vec![
            // the top level
            ("foo".into(), "c.cfg:1:1: expected cmd, group or script, found 'foo'"),
            ("\n  \"cmd\"".into(), "c.cfg:2:3: expected cmd, group or script, found string \"cmd\""),
            ("CMD \"a\" {}".into(), "c.cfg:1:1: expected cmd, group or script, found 'CMD'"),
            ("}".into(), "c.cfg:1:1: expected cmd, group or script, found '}'"),
            // commands
            ("cmd a {}".into(), "c.cfg:1:5: expected a command id, found 'a'"),
            (format!("cmd \"\" {ok}"), "c.cfg:1:5: empty command id"),
            (format!("cmd \"a/b\" {ok}"), "c.cfg:1:5: '/' in command id \"a/b\""),
            (
                format!("cmd \"a\" {ok}\ngroup \"g\" {{\n  cmd \"a\" {ok} }}"),
                "c.cfg:3:7: duplicate command id \"a\" (first at 1:5)",
            ),
            ("cmd \"a\" exec".into(), "c.cfg:1:9: expected '{' after the command id, found 'exec'"),
            ("cmd \"a\" {".into(), "c.cfg:1:10: expected an attribute name or '}', found end of file"),
            ("cmd \"a\" { \"exec\" }".into(), "c.cfg:1:11: expected an attribute name or '}', found string \"exec\""),
            (
                "cmd \"a\" {\n\tcolour = \"red\"; }".into(),
                "c.cfg:2:2: unknown attribute 'colour' (exec, deputy, host, auto_respawn, group, stop_signal, \
                 stop_time_allowed)",
            ),
            (
                "cmd \"a\" { Exec = \"x\"; }".into(),
                "c.cfg:1:11: unknown attribute 'Exec' (exec, deputy, host, auto_respawn, group, stop_signal, stop_time_allowed)",
            ),
            ("cmd \"a\" { exec \"x\"; }".into(), "c.cfg:1:16: expected '=' after exec, found string \"x\""),
            ("cmd \"a\" { exec = ; }".into(), "c.cfg:1:18: expected a value for exec, found ';'"),
            ("cmd \"a\" { exec = x; }".into(), "c.cfg:1:18: expected a value for exec, found 'x'"),
            (
                "cmd \"a\" { exec = \"x\" deputy".into(),
                "c.cfg:1:22: expected ';' after the value of exec, found 'deputy'",
            ),
            ("cmd \"a\" { exec = \"x\" }".into(), "c.cfg:1:22: expected ';' after the value of exec, found '}'"),
            ("cmd \"a\" { exec = 5; }".into(), "c.cfg:1:18: exec takes a string, found integer 5"),
            ("cmd \"a\" { deputy = 5; }".into(), "c.cfg:1:20: deputy takes a string, found integer 5"),
            ("cmd \"a\" { auto_respawn = 1; }".into(), "c.cfg:1:26: auto_respawn takes a string, found integer 1"),
            ("cmd \"a\" { group = 1; }".into(), "c.cfg:1:19: group takes a string, found integer 1"),
            (
                "cmd \"a\" { stop_signal = \"15\"; }".into(),
                "c.cfg:1:25: stop_signal takes an integer, found string \"15\"",
            ),
            (
                "cmd \"a\" { stop_time_allowed = \"3\"; }".into(),
                "c.cfg:1:31: stop_time_allowed takes an integer, found string \"3\"",
            ),
            ("cmd \"a\" { stop_signal = 0; }".into(), "c.cfg:1:25: stop_signal must be a signal number from 1 to 64"),
            ("cmd \"a\" { stop_signal = 65; }".into(), "c.cfg:1:25: stop_signal must be a signal number from 1 to 64"),
            (
                "cmd \"a\" { stop_signal = 4294967298; }".into(),
                "c.cfg:1:25: stop_signal must be a signal number from 1 to 64",
            ),
            ("cmd \"a\" { stop_signal = -15; }".into(), "c.cfg:1:25: negative numbers are not allowed"),
            (
                "cmd \"a\" { stop_time_allowed = 0; }".into(),
                "c.cfg:1:31: stop_time_allowed must be at least 1 (seconds)",
            ),
            (
                "cmd \"a\" { stop_time_allowed = 4294967296; }".into(),
                "c.cfg:1:31: stop_time_allowed must be at most 4294967295 (seconds)",
            ),
            ("cmd \"a\" { exec = \"\"; }".into(), "c.cfg:1:18: exec is empty"),
            ("cmd \"a\" { exec = \" \\t \"; }".into(), "c.cfg:1:18: exec is empty"),
            ("cmd \"a\" { deputy = \"\"; }".into(), "c.cfg:1:20: deputy is empty"),
            ("cmd \"a\" { host = \"\"; }".into(), "c.cfg:1:18: host is empty"),
            ("cmd \"a\" { exec = \"x\";\n exec = \"y\"; }".into(), "c.cfg:2:2: exec given twice (first at 1:11)"),
            (
                "cmd \"a\" { deputy = \"x\"; host = \"y\"; }".into(),
                "c.cfg:1:25: host given after deputy (at 1:11): they are the same attribute",
            ),
            ("cmd \"a\" { group = \"x\"; group = \"y\"; }".into(), "c.cfg:1:24: group given twice (first at 1:11)"),
            ("cmd \"a\" { deputy = \"d\"; }".into(), "c.cfg:1:5: command \"a\" has no exec"),
            ("\n\n cmd \"a\" { exec = \"x\"; }".into(), "c.cfg:3:6: command \"a\" has no deputy (or host)"),
            // groups
            ("group {".into(), "c.cfg:1:7: expected a group name, found '{'"),
            ("group \"\" {}".into(), "c.cfg:1:7: empty group name"),
            ("group \" \t\" {}".into(), "c.cfg:1:7: empty group name"),
            ("group \"a/b\" {}".into(), "c.cfg:1:7: '/' in group name \"a/b\" (nest groups instead)"),
            ("group \"a\" cmd".into(), "c.cfg:1:11: expected '{' after the group name, found 'cmd'"),
            ("group \"a\" {\n  script \"s\" {} }".into(), "c.cfg:2:3: expected cmd, group or '}', found 'script'"),
            ("group \"a\" { ".into(), "c.cfg:1:13: expected cmd, group or '}', found end of file"),
            (
                format!("{}{}", "group \"g\" {".repeat(MAX_DEPTH), "group \"deep\" {"),
                // 64 x 11 characters, then `group `
                "c.cfg:1:711: groups nested more than 64 deep",
            ),
            // scripts
            ("script s {}".into(), "c.cfg:1:8: expected a script name, found 's'"),
            ("script \"\" {}".into(), "c.cfg:1:8: empty script name"),
            ("script \"s\" {}\nscript \"s\" {}".into(), "c.cfg:2:8: duplicate script \"s\" (first at 1:8)"),
            ("script \"s\" ;".into(), "c.cfg:1:12: expected '{' after the script name, found ';'"),
            (
                "script \"s\" {".into(),
                "c.cfg:1:13: expected start, stop, restart, wait, run_script or '}', found end of file",
            ),
            (
                "script \"s\" { launch cmd \"a\"; }".into(),
                "c.cfg:1:14: expected start, stop, restart, wait, run_script or '}', found 'launch'",
            ),
            (
                "script \"s\" { start \"a\"; }".into(),
                "c.cfg:1:20: expected everything, cmd or group, found string \"a\"",
            ),
            ("script \"s\" { start cmd a; }".into(), "c.cfg:1:24: expected a command id after 'cmd', found 'a'"),
            ("script \"s\" { stop group; }".into(), "c.cfg:1:24: expected a group path after 'group', found ';'"),
            ("script \"s\" { start group \"/\"; }".into(), "c.cfg:1:26: empty group path"),
            ("script \"s\" { restart group \"//\"; }".into(), "c.cfg:1:28: empty group path"),
            ("script \"s\" { start cmd \"a\" now; }".into(), "c.cfg:1:28: expected 'wait' or ';', found 'now'"),
            ("script \"s\" { start cmd \"a\" }".into(), "c.cfg:1:28: expected 'wait' or ';', found '}'"),
            (
                "script \"s\" { start cmd \"a\" wait running; }".into(),
                "c.cfg:1:33: expected \"running\" or \"stopped\", found 'running'",
            ),
            (
                "script \"s\" { stop cmd \"a\" wait \"Stopped\"; }".into(),
                "c.cfg:1:32: expected \"running\" or \"stopped\", found \"Stopped\"",
            ),
            (
                "script \"s\" { start cmd \"a\" wait \"running\" }".into(),
                "c.cfg:1:43: expected ';' at the end of the action, found '}'",
            ),
            ("script \"s\" { wait 5; }".into(), "c.cfg:1:19: expected ms, cmd or group after 'wait', found integer 5"),
            (
                "script \"s\" { wait everything status \"running\"; }".into(),
                "c.cfg:1:19: expected ms, cmd or group after 'wait', found 'everything'",
            ),
            (
                "script \"s\" { wait ms \"5\"; }".into(),
                "c.cfg:1:22: expected a number of milliseconds after 'wait ms', found string \"5\"",
            ),
            ("script \"s\" { wait ms 5 }".into(), "c.cfg:1:24: expected ';' at the end of the action, found '}'"),
            ("script \"s\" { wait ms 500ms; }".into(), "c.cfg:1:25: expected ';' at the end of the action, found 'ms'"),
            ("script \"s\" { wait ms -5; }".into(), "c.cfg:1:22: negative numbers are not allowed"),
            (
                "script \"s\" { wait cmd \"a\" \"running\"; }".into(),
                "c.cfg:1:27: expected 'status', found string \"running\"",
            ),
            (
                "script \"s\" { wait group \"g\" status \"up\"; }".into(),
                "c.cfg:1:36: expected \"running\" or \"stopped\", found \"up\"",
            ),
            (
                "script \"s\" { run_script s; }".into(),
                "c.cfg:1:25: expected a script name after 'run_script', found 's'",
            ),
            (
                "script \"s\" { run_script \"t\" }".into(),
                "c.cfg:1:29: expected ';' at the end of the action, found '}'",
            ),
            // the lexer's errors come through with the file name
            ("cmd \"a\" { exec = \"x\n\"; }".into(), "c.cfg:1:18: string not closed before the end of the line"),
            ("cmd \"a\" @".into(), "c.cfg:1:9: unexpected character '@'"),
        ];
        expect_errors(&cases, err);
    }

    #[test]
    fn saving_escapes_and_omits() {
        let mut odd = CmdDef::new("q\"uote\\back\nline\ttab\rcr #{};", "say \"hi\" \\ $X", "dé");
        odd.group = "g \"1\"/sub\\2".into();
        let mut bad = CmdDef::new("bad", "x", "d");
        (bad.stop_signal, bad.stop_time_allowed) = (0, 0);
        let mut worse = CmdDef::new("worse", "x", "d");
        (worse.stop_signal, worse.auto_respawn) = (-3, false);
        let mut big = CmdDef::new("big", "x", "d");
        big.stop_signal = 99;
        let c = Config {
            cmds: vec![odd, bad, worse, big],
            scripts: vec![Script {
                name: "s\"".into(),
                pos: Pos::NONE,
                actions: vec![
                    act(Step::RunScript("t\\".into()), Pos::NONE),
                    act(Step::WaitStatus { target: Target::Cmd("a\"b".into()), status: WaitFor::Stopped }, Pos::NONE),
                ],
            }],
        };
        let saved = save(&c);
        assert_eq!(
            saved,
            r#"group "g \"1\"" {
    group "sub\\2" {
        cmd "q\"uote\\back\nline\ttab\rcr #{};" {
            deputy = "dé";
            exec = "say \"hi\" \\ $X";
        }
    }
}

cmd "bad" {
    deputy = "d";
    exec = "x";
}

cmd "worse" {
    deputy = "d";
    exec = "x";
}

cmd "big" {
    deputy = "d";
    exec = "x";
}

script "s\"" {
    run_script "t\\";
    wait cmd "a\"b" status "stopped";
}
"#
        );
        let back = cfg(&saved);
        assert_eq!(back.cmds[0].id, c.cmds[0].id);
        assert_eq!(back.cmds[0].exec, c.cmds[0].exec);
        assert_eq!(back.cmds[0].group, c.cmds[0].group);
        // values a file cannot hold come back as the defaults
        let back: Vec<(i32, u32)> = back.cmds.iter().map(|c| (c.stop_signal, c.stop_time_allowed)).collect();
        assert_eq!(back, [(2, 7), (2, 7), (2, 7), (2, 7)]);
        assert_eq!(plain(cfg(&saved)).scripts, c.scripts);
        assert_eq!(save(&Config::default()), "");
    }

    #[test]
    fn round_trips() {
        let mk = |id: &str, group: &str| CmdDef { group: group.into(), ..CmdDef::new(id, "run it", "d") };
        // an order a model may hold: groups interleaved, paths not normalised
        let c = Config {
            cmds: vec![
                mk("1", "a/b"),
                mk("2", ""),
                mk("3", "/a"),
                CmdDef { auto_respawn: true, stop_signal: 9, stop_time_allowed: 30, ..mk("4", "a//b/") },
                mk("5", "c"),
                mk("6", "a"),
            ],
            scripts: vec![Script { name: "only".into(), actions: vec![], pos: Pos::NONE }],
        };
        let once = save(&c);
        let back = plain(cfg(&once));
        let order: Vec<(&str, &str)> = ids(&back);
        assert_eq!(order, [("1", "a/b"), ("4", "a/b"), ("3", "a"), ("6", "a"), ("2", ""), ("5", "c")]);
        assert_eq!(back.cmd("4").map(|c| (c.auto_respawn, c.stop_signal, c.stop_time_allowed)), Some((true, 9, 30)));
        // parse -> save -> parse is the same configuration, and save is a fixed point
        assert_eq!(plain(cfg(&save(&back))), back);
        assert_eq!(save(&back), once);
        assert_eq!(plain(cfg(&save(&cfg(EXAMPLE)))), plain(cfg(EXAMPLE)));
    }

    #[test]
    fn steps_display_as_written() {
        for line in [
            "start everything",
            "stop cmd \"a \\\"b\\\"\" wait \"stopped\"",
            "restart group \"x/y\" wait \"running\"",
            "wait ms 250",
            "wait group \"g\" status \"stopped\"",
            "run_script \"s\"",
        ] {
            let c = cfg(&format!("script \"s\" {{ {line}; }}"));
            assert_eq!(c.scripts[0].actions[0].step.to_string(), line);
        }
        assert_eq!((WaitFor::Running.to_string(), WaitFor::Stopped.as_str()), ("running".into(), "stopped"));
        assert_eq!(WaitFor::from_word("RUNNING"), None);
    }

    #[test]
    fn group_paths() {
        assert_eq!(normalise_group("/a//b/"), "a/b");
        assert_eq!(normalise_group("a"), "a");
        assert_eq!(normalise_group("///"), "");
        assert_eq!(normalise_group(""), "");
        assert_eq!(normalise_group("a b/ c"), "a b/ c");
        assert!(group_matches("a", "a"));
        assert!(group_matches("a", "a/b"));
        assert!(group_matches("a/b", "a/b/c"));
        assert!(group_matches("/a/", "a//b"));
        assert!(group_matches("", "a"));
        assert!(group_matches("", ""));
        assert!(!group_matches("a", "ab"));
        assert!(!group_matches("ab", "a"));
        assert!(!group_matches("a/b", "a"));
        assert!(!group_matches("a", ""));
        assert!(!group_matches("b", "a/b"));
    }

    fn check(scripts: &str) -> Result<(), String> {
        let text = format!(
            "cmd \"top\" {{ exec = \"x\"; deputy = \"d\"; }}\n\
             group \"a\" {{ group \"b\" {{ cmd \"ab\" {{ exec = \"x\"; deputy = \"d\"; }} }} }}\n\
             group \"empty\" {{ }}\n{scripts}"
        );
        validate(&cfg(&text), "c.cfg").map_err(|e| e.to_string())
    }

    #[test]
    fn validation() {
        assert_eq!(
            check(
                "script \"s\" { start cmd \"top\"; stop group \"a\"; restart group \"a/b\" wait \"running\";\n\
                 wait group \"/a/b/\" status \"stopped\"; wait cmd \"ab\" status \"running\"; start everything;\n\
                 wait ms 10; run_script \"t\"; }\n\
                 script \"t\" { run_script \"u\"; run_script \"u\"; }\n\
                 script \"u\" { }\n"
            ),
            Ok(())
        );
        assert_eq!(check("script \"s\" {\n  start cmd \"nope\"; }"), Err("c.cfg:5:3: unknown command \"nope\"".into()));
        assert_eq!(check("script \"s\" { stop cmd \"a\"; }"), Err("c.cfg:4:14: unknown command \"a\"".into()));
        assert_eq!(
            check("script \"s\" { wait cmd \"x\" status \"running\"; }"),
            Err("c.cfg:4:14: unknown command \"x\"".into())
        );
        // groups match component-wise, and a group without commands is unknown
        assert_eq!(check("script \"s\" { start group \"a/\"; }"), Ok(()));
        assert_eq!(
            check("script \"s\" { start group \"b\"; }"),
            Err("c.cfg:4:14: unknown group \"b\": no command is in it".into())
        );
        assert_eq!(
            check("script \"s\" { restart group \"a/b/c\"; }"),
            Err("c.cfg:4:14: unknown group \"a/b/c\": no command is in it".into())
        );
        assert_eq!(
            check("script \"s\" { wait ms 1; wait group \"empty\" status \"stopped\"; }"),
            Err("c.cfg:4:25: unknown group \"empty\": no command is in it".into())
        );
        assert_eq!(check("script \"s\" { run_script \"t\"; }"), Err("c.cfg:4:14: unknown script \"t\"".into()));
        // cycles: at the run_script that closes one
        assert_eq!(check("script \"s\" { run_script \"s\"; }"), Err("c.cfg:4:14: run_script cycle: s -> s".into()));
        assert_eq!(
            check(
                "script \"s\" { run_script \"t\"; }\nscript \"t\" { wait ms 1; run_script \"u\"; }\n\
                 script \"u\" { start everything;\n run_script \"t\"; }"
            ),
            Err("c.cfg:7:2: run_script cycle: t -> u -> t".into())
        );
        // a diamond is not a cycle
        assert_eq!(
            check(
                "script \"a\" { run_script \"b\"; run_script \"c\"; }\nscript \"b\" { run_script \"d\"; }\n\
                 script \"c\" { run_script \"d\"; }\nscript \"d\" { }"
            ),
            Ok(())
        );
    }

    #[test]
    fn validation_of_built_configurations() {
        let mut c = cfg(EXAMPLE);
        let at_end = |c: &mut Config, step: Step, pos: Pos| c.scripts[1].actions.push(Action { step, pos });
        at_end(&mut c, Step::WaitStatus { target: Target::Everything, status: WaitFor::Running }, at(40, 2));
        assert_eq!(
            validate(&c, "x").map_err(|e| e.to_string()),
            Err("x:40:2: 'wait ... status' needs cmd or group, not everything".into())
        );
        let mut c = cfg(EXAMPLE);
        let copy = Script { pos: at(30, 8), ..c.scripts[0].clone() };
        c.scripts.push(copy);
        assert_eq!(
            validate(&c, "x").map_err(|e| e.to_string()),
            Err("x:30:8: duplicate script \"bringup\" (first at 6:8)".into())
        );
        // a group path not normalised is matched as if it were
        let mut c = cfg(EXAMPLE);
        at_end(&mut c, Step::Start { target: Target::Group("//perception/".into()), wait: None }, at(41, 1));
        assert_eq!(validate(&c, "x"), Ok(()));
    }

    /// Every prefix of the example and every one-character change to it
    /// either fails at a place inside the text or parses to a
    /// configuration that saves and parses back the same: no panics.
    #[test]
    fn damaged_files() {
        let mut texts: Vec<String> = (0..=EXAMPLE.len()).filter_map(|i| EXAMPLE.get(..i)).map(String::from).collect();
        for (i, c) in EXAMPLE.char_indices() {
            for with in ['"', '{', '}', ';', '=', '\\', '\n', '-', '#', 'é', '7', 'x', ' '] {
                texts.push(format!("{}{with}{}", &EXAMPLE[..i], &EXAMPLE[i + c.len_utf8()..]));
            }
        }
        let (mut good, mut bad) = (0, 0);
        for t in &texts {
            match parse(t, "d.cfg") {
                Ok(c) => {
                    good += 1;
                    assert_eq!(plain(cfg(&save(&c))), plain(c), "{t}");
                }
                Err(e) => {
                    bad += 1;
                    assert!(
                        e.pos.line >= 1 && e.pos.line as usize <= t.matches('\n').count() + 1 && e.pos.col >= 1,
                        "{e} in {t}"
                    );
                }
            }
        }
        assert!(good > 100 && bad > 1000, "{good} parsed, {bad} refused");
    }

    /// A group path far deeper than a file may nest (a deputy may report
    /// one) is ordered and saved without recursion.
    #[test]
    fn very_deep_group_paths() {
        let deep = CmdDef { group: vec!["g"; 50_000].join("/"), ..CmdDef::new("deep", "x", "d") };
        let c = Config { cmds: vec![CmdDef::new("top", "x", "d"), deep], scripts: vec![] };
        let saved = save(&c);
        assert_eq!(saved.matches("group \"g\" {").count(), 50_000);
        assert!(saved.lines().all(|l| l.len() <= 4 * MAX_DEPTH + 30), "indentation is capped");
        assert_eq!(tree_order(&c.cmds), [0, 1]);
    }

    #[test]
    fn loading_files() {
        let dir = std::env::temp_dir().join(format!("dp-sheriff-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.cfg");
        std::fs::write(&good, EXAMPLE).unwrap();
        assert_eq!(load(&good), Ok(cfg(EXAMPLE)));
        let bad = dir.join("bad.cfg");
        std::fs::write(&bad, "cmd \"a\" {\n  exec = 7; }").unwrap();
        assert_eq!(
            load(&bad).map_err(|e| e.to_string()),
            Err(format!("{}:2:10: exec takes a string, found integer 7", bad.display()))
        );
        let latin1 = dir.join("latin1.cfg");
        std::fs::write(&latin1, b"# ok\ncmd \"caf\xe9\" {}").unwrap();
        assert_eq!(load(&latin1).map_err(|e| e.to_string()), Err(format!("{}:2:9: not UTF-8 text", latin1.display())));
        let missing = dir.join("missing.cfg");
        let e = load(&missing).unwrap_err();
        assert_eq!((e.file, e.pos), (missing.display().to_string(), Pos::NONE));
        assert!(e.msg.starts_with("cannot read: "), "{}", e.msg);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_what_the_wire_carries_is_accepted() {
        let long = "i".repeat(70_000);
        let cases: Vec<(String, &str)> = vec![
            (
                format!("cmd \"{long}\" {{ exec = \"x\"; deputy = \"d\"; }}"),
                "c.cfg:1:5: the command id is 70000 bytes, longer than a message carries (65536)",
            ),
            (
                format!("\ncmd \"a\" {{\n  exec = \"{long}\"; deputy = \"d\"; }}"),
                "c.cfg:3:10: exec is 70000 bytes, longer than a message carries (65536)",
            ),
            (
                format!("cmd \"a\" {{ exec = \"x\"; host = \"{}\"; }}", "h".repeat(256)),
                "c.cfg:1:30: host is 256 bytes, longer than a deputy id may be (255)",
            ),
        ];
        expect_errors(&cases, err);
        // validate: a group path, and one deputy's orders over one message
        let group = "g".repeat(MAX_STRING + 1);
        let deep = Config { cmds: vec![CmdDef { group, ..CmdDef::new("a", "x", "d") }], scripts: vec![] };
        let e = validate(&deep, "c.cfg").unwrap_err().to_string();
        assert!(e.starts_with("c.cfg:0:0: command \"a\": the group path is 65537 bytes"), "{e}");
        let mut text = String::new();
        let exec = "x".repeat(60_000);
        for i in 0..18 {
            text.push_str(&format!("cmd \"c{i}\" {{ exec = \"{exec}\"; deputy = \"d\"; }}\n"));
        }
        text.push_str("cmd \"other\" { exec = \"y\"; deputy = \"e\"; }\n");
        let c = parse(&text, "c.cfg").unwrap();
        let e = validate(&c, "c.cfg").unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "c.cfg:18:5: deputy \"d\"'s commands up to \"c17\" take more than the {ORDERS_BUDGET} bytes one \
                 orders message carries"
            )
        );
        let mut c = parse(&text.lines().skip(1).collect::<Vec<_>>().join("\n"), "c.cfg").unwrap();
        validate(&c, "c.cfg").expect("17 of them fit");
        c.cmds.extend((0..MAX_CMDS_PER_DEPUTY).map(|i| CmdDef::new(&format!("n{i}"), "x", "e")));
        let e = validate(&c, "c.cfg").unwrap_err().to_string();
        assert!(e.contains("deputy \"e\" has more than 10000 commands"), "{e}");
    }
}
