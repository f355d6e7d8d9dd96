//! Records the commit the load generator was built from, so a run made from outside the
//! repository (a copied binary, as side-by-side comparisons use) still says which code
//! it measured.

include!("src/git_head.rs");

fn main() {
    // Rebuilt when HEAD moves (a commit, a checkout), the branch it names does, or the
    // index changes (what is staged).
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
    let commit = head_commit().unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=LOADGEN_BUILD_COMMIT={commit}");
}
