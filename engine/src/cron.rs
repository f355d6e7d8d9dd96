//! Cron schedules as CronJobs write them: five fields (minute, hour, day of month,
//! month, day of week) with lists, ranges, steps and month/day names; the macros
//! `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`;
//! and `@every DURATION` (`90s`, `1h30m`).
//!
//! Day of month and day of week combine as in classic cron: when both are
//! restricted, a day matching either runs; when one is `*` (or `?`), only the other
//! counts. Times are found in civil time of the schedule's zone, so a schedule means
//! the wall clock there across daylight-saving changes.

use k8s_openapi::jiff::civil::DateTime;
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp, ToSpan, Zoned};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("expected exactly 5 fields, found {0}: {1}")]
    FieldCount(usize, String),
    #[error("failed to parse int from {0}: invalid syntax")]
    Number(String),
    #[error("{what} ({value}) {problem}")]
    Range { what: String, value: u32, problem: &'static str },
    #[error("unrecognized descriptor: {0}")]
    Descriptor(String),
    #[error("failed to parse duration {0}")]
    Duration(String),
}

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    Fields(Fields),
    /// `@every`: runs this far apart.
    Every(SignedDuration),
}

/// The five fields as bit sets; `*`-ness of the day fields is kept for the day rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fields {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_star: bool,
    weekdays_star: bool,
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTES: Bounds = Bounds { min: 0, max: 59, names: &[] };
const HOURS: Bounds = Bounds { min: 0, max: 23, names: &[] };
const DAYS: Bounds = Bounds { min: 1, max: 31, names: &[] };
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
const WEEKDAYS: Bounds = Bounds { min: 0, max: 6, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        let text = text.trim();
        if let Some(descriptor) = text.strip_prefix('@') {
            let fields = match descriptor {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                other => {
                    let every = other.strip_prefix("every ").ok_or_else(|| CronError::Descriptor(text.into()))?;
                    let duration = parse_go_duration(every.trim())?;
                    return Ok(Schedule::Every(duration));
                }
            };
            return Schedule::parse(fields);
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError::FieldCount(fields.len(), text.into()));
        }
        let (days, days_star) = field(fields[2], &DAYS)?;
        let (weekdays, weekdays_star) = field(fields[4], &WEEKDAYS)?;
        Ok(Schedule::Fields(Fields {
            minutes: field(fields[0], &MINUTES)?.0,
            hours: field(fields[1], &HOURS)?.0,
            days,
            months: field(fields[3], &MONTHS)?.0,
            weekdays,
            days_star,
            weekdays_star,
        }))
    }

    /// The first time strictly after `after` (in `after`'s zone), if one comes
    /// within five years.
    pub fn next_after(&self, after: &Zoned) -> Option<Zoned> {
        match self {
            Schedule::Every(every) => {
                let next = after.timestamp().checked_add(*every).ok()?;
                let next = Timestamp::from_second(next.as_second()).ok()?;
                Some(next.to_zoned(after.time_zone().clone()))
            }
            Schedule::Fields(fields) => fields.next_after(after),
        }
    }
}

impl Fields {
    fn day_matches(&self, t: &DateTime) -> bool {
        let day = bit(&self.days, t.day() as u32);
        let weekday = bit(&self.weekdays, t.weekday().to_sunday_zero_offset() as u32);
        if self.days_star || self.weekdays_star {
            day && weekday
        } else {
            day || weekday
        }
    }

    fn next_after(&self, after: &Zoned) -> Option<Zoned> {
        let zone: TimeZone = after.time_zone().clone();
        // The next whole minute, in civil time.
        let now = after.datetime();
        let mut t = now.date().at(now.hour(), now.minute(), 0, 0).checked_add(1.minute()).ok()?;
        let year_limit = t.year() + 5;
        'wrap: loop {
            if t.year() > year_limit {
                return None;
            }
            let mut reset = false;
            while !bit(&self.months, t.month() as u32) {
                if !reset {
                    reset = true;
                    t = t.date().first_of_month().to_datetime(Default::default());
                }
                t = t.checked_add(1.month()).ok()?;
                if t.month() == 1 {
                    continue 'wrap;
                }
            }
            while !self.day_matches(&t) {
                if !reset {
                    reset = true;
                    t = t.date().to_datetime(Default::default());
                }
                t = t.checked_add(1.day()).ok()?;
                if t.day() == 1 {
                    continue 'wrap;
                }
            }
            while !bit(&self.hours, t.hour() as u32) {
                if !reset {
                    reset = true;
                    t = t.date().at(t.hour(), 0, 0, 0);
                }
                t = t.checked_add(1.hour()).ok()?;
                if t.hour() == 0 {
                    continue 'wrap;
                }
            }
            while !bit(&self.minutes, t.minute() as u32) {
                if !reset {
                    reset = true;
                    t = t.date().at(t.hour(), t.minute(), 0, 0);
                }
                t = t.checked_add(1.minute()).ok()?;
                if t.minute() == 0 {
                    continue 'wrap;
                }
            }
            // A time skipped by a daylight-saving jump runs just after it.
            return t.to_zoned(zone).ok();
        }
    }
}

fn bit(set: &u64, n: u32) -> bool {
    set & (1 << n) != 0
}

