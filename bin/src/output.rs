//! Tables and times for people; JSON goes through serde.

use std::io::Write;

/// Columns of text, aligned on output.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|name| (*name).to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row; it must have one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.header.len(), "one cell per column");
        self.rows.push(cells);
    }

    /// Writes it to stdout. The last column is not padded.
    pub fn print(&self) {
        let mut widths: Vec<usize> = self.header.iter().map(|cell| cell.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = std::io::stdout().lock();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (at, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if at + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}   "));
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

/// Prints a value as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
    Ok(())
}

/// RFC 3339, UTC, to the second.
pub fn time(unix_ms: u64) -> String {
    let Ok(millis) = i64::try_from(unix_ms) else { return unix_ms.to_string() };
    match jiff::Timestamp::from_millisecond(millis) {
        Ok(at) => at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => unix_ms.to_string(),
    }
}

/// A short duration: `850ms`, `12.3s`, `4m05s`, `2h10m`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000),
    }
}

/// Parses RFC 3339 or an age such as `2h` (meaning that long before `now_ms`).
pub fn parse_time(text: &str, now_ms: u64) -> anyhow::Result<u64> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return u64::try_from(at.as_millisecond()).map_err(|_| anyhow::anyhow!("time {text:?} is before 1970"));
    }
    let age = parse_duration_ms(text).map_err(|_| {
        anyhow::anyhow!("{text:?} is neither an RFC 3339 time (2026-11-28T10:00:00Z) nor an age (90m, 2h)")
    })?;
    Ok(now_ms.saturating_sub(age))
}

/// Parses a duration such as `10m`, `1h30m`, `45s` into milliseconds.
pub fn parse_duration_ms(text: &str) -> anyhow::Result<u64> {
    let span: jiff::Span =
        text.trim().parse().map_err(|err| anyhow::anyhow!("{text:?} is not a duration like 10m or 1h30m: {err}"))?;
    let duration = jiff::SignedDuration::try_from(span)
        .map_err(|err| anyhow::anyhow!("{text:?} is not a fixed duration (use s, m, h): {err}"))?;
    u64::try_from(duration.as_millis()).map_err(|_| anyhow::anyhow!("{text:?} is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_and_print() {
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
        assert_eq!(duration_ms(850), "850ms");
        assert_eq!(duration_ms(12_340), "12.3s");
        assert_eq!(duration_ms(245_000), "4m05s");
        assert_eq!(parse_duration_ms("10m").expect("10m"), 600_000);
        assert_eq!(parse_duration_ms("1h30m").expect("1h30m"), 5_400_000);
        assert!(parse_duration_ms("soon").is_err());
        assert_eq!(parse_time("2h", 10_000_000).expect("age"), 10_000_000 - 7_200_000);
        assert_eq!(parse_time("1970-01-01T00:00:01Z", 0).expect("rfc3339"), 1_000);
    }
}
