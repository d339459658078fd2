//! Splitting a procman `exec_str` into environment assignments and argv
//! (docs/fleet.md §4.6), with `$NAME` / `${NAME}` expansion from the
//! bridge's own environment. No shell: no pipes, redirections or globs.
//!
//! Three bugs of the stock deputy are deliberately not copied: a final
//! one-character word is kept (`echo a` runs `echo a`), `\$` is a literal
//! `$`, and `\x` gives `x`.

use std::fmt;

/// A split command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exec {
    /// Leading `NAME=VALUE` words, in order (values expanded).
    pub env: Vec<(String, Vec<u8>)>,
    /// The program and its arguments (expanded); never empty.
    pub argv: Vec<Vec<u8>>,
}

/// Why an `exec_str` cannot be run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecError {
    /// No program word at all.
    Empty,
    /// A word holds a byte below 0x20 (it could not cross the TAB-delimited
    /// protocol, or would be invisible).
    ControlByte,
    /// argv[0] contains `=` while assignments go through `env`, which would
    /// take it for one more assignment.
    EqualsInProgram,
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecError::Empty => "empty command",
            ExecError::ControlByte => "command contains a control character",
            ExecError::EqualsInProgram => "program name contains '=' after environment assignments",
        })
    }
}

/// How a byte of a word was written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Plain,
    Quoted,
    Escaped,
}

type Word = Vec<(u8, How)>;

