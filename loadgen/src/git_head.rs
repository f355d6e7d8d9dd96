// The commit a working tree is at, as results record it. Shared by the load generator
// (at run time) and its build script (`include!`d there, at build time).

/// `git` run in the current directory: its trimmed output, if it succeeded.
pub fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// HEAD's short hash, with `-dirty` when code differs from it. Result files and their
/// generated index change between runs; only code (anything outside `results/`)
/// makes a tree dirty. `None` outside a repository.
pub fn head_commit() -> Option<String> {
    let hash = git(&["rev-parse", "--short=12", "HEAD"])?;
    let status = ["status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results"];
    let dirty = git(&status).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}
