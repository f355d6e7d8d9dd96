//! Records the commit the load generator was built from, so every run says which code it
//! measured, wherever the binary runs (a copied binary, as side-by-side comparisons
//! use, may be older than the working tree it runs in).

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
