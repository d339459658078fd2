//! Filters of `service.query` and `service.stat *` (an extension): which
//! services a controller asks about, by name pattern, tag and state.
//!
//! A filter list is the TAB-separated remainder of the command; every
//! filter must match (empty fields are skipped):
//! `name=GLOB` (the service name), `tag=GLOB` (some TAB-separated word of
//! `service.tags`, e.g. `session=run42` or `user=*`), `state=LIST` (a
//! comma list of `up`, `down`, `start`, `limit`; `limit` = down and held
//! by its restart limit). GLOB: `*` any bytes, `?` one byte, `\` quotes the
//! next byte. The text is validated once, kept in the controller's fixed
//! buffer and matched in place for each service: nothing is allocated.

use crate::command::comma_items;

/// `state=up`.
pub const UP: u8 = 1;
/// `state=down` (a limited service is down too).
pub const DOWN: u8 = 2;
/// `state=start`.
pub const START: u8 = 4;
/// `state=limit`: down, held by the restart limit.
pub const LIMIT: u8 = 8;

/// One parsed filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter<'a> {
    /// `name=GLOB`.
    Name(&'a [u8]),
    /// `tag=GLOB`.
    Tag(&'a [u8]),
    /// `state=LIST`: a set of the bits above.
    State(u8),
}

/// Parse one (non-empty) filter field.
pub fn parse(field: &[u8]) -> Option<Filter<'_>> {
    if let Some(g) = field.strip_prefix(b"name=") {
        return Some(Filter::Name(g));
    }
    if let Some(g) = field.strip_prefix(b"tag=") {
        return (!g.is_empty()).then_some(Filter::Tag(g));
    }
    let list = field.strip_prefix(b"state=")?;
    let mut bits = 0;
    for item in comma_items(list) {
        bits |= match item {
            b"up" => UP,
            b"down" => DOWN,
            b"start" => START,
            b"limit" => LIMIT,
            _ => return None,
        };
    }
    (bits != 0).then_some(Filter::State(bits))
}

fn fields(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&b| b == b'\t').filter(|f| !f.is_empty())
}

/// Check every filter of `text`; `Err(field)` names the first bad one.
pub fn validate(text: &[u8]) -> Result<(), &[u8]> {
    match fields(text).find(|f| parse(f).is_none()) {
        Some(bad) => Err(bad),
        None => Ok(()),
    }
}

/// What a filter is matched against.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// The service name.
    pub name: &'a [u8],
    /// The raw `service.tags` value.
    pub tags: &'a [u8],
    /// Its state as one of the bits above (`LIMIT` also sets `DOWN`).
    pub state: u8,
}

/// Does the service match every filter of (validated) `text`?
pub fn matches(text: &[u8], s: &Subject<'_>) -> bool {
    fields(text).all(|f| match parse(f) {
        Some(Filter::Name(g)) => glob(g, s.name),
        Some(Filter::Tag(g)) => !s.tags.is_empty() && s.tags.split(|&b| b == b'\t').any(|w| glob(g, w)),
        Some(Filter::State(bits)) => bits & s.state != 0,
        None => false,
    })
}

/// Shell-style match of `pat` against all of `s`: `*`, `?`, `\`. Linear
/// backtracking to the last `*`, no recursion and no allocation.
pub fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    // Where to resume after the last `*`: (pattern index, subject index).
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        let step = match pat.get(p) {
            Some(b'*') => {
                star = Some((p + 1, i));
                p += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'\\') if pat.get(p + 1) == Some(&s[i]) => Some(2),
            Some(b'\\') => None,
            Some(&c) if c == s[i] => Some(1),
            _ => None,
        };
        match (step, star) {
            (Some(n), _) => {
                p += n;
                i += 1;
            }
            (None, Some((sp, si))) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            (None, None) => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(b"job*", b"job-17"));
        assert!(glob(b"*", b""));
        assert!(glob(b"", b""));
        assert!(!glob(b"", b"x"));
        assert!(glob(b"a?c", b"abc"));
        assert!(!glob(b"a?c", b"ac"));
        assert!(glob(b"*b*d", b"abcabd"));
        assert!(!glob(b"*b*d", b"abcabe"));
        assert!(glob(b"session=*", b"session=run42"));
        assert!(!glob(b"session=*", b"user=run42"));
        assert!(glob(b"a\\*", b"a*"));
        assert!(!glob(b"a\\*", b"ab"));
        assert!(glob(b"**x", b"yyx"));
        assert!(!glob(b"x", b"xx"));
    }

    #[test]
    fn filters() {
        assert_eq!(parse(b"name=a*"), Some(Filter::Name(b"a*")));
        assert_eq!(parse(b"tag=user=bob"), Some(Filter::Tag(b"user=bob")));
        assert_eq!(parse(b"state=up,limit"), Some(Filter::State(UP | LIMIT)));
        assert_eq!(parse(b"tag="), None);
        assert_eq!(parse(b"state="), None);
        assert_eq!(parse(b"state=running"), None);
        assert_eq!(parse(b"color=blue"), None);
        assert_eq!(validate(b"name=x\t\ttag=a=b"), Ok(()));
        assert_eq!(validate(b"name=x\tbogus\tstate=nope"), Err(&b"bogus"[..]));
    }

    #[test]
    fn matching() {
        let s = Subject { name: b"job-3", tags: b"user=ann\tsession=s1\tgroup=daq", state: UP };
        assert!(matches(b"", &s));
        assert!(matches(b"tag=session=s1\ttag=user=ann", &s));
        assert!(!matches(b"tag=session=s1\ttag=user=bob", &s));
        assert!(matches(b"name=job-*\tstate=up,start", &s));
        assert!(!matches(b"state=down", &s));
        assert!(!matches(b"tag=session", &s));
        let untagged = Subject { name: b"x", tags: b"", state: DOWN | LIMIT };
        assert!(!matches(b"tag=*", &untagged));
        assert!(matches(b"state=limit", &untagged) && matches(b"state=down", &untagged));
    }
}
