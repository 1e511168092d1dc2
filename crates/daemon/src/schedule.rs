//! The alternative-speed ("turtle") schedule: from `begin` to `end` on a set
//! of days, the alternative limits apply.
//!
//! Semantics follow Transmission (`session-alt-speeds.cc`), so a schedule
//! set over its RPC behaves as users of its clients expect:
//! - A window belongs to the day it begins: 22:00–06:00 on Fridays covers
//!   Friday 22:00 to Saturday 06:00, and not Friday 00:00–06:00.
//! - `begin == end` is a whole day: 24 hours from `begin` (Transmission
//!   extends such an end by one day). It never means "never": to turn the
//!   schedule off, disable it.
//! - `begin` is inside the window, `end` is not.
//!
//! The schedule is judged in local wall-clock time by minute of the week.
//! Across a DST change the clock jumps, so a caller should re-check at
//! least every few minutes rather than trusting one long sleep to
//! [`Schedule::next_change`].

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

const MINUTES_PER_DAY: u32 = 24 * 60;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("'{0}' is not a time of day (expected HH:MM, 00:00 to 23:59)")]
    BadTime(String),
    #[error("'{0}' is not a day (expected mon, tue, wed, thu, fri, sat, sun, all, weekdays or weekends)")]
    BadDay(String),
    #[error("{field} = {value} is out of range ({range})")]
    OutOfRange {
        field: &'static str,
        value: i64,
        range: &'static str,
    },
    #[error("qBittorrent's scheduler_days cannot express the days {0} (only every day, weekdays, weekends or one day)")]
    NotInQbittorrent(DaySet),
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Weekday {
    Sun,
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
}

impl Weekday {
    /// Sunday first, as C's `tm_wday` and Transmission's bitmask count.
    pub const ALL: [Weekday; 7] = [
        Weekday::Sun,
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
    ];

    /// 0 for Sunday to 6 for Saturday.
    pub fn days_from_sunday(self) -> u8 {
        self as u8
    }

    /// The inverse of [`Weekday::days_from_sunday`], modulo 7.
    pub fn from_days_from_sunday(n: u32) -> Weekday {
        Self::ALL[(n % 7) as usize]
    }

    /// Three lower-case letters, as the config file writes them.
    pub fn name(self) -> &'static str {
        match self {
            Weekday::Sun => "sun",
            Weekday::Mon => "mon",
            Weekday::Tue => "tue",
            Weekday::Wed => "wed",
            Weekday::Thu => "thu",
            Weekday::Fri => "fri",
            Weekday::Sat => "sat",
        }
    }

    fn full_name(self) -> &'static str {
        match self {
            Weekday::Sun => "sunday",
            Weekday::Mon => "monday",
            Weekday::Tue => "tuesday",
            Weekday::Wed => "wednesday",
            Weekday::Thu => "thursday",
            Weekday::Fri => "friday",
            Weekday::Sat => "saturday",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of days, stored as Transmission's `alt-speed-time-day` bitmask
/// (Sunday 1, Monday 2, ..., Saturday 64), so only bits 0-6 are ever set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DaySet(u8);

impl DaySet {
    pub const NONE: DaySet = DaySet(0);
    pub const ALL: DaySet = DaySet(0x7f);
    pub const WEEKDAYS: DaySet = DaySet(0x3e);
    pub const WEEKENDS: DaySet = DaySet(0x41);

    /// From Transmission's bitmask; bits above Saturday are refused.
    pub fn from_transmission(mask: i64) -> Result<DaySet, ScheduleError> {
        match u8::try_from(mask) {
            Ok(m) if m <= 0x7f => Ok(DaySet(m)),
            _ => Err(ScheduleError::OutOfRange {
                field: "alt-speed-time-day",
                value: mask,
                range: "0 to 127",
            }),
        }
    }

    pub fn transmission_mask(self) -> u8 {
        self.0
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & day.bit() != 0
    }

    pub fn with(self, day: Weekday) -> DaySet {
        DaySet(self.0 | day.bit())
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn days(self) -> impl Iterator<Item = Weekday> {
        Weekday::ALL.into_iter().filter(move |d| self.contains(*d))
    }

    /// qBittorrent's `scheduler_days`: 0 every day, 1 weekdays, 2 weekends,
    /// 3-9 Monday to Sunday. Other sets (two days, none) have no number.
    pub fn to_qbittorrent(self) -> Result<u8, ScheduleError> {
        match self {
            DaySet::ALL => Ok(0),
            DaySet::WEEKDAYS => Ok(1),
            DaySet::WEEKENDS => Ok(2),
            _ => {
                let mut days = self.days();
                match (days.next(), days.next()) {
                    // Monday is 3, ..., Saturday 8, Sunday 9.
                    (Some(d), None) => Ok(3 + (d.days_from_sunday() + 6) % 7),
                    _ => Err(ScheduleError::NotInQbittorrent(self)),
                }
            }
        }
    }

    pub fn from_qbittorrent(days: i64) -> Result<DaySet, ScheduleError> {
        match days {
            0 => Ok(DaySet::ALL),
            1 => Ok(DaySet::WEEKDAYS),
            2 => Ok(DaySet::WEEKENDS),
            3..=9 => Ok(DaySet::NONE.with(Weekday::from_days_from_sunday((days - 2) as u32))),
            _ => Err(ScheduleError::OutOfRange {
                field: "scheduler_days",
                value: days,
                range: "0 to 9",
            }),
        }
    }

    /// One word: a day name or `all`, `weekdays`, `weekends`.
    fn parse_word(word: &str) -> Result<DaySet, ScheduleError> {
        let w = word.trim().to_ascii_lowercase();
        match w.as_str() {
            "all" | "every day" | "everyday" => return Ok(DaySet::ALL),
            "weekdays" => return Ok(DaySet::WEEKDAYS),
            "weekends" | "weekend" => return Ok(DaySet::WEEKENDS),
            _ => {}
        }
        Weekday::ALL
            .into_iter()
            .find(|d| d.name() == w || d.full_name() == w)
            .map(|d| DaySet::NONE.with(d))
            .ok_or_else(|| ScheduleError::BadDay(word.to_owned()))
    }
}

impl fmt::Debug for DaySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DaySet({self})")
    }
}

