//! What people see: selecting commands by name, group and deputy (as
//! drunc queries do), and the `status` and `deputies` tables.

use super::config::group_matches;
use super::model::{Command, Fleet, Liveness};
use crate::sys::fnmatch;
use std::time::Instant;

/// Which commands a verb or a query means.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// fnmatch(3) pattern of command ids.
    pub name: Option<String>,
    /// A group path: the group and its subgroups.
    pub group: Option<String>,
    /// A deputy id (fnmatch pattern).
    pub deputy: Option<String>,
    /// Every command (required for verbs without another selector).
    pub all: bool,
}

impl Filter {
    /// Does it select anything at all (a verb needs a selector)?
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.group.is_none() && self.deputy.is_none() && !self.all
    }

    /// Does it select `c`?
    pub fn matches(&self, c: &Command) -> bool {
        self.name.as_deref().is_none_or(|n| fnmatch(n, c.cmd.command_id.as_bytes()))
            && self.group.as_deref().is_none_or(|g| group_matches(g, &c.cmd.group))
            && self.deputy.as_deref().is_none_or(|d| fnmatch(d, c.deputy.as_bytes()))
    }

    /// The selected commands' keys.
    pub fn select(&self, f: &Fleet) -> Vec<(String, String)> {
        f.cmds.iter().filter(|(_, c)| self.matches(c)).map(|(k, _)| k.clone()).collect()
    }

    /// Does it name `c` by its id (not by a pattern, a group or `--all`)?
    pub fn names(&self, c: &Command) -> bool {
        self.name.as_deref() == Some(c.cmd.command_id.as_str())
    }

    /// The commands a verb acts on: those selected, less the ones whose
    /// deputy said it will not act on them unless named by id
    /// (docs/fleet.md §5.2); and how many were left out.
    pub fn actionable(&self, f: &Fleet) -> (Vec<(String, String)>, usize) {
        let mut skipped = 0;
        let keys = f
            .cmds
            .iter()
            .filter(|(_, c)| self.matches(c))
            .filter(|(_, c)| {
                let skip = c.refused.is_some() && !self.names(c);
                skipped += usize::from(skip);
                !skip
            })
            .map(|(k, _)| k.clone())
            .collect();
        (keys, skipped)
    }

    /// As protocol fields (`name=...`, ...), for the control socket.
    pub fn to_fields(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(n) = &self.name {
            v.push(format!("name={n}"));
        }
        if let Some(g) = &self.group {
            v.push(format!("group={g}"));
        }
        if let Some(d) = &self.deputy {
            v.push(format!("deputy={d}"));
        }
        if self.all {
            v.push("all=1".into());
        }
        v
    }

    /// Parse [`Filter::to_fields`] output.
    pub fn from_fields<'a>(fields: impl Iterator<Item = &'a str>) -> Filter {
        let mut f = Filter::default();
        for x in fields {
            match x.split_once('=') {
                Some(("name", v)) => f.name = Some(v.to_string()),
                Some(("group", v)) => f.group = Some(v.to_string()),
                Some(("deputy", v)) => f.deputy = Some(v.to_string()),
                Some(("all", _)) => f.all = true,
                _ => {}
            }
        }
        f
    }
}

/// One row of `status`, as plain fields (sent over the control socket as
/// TAB-separated text, then formatted by [`table`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Deputy id.
    pub deputy: String,
    /// Command id.
    pub id: String,
    /// Group path.
    pub group: String,
    /// Status word.
    pub status: String,
    /// Pid (0: not running; -1: unknown).
    pub pid: i32,
    /// CPU, percent of the whole machine.
    pub cpu_pct: f32,
    /// Resident bytes.
    pub rss: i64,
    /// Seconds of the current run (-1: not running).
    pub uptime: i64,
    /// The sheriff saw the run start; if not, it is at least `uptime` old.
    pub start_seen: bool,
    /// Raw wait status of the last run that ended (`None`: none seen).
    pub exit: Option<i32>,
    /// `ok`, `late` or `lost` (the deputy's liveness).
    pub live: String,
    /// The deputy's notice if it said it will not act on this command.
    pub refused: Option<String>,
}

fn live_word(l: Liveness) -> &'static str {
    match l {
        Liveness::Fresh => "ok",
        Liveness::Late => "late",
        Liveness::Lost => "lost",
    }
}

/// The rows of the commands `filter` selects.
pub fn rows(f: &Fleet, filter: &Filter, now: Instant) -> Vec<Row> {
    f.cmds
        .values()
        .filter(|c| filter.matches(c))
        .map(|c| {
            let up = f.deputies.get(&c.deputy).and_then(|d| c.uptime(d, now));
            Row {
                deputy: c.deputy.clone(),
                id: c.cmd.command_id.clone(),
                group: c.cmd.group.clone(),
                status: c.status().text().to_string(),
                pid: c.pid,
                cpu_pct: c.cpu * 100.0,
                rss: c.rss,
                uptime: up.map_or(-1, |(d, _)| d.as_secs() as i64),
                start_seen: up.is_some_and(|(_, seen)| seen),
                exit: c.last_exit,
                live: live_word(f.liveness(&c.deputy, now)).to_string(),
                refused: c.refused.clone(),
            }
        })
        .collect()
}

impl Row {
    /// TAB-separated (`row` first; an unknown exit is `-`, no refusal an
    /// empty field).
    pub fn to_line(&self) -> String {
        format!(
            "row\t{}\t{}\t{}\t{}\t{}\t{:.2}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.deputy,
            self.id,
            self.group,
            self.status,
            self.pid,
            self.cpu_pct,
            self.rss,
            self.uptime,
            u8::from(self.start_seen),
            self.exit.map_or("-".to_string(), |e| e.to_string()),
            self.live,
            self.refused.as_deref().unwrap_or("")
        )
    }

