//! Cron schedules for `on_cron`: five-field expressions, evaluated in UTC, as on
//! PartyKit (Cloudflare Workers cron triggers).
//!
//! Fields: minute (0–59), hour (0–23), day of month (1–31), month (1–12 or `JAN`–`DEC`),
//! day of week (0–6 or `SUN`–`SAT`, 7 is Sunday too). Each field is `*`, a value, a range
//! `a-b`, a step `*/n` or `a-b/n`, or a comma-separated list of those. When both day
//! fields are restricted, a day matching either one matches (classic cron).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A parsed cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// Why an expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    message: String,
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CronError {}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Schedule {
    pub(crate) fn parse(expression: &str) -> Result<Self, CronError> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(error(
                expression,
                format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                    fields.len()
                ),
            ));
        };
        let field = |text: &str, what: &str, min: u32, max: u32, names: &[&str]| {
            parse_field(text, min, max, names)
                .map_err(|detail| error(expression, format!("{what} field `{text}`: {detail}")))
        };
        let mut weekdays = field(weekday, "day-of-week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Self {
            minutes: field(minute, "minute", 0, 59, &[])?,
            hours: field(hour, "hour", 0, 23, &[])?,
            days: field(day, "day-of-month", 1, 31, &[])?,
            months: field(month, "month", 1, 12, &MONTHS)?,
            weekdays,
            days_restricted: day != "*",
            weekdays_restricted: weekday != "*",
        })
    }

    /// The first whole minute strictly after `after` that matches, within eight years.
    pub(crate) fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let seconds = after.duration_since(UNIX_EPOCH).ok()?.as_secs();
        let mut minute = seconds / 60 + 1;
        let limit = minute + 8 * 366 * 24 * 60;
        while minute < limit {
            let days = minute / (24 * 60);
            let (_, month, day) = civil_from_days(days);
            let weekday = (days + 4) % 7; // 1970-01-01 was a Thursday
            if !self.day_matches(month, day, weekday) {
                minute = (days + 1) * 24 * 60;
                continue;
            }
            let hour = minute / 60 % 24;
            if self.hours & (1 << hour) == 0 {
                minute = (minute / 60 + 1) * 60;
                continue;
            }
            if self.minutes & (1 << (minute % 60)) != 0 {
                return Some(UNIX_EPOCH + Duration::from_secs(minute * 60));
            }
            minute += 1;
        }
        None
    }

    fn day_matches(&self, month: u32, day: u32, weekday: u64) -> bool {
        if self.months & (1 << month) == 0 {
            return false;
        }
        let by_day = self.days & (1 << day) != 0;
        let by_weekday = self.weekdays & (1 << weekday) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => by_day || by_weekday,
            _ => by_day && by_weekday,
        }
    }
}

fn error(expression: &str, detail: String) -> CronError {
    CronError {
        message: format!("invalid cron expression `{expression}`: {detail}"),
    }
}

/// The set of values a field allows, as bits.
fn parse_field(text: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 =
                    step.parse().ok().filter(|step| *step > 0).ok_or_else(|| {
                        format!("`{step}` is not a step (a whole number above 0)")
                    })?;
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((low, high)) = range.split_once('-') {
            (value(low, min, max, names)?, value(high, min, max, names)?)
        } else {
            let single = value(range, min, max, names)?;
            // `5/15` means from 5 to the end, every 15.
            (single, if step > 1 { max } else { single })
        };
        if low > high {
            return Err(format!("the range {low}-{high} is backwards"));
        }
        for allowed in (low..=high).step_by(step as usize) {
            bits |= 1 << allowed;
        }
    }
    Ok(bits)
}

