//! `loadgen run`, `sweep` and `report` end to end on small clusters: the real binary,
//! its embedded control plane (HTTPS, RocksDB), the shipped workload files.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workload(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads").join(format!("{name}.yaml"))
}

fn loadgen(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args).output().expect("loadgen runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// `loadgen COMMAND WORKLOAD --set S ... --quiet --out OUT EXTRA...`.
fn small(command: &str, name: &str, sets: &[&str], out: &Path, extra: &[&str]) -> (bool, String) {
    let path = workload(name);
    let mut args = vec![command, path.to_str().unwrap()];
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend(["--quiet", "--out", out.to_str().unwrap()]);
    args.extend(extra);
    loadgen(&args)
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_shipped_workload_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.path().file_stem().map(|s| s.to_string_lossy().to_string()))
        .filter(|n| n != "templates")
        .collect();
    names.sort();
    assert_eq!(names.len(), 12, "{names:?}");
    for name in names {
        // An unknown --set key that is no scheduler setting either fails before any run.
        let (ok, text) = loadgen(&["run", workload(&name).to_str().unwrap(), "--set", "noSuchThing=1"]);
        assert!(!ok, "{name}: {text}");
        assert!(text.contains("not a parameter of"), "{name} should parse and then refuse the key: {text}");
    }
}

#[test]
fn run_measures_a_small_scheduling_basic_and_report_indexes_it() {
    let results = tempfile::tempdir().unwrap();
    let out = results.path().join("workloads/scheduling-basic/run1.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let sets = ["initNodes=50", "initPods=20", "measurePods=200"];
    let (ok, text) = small("run", "scheduling-basic", &sets, &out, &["--clients", "8"]);
    assert!(ok, "{text}");
    assert!(text.contains("throughput average pods/s"), "a summary table: {text}");
    let r = read(&out);
    assert_eq!(r["workload"], "scheduling-basic");
    assert_eq!(r["params"]["measurePods"], 200);
    assert_eq!(
        (r["nodes"].as_u64(), r["pods_measured"].as_u64(), r["pods_scheduled"].as_u64()),
        (Some(50), Some(200), Some(200))
    );
    assert_eq!(r["complete"], true);
    assert!(r["scheduling_throughput"]["average"].as_f64().unwrap() > 0.0, "{r}");
    for field in ["perc50", "perc90", "perc99"] {
        assert!(r["scheduling_throughput"][field].is_number(), "{field}");
    }
    assert_eq!(r["attempt_latency_ms"]["count"], 200.0, "every measured attempt: {r}");
    assert!(r["api_latency_ms"]["CREATE"]["count"].as_f64().unwrap() >= 200.0);
    assert_eq!(r["placement"]["cpu_allocation"]["nodes"], 50);
    assert!(r["machine"]["cores"].as_u64().unwrap() >= 1 && r["commit"].is_string());
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0 && r["duration_s"].as_f64().unwrap() > 0.0);

    let (ok, text) = loadgen(&["report", "--dir", results.path().to_str().unwrap()]);
    assert!(ok, "{text}");
    let readme = std::fs::read_to_string(results.path().join("README.md")).unwrap();
    assert!(readme.contains("| scheduling-basic | 50 | 200 |"), "{readme}");
    assert!(results.path().join("workloads/scheduling-basic/throughput.svg").exists());
}

#[test]
fn a_run_that_cannot_schedule_its_pods_says_so_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    // 10 nodes cannot hold 30 pods that refuse to share a node.
    let sets = ["initNodes=10", "initPods=0", "measurePods=30"];
    let (ok, text) = small("run", "pod-anti-affinity", &sets, &out, &["--timeout", "3"]);
    assert!(!ok, "{text}");
    assert!(text.contains("only 10 of 30 pods"), "{text}");
    let r = read(&out);
    assert_eq!((r["complete"].as_bool(), r["pods_scheduled"].as_u64()), (Some(false), Some(10)));
}

#[test]
fn sweep_runs_each_value_with_the_audit_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep.json");
    let sets = ["initNodes=120", "initPods=0", "measurePods=150", "percentageOfNodesToScore=10,100"];
    let (ok, text) = small("sweep", "scheduling-basic", &sets, &out, &["--clients", "8"]);
    assert!(ok, "{text}");
    let sweep = read(&out);
    assert_eq!(sweep["keys"], serde_json::json!(["percentageOfNodesToScore"]));
    let points = sweep["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    for (point, percentage) in points.iter().zip([10, 100]) {
        assert_eq!(point["settings"]["percentageOfNodesToScore"], percentage);
        assert_eq!(point["result"]["pods_scheduled"], 150);
        assert!(point["result"]["placement"]["score_regret"].is_number(), "audited: {point}");
    }
    let plot = std::fs::read_to_string(dir.path().join("sweep.svg")).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("score regret"));
}
