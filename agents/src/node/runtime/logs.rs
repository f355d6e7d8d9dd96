//! Reading the CRI log format (`TIME STREAM TAG text`, tag `F` for a full line and `P`
//! for a part of a longer one) back into the text `kubectl logs` shows, with its
//! options: `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps`, `limitBytes`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// How often a followed log is read again.
const FOLLOW_PERIOD: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    pub tail_lines: Option<usize>,
    pub since: Option<SystemTime>,
    pub timestamps: bool,
    pub limit_bytes: Option<usize>,
}

/// One line of a CRI log: time, stream, whether it is a partial line, the text.
pub fn parse_line(line: &str) -> Option<(&str, &str, bool, &str)> {
    let mut parts = line.splitn(4, ' ');
    let (time, stream, tag) = (parts.next()?, parts.next()?, parts.next()?);
    Some((time, stream, tag == "P", parts.next().unwrap_or("")))
}

fn parse_time(time: &str) -> Option<SystemTime> {
    let ts: jiff::Timestamp = time.parse().ok()?;
    let nanos = u64::try_from(ts.as_nanosecond()).ok()?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(nanos))
}

/// Joins partial lines and renders whole lines, each ending in `\n`; a trailing partial
/// line (still being written) is left out.
pub fn lines(contents: &str, options: &LogOptions) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut first_time: Option<&str> = None;
    for raw in contents.lines() {
        let Some((time, _stream, partial, text)) = parse_line(raw) else { continue };
        let start = *first_time.get_or_insert(time);
        pending.push_str(text);
        if partial {
            continue;
        }
        first_time = None;
        let text = std::mem::take(&mut pending);
        if let Some(since) = options.since {
            if parse_time(start).is_some_and(|t| t < since) {
                continue;
            }
        }
        out.push(if options.timestamps { format!("{start} {text}\n") } else { format!("{text}\n") });
    }
    if let Some(tail) = options.tail_lines {
        let skip = out.len().saturating_sub(tail);
        out.drain(..skip);
    }
    out
}

/// The whole answer for a non-following request.
pub fn render(contents: &str, options: &LogOptions) -> String {
    let mut text: String = lines(contents, options).concat();
    if let Some(limit) = options.limit_bytes {
        if text.len() > limit {
            let mut cut = limit;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
    }
    text
}

/// The log's bytes from `offset` on (nothing if it cannot be read).
pub async fn read_from(path: &Path, offset: usize) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut bytes = Vec::new();
    if let Ok(mut file) = tokio::fs::File::open(path).await {
        if file.seek(std::io::SeekFrom::Start(offset as u64)).await.is_ok() {
            let _ = file.read_to_end(&mut bytes).await;
        }
    }
    bytes
}

/// Follows a CRI log from byte `offset`: each batch of new complete lines (raw CRI
/// text) goes to `out`, until `running` says the container has ended and its last
/// lines are out, or the receiver goes away.
pub async fn follow<F, Fut>(path: PathBuf, mut offset: usize, running: F, out: mpsc::Sender<String>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        let still_running = running().await;
        let bytes = read_from(&path, offset).await;
        let fresh = String::from_utf8_lossy(&bytes);
        let complete = fresh.rfind('\n').map_or(0, |i| i + 1);
        if complete > 0 {
            offset += complete;
            if out.send(fresh[..complete].to_owned()).await.is_err() {
                return;
            }
        }
        if !still_running || out.is_closed() {
            return;
        }
        tokio::time::sleep(FOLLOW_PERIOD).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2024-01-01T00:00:01.000000000Z stdout F one\n\
                       2024-01-01T00:00:02.000000000Z stderr F two\n\
                       2024-01-01T00:00:03.000000000Z stdout P thr\n\
                       2024-01-01T00:00:03.100000000Z stdout F ee\n\
                       2024-01-01T00:00:04.000000000Z stdout P unfinish";

    #[test]
    fn lines_join_partials_and_skip_the_unfinished_tail() {
        assert_eq!(render(LOG, &LogOptions::default()), "one\ntwo\nthree\n");
    }

    #[test]
    fn tail_since_timestamps_and_limit_apply() {
        let tail = LogOptions { tail_lines: Some(1), ..Default::default() };
        assert_eq!(render(LOG, &tail), "three\n");
        let since = LogOptions { since: parse_time("2024-01-01T00:00:02Z"), ..Default::default() };
        assert_eq!(render(LOG, &since), "two\nthree\n");
        let stamped = LogOptions { timestamps: true, tail_lines: Some(1), ..Default::default() };
        assert_eq!(render(LOG, &stamped), "2024-01-01T00:00:03.000000000Z three\n");
        let limited = LogOptions { limit_bytes: Some(5), ..Default::default() };
        assert_eq!(render(LOG, &limited), "one\nt");
    }
}
