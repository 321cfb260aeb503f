//! The status as a table for a person.

use std::time::Duration;

use cluster_control::StatusReport;

const WORKER_HEADER: [&str; 12] = [
    "GROUP",
    "ID",
    "PID",
    "STATE",
    "GEN",
    "READY",
    "UPTIME",
    "RSS",
    "CPU%",
    "CONNS",
    "SERVED",
    "LAST EXIT",
];

/// Workers (live, then the latest exits), then one line per group.
pub(crate) fn render(status: &StatusReport) -> String {
    let mut rows = vec![WORKER_HEADER.map(String::from).to_vec()];
    for w in &status.workers {
        rows.push(vec![
            w.group.clone(),
            w.id.to_string(),
            w.pid.to_string(),
            w.state.clone(),
            w.generation.map_or("-".into(), |g| g.to_string()),
            if w.ready { "yes" } else { "no" }.into(),
            uptime(Duration::from_millis(w.uptime_ms)),
            w.rss_bytes.map_or("-".into(), mebibytes),
            w.cpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
            w.open_connections.map_or("-".into(), |n| n.to_string()),
            w.requests_served.map_or("-".into(), |n| n.to_string()),
            w.exit.as_ref().map_or("-".into(), |e| e.to_string()),
        ]);
    }
    let mut out = columns(&rows);
    out.push('\n');
    let mut groups = vec![vec!["GROUP".into(), "WANTED".into(), "RESTARTS".into()]];
    for g in &status.groups {
        groups.push(vec![
            g.name.clone(),
            g.wanted.map_or("-".into(), |n| n.to_string()),
            g.restarts.to_string(),
        ]);
    }
    out.push_str(&columns(&groups));
    let stopping = if status.stopping { ", stopping" } else { "" };
    out.push_str(&format!(
        "\n{} master pid {}{stopping}\n",
        status.kind, status.master_pid
    ));
    out
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn columns(rows: &[Vec<String>]) -> String {
    let count = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..count)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(uptime(Duration::from_secs(5)), "5s");
        assert_eq!(uptime(Duration::from_secs(125)), "2m05s");
        assert_eq!(uptime(Duration::from_secs(3 * 3600 + 240)), "3h04m");
        assert_eq!(uptime(Duration::from_secs(2 * 86400 + 3 * 3600)), "2d03h");
    }

    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["a".to_string(), "bb".into(), "x".into()],
            vec!["ccc".to_string(), "d".into(), "y".into()],
        ];
        assert_eq!(columns(&rows), "a    bb  x\nccc  d   y\n");
    }
}
