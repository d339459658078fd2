//! Who may use the web side of `serve --http`, as plain decisions over
//! header values (no I/O), so each rule is unit-tested here: the token
//! (a bearer header or the login cookie, compared in constant time), the
//! Host of a page served without a token (no DNS rebinding), and the
//! same-origin check of every POST (man/daemonproxy-sheriff.1, "HTTP").

/// The login cookie's name.
pub const COOKIE: &str = "daemonproxy_token";
/// The header every action request carries (a cross-origin page cannot
/// send it without a CORS preflight, which is never granted).
pub const ACTION_HEADER: &str = "X-Daemonproxy-Action";

/// Equal, in a time that depends on the lengths only.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Read a token file's text: one token of 16 to 256 characters from
/// `A-Z a-z 0-9 - . _ ~ + / =` (so it fits a cookie and a header as it
/// is), surrounding white space ignored.
pub fn parse_token(text: &str) -> Result<String, String> {
    let t = text.trim();
    if !(16..=256).contains(&t.len()) {
        return Err("the token must be 16 to 256 characters".into());
    }
    if !t.bytes().all(|c| c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c)) {
        return Err("the token may hold only A-Z a-z 0-9 - . _ ~ + / =".into());
    }
    Ok(t.to_string())
}

/// The token a request carries: `Authorization: Bearer T`, else the
/// login cookie.
pub fn carried<'a>(authorization: Option<&'a str>, cookie: Option<&'a str>) -> Option<&'a str> {
    if let Some(t) = authorization.and_then(|a| a.strip_prefix("Bearer ")) {
        return Some(t.trim());
    }
    cookie?.split(';').filter_map(|c| c.trim().split_once('=')).find(|(k, _)| *k == COOKIE).map(|(_, v)| v)
}

/// Does the request carry `token`?
pub fn admitted(token: &str, authorization: Option<&str>, cookie: Option<&str>) -> bool {
    carried(authorization, cookie).is_some_and(|t| same(t.as_bytes(), token.as_bytes()))
}

/// A page served on loopback without a token answers only to the names
/// it was bound as (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`): a
/// page of another site whose name was made to point to 127.0.0.1 (DNS
/// rebinding) sends its own name as Host.
pub fn host_allowed(host: Option<&str>, port: u16) -> bool {
    let Some(h) = host else { return false };
    ["127.0.0.1", "localhost", "[::1]"].iter().any(|n| h == format!("{n}:{port}"))
}

/// A POST from a page of this same origin: `Origin` (or, without it,
/// `Referer`) is `http://HOST` of the request.
pub fn same_origin(host: Option<&str>, origin: Option<&str>, referer: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let me = format!("http://{host}");
    match (origin, referer) {
        (Some(o), _) => o == me,
        (None, Some(r)) => r == me || r.starts_with(&format!("{me}/")),
        (None, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_origins_and_hosts() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(parse_token("short").is_err());
        assert!(parse_token("0123456789abcdef;x").is_err());
        assert_eq!(parse_token(" 0123456789abcdef\n").as_deref(), Ok("0123456789abcdef"));
        let t = "0123456789abcdef";
        assert!(admitted(t, Some("Bearer 0123456789abcdef"), None));
        assert!(!admitted(t, Some("Bearer 0123456789abcdeX"), None));
        assert!(admitted(t, None, Some("a=b; daemonproxy_token=0123456789abcdef")));
        assert!(!admitted(t, None, Some("xdaemonproxy_token=0123456789abcdef")));
        assert!(!admitted(t, None, None));
        assert!(host_allowed(Some("127.0.0.1:8080"), 8080));
        assert!(host_allowed(Some("localhost:8080"), 8080));
        assert!(!host_allowed(Some("evil.example:8080"), 8080));
        assert!(!host_allowed(None, 8080));
        assert!(same_origin(Some("h:1"), Some("http://h:1"), None));
        assert!(!same_origin(Some("h:1"), Some("http://evil"), Some("http://h:1/")));
        assert!(same_origin(Some("h:1"), None, Some("http://h:1/x")));
        assert!(!same_origin(Some("h:1"), None, Some("http://h:10/x")));
        assert!(!same_origin(Some("h:1"), None, None));
    }
}
