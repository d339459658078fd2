//! Running procman scripts (docs/fleet.md §5.4) against the fleet:
//! start, stop and restart of a command, a group or everything, with
//! optional waits; `wait ms`; `wait ... status`; `run_script` inline.
//! A [`Run`] is stepped by the sheriff's loop; it never blocks.

use super::config::{Action, Config, Step, Target, WaitFor, group_matches};
use super::model::{Fleet, Key, Status, Verb};
use std::time::{Duration, Instant};

/// After a wait is met, the next start, stop or restart comes no sooner
/// than this after the previous one.
const PACING: Duration = Duration::from_millis(100);
/// Far enough in the future for a `wait ms` that does not fit an Instant.
const YEAR: Duration = Duration::from_secs(365 * 86400);

/// One flat step (`run_script` expanded).
#[derive(Clone, Debug, PartialEq)]
enum Flat {
    Act(Verb, Target, Option<WaitFor>),
    Sleep(u64),
    Wait(Target, WaitFor),
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every action ran and every wait was met.
    Done,
    /// A wait failed: not met within the script timeout, or a command it
    /// names is one its deputy said it will not act on.
    Failed(String),
}

/// A script being run.
pub struct Run {
    /// Its name.
    pub name: String,
    steps: Vec<Flat>,
    next: usize,
    waiting: Option<(Target, WaitFor, Instant)>,
    sleep_until: Option<Instant>,
    last_act: Option<Instant>,
    timeout: Option<Duration>,
    /// What happened, for the log and for a client following the run.
    pub progress: Vec<String>,
}

