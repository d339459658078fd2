//! Records the git commit and build time for `--version` and the `-i` banner.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let head = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "0000000000000000000000000000000000000000".into());
    // --no-optional-locks: a plain `git status` refreshes .git/index, which
    // is watched below, so every second build of a fresh clone rebuilt.
    let dirty =
        git(&["--no-optional-locks", "status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let date = Command::new("date")
        .args(["-d", &format!("@{now}"), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=DP_GIT_HEAD={head}");
    println!("cargo:rustc-env=DP_GIT_DIRTY={}", if dirty { "1" } else { "0" });
    println!("cargo:rustc-env=DP_BUILD_TIME={now}");
    println!("cargo:rustc-env=DP_BUILD_DATE={date}");
    // Rebuild when HEAD moves: the HEAD file (a branch switch), the branch
    // it names (a commit) and packed refs, and the index (staged changes).
    // `git rev-parse --git-path` finds them in worktrees too.
    for p in ["HEAD", "index", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", p]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &r])
    {
        println!("cargo:rerun-if-changed={path}");
    }
}