fn words(s: &[u8]) -> Vec<Word> {
    let mut out = Vec::new();
    let mut cur: Word = Vec::new();
    let mut in_word = false;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c == b'\\' {
            in_word = true;
            match s.get(i) {
                Some(&n) => {
                    cur.push((n, How::Escaped));
                    i += 1;
                }
                None => cur.push((b'\\', How::Plain)), // a trailing `\` stays
            }
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push((c, How::Quoted)),
            None if c == b'\'' || c == b'"' => {
                quote = Some(c);
                in_word = true; // `''` is an empty word
            }
            None if c.is_ascii_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push((c, How::Plain));
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

fn name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Expand `$NAME` and `${NAME}` (not escaped ones) with `lookup`; unset or
/// malformed references stay as written.
fn expand(w: &[(u8, How)], lookup: &dyn Fn(&str) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(w.len());
    let mut i = 0;
    while i < w.len() {
        let (c, how) = w[i];
        if c != b'$' || how == How::Escaped {
            out.push(c);
            i += 1;
            continue;
        }
        let (name_at, braced) = match w.get(i + 1) {
            Some(&(b'{', h)) if h != How::Escaped => (i + 2, true),
            _ => (i + 1, false),
        };
        let mut j = name_at;
        if w.get(j).is_some_and(|&(c, h)| name_start(c) && h != How::Escaped) {
            j += 1;
            while w.get(j).is_some_and(|&(c, h)| name_char(c) && h != How::Escaped) {
                j += 1;
            }
        }
        let closed = !braced || w.get(j).is_some_and(|&(c, h)| c == b'}' && h != How::Escaped);
        if j > name_at && closed {
            let name: String = w[name_at..j].iter().map(|&(c, _)| c as char).collect();
            if let Some(v) = lookup(&name) {
                out.extend_from_slice(&v);
                i = if braced { j + 1 } else { j };
                continue;
            }
        }
        out.push(b'$');
        i += 1;
    }
    out
}

/// The assignment `NAME=VALUE` in `w`, if it is one: NAME written plainly,
/// split at the first plain `=`.
fn assignment(w: &[(u8, How)]) -> Option<(String, &[(u8, How)])> {
    let eq = w.iter().position(|&(c, h)| c == b'=' && h == How::Plain)?;
    let name = &w[..eq];
    let ok = !name.is_empty()
        && name.iter().all(|&(_, h)| h == How::Plain)
        && name_start(name[0].0)
        && name.iter().all(|&(c, _)| name_char(c));
    ok.then(|| (name.iter().map(|&(c, _)| c as char).collect(), &w[eq + 1..]))
}

/// Split `exec_str`, expanding references with `lookup` (normally the
/// bridge's environment, see [`split_env`]).
pub fn split(exec_str: &[u8], lookup: &dyn Fn(&str) -> Option<Vec<u8>>) -> Result<Exec, ExecError> {
    let mut e = Exec::default();
    let mut program = false;
    for w in words(exec_str) {
        if !program && let Some((name, value)) = assignment(&w) {
            e.env.push((name, expand(value, lookup)));
            continue;
        }
        program = true;
        e.argv.push(expand(&w, lookup));
    }
    if e.argv.is_empty() {
        return Err(ExecError::Empty);
    }
    let control = |b: &[u8]| b.iter().any(|&c| c < 0x20);
    if e.argv.iter().any(|a| control(a)) || e.env.iter().any(|(_, v)| control(v)) {
        return Err(ExecError::ControlByte);
    }
    if !e.env.is_empty() && e.argv[0].contains(&b'=') {
        return Err(ExecError::EqualsInProgram);
    }
    Ok(e)
}

/// [`split`] with the process environment.
pub fn split_env(exec_str: &[u8]) -> Result<Exec, ExecError> {
    use std::os::unix::ffi::OsStrExt;
    split(exec_str, &|n| std::env::var_os(n).map(|v| v.as_bytes().to_vec()))
}

impl Exec {
    /// The `service.args` value: argv, behind `env NAME=VALUE ...` if there
    /// are assignments (protocol 1.1 has no per-service environment).
    pub fn service_args(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut word = |w: &[u8]| {
            if !out.is_empty() {
                out.push(b'\t');
            }
            out.extend_from_slice(w);
        };
        if !self.env.is_empty() {
            word(b"env");
            for (n, v) in &self.env {
                let mut a = n.as_bytes().to_vec();
                a.push(b'=');
                a.extend_from_slice(v);
                word(&a);
            }
        }
        for a in &self.argv {
            word(a);
        }
        out
    }
}

/// Environment names an `exec_str` may not assign while `--allow-exec` is
/// set, because they change which program or code runs: program and
/// library lookup, the dynamic loader and C library, shells' start-up
/// files, and interpreters' module paths and options. A trailing `*`
/// covers a prefix. The list is documented in daemonproxy-bridge(8).
pub const DANGEROUS_ENV: &[&str] = &[
    // lookup of programs and of the C library's loadable parts
    "PATH",
    "LD_*",
    "GLIBC_TUNABLES",
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "MALLOC_*",
    "TZDIR",
    // shells
    "BASH_ENV",
    "ENV",
    "BASH_FUNC_*",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "IFS",
    "CDPATH",
    "PROMPT_COMMAND",
    "ZDOTDIR",
    // interpreters and runtimes
    "PYTHON*",
    "PERL*",
    "RUBY*",
    "GEM_*",
    "NODE_*",
    "LUA_*",
    "TCLLIBPATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "PHPRC",
    "PHP_INI_SCAN_DIR",
    "GIT_*",
];

/// Is `name` one of [`DANGEROUS_ENV`]?
pub fn dangerous_env(name: &str) -> bool {
    DANGEROUS_ENV.iter().any(|d| match d.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *d,
    })
}

/// The search path a bare program name is looked up in when the bridge
/// has no `PATH` (as the C library's execvp(3) does).
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

/// A program as `--allow-exec` judges it: the path that is run and the
/// file it really is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// The absolute path to run (the word itself, or the first match in
    /// `PATH`): sent to daemonproxy as argv[0], so that no later lookup
    /// can pick another file.
    pub run: std::path::PathBuf,
    /// [`Program::run`] with `.`, `..` and every symbolic link resolved.
    pub real: std::path::PathBuf,
}

/// Find what argv[0] `word` runs: an absolute path as it is, a bare name
/// in the absolute directories of `path` (the bridge's `PATH`; relative
/// entries are skipped, since daemonproxy's working directory is not the
/// bridge's) as execvp(3) would, the first regular file with an execute
/// bit. A relative path with a `/` is refused for the same reason.
pub fn resolve(word: &[u8], path: Option<&[u8]>) -> Result<Program, String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    let runnable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    let shown = String::from_utf8_lossy(word);
    let run = if word.first() == Some(&b'/') {
        PathBuf::from(std::ffi::OsStr::from_bytes(word))
    } else if word.contains(&b'/') {
        return Err(format!("relative program path {shown} is refused under --allow-exec"));
    } else {
        path.unwrap_or(DEFAULT_PATH)
            .split(|&c| c == b':')
            .filter(|d| d.first() == Some(&b'/'))
            .map(|d| Path::new(std::ffi::OsStr::from_bytes(d)).join(std::ffi::OsStr::from_bytes(word)))
            .find(|p| runnable(p))
            .ok_or_else(|| format!("program {shown} not found in PATH"))?
    };
    let real = std::fs::canonicalize(&run).map_err(|e| format!("program {shown}: {e}"))?;
    Ok(Program { run, real })
}