/// `all`, `weekdays`, `weekends`, or the days joined by commas (Monday
/// first, as people write weeks).
impl fmt::Display for DaySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DaySet::ALL => f.write_str("all"),
            DaySet::WEEKDAYS => f.write_str("weekdays"),
            DaySet::WEEKENDS => f.write_str("weekends"),
            DaySet::NONE => f.write_str("none"),
            set => {
                let names: Vec<&str> = set.monday_first().map(Weekday::name).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

impl DaySet {
    fn monday_first(self) -> impl Iterator<Item = Weekday> {
        (1..=7u32)
            .map(Weekday::from_days_from_sunday)
            .filter(move |d| self.contains(*d))
    }
}

/// A config file writes a day set as one word (`"all"`, `"weekdays"`,
/// `"weekends"`, `"mon"`) or a list of words (`["sat", "sun"]`).
impl Serialize for DaySet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            DaySet::ALL | DaySet::WEEKDAYS | DaySet::WEEKENDS => s.collect_str(self),
            set => s.collect_seq(set.monday_first().map(Weekday::name)),
        }
    }
}

impl<'de> Deserialize<'de> for DaySet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = DaySet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a day name, \"all\", \"weekdays\", \"weekends\", or a list of those")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DaySet, E> {
                DaySet::parse_word(v).map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<DaySet, A::Error> {
                let mut set = DaySet::NONE;
                while let Some(word) = seq.next_element::<String>()? {
                    set.0 |= DaySet::parse_word(&word).map_err(de::Error::custom)?.0;
                }
                if set.is_empty() {
                    // A schedule on no day never applies: say so rather than
                    // silently doing nothing.
                    return Err(de::Error::custom(
                        "the list of days is empty (to turn the schedule off, set enabled = false)",
                    ));
                }
                Ok(set)
            }
        }
        d.deserialize_any(V)
    }
}

/// A minute of the day, 0 (00:00) to 1439 (23:59).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MinuteOfDay(u16);

impl MinuteOfDay {
    pub const MIDNIGHT: MinuteOfDay = MinuteOfDay(0);

    pub fn new(minute: u32) -> Option<MinuteOfDay> {
        (minute < MINUTES_PER_DAY).then_some(MinuteOfDay(minute as u16))
    }

    pub fn from_hm(hour: u32, minute: u32) -> Option<MinuteOfDay> {
        if hour < 24 && minute < 60 {
            MinuteOfDay::new(hour * 60 + minute)
        } else {
            None
        }
    }

    pub fn get(self) -> u32 {
        u32::from(self.0)
    }

