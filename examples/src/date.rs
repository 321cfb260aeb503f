//! The date the seed's log lines start with, as JavaScript's `new Date().toString()` prints
//! it, in UTC: `Fri Apr 19 2013 01:32:29 GMT+0000 (UTC)`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, formatted like JavaScript's `Date.prototype.toString` (UTC).
pub fn js_date() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_unix(secs)
}

fn format_unix(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {day:02} {year} {h:02}:{m:02}:{s:02} GMT+0000 (UTC)",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_javascript() {
        // 2013-04-19 01:32:29 UTC, the seed's first log line.
        assert_eq!(
            super::format_unix(1_366_335_149),
            "Fri Apr 19 2013 01:32:29 GMT+0000 (UTC)"
        );
        assert_eq!(
            super::format_unix(0),
            "Thu Jan 01 1970 00:00:00 GMT+0000 (UTC)"
        );
    }
}
