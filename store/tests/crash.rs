//! Crash safety: a writer process is killed with SIGKILL mid-load, 20 times over one
//! data directory. After each kill the store must hold every write the child saw
//! acknowledged, revisions must run 1..=current without gaps, and a watch from the
//! previous cycle's revision must replay exactly the revisions since.
//!
//! The child is this test binary re-run with `KEELSON_CRASH_CHILD` set: it writes from
//! several threads and prints `ACK <revision> <key>` only after each acknowledgement.

use keelson_engine::Revision;
use keelson_store::{ListOptions, ReadAt, Store, StoreConfig, WatchItem};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "KEELSON_CRASH_CHILD";
const CYCLES: u64 = 20;
const WRITERS: usize = 8;

/// Runs only as the child: writes until killed.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (dir, cycle) = spec.split_once('|').expect("dir|cycle");
    let store = Store::open(std::path::Path::new(dir), StoreConfig::default()).expect("child opens store");
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let store = &store;
            scope.spawn(move || {
                // Bounded: the parent kills us long before this ends.
                for i in 0..1_000_000u64 {
                    let key = format!("/crash/{cycle}/{writer}/{i:07}");
                    let outcome = store.create(key.clone(), vec![b'x'; 512]).wait().expect("child write");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {} {key}", outcome.revision).expect("stdout");
                    out.flush().expect("flush");
                }
            });
        }
    });
}

fn run_child_until_killed(dir: &std::path::Path, cycle: u64, acks_before_kill: usize) -> Vec<(u64, String)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{cycle}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < acks_before_kill && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(ack) = parse_ack(&line) {
            acked.push(ack);
        }
    }
    child.kill().expect("SIGKILL the child");
    // Lines already written before the kill were acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(ack) = parse_ack(&line) {
            acked.push(ack);
        }
    }
    child.wait().expect("reap child");
    acked
}

fn parse_ack(line: &str) -> Option<(u64, String)> {
    let rest = line.strip_prefix("ACK ")?;
    let (revision, key) = rest.split_once(' ')?;
    Some((revision.parse().ok()?, key.to_owned()))
}

#[test]
fn killed_writer_loses_no_acknowledged_write() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut previous = Revision::ZERO;
    for cycle in 0..CYCLES {
        // Vary the kill point so kills land in different phases of a commit.
        let acks_before_kill = 200 + (cycle as usize * 397) % 1500;
        let acked = run_child_until_killed(dir.path(), cycle, acks_before_kill);
        assert!(
            acked.len() >= acks_before_kill.min(200),
            "cycle {cycle}: child acknowledged only {} writes",
            acked.len()
        );

        let store = Store::open(dir.path(), StoreConfig::default()).unwrap();
        for (revision, key) in &acked {
            let record = store.get(key.as_bytes(), ReadAt::Latest).unwrap();
            let record = record.unwrap_or_else(|| panic!("cycle {cycle}: acknowledged {key} at {revision} is lost"));
            assert_eq!(record.mod_revision, Revision(*revision), "cycle {cycle}: {key}");
        }
        // Every write is a create of a new key: revisions 1..=current, one key each.
        let current = store.current_revision();
        let page = store.list(b"/crash/", &ListOptions::default()).unwrap();
        let mut revisions: Vec<u64> = page.items.iter().map(|(_, r)| r.mod_revision.get()).collect();
        revisions.sort_unstable();
        assert_eq!(revisions, (1..=current.get()).collect::<Vec<_>>(), "cycle {cycle}: gap in revisions");

        // The watch resumes from the previous cycle's revision with nothing missing.
        let mut watcher = store.watch("/crash/", previous).unwrap();
        let mut next = previous.get() + 1;
        while next <= current.get() {
            match watcher.next_timeout(Duration::from_secs(10)).unwrap() {
                Some(WatchItem::Events(batch)) => {
                    for event in batch.iter() {
                        assert_eq!(event.revision.get(), next, "cycle {cycle}: watch out of order");
                        next += 1;
                    }
                }
                Some(WatchItem::Progress(_)) => {}
                None => panic!("cycle {cycle}: watch stalled at {next} of {current}"),
            }
        }
        previous = current;
    }
}