    pub fn hour(self) -> u32 {
        self.get() / 60
    }

    pub fn minute(self) -> u32 {
        self.get() % 60
    }

    /// From Transmission's `alt-speed-time-begin`/`-end` (minutes after
    /// midnight), with the field name for the error.
    pub fn from_transmission(field: &'static str, minutes: i64) -> Result<Self, ScheduleError> {
        u32::try_from(minutes)
            .ok()
            .and_then(MinuteOfDay::new)
            .ok_or(ScheduleError::OutOfRange {
                field,
                value: minutes,
                range: "0 to 1439",
            })
    }
}

impl FromStr for MinuteOfDay {
    type Err = ScheduleError;

    /// `HH:MM` (`H:MM` accepted too).
    fn from_str(s: &str) -> Result<Self, ScheduleError> {
        let bad = || ScheduleError::BadTime(s.to_owned());
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        let digits =
            |x: &str| !x.is_empty() && x.len() <= 2 && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(h) || m.len() != 2 || !digits(m) {
            return Err(bad());
        }
        let (h, m) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        MinuteOfDay::from_hm(h, m).ok_or_else(bad)
    }
}

impl fmt::Display for MinuteOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour(), self.minute())
    }
}

impl Serialize for MinuteOfDay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MinuteOfDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A local wall-clock time, as far as the schedule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub weekday: Weekday,
    pub minute: MinuteOfDay,
}

impl LocalTime {
    fn minute_of_week(self) -> u32 {
        u32::from(self.weekday.days_from_sunday()) * MINUTES_PER_DAY + self.minute.get()
    }

    fn from_minute_of_week(m: u32) -> LocalTime {
        let m = m % MINUTES_PER_WEEK;
        LocalTime {
            weekday: Weekday::from_days_from_sunday(m / MINUTES_PER_DAY),
            minute: MinuteOfDay((m % MINUTES_PER_DAY) as u16),
        }
    }
}

/// When the alternative limits apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub begin: MinuteOfDay,
    pub end: MinuteOfDay,
    pub days: DaySet,
}

/// Transmission's three session keys for a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransmissionSchedule {
    /// `alt-speed-time-begin`: minutes after midnight.
    pub begin: u16,
    /// `alt-speed-time-end`: minutes after midnight.
    pub end: u16,
    /// `alt-speed-time-day`: Sunday 1, Monday 2, ..., Saturday 64.
    pub day: u8,
}

/// qBittorrent's scheduler preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QbittorrentSchedule {
    pub schedule_from_hour: u8,
    pub schedule_from_min: u8,
    pub schedule_to_hour: u8,
    pub schedule_to_min: u8,
    /// 0 every day, 1 weekdays, 2 weekends, 3-9 Monday to Sunday.
    pub scheduler_days: u8,
}

impl Schedule {
    /// Transmission's default: 09:00 to 17:00 every day.
    pub const DEFAULT: Schedule = Schedule {
        begin: MinuteOfDay(9 * 60),
        end: MinuteOfDay(17 * 60),
        days: DaySet::ALL,
    };

    /// How long one window lasts, in minutes (1 to 1440).
    fn window_len(&self) -> u32 {
        let (b, e) = (self.begin.get(), self.end.get());
        if e > b {
            e - b
        } else {
            e + MINUTES_PER_DAY - b
        }
    }

    /// Whether the alternative limits apply at `now`.
    pub fn is_active(&self, now: LocalTime) -> bool {
        let w = now.minute_of_week();
        let len = self.window_len();
        self.days.days().any(|d| {
            let start = u32::from(d.days_from_sunday()) * MINUTES_PER_DAY + self.begin.get();
            (w + MINUTES_PER_WEEK - start) % MINUTES_PER_WEEK < len
        })
    }

    /// Minutes from `now` until [`Schedule::is_active`] gives the other
    /// answer (1 to 10080), or `None` if it never does (no days, or every
    /// day all day). Counted from the start of `now`'s minute.
    pub fn next_change(&self, now: LocalTime) -> Option<u32> {
        let w = now.minute_of_week();
        let active = self.is_active(now);
        let len = self.window_len();
        // The answer can only flip where a window begins or ends.
        let mut edges: Vec<u32> = self
            .days
            .days()
            .flat_map(|d| {
                let start = u32::from(d.days_from_sunday()) * MINUTES_PER_DAY + self.begin.get();
                [start, start + len]
            })
            .map(
                |edge| match (edge + MINUTES_PER_WEEK - w) % MINUTES_PER_WEEK {
                    0 => MINUTES_PER_WEEK,
                    ahead => ahead,
                },
            )
            .collect();
        edges.sort_unstable();
        edges
            .into_iter()
            .find(|&ahead| self.is_active(LocalTime::from_minute_of_week(w + ahead)) != active)
    }

