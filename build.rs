//! Records the git commit and build time for `--version` and the `-i` banner.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let head = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "0000000000000000000000000000000000000000".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
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
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
}
