//! The audit log: one JSON line per request, in kube's `audit.k8s.io/v1` Event shape
//! at the `Metadata` level (who, what, on which object, the answer's code, when; never
//! a request or response body, so no Secret's value reaches the log), to a file that
//! is rotated by size (`--audit-log-path`, `--audit-log-maxsize`, `--audit-log-maxbackup`).
//!
//! Requests hand their line to one writer thread over a bounded channel and never
//! wait on the disk. When the writer falls that far behind, lines are dropped and
//! counted (`apiserver_audit_event_dropped_total`) rather than held in memory.

use crate::auth::User;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 65_536;
/// How long the writer waits for more lines before flushing what it has.
const FLUSH_AFTER: Duration = Duration::from_millis(200);

/// Where and how large the log may grow.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub path: PathBuf,
    /// Rotate once the file would pass this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`FILE.1` is the newest).
    pub backups: usize,
}

/// What one request did, as the audit line records it.
#[derive(Default)]
pub struct Entry<'a> {
    pub request_uri: &'a str,
    /// kube's verb (`get`, `list`, `watch`, `create`, ...).
    pub verb: &'a str,
    pub user: Option<&'a User>,
    pub user_agent: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub code: u16,
    /// When the request arrived, and how long it took to answer.
    pub received: jiff::Timestamp,
    pub latency: Duration,
    /// Annotations admission added (`pod-security.kubernetes.io/...`).
    pub annotations: &'a [(&'static str, String)],
}

pub struct AuditLog {
    sender: SyncSender<Vec<u8>>,
    dropped: AtomicU64,
}

impl AuditLog {
    /// Opens (appends to) the log and starts its writer.
    pub fn open(config: AuditConfig) -> io::Result<AuditLog> {
        let writer = Writer::open(config)?;
        let (sender, receiver) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new().name("audit-log".into()).spawn(move || writer.run(receiver))?;
        Ok(AuditLog { sender, dropped: AtomicU64::new(0) })
    }

    /// Queues the line for `entry`; drops it (counted) if the writer is that far behind.
    pub fn record(&self, entry: &Entry<'_>) {
        match self.sender.try_send(line(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The audit Event for `entry`, as one line.
fn line(entry: &Entry<'_>) -> Vec<u8> {
    let stage = entry.received + entry.latency;
    let user = match entry.user {
        Some(user) => serde_json::json!({"username": user.name, "uid": user.uid, "groups": user.groups}),
        None => serde_json::json!({}),
    };
    let mut event = serde_json::json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": uuid::Uuid::new_v4().to_string(),
        "stage": "ResponseComplete",
        "requestURI": entry.request_uri,
        "verb": entry.verb,
        "user": user,
        "userAgent": entry.user_agent,
        "responseStatus": {"metadata": {}, "code": entry.code},
        "requestReceivedTimestamp": micros(entry.received),
        "stageTimestamp": micros(stage),
        "annotations": {"keelson.io/latency": format!("{:?}", entry.latency)},
    });
    for (key, value) in entry.annotations {
        event["annotations"][*key] = value.as_str().into();
    }
    if !entry.resource.is_empty() {
        let mut object = serde_json::json!({"resource": entry.resource, "apiVersion": entry.version});
        for (field, value) in [
            ("apiGroup", entry.group),
            ("namespace", entry.namespace),
            ("name", entry.name),
            ("subresource", entry.subresource),
        ] {
            if !value.is_empty() {
                object[field] = value.into();
            }
        }
        event["objectRef"] = object;
    }
    let mut out = serde_json::to_vec(&event).unwrap_or_default();
    out.push(b'\n');
    out
}

/// kube's audit timestamps: RFC 3339 with microseconds.
fn micros(at: jiff::Timestamp) -> String {
    format!("{at:.6}")
}

/// The writer thread's file: appends, flushes when idle, rotates by size.
struct Writer {
    config: AuditConfig,
    file: BufWriter<File>,
    size: u64,
}

impl Writer {
    fn open(config: AuditConfig) -> io::Result<Writer> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&config.path)?;
        let size = file.metadata()?.len();
        Ok(Writer { config, file: BufWriter::new(file), size })
    }

    fn run(mut self, lines: Receiver<Vec<u8>>) {
        loop {
            match lines.recv_timeout(FLUSH_AFTER) {
                Ok(line) => {
                    if let Err(error) = self.write(&line) {
                        tracing::warn!(%error, "audit log: writing failed");
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.file.flush();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.file.flush();
                    return;
                }
            }
        }
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.config.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// `FILE` becomes `FILE.1`, `FILE.1` becomes `FILE.2`, ...; the oldest beyond
    /// `backups` is removed.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let path = &self.config.path;
        let numbered = |n: usize| -> PathBuf { backup_path(path, n) };
        if self.config.backups == 0 {
            fs::remove_file(path)?;
        } else {
            let _ = fs::remove_file(numbered(self.config.backups));
            for n in (1..self.config.backups).rev() {
                let _ = fs::rename(numbered(n), numbered(n + 1));
            }
            fs::rename(path, numbered(1))?;
        }
        self.file = BufWriter::new(OpenOptions::new().create(true).append(true).open(path)?);
        self.size = 0;
        Ok(())
    }
}

fn backup_path(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_kubes_event_fields_and_the_file_rotates_by_size() {
        let dir = std::env::temp_dir().join(format!("keelson-audit-{}", uuid::Uuid::new_v4()));
        let path = dir.join("audit.log");
        let log = AuditLog::open(AuditConfig { path: path.clone(), max_bytes: 4096, backups: 2 }).unwrap();
        let ada = User::new("ada".into(), "u-1".into(), vec!["devs".into()]);
        for i in 0..40 {
            let name = format!("cm-{i}");
            log.record(&Entry {
                request_uri: "/api/v1/namespaces/team/configmaps",
                verb: "create",
                user: Some(&ada),
                resource: "configmaps",
                version: "v1",
                namespace: "team",
                name: &name,
                code: 201,
                received: jiff::Timestamp::now(),
                latency: Duration::from_micros(1500),
                ..Entry::default()
            });
        }
        drop(log);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !backup_path(&path, 2).exists() || fs::read(&path).map_or(true, |b| !b.ends_with(b"\n")) {
            assert!(std::time::Instant::now() < deadline, "never rotated twice");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(!backup_path(&path, 3).exists(), "only two backups are kept");
        for file in [path.clone(), backup_path(&path, 1)] {
            assert!(fs::metadata(&file).unwrap().len() <= 4096);
        }
        let newest = fs::read_to_string(&path).unwrap();
        let last: serde_json::Value = serde_json::from_str(newest.lines().last().unwrap()).unwrap();
        assert_eq!(last["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(last["user"]["username"], "ada");
        assert_eq!(last["objectRef"]["name"], "cm-39");
        assert_eq!(last["objectRef"]["namespace"], "team");
        assert_eq!(last["responseStatus"]["code"], 201);
        assert_eq!(last["annotations"]["keelson.io/latency"], "1.5ms");
        let _ = fs::remove_dir_all(dir);
    }
}
