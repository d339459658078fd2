//! Records the git commit and build time for `--version` and the `-i`
//! banner, and links the unwinder statically into the dynamic build.

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
    static_unwinder();
}

/// The dynamic build links gcc's unwinder (libgcc_eh.a) into the program
/// instead of loading libgcc_s.so.1 at run time (docs/design.md, "Code at
/// rest"): the program needs the unwinder for a caught panic and nothing
/// else of that library, whose pages made up 100 kB of a resting
/// daemonproxy's private memory; and an image with glibc but no libgcc_s
/// can run it. Rust's std asks the linker for `-lgcc_s`; a search directory
/// of our own, ahead of the compiler's, answers that with libgcc_eh.a
/// under the name libgcc_s.a. A static (crt-static) build links libgcc_eh
/// itself; a compiler without libgcc_eh.a keeps the shared library.
fn static_unwinder() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let crt_static = var("CARGO_CFG_TARGET_FEATURE").split(',').any(|f| f == "crt-static");
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" || crt_static {
        return;
    }
    println!("cargo:rerun-if-env-changed=CC");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Some(eh) = Command::new(&cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| p.starts_with('/') && std::path::Path::new(p).is_file())
    else {
        println!("cargo:warning=libgcc_eh.a not found: daemonproxy will load libgcc_s.so.1");
        return;
    };
    let dir = std::path::PathBuf::from(var("OUT_DIR")).join("static-unwinder");
    let link = dir.join("libgcc_s.a");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::remove_file(&link);
    if std::os::unix::fs::symlink(&eh, &link).is_ok() {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
}
