//! The process runtime's shim (like containerd's shim, much smaller): one per
//! container, started detached from the agent, so containers outlive an agent restart.
//!
//! It starts the container's process in its own process group, writes that pid to
//! `DIR/pid`, copies stdout and stderr into the container's log in CRI's format, and
//! when the process ends writes how it ended to `DIR/exit.json`. The agent reads those
//! files; it never needs to be the process's parent.

use super::Exit;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest log line written whole; longer ones are split into partial (`P`) lines,
/// as CRI does.
const MAX_LINE: usize = 16 * 1024;

pub const PID_FILE: &str = "pid";
pub const EXIT_FILE: &str = "exit.json";

/// An RFC 3339 time with nanoseconds, as CRI log lines carry it.
pub fn log_timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ts = jiff::Timestamp::new(since.as_secs() as i64, since.subsec_nanos() as i32).unwrap_or_default();
    format!("{}.{:09}Z", ts.strftime("%Y-%m-%dT%H:%M:%S"), since.subsec_nanos())
}

/// Writes `bytes` to `path` so a reader sees all of it or nothing.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, bytes)?;
    std::fs::rename(temp, path)
}

fn write_exit(dir: &Path, exit: &Exit) {
    let json = serde_json::to_vec(exit).unwrap_or_default();
    if let Err(error) = write_atomically(&dir.join(EXIT_FILE), &json) {
        eprintln!("keelson shim: writing {}: {error}", dir.join(EXIT_FILE).display());
    }
}

/// Copies one stream into the log, a CRI line per line of output.
fn pump(mut source: impl Read, stream: &'static str, log: Arc<Mutex<std::fs::File>>) {
    let mut reader = BufReader::with_capacity(MAX_LINE, &mut source);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let read = match reader.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (text, tag) = match line.strip_suffix(b"\n") {
            Some(text) => (text, "F"),
            None if read == MAX_LINE => (&line[..], "P"),
            None => (&line[..], "F"),
        };
        let mut entry = format!("{} {stream} {tag} ", log_timestamp(SystemTime::now())).into_bytes();
        entry.extend_from_slice(text);
        entry.push(b'\n');
        if let Ok(mut file) = log.lock() {
            let _ = file.write_all(&entry);
        }
    }
}

/// Runs `argv` as described above; returns the shim's own exit code (0 once the
/// container's end is recorded, whatever the container's code).
pub fn run(dir: &Path, log_path: &Path, argv: &[String]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("keelson shim: no command");
        return 2;
    };
    let log = match std::fs::OpenOptions::new().create(true).append(true).open(log_path) {
        Ok(file) => Arc::new(Mutex::new(file)),
        Err(error) => {
            eprintln!("keelson shim: opening {}: {error}", log_path.display());
            return 2;
        }
    };
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let started = SystemTime::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let message = match error.kind() {
                std::io::ErrorKind::NotFound => format!("exec: {program:?}: executable file not found in $PATH"),
                _ => format!("exec: {program:?}: {error}"),
            };
            write_exit(
                dir,
                &Exit {
                    exit_code: 128,
                    reason: "StartError".into(),
                    message: Some(message),
                    started_at: None,
                    finished_at: SystemTime::now(),
                },
            );
            return 0;
        }
    };
    let started_nanos = started.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    if let Err(error) = write_atomically(&dir.join(PID_FILE), format!("{} {started_nanos}", child.id()).as_bytes()) {
        eprintln!("keelson shim: writing the pid file: {error}");
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        let (log, done) = (Arc::clone(&log), done_tx.clone());
        pumps.push(std::thread::spawn(move || {
            pump(out, "stdout", log);
            let _ = done.send(());
        }));
    }
    if let Some(err) = child.stderr.take() {
        let (log, done) = (Arc::clone(&log), done_tx.clone());
        pumps.push(std::thread::spawn(move || {
            pump(err, "stderr", log);
            let _ = done.send(());
        }));
    }
    drop(done_tx);
    let status = child.wait();
    // Output still in the pipes belongs to the container; a background descendant
    // holding them open must not keep the exit from being recorded.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    for _ in 0..pumps.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let exit_code = match &status {
        Ok(status) => status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(_) => 128,
    };
    write_exit(
        dir,
        &Exit {
            exit_code,
            reason: Exit::reason_for(exit_code).into(),
            message: status.err().map(|e| format!("waiting for the process: {e}")),
            started_at: Some(started),
            finished_at: SystemTime::now(),
        },
    );
    0
}

/// The shim's command line after `keelson shim`: `--dir DIR --log FILE -- ARGV...`.
pub fn parse_args(args: &[String]) -> Option<(PathBuf, PathBuf, Vec<String>)> {
    let split = args.iter().position(|a| a == "--")?;
    let (flags, argv) = (&args[..split], &args[split + 1..]);
    let flag = |name: &str| flags.iter().position(|a| a == name).and_then(|i| flags.get(i + 1)).map(PathBuf::from);
    Some((flag("--dir")?, flag("--log")?, argv.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_carry_nanoseconds_in_utc() {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(log_timestamp(at), "2023-11-14T22:13:20.000000005Z");
    }

    #[test]
    fn the_shim_records_output_and_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let argv: Vec<String> = ["sh", "-c", "echo hello; echo oops >&2; exit 3"].map(String::from).to_vec();
        assert_eq!(run(dir.path(), &log, &argv), 0);
        let exit: Exit = serde_json::from_slice(&std::fs::read(dir.path().join(EXIT_FILE)).unwrap()).unwrap();
        assert_eq!((exit.exit_code, exit.reason.as_str()), (3, "Error"));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.lines().any(|l| l.ends_with(" stdout F hello")), "{text}");
        assert!(text.lines().any(|l| l.ends_with(" stderr F oops")), "{text}");
        assert!(dir.path().join(PID_FILE).exists());
    }

    #[test]
    fn a_missing_program_is_a_start_error() {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), &dir.path().join("0.log"), &["no-such-program-x".to_owned()]);
        let exit: Exit = serde_json::from_slice(&std::fs::read(dir.path().join(EXIT_FILE)).unwrap()).unwrap();
        assert_eq!((exit.exit_code, exit.reason.as_str()), (128, "StartError"));
        assert!(exit.message.unwrap().contains("executable file not found"));
    }

    #[test]
    fn shim_arguments_parse() {
        let args: Vec<String> = ["--dir", "/d", "--log", "/l", "--", "sh", "-c", "x"].map(String::from).to_vec();
        let (dir, log, argv) = parse_args(&args).unwrap();
        assert_eq!((dir, log, argv.len()), (PathBuf::from("/d"), PathBuf::from("/l"), 3));
    }
}