    pub fn to_transmission(&self) -> TransmissionSchedule {
        TransmissionSchedule {
            begin: self.begin.0,
            end: self.end.0,
            day: self.days.transmission_mask(),
        }
    }

    /// From `alt-speed-time-begin`, `-end` and `-day` as a client sent them.
    pub fn from_transmission(begin: i64, end: i64, day: i64) -> Result<Schedule, ScheduleError> {
        Ok(Schedule {
            begin: MinuteOfDay::from_transmission("alt-speed-time-begin", begin)?,
            end: MinuteOfDay::from_transmission("alt-speed-time-end", end)?,
            days: DaySet::from_transmission(day)?,
        })
    }

    /// qBittorrent's form. Its scheduler judges an overnight window by the
    /// current day rather than the day it began, so for a window past
    /// midnight on some days only, the part after midnight falls one day
    /// apart; the times and days themselves convert exactly.
    pub fn to_qbittorrent(&self) -> Result<QbittorrentSchedule, ScheduleError> {
        Ok(QbittorrentSchedule {
            schedule_from_hour: self.begin.hour() as u8,
            schedule_from_min: self.begin.minute() as u8,
            schedule_to_hour: self.end.hour() as u8,
            schedule_to_min: self.end.minute() as u8,
            scheduler_days: self.days.to_qbittorrent()?,
        })
    }

    pub fn from_qbittorrent(q: QbittorrentSchedule) -> Result<Schedule, ScheduleError> {
        let time = |field, h: u8, m: u8| {
            MinuteOfDay::from_hm(h.into(), m.into()).ok_or(ScheduleError::OutOfRange {
                field,
                value: i64::from(h) * 100 + i64::from(m),
                range: "hour 0-23, minute 0-59",
            })
        };
        Ok(Schedule {
            begin: time("schedule_from", q.schedule_from_hour, q.schedule_from_min)?,
            end: time("schedule_to", q.schedule_to_hour, q.schedule_to_min)?,
            days: DaySet::from_qbittorrent(q.scheduler_days.into())?,
        })
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::DEFAULT
    }
}

/// The local time now, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub at: LocalTime,
    /// Seconds already gone in `at`'s minute (0-60; 60 in a leap second).
    pub second: u8,
}

impl Now {
    /// How long to sleep until `schedule` flips, or `None` if it never
    /// does. Capped at one hour so a DST change or a clock set by hand is
    /// noticed within the hour.
    pub fn until_change(&self, schedule: &Schedule) -> std::time::Duration {
        const CAP: u64 = 3600;
        let secs = match schedule.next_change(self.at) {
            Some(minutes) => (u64::from(minutes) * 60).saturating_sub(u64::from(self.second)),
            None => CAP,
        };
        std::time::Duration::from_secs(secs.clamp(1, CAP))
    }
}