    /// Parse [`Row::to_line`].
    pub fn from_line(l: &str) -> Option<Row> {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() != 13 || f[0] != "row" {
            return None;
        }
        Some(Row {
            deputy: f[1].into(),
            id: f[2].into(),
            group: f[3].into(),
            status: f[4].into(),
            pid: f[5].parse().ok()?,
            cpu_pct: f[6].parse().ok()?,
            rss: f[7].parse().ok()?,
            uptime: f[8].parse().ok()?,
            start_seen: f[9] == "1",
            exit: if f[10] == "-" { None } else { Some(f[10].parse().ok()?) },
            live: f[11].into(),
            refused: (!f[12].is_empty()).then(|| f[12].to_string()),
        })
    }
}

/// A raw wait status as people read it: `exit N` (`exit 0` for a clean
/// exit), `signal N`; `-` when no run has ended.
pub fn exit_text(status: Option<i32>) -> String {
    let Some(status) = status else { return "-".into() };
    if status & 0x7f == 0 { format!("exit {}", (status >> 8) & 0xff) } else { format!("signal {}", status & 0x7f) }
}

fn human_bytes(b: i64) -> String {
    if b <= 0 {
        return "-".into();
    }
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1}G", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1}M", b / (1024.0 * 1024.0))
    } else {
        format!("{:.0}K", b / 1024.0)
    }
}

/// An uptime: `-` when not running; `>` before it when the run was
/// already going when the sheriff first heard of it (at least that long).
fn uptime_text(secs: i64, seen: bool) -> String {
    if secs < 0 || seen { human_secs(secs) } else { format!(">{}", human_secs(secs)) }
}

fn human_secs(s: i64) -> String {
    match s {
        s if s < 0 => "-".into(),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
        s => format!("{}d{:02}h", s / 86400, (s / 3600) % 24),
    }
}

/// The `status` table, columns padded to fit.
pub fn table(rows: &[Row]) -> String {
    let head = ["DEPUTY", "COMMAND", "GROUP", "STATUS", "PID", "CPU%", "RSS", "UPTIME", "LAST EXIT"];
    let mut cells: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let deputy = if r.live == "ok" { r.deputy.clone() } else { format!("{} ({})", r.deputy, r.live) };
        cells.push(vec![
            deputy,
            r.id.clone(),
            if r.group.is_empty() { "-".into() } else { r.group.clone() },
            r.status.clone(),
            if r.pid > 0 { r.pid.to_string() } else { "-".into() },
            if r.pid > 0 { format!("{:.1}", r.cpu_pct) } else { "-".into() },
            if r.pid > 0 { human_bytes(r.rss) } else { "-".into() },
            uptime_text(r.uptime, r.start_seen),
            exit_text(r.exit),
        ]);
    }
    let widths: Vec<usize> =
        (0..head.len()).map(|i| cells.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &cells {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The `deputies` table.
pub fn deputies(f: &Fleet, now: Instant) -> String {
    let mut out = String::from("DEPUTY  STATE  LOAD  MEM USED  MEM TOTAL  SWAP USED  LAST HEARD\n");
    let mut lines = Vec::new();
    for d in f.deputies.values() {
        let heard = d.heard.map_or("never".to_string(), |t| format!("{:.1}s ago", now.duration_since(t).as_secs_f64()));
        let load = if d.cpu_load < 0.0 { "-".to_string() } else { format!("{:.0}%", d.cpu_load * 100.0) };
        lines.push([
            d.id.clone(),
            live_word(f.liveness(&d.id, now)).to_string(),
            load,
            human_bytes(d.mem_total - d.mem_free),
            human_bytes(d.mem_total),
            human_bytes(d.swap_total - d.swap_free),
            heard,
        ]);
    }
    let head = ["DEPUTY", "STATE", "LOAD", "MEM USED", "MEM TOTAL", "SWAP USED", "LAST HEARD"];
    let widths: Vec<usize> = (0..head.len())
        .map(|i| lines.iter().map(|r| r[i].chars().count()).chain([head[i].len()]).max().unwrap_or(0))
        .collect();
    out.clear();
    for r in std::iter::once(head.map(String::from)).chain(lines) {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_text() {
        let r = Row {
            deputy: "d".into(),
            id: "x".into(),
            group: "g/h".into(),
            status: "Running".into(),
            pid: 12,
            cpu_pct: 12.5,
            rss: 3 << 20,
            uptime: 75,
            start_seen: true,
            exit: Some(768),
            live: "ok".into(),
            refused: None,
        };
        assert_eq!(Row::from_line(&r.to_line()), Some(r.clone()));
        let other = Row { start_seen: false, exit: None, refused: Some("not ours".into()), ..r.clone() };
        assert_eq!(Row::from_line(&other.to_line()), Some(other.clone()));
        let t = table(&[r, other]);
        assert!(t.starts_with("DEPUTY  COMMAND  GROUP  STATUS   PID  CPU%  RSS   UPTIME  LAST EXIT\n"), "{t}");
        assert!(t.contains("\nd       x        g/h    Running  12   12.5  3.0M  1m15s   exit 3\n"), "{t}");
        assert!(t.contains("\nd       x        g/h    Running  12   12.5  3.0M  >1m15s  -\n"), "{t}");
        assert_eq!(exit_text(Some(15)), "signal 15");
        assert_eq!(exit_text(Some(0)), "exit 0");
        assert_eq!(exit_text(None), "-");
        let f = Filter { name: Some("x*".into()), group: Some("g".into()), deputy: None, all: false };
        assert_eq!(Filter::from_fields(f.to_fields().iter().map(String::as_str)), f);
    }
}
