//! One picture of the fleet for the web page, its JSON API and /metrics
//! (`serve --http`, src/sheriff/http/mod.rs): plain data copied out of the
//! [`Fleet`] by the sheriff's loop, then read by the HTTP threads, which
//! never touch the loop's state. Built from [`view::rows`] so the page
//! shows what `status` shows; the JSON text is made once per snapshot, by
//! the first thread that needs it.

use super::model::Fleet;
use super::view::{self, Filter, Row};
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::Instant;

/// The status words, in the order the page and /metrics list them
/// (`Status::text` in src/sheriff/model.rs).
pub const STATUS_WORDS: [&str; 8] = [
    "Running",
    "Starting (Command Sent)",
    "Restarting (Command Sent)",
    "Stopping (Command Sent)",
    "Removing (Command Sent)",
    "Stopped (OK)",
    "Stopped (Error)",
    "Unknown",
];

/// A command as the page shows it: its `status` row and its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandView {
    /// The `status` row.
    pub row: Row,
    /// The command line.
    pub exec: String,
    /// Restarted by its deputy when it ends.
    pub auto_respawn: bool,
    /// Signal that stops it.
    pub stop_signal: i8,
    /// Seconds it has to stop before SIGKILL.
    pub stop_time_allowed: f32,
    /// Runs seen starting after the first one seen.
    pub restarts: u64,
}

/// A deputy as the page shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeputyView {
    /// Its id.
    pub id: String,
    /// `ok`, `late` or `lost` (not heard within the liveness window).
    pub live: String,
    /// Seconds since its last report (`None`: never heard).
    pub heard_ago: Option<f64>,
    /// Its CPU load, 0 to 1 (negative: not reported).
    pub cpu_load: f32,
    /// Physical memory, bytes.
    pub mem_total: i64,
    /// Free physical memory, bytes.
    pub mem_free: i64,
    /// Swap, bytes.
    pub swap_total: i64,
    /// Free swap, bytes.
    pub swap_free: i64,
    /// Commands held for it.
    pub commands: usize,
    /// Of which running.
    pub running: usize,
}

/// A script run: the one going on, else the last one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScriptView {
    /// Its name.
    pub name: String,
    /// Its steps so far (what `run` prints).
    pub steps: Vec<String>,
    /// `running`, `done` or `failed: WHY`.
    pub outcome: String,
}

/// The sheriff itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SheriffView {
    /// Its id on the wire.
    pub id: String,
    /// `active` or `observer`.
    pub mode: String,
    /// The LCM URL.
    pub url: String,
    /// Actions are refused (`--http-read-only`, `--observe`, or an
    /// observer now).
    pub read_only: bool,
    /// The scripts of its configuration.
    pub scripts: Vec<String>,
}

/// Counters of the web side, shown in /metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebCounts {
    /// HTTP connections open now (streams included).
    pub connections: usize,
    /// Event streams open now.
    pub streams: usize,
    /// Streams dropped because their client fell behind.
    pub dropped: u64,
}

/// The whole picture.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The sheriff.
    pub sheriff: SheriffView,
    /// Every command, by deputy then id.
    pub commands: Vec<CommandView>,
    /// Every deputy, by id.
    pub deputies: Vec<DeputyView>,
    /// The current or last script run.
    pub script: Option<ScriptView>,
    /// The web side's counters.
    pub web: WebCounts,
    json: OnceLock<String>,
}

/// Copy the fleet out. `now` dates the uptimes and last-heard ages.
pub fn build(
    fleet: &Fleet,
    now: Instant,
    sheriff: SheriffView,
    script: Option<ScriptView>,
    web: WebCounts,
) -> Snapshot {
    // view::rows walks fleet.cmds in key order, as the zip below does.
    let rows = view::rows(fleet, &Filter::default(), now);
    let commands = rows
        .into_iter()
        .zip(fleet.cmds.values())
        .map(|(row, c)| CommandView {
            row,
            exec: c.cmd.exec_str.clone(),
            auto_respawn: c.cmd.auto_respawn,
            stop_signal: c.cmd.stop_signal,
            stop_time_allowed: c.cmd.stop_time_allowed,
            restarts: c.runs.saturating_sub(1),
        })
        .collect::<Vec<_>>();
    let deputies = fleet
        .deputies
        .values()
        .map(|d| {
            let mine = commands.iter().filter(|c| c.row.deputy == d.id);
            DeputyView {
                id: d.id.clone(),
                live: rows_live(fleet, &d.id, now),
                heard_ago: d.heard.map(|t| now.saturating_duration_since(t).as_secs_f64()),
                cpu_load: d.cpu_load,
                mem_total: d.mem_total,
                mem_free: d.mem_free,
                swap_total: d.swap_total,
                swap_free: d.swap_free,
                commands: mine.clone().count(),
                running: mine.filter(|c| c.row.pid > 0).count(),
            }
        })
        .collect();
    Snapshot { sheriff, commands, deputies, script, web, json: OnceLock::new() }
}