/// The system's local time (zone from `TZ` or `/etc/localtime`; UTC if
/// neither can be read).
pub fn local_now() -> Now {
    let now = jiff::Zoned::now();
    let weekday = Weekday::from_days_from_sunday(now.weekday().to_sunday_zero_offset() as u32);
    let minute = MinuteOfDay::from_hm(now.hour() as u32, now.minute() as u32)
        .unwrap_or(MinuteOfDay::MIDNIGHT);
    Now {
        at: LocalTime { weekday, minute },
        second: now.second().clamp(0, 60) as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> MinuteOfDay {
        s.parse().expect("test time")
    }

    fn at(day: Weekday, time: &str) -> LocalTime {
        LocalTime {
            weekday: day,
            minute: t(time),
        }
    }

    fn sched(begin: &str, end: &str, days: DaySet) -> Schedule {
        Schedule {
            begin: t(begin),
            end: t(end),
            days,
        }
    }

    /// Transmission's own rule, written as it is: a bitmap of the minutes
    /// of the week, filled day by day.
    fn reference(s: &Schedule) -> Vec<bool> {
        let mut week = vec![false; MINUTES_PER_WEEK as usize];
        for day in 0..7 {
            if s.days.transmission_mask() & (1 << day) != 0 {
                let b = s.begin.get();
                let e = if s.end.get() > b {
                    s.end.get()
                } else {
                    s.end.get() + MINUTES_PER_DAY
                };
                for i in b..e {
                    week[((i + day * MINUTES_PER_DAY) % MINUTES_PER_WEEK) as usize] = true;
                }
            }
        }
        week
    }

    #[test]
    fn daytime_window() {
        let s = sched("09:00", "17:00", DaySet::WEEKDAYS);
        assert!(!s.is_active(at(Weekday::Mon, "08:59")));
        assert!(s.is_active(at(Weekday::Mon, "09:00")));
        assert!(s.is_active(at(Weekday::Fri, "16:59")));
        assert!(!s.is_active(at(Weekday::Fri, "17:00")));
        assert!(!s.is_active(at(Weekday::Sat, "12:00")));
    }

    #[test]
    fn overnight_window_belongs_to_the_day_it_began() {
        let fri = DaySet::NONE.with(Weekday::Fri);
        let s = sched("22:00", "06:00", fri);
        assert!(s.is_active(at(Weekday::Fri, "22:00")));
        assert!(s.is_active(at(Weekday::Sat, "05:59")));
        assert!(!s.is_active(at(Weekday::Sat, "06:00")));
        // Friday's early morning is Thursday's window, and Thursday is off.
        assert!(!s.is_active(at(Weekday::Fri, "03:00")));
        // Saturday night wraps into Sunday morning across the week's end.
        let sat = sched("23:00", "01:00", DaySet::NONE.with(Weekday::Sat));
        assert!(sat.is_active(at(Weekday::Sun, "00:30")));
        assert!(!sat.is_active(at(Weekday::Sat, "00:30")));
    }

    #[test]
    fn begin_equal_to_end_is_a_whole_day_from_begin() {
        let s = sched("08:00", "08:00", DaySet::NONE.with(Weekday::Mon));
        assert!(s.is_active(at(Weekday::Mon, "08:00")));
        assert!(s.is_active(at(Weekday::Tue, "07:59")));
        assert!(!s.is_active(at(Weekday::Tue, "08:00")));
        assert!(!s.is_active(at(Weekday::Mon, "07:59")));
        let always = sched("00:00", "00:00", DaySet::ALL);
        assert!(always.is_active(at(Weekday::Wed, "13:37")));
        assert_eq!(always.next_change(at(Weekday::Wed, "13:37")), None);
    }

    #[test]
    fn next_change_counts_minutes_to_the_flip() {
        let s = sched("09:00", "17:00", DaySet::WEEKDAYS);
        assert_eq!(s.next_change(at(Weekday::Mon, "08:00")), Some(60));
        assert_eq!(s.next_change(at(Weekday::Mon, "09:00")), Some(8 * 60));
        // Friday evening: next window is Monday 09:00.
        assert_eq!(s.next_change(at(Weekday::Fri, "17:00")), Some(64 * 60));
        // Back-to-back windows merge: 00:00-00:00 every weekday is one
        // block from Monday 00:00 to Saturday 00:00.
        let block = sched("00:00", "00:00", DaySet::WEEKDAYS);
        assert_eq!(
            block.next_change(at(Weekday::Mon, "00:00")),
            Some(5 * 24 * 60)
        );
        assert_eq!(
            sched("09:00", "17:00", DaySet::NONE).next_change(at(Weekday::Mon, "00:00")),
            None
        );
    }

    #[test]
    fn until_change_subtracts_seconds_and_is_capped() {
        let s = sched("09:00", "17:00", DaySet::ALL);
        let now = Now {
            at: at(Weekday::Mon, "08:58"),
            second: 30,
        };
        assert_eq!(now.until_change(&s).as_secs(), 90);
        let far = Now {
            at: at(Weekday::Mon, "17:00"),
            second: 0,
        };
        assert_eq!(far.until_change(&s).as_secs(), 3600);
    }

    #[test]
    fn times_parse_and_print() {
        assert_eq!(t("09:05").get(), 545);
        assert_eq!(t("9:05").get(), 545);
        assert_eq!(t("23:59").to_string(), "23:59");
        for bad in [
            "24:00", "12:60", "1200", "12:5", "-1:00", "", "ab:cd", "12:00:00", "+1:00",
        ] {
            assert!(bad.parse::<MinuteOfDay>().is_err(), "{bad}");
        }
    }

    #[test]
    fn transmission_keys_convert_both_ways() {
        let s = sched("22:30", "06:15", DaySet::WEEKENDS);
        let tr = s.to_transmission();
        assert_eq!(
            tr,
            TransmissionSchedule {
                begin: 1350,
                end: 375,
                day: 65
            }
        );
        assert_eq!(Schedule::from_transmission(1350, 375, 65), Ok(s));
        assert_eq!(DaySet::WEEKDAYS.transmission_mask(), 62);
        assert_eq!(DaySet::ALL.transmission_mask(), 127);
        assert!(Schedule::from_transmission(1440, 0, 127).is_err());
        assert!(Schedule::from_transmission(0, -1, 127).is_err());
        assert!(Schedule::from_transmission(0, 0, 128).is_err());
    }

    #[test]
    fn qbittorrent_days_convert_both_ways() {
        assert_eq!(DaySet::ALL.to_qbittorrent(), Ok(0));
        assert_eq!(DaySet::WEEKDAYS.to_qbittorrent(), Ok(1));
        assert_eq!(DaySet::WEEKENDS.to_qbittorrent(), Ok(2));
        assert_eq!(DaySet::NONE.with(Weekday::Mon).to_qbittorrent(), Ok(3));
        assert_eq!(DaySet::NONE.with(Weekday::Sat).to_qbittorrent(), Ok(8));
        assert_eq!(DaySet::NONE.with(Weekday::Sun).to_qbittorrent(), Ok(9));
        for n in 0..=9 {
            let set = DaySet::from_qbittorrent(n).expect("in range");
            assert_eq!(set.to_qbittorrent(), Ok(n as u8));
        }
        let two = DaySet::NONE.with(Weekday::Mon).with(Weekday::Wed);
        assert_eq!(
            two.to_qbittorrent(),
            Err(ScheduleError::NotInQbittorrent(two))
        );
        assert!(DaySet::NONE.to_qbittorrent().is_err());
        assert!(DaySet::from_qbittorrent(10).is_err());
        let s = sched("01:02", "03:04", DaySet::WEEKDAYS);
        assert_eq!(
            Schedule::from_qbittorrent(s.to_qbittorrent().expect("weekdays")),
            Ok(s)
        );
    }

    #[test]
    fn day_words() {
        assert_eq!(DaySet::parse_word("Weekdays"), Ok(DaySet::WEEKDAYS));
        assert_eq!(
            DaySet::parse_word("tuesday"),
            Ok(DaySet::NONE.with(Weekday::Tue))
        );
        assert!(DaySet::parse_word("tues").is_err());
        let set = DaySet::NONE.with(Weekday::Sun).with(Weekday::Mon);
        assert_eq!(set.to_string(), "mon,sun");
    }

    fn any_schedule() -> impl Strategy<Value = Schedule> {
        (0..MINUTES_PER_DAY, 0..MINUTES_PER_DAY, 0u8..=0x7f).prop_map(|(b, e, d)| Schedule {
            begin: MinuteOfDay(b as u16),
            end: MinuteOfDay(e as u16),
            days: DaySet(d),
        })
    }

    proptest! {
        #[test]
        fn is_active_matches_transmissions_bitmap(s in any_schedule(), w in 0..MINUTES_PER_WEEK) {
            let week = reference(&s);
            prop_assert_eq!(s.is_active(LocalTime::from_minute_of_week(w)), week[w as usize]);
        }

        #[test]
        fn next_change_is_the_first_flip(s in any_schedule(), w in 0..MINUTES_PER_WEEK) {
            let week = reference(&s);
            let now = week[w as usize];
            let expected = (1..=MINUTES_PER_WEEK)
                .find(|a| week[((w + a) % MINUTES_PER_WEEK) as usize] != now);
            prop_assert_eq!(s.next_change(LocalTime::from_minute_of_week(w)), expected);
        }

        #[test]
        fn transmission_round_trip(s in any_schedule()) {
            let tr = s.to_transmission();
            prop_assert_eq!(
                Schedule::from_transmission(tr.begin.into(), tr.end.into(), tr.day.into()),
                Ok(s)
            );
        }

        #[test]
        fn hhmm_round_trip(m in 0..MINUTES_PER_DAY) {
            let m = MinuteOfDay(m as u16);
            prop_assert_eq!(m.to_string().parse::<MinuteOfDay>(), Ok(m));
        }
    }
}
