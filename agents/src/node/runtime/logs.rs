//! Reading the CRI log format (`TIME STREAM TAG text`, tag `F` for a full line and `P`
//! for a part of a longer one) back into the text `kubectl logs` shows, with its
//! options: `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps`, `limitBytes`.

use std::time::SystemTime;

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
