//! Splitting a procman `exec_str` into environment assignments and argv
//! (sheriff-bridge.md §4.6), with `$NAME` / `${NAME}` expansion from the
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
    fn refusals() {
        assert_eq!(split(b"", &env), Err(ExecError::Empty));
        assert_eq!(split(b"A=1 B=2", &env), Err(ExecError::Empty));
        assert_eq!(split(b"echo 'a\tb'", &env), Err(ExecError::ControlByte));
        assert_eq!(split(b"A=1 'x=y'", &env), Err(ExecError::EqualsInProgram));
        assert!(split(b"'x=y'", &env).is_ok());
        assert_eq!(split(b"sleep 1", &env).unwrap().service_args(), b"sleep\t1".to_vec());
    }
}
