//! Records the commit the load generator was built from, so a run made from outside the
//! repository (a copied binary, as side-by-side comparisons use) still says which code
//! it measured.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    // Rebuilt when HEAD moves (a commit, a checkout) or the branch it names does.
    for path in ["HEAD", "index"] {
        if let Some(path) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&["rev-parse", "--git-path", &reference]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(hash) => {
            let status = ["status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results"];
            let dirty = git(&status).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{hash}-dirty")
            } else {
                hash
            }
        }
        None => "unknown".to_owned(),
    };
    println!("cargo:rustc-env=LOADGEN_BUILD_COMMIT={commit}");
}
