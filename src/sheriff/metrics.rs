//! `/metrics` of `serve --http`: a [`Snapshot`] in the Prometheus text
//! exposition format (version 0.0.4): one metric per meaning, labels
//! `deputy`, `group`, `command`, base units in the names, the status as a
//! 0/1 gauge labelled `status`, `# HELP` and `# TYPE` before each family.
//! The names are listed in man/daemonproxy-sheriff.1 ("HTTP").

use super::snapshot::{DeputyView, STATUS_WORDS, Snapshot};
use std::fmt::Write;

/// A label value as the format wants it: backslash, double quote and
/// line feed escaped.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One figure of a deputy.
type DeputyFigure = fn(&DeputyView) -> i64;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The exit code of a raw wait status as a shell gives it: the code of an
/// exit, 128 + the signal of a death by signal.
pub fn exit_code(status: i32) -> i32 {
    if status & 0x7f == 0 { (status >> 8) & 0xff } else { 128 + (status & 0x7f) }
}

/// The text of `/metrics`.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(256 + s.commands.len() * 1024);
    let labels: Vec<String> = s
        .commands
        .iter()
        .map(|c| {
            format!(
                "deputy=\"{}\",group=\"{}\",command=\"{}\"",
                escape(&c.row.deputy),
                escape(&c.row.group),
                escape(&c.row.id)
            )
        })
        .collect();
    family(&mut out, "daemonproxy_command_status", "gauge", "1 for the command's status word, 0 for the others.");
    for (c, l) in s.commands.iter().zip(&labels) {
        for w in STATUS_WORDS {
            let _ = writeln!(
                out,
                "daemonproxy_command_status{{{l},status=\"{}\"}} {}",
                escape(w),
                u8::from(c.row.status == w)
            );
        }
    }
    let per_command: [(&str, &str, &str); 5] = [
        ("daemonproxy_command_pid", "gauge", "Process id of the running command (0: not running, -1: unknown)."),
        (
            "daemonproxy_command_cpu_usage_ratio",
            "gauge",
            "CPU used by the command as its deputy reports it, 1 = the whole machine.",
        ),
        ("daemonproxy_command_resident_memory_bytes", "gauge", "Resident memory of the running command."),
        ("daemonproxy_command_restarts_total", "counter", "Runs seen starting after the first one this sheriff saw."),
        ("daemonproxy_command_uptime_seconds", "gauge", "Age of the current run (absent when not running)."),
    ];
    for (i, (name, kind, help)) in per_command.iter().enumerate() {
        family(&mut out, name, kind, help);
        for (c, l) in s.commands.iter().zip(&labels) {
            let r = &c.row;
            let v = match i {
                0 => r.pid.to_string(),
                1 => format!("{}", r.cpu_pct as f64 / 100.0),
                2 => r.rss.max(0).to_string(),
                3 => c.restarts.to_string(),
                _ if r.uptime < 0 => continue,
                _ => r.uptime.to_string(),
            };
            let _ = writeln!(out, "{name}{{{l}}} {v}");
        }
    }
    family(
        &mut out,
        "daemonproxy_command_last_exit_code",
        "gauge",
        "Exit code of the last run that ended (128+N for signal N; absent when none ended).",
    );
    for (c, l) in s.commands.iter().zip(&labels) {
        if let Some(e) = c.row.exit {
            let _ = writeln!(out, "daemonproxy_command_last_exit_code{{{l}}} {}", exit_code(e));
        }
    }
    family(&mut out, "daemonproxy_deputy_up", "gauge", "1 if the deputy was heard within the liveness window (5 s).");
    for d in &s.deputies {
        let _ = writeln!(out, "daemonproxy_deputy_up{{deputy=\"{}\"}} {}", escape(&d.id), u8::from(d.live != "lost"));
    }
    family(&mut out, "daemonproxy_deputy_last_heard_seconds", "gauge", "Seconds since the deputy's last report.");
    for d in &s.deputies {
        if let Some(a) = d.heard_ago {
            let _ = writeln!(out, "daemonproxy_deputy_last_heard_seconds{{deputy=\"{}\"}} {a:.3}", escape(&d.id));
        }
    }
    family(&mut out, "daemonproxy_deputy_cpu_load_ratio", "gauge", "The deputy host's CPU load, 1 = every CPU busy.");
    for d in s.deputies.iter().filter(|d| d.cpu_load >= 0.0) {
        let _ = writeln!(out, "daemonproxy_deputy_cpu_load_ratio{{deputy=\"{}\"}} {}", escape(&d.id), d.cpu_load);
    }
    let mem: [(&str, &str, DeputyFigure); 4] = [
        ("daemonproxy_deputy_memory_total_bytes", "Physical memory of the deputy host.", |d| d.mem_total),
        ("daemonproxy_deputy_memory_free_bytes", "Free physical memory of the deputy host.", |d| d.mem_free),
        ("daemonproxy_deputy_swap_total_bytes", "Swap of the deputy host.", |d| d.swap_total),
        ("daemonproxy_deputy_swap_free_bytes", "Free swap of the deputy host.", |d| d.swap_free),
    ];
    for (name, help, get) in mem {
        family(&mut out, name, "gauge", help);
        for d in s.deputies.iter().filter(|d| d.heard_ago.is_some()) {
            let _ = writeln!(out, "{name}{{deputy=\"{}\"}} {}", escape(&d.id), get(d));
        }
    }
    family(&mut out, "daemonproxy_http_connections", "gauge", "HTTP connections open now (streams included).");
    let _ = writeln!(out, "daemonproxy_http_connections {}", s.web.connections);
    family(&mut out, "daemonproxy_http_streams", "gauge", "Event streams (/api/events, /api/output) open now.");
    let _ = writeln!(out, "daemonproxy_http_streams {}", s.web.streams);
    family(
        &mut out,
        "daemonproxy_http_streams_dropped_total",
        "counter",
        "Event streams dropped because their client did not keep up.",
    );
    let _ = writeln!(out, "daemonproxy_http_streams_dropped_total {}", s.web.dropped);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_exit_codes_read() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(15), 143);
        let s = Snapshot::default();
        let t = render(&s);
        assert!(t.contains("# TYPE daemonproxy_command_status gauge\n"), "{t}");
        assert!(t.ends_with("daemonproxy_http_streams_dropped_total 0\n"), "{t}");
    }
}