fn value(text: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, String> {
    let upper = text.to_ascii_uppercase();
    if let Some(index) = names.iter().position(|name| *name == upper) {
        // Month names count from 1 (the field's minimum), weekday names from 0.
        return Ok(index as u32 + min);
    }
    let number: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number from {min} to {max}"))?;
    if !(min..=max).contains(&number) {
        return Err(format!("{number} is outside {min}-{max}"));
    }
    Ok(number)
}

/// Year, month (1–12) and day (1–31) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn next(expression: &str, after: u64) -> u64 {
        Schedule::parse(expression)
            .unwrap()
            .next_after(at(after))
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    // 2024-01-01T00:00:00Z, a Monday.
    const JAN_1_2024: u64 = 1_704_067_200;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(JAN_1_2024 / 86_400), (2024, 1, 1));
        assert_eq!(civil_from_days(JAN_1_2024 / 86_400 + 59), (2024, 2, 29));
    }

    #[test]
    fn next_fire_times() {
        assert_eq!(next("* * * * *", JAN_1_2024), JAN_1_2024 + 60);
        assert_eq!(next("* * * * *", JAN_1_2024 + 30), JAN_1_2024 + 60);
        assert_eq!(next("*/15 * * * *", JAN_1_2024), JAN_1_2024 + 15 * 60);
        assert_eq!(
            next("30 2 * * *", JAN_1_2024),
            JAN_1_2024 + 2 * 3600 + 30 * 60
        );
        // Every Friday at noon: 2024-01-05 is a Friday.
        assert_eq!(
            next("0 12 * * FRI", JAN_1_2024),
            JAN_1_2024 + 4 * 86_400 + 12 * 3600
        );
        assert_eq!(
            next("0 12 * * 5", JAN_1_2024),
            next("0 12 * * fri", JAN_1_2024)
        );
        // Sunday as 7 and as 0.
        assert_eq!(next("0 0 * * 7", JAN_1_2024), next("0 0 * * 0", JAN_1_2024));
        // Leap day.
        assert_eq!(next("0 0 29 FEB *", JAN_1_2024), JAN_1_2024 + 59 * 86_400);
        // Both day fields restricted: either matches (the 15th, or a Monday).
        assert_eq!(next("0 0 15 * MON", JAN_1_2024), JAN_1_2024 + 7 * 86_400);
        assert_eq!(next("5/20 * * * *", JAN_1_2024), JAN_1_2024 + 5 * 60);
        assert_eq!(next("0 9-17/4 * * *", JAN_1_2024), JAN_1_2024 + 9 * 3600);
        assert!(
            Schedule::parse("0 0 30 2 *")
                .unwrap()
                .next_after(at(JAN_1_2024))
                .is_none()
        );
    }

    #[test]
    fn bad_expressions_say_why() {
        for (expression, fragment) in [
            ("* * * *", "expected 5 fields"),
            ("60 * * * *", "minute field `60`: 60 is outside 0-59"),
            ("* * 0 * *", "day-of-month field `0`"),
            ("* * * FOO *", "month field `FOO`"),
            ("*/0 * * * *", "is not a step"),
            ("5-1 * * * *", "backwards"),
        ] {
            let message = Schedule::parse(expression).unwrap_err().to_string();
            assert!(message.contains(fragment), "{expression}: {message}");
        }
    }
}

/// The server's named schedules, from [`Server::cron`](crate::Server::cron).
#[derive(Debug, Default)]
pub(crate) struct Crons {
    entries: Vec<(String, String, Schedule)>,
}

impl Crons {
    pub(crate) fn parse(declared: Vec<(String, String)>) -> Result<Self, CronError> {
        let entries = declared
            .into_iter()
            .map(|(name, expression)| {
                let schedule = Schedule::parse(&expression)?;
                Ok((name, expression, schedule))
            })
            .collect::<Result<_, CronError>>()?;
        Ok(Self { entries })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The expression of the schedule called `name`; PartyKit's default for an unknown
    /// name is every minute.
    /// The expression declared for `name`, if any.
    pub(crate) fn expression_of(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(own, _, _)| own == name)
            .map(|(_, expression, _)| expression.as_str())
    }

    /// Runs `fire(name, expression, scheduled time)` at every scheduled minute, forever.
    pub(crate) async fn run(&self, fire: impl Fn(String, String, SystemTime) + Send + Sync) {
        let mut after = SystemTime::now();
        loop {
            let next = self
                .entries
                .iter()
                .filter_map(|(name, expression, schedule)| {
                    Some((schedule.next_after(after)?, name, expression))
                })
                .min_by_key(|(time, _, _)| *time);
            let Some((time, _, _)) = next else { return };
            let wait = time
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            for (name, expression, schedule) in &self.entries {
                if schedule.next_after(after) == Some(time) {
                    fire(name.clone(), expression.clone(), time);
                }
            }
            after = time;
        }
    }
}