/// Is `p` (found for argv[0] `word`) allowed by `patterns`? A pattern
/// with a `/` must match [`Program::real`], the file that runs; one without
/// matches a bare `word` looked up in `PATH`. Both with `FNM_PATHNAME`, so
/// `*` never crosses a `/`.
pub fn allowed(patterns: &[String], word: &[u8], p: &Program) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let bare = !word.contains(&b'/');
    patterns.iter().any(|g| {
        if g.contains('/') {
            crate::sys::fnmatch_path(g, p.real.as_os_str().as_bytes())
        } else {
            bare && crate::sys::fnmatch_path(g, word)
        }
    })
}

/// An `--allow-exec` pattern with the directories before its first glob
/// character resolved (`/bin/*` becomes `/usr/bin/*` where `/bin` is a
/// link to `usr/bin`), so that it can match [`Program::real`]. Patterns
/// without a `/`, and directories that do not resolve, are kept.
pub fn real_pattern(pattern: &str) -> String {
    let glob = pattern.find(['*', '?', '[', '\\']).unwrap_or(pattern.len());
    let Some(slash) = pattern[..glob].rfind('/') else { return pattern.to_string() };
    let (dir, rest) = pattern.split_at(slash);
    if dir.is_empty() {
        return pattern.to_string();
    }
    match std::fs::canonicalize(dir) {
        Ok(real) => match real.to_str() {
            Some("/") => rest.to_string(),
            Some(r) => format!("{r}{rest}"),
            None => pattern.to_string(),
        },
        Err(_) => pattern.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: &str) -> Option<Vec<u8>> {
        match n {
            "HOME" => Some(b"/home/u".to_vec()),
            "X" => Some(b"ex".to_vec()),
            _ => None,
        }
    }

    fn argv(s: &str) -> Vec<String> {
        split(s.as_bytes(), &env).unwrap().argv.iter().map(|a| String::from_utf8(a.clone()).unwrap()).collect()
    }

    #[test]
    fn words_and_quotes() {
        assert_eq!(argv("echo a"), ["echo", "a"]); // stock drops the final one-character word
        assert_eq!(argv("  sleep   1  "), ["sleep", "1"]);
        assert_eq!(argv("sh -c 'echo hi; exit 3'"), ["sh", "-c", "echo hi; exit 3"]);
        assert_eq!(argv(r#"a "b 'c' d" e"#), ["a", "b 'c' d", "e"]);
        assert_eq!(argv("a '' b"), ["a", "", "b"]);
        assert_eq!(argv("a 'unterminated b"), ["a", "unterminated b"]);
        assert_eq!(argv(r"a\ b c\x"), ["a b", "cx"]); // stock makes \x a backslash
        assert_eq!(argv(r"a b\"), ["a", r"b\"]);
        assert_eq!(argv(r#"say "q\"uote""#), ["say", "q\"uote"]);
        assert_eq!(argv("x'y'z"), ["xyz"]);
    }

    #[test]
    fn expansion() {
        assert_eq!(argv("ls $HOME ${HOME}/x"), ["ls", "/home/u", "/home/u/x"]);
        assert_eq!(argv(r"echo \$HOME"), ["echo", "$HOME"]); // stock expands \$ anyway
        assert_eq!(argv("echo '$X'"), ["echo", "ex"]); // quotes do not stop it (as stock)
        assert_eq!(argv("echo $UNSET ${UNSET} $1 $ ${ ${X"), ["echo", "$UNSET", "${UNSET}", "$1", "$", "${", "${X"]);
        assert_eq!(argv("echo $X$X.$HOME"), ["echo", "exex./home/u"]);
    }

    #[test]
    fn assignments() {
        let e = split(b"A=1 B_2=$X C=  prog A=2 $A", &env).unwrap();
        assert_eq!(
            e.env,
            vec![("A".into(), b"1".to_vec()), ("B_2".into(), b"ex".to_vec()), ("C".into(), b"".to_vec())]
        );
        // later NAME=VALUE words are arguments, and assignments do not feed
        // expansion
        assert_eq!(e.argv, vec![b"prog".to_vec(), b"A=2".to_vec(), b"$A".to_vec()]);
        assert_eq!(e.service_args(), b"env\tA=1\tB_2=ex\tC=\tprog\tA=2\t$A".to_vec());
        // stock treats any word with '=' as an assignment
        assert_eq!(argv("1A=x prog"), ["1A=x", "prog"]);
        assert_eq!(argv("'A=x' prog"), ["A=x", "prog"]);
        assert_eq!(split(b"MAP_DIR=${HOME}/maps mapper", &env).unwrap().env[0].1, b"/home/u/maps".to_vec());
    }

    #[test]
    fn dangerous_names() {
        for n in ["PATH", "LD_PRELOAD", "LD_", "GCONV_PATH", "BASH_ENV", "ENV", "PYTHONPATH", "PERL5OPT", "IFS"] {
            assert!(dangerous_env(n), "{n}");
        }
        for n in ["PATHX", "MY_PATH", "HOME", "LANG", "MAP_DIR", "ENVIRONMENT"] {
            assert!(!dangerous_env(n), "{n}");
        }
    }

    /// Issue 14 #6: `*` crossed `/`, and argv[0] was judged as written.
    #[test]
    fn allow_exec_judges_the_real_file() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let d = std::env::temp_dir().join(format!("dp-allow-exec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("bin/sub")).unwrap();
        std::fs::create_dir_all(d.join("evil")).unwrap();
        for f in ["bin/tool", "bin/sub/deep", "evil/tool", "evil/echo"] {
            std::fs::write(d.join(f), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(d.join("bin/data"), "not a program").unwrap();
        symlink(d.join("evil/tool"), d.join("bin/link")).unwrap();
        symlink(d.join("bin"), d.join("alias")).unwrap();
        let dir = d.to_str().unwrap().to_string();
        let pats = vec![real_pattern(&format!("{dir}/alias/*")), "echo".to_string()];
        assert_eq!(pats[0], format!("{dir}/bin/*"), "the pattern's directory is resolved");
        let judge = |word: &str, path: &str| -> Result<bool, String> {
            let p = resolve(word.as_bytes(), Some(path.as_bytes()))?;
            Ok(allowed(&pats, word.as_bytes(), &p))
        };
        assert_eq!(judge(&format!("{dir}/bin/tool"), ""), Ok(true));
        assert_eq!(judge(&format!("{dir}/alias/tool"), ""), Ok(true), "a link to an allowed file");
        assert_eq!(judge(&format!("{dir}/bin/../evil/tool"), ""), Ok(false), "..");
        assert_eq!(judge(&format!("{dir}/bin/sub/../../evil/tool"), ""), Ok(false));
        assert_eq!(judge(&format!("{dir}/bin/sub/deep"), ""), Ok(false), "* does not cross /");
        assert_eq!(judge(&format!("{dir}/bin/link"), ""), Ok(false), "a link out of the directory");
        assert!(judge(&format!("{dir}/bin/data"), "").is_ok(), "an absolute path is judged, not searched");
        assert!(judge("bin/tool", &dir).unwrap_err().contains("relative"));
        // bare names: looked up in absolute PATH entries only
        let evil_first = format!("{dir}/evil:/usr/bin:/bin");
        let p = resolve(b"echo", Some(evil_first.as_bytes())).unwrap();
        assert_eq!(p.run, d.join("evil/echo"), "the path to run is the one judged");
        assert!(judge("echo", "/usr/bin:/bin").unwrap());
        assert!(resolve(b"echo", Some(b"relative:.")).unwrap_err().contains("not found"));
        assert!(resolve(b"data", Some(format!("{dir}/bin").as_bytes())).is_err(), "not executable");
        assert_eq!(real_pattern("sleep"), "sleep");
        assert_eq!(real_pattern("/nonexistent-dir/x*"), "/nonexistent-dir/x*");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refusals() {
        assert_eq!(split(b"", &env), Err(ExecError::Empty));
        assert_eq!(split(b"A=1 B=2", &env), Err(ExecError::Empty));
        assert_eq!(split(b"echo 'a\tb'", &env), Err(ExecError::ControlByte));
        assert_eq!(split(b"A=1 'x=y'", &env), Err(ExecError::EqualsInProgram));
        assert!(split(b"'x=y'", &env).is_ok());
        assert_eq!(split(b"sleep 1", &env).unwrap().service_args(), b"sleep\t1".to_vec());
    }
}