fn flatten(cfg: &Config, actions: &[Action], out: &mut Vec<Flat>, depth: usize) -> Result<(), String> {
    if depth > 64 {
        return Err("run_script nested too deeply (a cycle?)".into());
    }
    for a in actions {
        match &a.step {
            Step::Start { target, wait } => out.push(Flat::Act(Verb::Start, target.clone(), *wait)),
            Step::Stop { target, wait } => out.push(Flat::Act(Verb::Stop, target.clone(), *wait)),
            Step::Restart { target, wait } => out.push(Flat::Act(Verb::Restart, target.clone(), *wait)),
            Step::WaitMs(ms) => out.push(Flat::Sleep(*ms)),
            Step::WaitStatus { target, status } => out.push(Flat::Wait(target.clone(), *status)),
            Step::RunScript(name) => {
                let s = cfg.scripts.iter().find(|s| &s.name == name).ok_or(format!("no script {name:?}"))?;
                flatten(cfg, &s.actions, out, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// The commands a target names. `everything` and groups leave out the
/// commands whose deputy said it will not act on them (docs/fleet.md
/// §5.2): they are neither ordered nor waited for.
pub fn targets(f: &Fleet, t: &Target) -> Vec<(String, String)> {
    f.cmds
        .iter()
        .filter(|(_, c)| match t {
            Target::Everything => c.refused.is_none(),
            Target::Cmd(id) => &c.cmd.command_id == id,
            Target::Group(g) => c.refused.is_none() && group_matches(g, &c.cmd.group),
        })
        .map(|(k, _)| k.clone())
        .collect()
}

fn met(f: &Fleet, t: &Target, w: WaitFor) -> bool {
    targets(f, t).iter().all(|k| {
        let s = f.cmds[k].status();
        match w {
            // a run that has already finished counts
            WaitFor::Running => matches!(s, Status::Running) || s.is_stopped(),
            WaitFor::Stopped => s.is_stopped(),
        }
    })
}

fn describe(t: &Target) -> String {
    match t {
        Target::Everything => "everything".into(),
        Target::Cmd(c) => format!("cmd {c:?}"),
        Target::Group(g) => format!("group {g:?}"),
    }
}

impl Run {
    /// Prepare script `name` of `cfg` (validated beforehand).
    pub fn new(cfg: &Config, name: &str, timeout: Option<Duration>) -> Result<Run, String> {
        let s =
            cfg.scripts.iter().find(|s| s.name == name).ok_or(format!("no script {name:?} in the configuration"))?;
        let mut steps = Vec::new();
        flatten(cfg, &s.actions, &mut steps, 0)?;
        Ok(Run {
            name: name.to_string(),
            steps,
            next: 0,
            waiting: None,
            sleep_until: None,
            last_act: None,
            timeout,
            progress: Vec::new(),
        })
    }

    /// Advance as far as possible. `act` carries out a verb on commands
    /// (the engine's, so that orders follow). Returns the outcome once the
    /// run is over, and otherwise when to step again at the latest.
    pub fn step(
        &mut self,
        f: &Fleet,
        now: Instant,
        act: &mut dyn FnMut(&[Key], Verb),
    ) -> Result<Outcome, Option<Instant>> {
        loop {
            if let Some((t, w, since)) = &self.waiting {
                let refused = targets(f, t).iter().find_map(|k| f.cmds[k].refused.clone());
                if let Some(why) = refused.filter(|_| !met(f, t, *w)) {
                    let msg = format!(
                        "wait for {} to be {}: the deputy will not act on it: {why}",
                        describe(t),
                        wait_word(*w)
                    );
                    self.progress.push(msg.clone());
                    return Ok(Outcome::Failed(msg));
                }
                if met(f, t, *w) {
                    self.progress.push(format!("{} is {}", describe(t), wait_word(*w)));
                    self.waiting = None;
                } else if self.timeout.is_some_and(|d| now.duration_since(*since) >= d) {
                    let msg = format!("wait for {} to be {} timed out", describe(t), wait_word(*w));
                    self.progress.push(msg.clone());
                    return Ok(Outcome::Failed(msg));
                } else {
                    let poll = now + Duration::from_millis(50);
                    return Err(Some(self.timeout.map_or(poll, |d| (*since + d).min(poll))));
                }
            }
            if let Some(t) = self.sleep_until {
                if now < t {
                    return Err(Some(t));
                }
                self.sleep_until = None;
            }
            let Some(s) = self.steps.get(self.next).cloned() else { return Ok(Outcome::Done) };
            match s {
                Flat::Act(verb, t, wait) => {
                    if let Some(last) = self.last_act
                        && now < last + PACING
                    {
                        return Err(Some(last + PACING));
                    }
                    let keys = targets(f, &t);
                    act(&keys, verb);
                    self.last_act = Some(now);
                    self.progress.push(format!("{} {}", verb_word(verb), describe(&t)));
                    if let Some(w) = wait {
                        self.waiting = Some((t, w, now));
                    }
                    // The caller applies the verb before anything else is
                    // judged: step again at once.
                    self.next += 1;
                    return Err(Some(now));
                }
                Flat::Sleep(ms) => {
                    self.progress.push(format!("wait ms {ms}"));
                    // A wait too long to add is as good as forever.
                    self.sleep_until = Some(now.checked_add(Duration::from_millis(ms)).unwrap_or(now + YEAR));
                }
                Flat::Wait(t, w) => self.waiting = Some((t, w, now)),
            }
            self.next += 1;
        }
    }
}

fn wait_word(w: WaitFor) -> &'static str {
    match w {
        WaitFor::Running => "running",
        WaitFor::Stopped => "stopped",
    }
}

fn verb_word(v: Verb) -> &'static str {
    match v {
        Verb::Start => "start",
        Verb::Stop => "stop",
        Verb::Restart => "restart",
        Verb::Remove => "remove",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procman::{CmdStatus, CmdT, DeputyInfo};

    fn cfg() -> Config {
        let text = r#"
cmd "a" { exec = "sleep 1"; deputy = "d"; }
group "g" { cmd "b" { exec = "sleep 2"; deputy = "d"; } }
script "inner" { wait ms 30; }
script "s" { start cmd "a" wait "running"; run_script "inner"; stop group "g" wait "stopped"; }
"#;
        super::super::config::parse(text, "t.cfg").expect("parses")
    }

    fn report(f: &mut Fleet, utime: i64, cmds: &[(&str, &str, i32, i32)]) {
        let info = DeputyInfo {
            utime,
            deputy_id: "d".into(),
            cpu_load: 0.0,
            phys_mem_total_bytes: 0,
            phys_mem_free_bytes: 0,
            swap_total_bytes: 0,
            swap_free_bytes: 0,
            cmds: cmds
                .iter()
                .map(|&(id, group, pid, runid)| CmdStatus {
                    cmd: CmdT {
                        command_id: id.into(),
                        exec_str: "x".into(),
                        group: group.into(),
                        auto_respawn: false,
                        stop_signal: 2,
                        stop_time_allowed: 7.0,
                    },
                    pid,
                    actual_runid: runid,
                    exit_code: if pid == 0 && runid > 0 { 2 } else { 0 },
                    cpu_usage: 0.0,
                    mem_vsize_bytes: 0,
                    mem_rss_bytes: 0,
                })
                .collect(),
        };
        f.on_info(&info, utime, Instant::now(), true);
    }

    #[test]
    fn steps_wait_pace_and_time_out() {
        let c = cfg();
        let mut f = Fleet::default();
        report(&mut f, 1, &[("a", "", 0, 0), ("b", "g", 5, 1)]);
        let mut run = Run::new(&c, "s", Some(Duration::from_secs(1))).unwrap();
        let t0 = Instant::now();
        let mut acted: Vec<(Vec<Key>, Verb)> = Vec::new();
        // the start is handed out and stepping pauses so it can be applied
        assert_eq!(run.step(&f, t0, &mut |k, v| acted.push((k.to_vec(), v))), Err(Some(t0)));
        assert_eq!(acted, vec![(vec![("d".to_string(), "a".to_string())], Verb::Start)]);
        for (k, v) in &acted {
            f.act(&k[0], *v);
        }
        // not running yet: waiting
        assert!(matches!(run.step(&f, t0, &mut |_, _| {}), Err(Some(_))));
        report(&mut f, 2, &[("a", "", 7, 1), ("b", "g", 5, 1)]);
        // running: then `wait ms 30` from run_script, inline
        let r = run.step(&f, t0, &mut |_, _| {});
        assert!(matches!(r, Err(Some(t)) if t == t0 + Duration::from_millis(30)), "{r:?}");
        assert!(run.progress.contains(&"cmd \"a\" is running".to_string()));
        // after the sleep the stop of the group, paced 100 ms after the start
        let mut acted = Vec::new();
        let t1 = t0 + Duration::from_millis(30);
        assert_eq!(run.step(&f, t1, &mut |k, v| acted.push((k.to_vec(), v))), Err(Some(t0 + PACING)));
        let t2 = t0 + PACING;
        assert_eq!(run.step(&f, t2, &mut |k, v| acted.push((k.to_vec(), v))), Err(Some(t2)));
        assert_eq!(acted, vec![(vec![("d".to_string(), "b".to_string())], Verb::Stop)]);
        f.act(&("d".into(), "b".into()), Verb::Stop);
        // b never stops: the wait times out after a second
        assert!(matches!(run.step(&f, t2 + Duration::from_millis(500), &mut |_, _| {}), Err(Some(_))));
        let end = run.step(&f, t2 + Duration::from_millis(1001), &mut |_, _| {});
        assert!(matches!(end, Ok(Outcome::Failed(ref m)) if m.contains("group \"g\"")), "{end:?}");
        // once it stops, the same script ends well
        let mut run = Run::new(&c, "s", None).unwrap();
        report(&mut f, 3, &[("a", "", 7, 1), ("b", "g", 0, 1)]);
        let mut now = t2 + Duration::from_secs(5);
        let mut outcome = None;
        for _ in 0..20 {
            match run.step(&f, now, &mut |_, _| {}) {
                Ok(o) => {
                    outcome = Some(o);
                    break;
                }
                Err(next) => now = next.unwrap_or(now).max(now + Duration::from_millis(1)),
            }
        }
        assert_eq!(outcome, Some(Outcome::Done));
        assert!(Run::new(&c, "nope", None).is_err());
    }
}