/// One field: its bit set, and whether it was `*` (or `?`).
fn field(text: &str, bounds: &Bounds) -> Result<(u64, bool), CronError> {
    let mut set = 0u64;
    let mut star = false;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(number(step, bounds)?)),
            None => (item, None),
        };
        let (low, high) = if range == "*" || range == "?" {
            star = step.is_none();
            (bounds.min, bounds.max)
        } else if let Some((low, high)) = range.split_once('-') {
            (number(low, bounds)?, number(high, bounds)?)
        } else {
            let low = number(range, bounds)?;
            // `N/step` runs from N to the end, as in cron.
            (low, if step.is_some() { bounds.max } else { low })
        };
        let step = step.unwrap_or(1);
        if low < bounds.min {
            return Err(CronError::Range { what: range.into(), value: low, problem: "below minimum" });
        }
        if high > bounds.max {
            return Err(CronError::Range { what: range.into(), value: high, problem: "above maximum" });
        }
        if low > high {
            return Err(CronError::Range { what: range.into(), value: low, problem: "beyond end of range" });
        }
        if step == 0 {
            return Err(CronError::Range { what: item.into(), value: 0, problem: "step must be positive" });
        }
        for n in (low..=high).step_by(step as usize) {
            set |= 1 << n;
        }
    }
    Ok((set, star))
}

fn number(text: &str, bounds: &Bounds) -> Result<u32, CronError> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = bounds.names.iter().position(|n| *n == lower) {
        return Ok(index as u32 + bounds.min);
    }
    text.parse().map_err(|_| CronError::Number(text.into()))
}

/// A Go duration (`1h30m`, `90s`, `500ms`), as `@every` takes.
fn parse_go_duration(text: &str) -> Result<SignedDuration, CronError> {
    let fail = || CronError::Duration(text.into());
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return Err(fail());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(fail)?;
        let value: f64 = rest[..digits].parse().map_err(|_| fail())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return Err(fail()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    // Runs at least a second apart, as cron's @every rounds.
    Ok(SignedDuration::from_secs_f64(total.max(1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, zone: &str) -> Zoned {
        let civil: DateTime = text.parse().unwrap();
        civil.to_zoned(TimeZone::get(zone).unwrap()).unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        let zoned = Schedule::parse(schedule).unwrap().next_after(&at(after, "UTC")).unwrap();
        zoned.datetime().to_string()
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        assert_eq!(next("* * * * *", "2026-01-01T10:00:30"), "2026-01-01T10:01:00");
        assert_eq!(next("* * * * *", "2026-01-01T10:00:00"), "2026-01-01T10:01:00", "strictly after");
        assert_eq!(next("*/15 * * * *", "2026-01-01T10:01:00"), "2026-01-01T10:15:00");
        assert_eq!(next("5,35 9-17 * * *", "2026-01-01T17:40:00"), "2026-01-02T09:05:00");
        assert_eq!(next("0 0 1 jan *", "2026-03-01T00:00:00"), "2027-01-01T00:00:00");
        assert_eq!(next("0 12 * * MON-FRI", "2026-11-21T13:00:00"), "2026-11-23T12:00:00", "Saturday → Monday");
        assert_eq!(next("30 2 29 2 *", "2026-03-01T00:00:00"), "2028-02-29T02:30:00", "leap day");
        assert_eq!(next("10/20 * * * *", "2026-01-01T10:31:00"), "2026-01-01T10:50:00");
    }

    #[test]
    fn restricted_day_fields_combine_with_or() {
        // The 13th, or any Friday: 2026-11-20 is a Friday before the 13th of December.
        assert_eq!(next("0 0 13 * 5", "2026-11-14T00:00:00"), "2026-11-20T00:00:00");
        // With one field `*`, only the other counts.
        assert_eq!(next("0 0 * * 5", "2026-11-14T00:00:00"), "2026-11-20T00:00:00");
        assert_eq!(next("0 0 13 * *", "2026-11-14T00:00:00"), "2026-12-13T00:00:00");
    }

    #[test]
    fn macros_and_every() {
        assert_eq!(next("@hourly", "2026-01-01T10:00:00"), "2026-01-01T11:00:00");
        assert_eq!(next("@weekly", "2026-11-22T10:00:00"), "2026-11-29T00:00:00");
        assert_eq!(next("@yearly", "2026-11-22T10:00:00"), "2027-01-01T00:00:00");
        assert_eq!(next("@every 90s", "2026-01-01T10:00:00"), "2026-01-01T10:01:30");
        assert_eq!(Schedule::parse("@every 1h30m").unwrap(), Schedule::Every(SignedDuration::from_mins(90)));
    }

    #[test]
    fn schedules_follow_the_wall_clock_of_their_zone() {
        let after = at("2026-03-07T12:00:00", "America/New_York");
        let next = Schedule::parse("0 9 * * *").unwrap().next_after(&after).unwrap();
        assert_eq!(next.datetime().to_string(), "2026-03-08T09:00:00");
        assert_eq!(next.timestamp().to_string(), "2026-03-08T13:00:00Z", "after the switch to daylight time");
        // 02:30 does not exist on the switch day; it runs just after the gap.
        let skipped = Schedule::parse("30 2 * * *").unwrap().next_after(&after).unwrap();
        assert_eq!(skipped.timestamp().to_string(), "2026-03-08T07:30:00Z");
    }

    #[test]
    fn bad_schedules_say_why() {
        assert_eq!(Schedule::parse("* * * *"), Err(CronError::FieldCount(4, "* * * *".into())));
        assert!(matches!(Schedule::parse("61 * * * *"), Err(CronError::Range { problem: "above maximum", .. })));
        assert!(matches!(Schedule::parse("x * * * *"), Err(CronError::Number(_))));
        assert!(matches!(Schedule::parse("@fortnightly"), Err(CronError::Descriptor(_))));
        assert!(matches!(Schedule::parse("@every soon"), Err(CronError::Duration(_))));
        assert!(matches!(Schedule::parse("5-1 * * * *"), Err(CronError::Range { .. })));
        assert_eq!(
            Schedule::parse("0 0 * * 7").map(|_| ()),
            Err(CronError::Range { what: "7".into(), value: 7, problem: "above maximum" })
        );
    }
}
