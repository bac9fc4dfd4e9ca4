//! The clock schedules read: the system's, or, as a testing aid, one shifted to an instant given
//! in `REMPART_SCHEDULE_CLOCK` that then runs at real speed. Only the scheduler reads this
//! clock: limits, queues, tickets, timeouts, logs and metrics keep the real time.

use std::sync::Arc;
use std::time::Instant;

use jiff::{Timestamp, ZonedDateTime};

/// The variable that shifts the schedules' clock (`rempart` and `rempart -t`).
pub const CLOCK_ENV: &str = "REMPART_SCHEDULE_CLOCK";

/// Where schedules read the time (a boundary that tests replace).
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
    /// Whether this is not the system's time.
    fn shifted(&self) -> bool {
        false
    }
}

/// The system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that read `start` at `since` and runs at real speed from there.
pub struct ShiftedClock {
    start: Timestamp,
    since: Instant,
}

impl ShiftedClock {
    pub fn starting_at(start: Timestamp) -> ShiftedClock {
        ShiftedClock {
            start,
            since: Instant::now(),
        }
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> Timestamp {
        self.start
            .checked_add(self.since.elapsed())
            .unwrap_or(Timestamp::MAX)
    }

    fn shifted(&self) -> bool {
        true
    }
}

/// `REMPART_SCHEDULE_CLOCK` is set but is not an instant.
#[derive(Debug, thiserror::Error)]
#[error("{CLOCK_ENV}={value:?} is not an instant (write e.g. 2027-09-06T07:39:50+02:00 or 2027-09-06T07:39:50[Europe/Paris]): {source}")]
pub struct ClockError {
    value: String,
    #[source]
    source: jiff::Error,
}

/// An instant as `REMPART_SCHEDULE_CLOCK` gives it: RFC 3339 with an offset, or a local time
/// with its zone in brackets.
pub fn parse_instant(value: &str) -> Result<Timestamp, ClockError> {
    let text = value.trim();
    text.parse::<Timestamp>()
        .or_else(|first| {
            text.parse::<ZonedDateTime>()
                .map(|z| z.timestamp())
                .map_err(|_| first)
        })
        .map_err(|source| ClockError {
            value: value.to_string(),
            source,
        })
}

/// The schedules' clock for this process: shifted when `REMPART_SCHEDULE_CLOCK` is set (an
/// error when it is not an instant), the system's otherwise.
pub fn from_env() -> Result<Arc<dyn Clock>, ClockError> {
    match std::env::var(CLOCK_ENV) {
        Ok(value) if !value.trim().is_empty() => {
            Ok(Arc::new(ShiftedClock::starting_at(parse_instant(&value)?)))
        }
        _ => Ok(Arc::new(SystemClock)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_with_an_offset_or_a_zone() {
        let want: Timestamp = "2027-09-06T05:39:50Z".parse().unwrap();
        assert_eq!(parse_instant("2027-09-06T07:39:50+02:00").unwrap(), want);
        assert_eq!(
            parse_instant("2027-09-06T07:39:50[Europe/Paris]").unwrap(),
            want
        );
        assert_eq!(parse_instant(" 2027-09-06T05:39:50Z ").unwrap(), want);
        for bad in ["", "tomorrow", "2027-09-06", "2027-09-06T07:39:50"] {
            let e = parse_instant(bad).unwrap_err().to_string();
            assert!(e.starts_with("REMPART_SCHEDULE_CLOCK="), "{bad}: {e}");
        }
    }

    #[test]
    fn a_shifted_clock_runs_from_its_start() {
        let start: Timestamp = "2027-09-06T05:39:50Z".parse().unwrap();
        let clock = ShiftedClock::starting_at(start);
        let now = clock.now();
        assert!(
            now >= start
                && now
                    < start
                        .checked_add(jiff::SignedDuration::from_secs(60))
                        .unwrap()
        );
        assert!(clock.shifted());
        assert!(!SystemClock.shifted());
    }
}