fn rows_live(fleet: &Fleet, deputy: &str, now: Instant) -> String {
    use super::model::Liveness;
    match fleet.liveness(deputy, now) {
        Liveness::Fresh => "ok",
        Liveness::Late => "late",
        Liveness::Lost => "lost",
    }
    .to_string()
}

impl Snapshot {
    /// Commands per status word (every word, zero included).
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        STATUS_WORDS.iter().map(|w| (*w, self.commands.iter().filter(|c| c.row.status == *w).count())).collect()
    }

    /// The deputies as JSON (`/api/deputies`).
    pub fn deputies_json(&self) -> Value {
        Value::Array(
            self.deputies
                .iter()
                .map(|d| {
                    json!({
                        "deputy": d.id,
                        "live": d.live,
                        "heard_ago": d.heard_ago.map(|s| (s * 10.0).round() / 10.0),
                        "cpu_load": if d.cpu_load < 0.0 { None } else { Some(d.cpu_load) },
                        "mem_total": d.mem_total,
                        "mem_free": d.mem_free,
                        "swap_total": d.swap_total,
                        "swap_free": d.swap_free,
                        "commands": d.commands,
                        "running": d.running,
                    })
                })
                .collect(),
        )
    }

    /// The whole snapshot as JSON text (`/api/status`, and each event of
    /// `/api/events`); made once.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| {
            let commands: Vec<Value> = self
                .commands
                .iter()
                .map(|c| {
                    let r = &c.row;
                    json!({
                        "deputy": r.deputy,
                        "id": r.id,
                        "group": r.group,
                        "status": r.status,
                        "pid": r.pid,
                        "cpu_pct": (r.cpu_pct * 100.0).round() / 100.0,
                        "rss": r.rss,
                        "uptime": if r.uptime < 0 { None } else { Some(r.uptime) },
                        "start_seen": r.start_seen,
                        "exit": r.exit,
                        "exit_text": view::exit_text(r.exit),
                        "live": r.live,
                        "refused": r.refused,
                        "restarts": c.restarts,
                        "exec": c.exec,
                        "auto_respawn": c.auto_respawn,
                        "stop_signal": c.stop_signal,
                        "stop_time_allowed": c.stop_time_allowed,
                    })
                })
                .collect();
            let counts: serde_json::Map<String, Value> =
                self.counts().into_iter().map(|(w, n)| (w.to_string(), json!(n))).collect();
            let s = &self.sheriff;
            json!({
                "sheriff": {
                    "id": s.id, "mode": s.mode, "url": s.url, "read_only": s.read_only, "scripts": s.scripts,
                },
                "counts": counts,
                "commands": commands,
                "deputies": self.deputies_json(),
                "script": self.script.as_ref().map(|r| json!({
                    "name": r.name, "steps": r.steps, "outcome": r.outcome,
                })),
            })
            .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procman::{CmdStatus, CmdT, DeputyInfo};

    #[test]
    fn a_fleet_becomes_json_with_counts() {
        let mut f = Fleet::default();
        let cmd = |id: &str| CmdT {
            command_id: id.into(),
            exec_str: "sleep 9".into(),
            group: "g".into(),
            auto_respawn: false,
            stop_signal: 15,
            stop_time_allowed: 2.0,
        };
        f.define("d", cmd("a"));
        f.define("d", cmd("<b>"));
        let now = Instant::now();
        let info = DeputyInfo {
            utime: crate::procman::auth::now_us(),
            deputy_id: "d".into(),
            cpu_load: 0.5,
            phys_mem_total_bytes: 100,
            phys_mem_free_bytes: 40,
            swap_total_bytes: 0,
            swap_free_bytes: 0,
            cmds: vec![CmdStatus {
                cmd: cmd("a"),
                actual_runid: 1,
                pid: 42,
                exit_code: 0,
                cpu_usage: 0.0,
                mem_vsize_bytes: 0,
                mem_rss_bytes: 4096,
            }],
        };
        f.on_info(&info, info.utime, now, false);
        let s = build(&f, now, SheriffView::default(), None, WebCounts::default());
        let v: Value = serde_json::from_str(s.json()).unwrap();
        assert_eq!(v["commands"].as_array().unwrap().len(), 2);
        assert_eq!(v["commands"][1]["id"], "a");
        assert_eq!(v["commands"][1]["pid"], 42);
        assert_eq!(v["commands"][0]["id"], "<b>", "data is data: the page inserts it as text");
        assert_eq!(v["counts"]["Running"], 1);
        assert_eq!(v["deputies"][0]["running"], 1);
        assert_eq!(v["deputies"][0]["live"], "ok");
    }
}
