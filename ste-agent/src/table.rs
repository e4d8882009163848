//! Human-readable rendering of agent status, kubectl-style: upper-case
//! headers, columns padded to the widest cell, binary size units.

use ste_proto::v1::AgentStatus;

/// `1.5Gi`, `96Mi`, `512Ki`, `42B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["Ki", "Mi", "Gi", "Ti"];
    let mut value = bytes as f64;
    let mut unit = "B";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    if unit == "B" {
        format!("{bytes}B")
    } else if value >= 10.0 {
        format!("{value:.0}{unit}")
    } else {
        format!("{value:.1}{unit}")
    }
}

fn state_name(status: &AgentStatus) -> &'static str {
    status
        .state()
        .as_str_name()
        .strip_prefix("AGENT_STATE_")
        .unwrap_or("UNKNOWN")
}

pub fn status_table(rows: &[AgentStatus], headers: bool) -> String {
    let header = [
        "NODE",
        "STATE",
        "EPOCH",
        "RESTARTS",
        "SHARD",
        "ETCD",
        "REVISION",
        "KEYS",
        "DB SIZE",
        "TMPFS",
        "ALARMS",
        "LAST ERROR",
    ];
    let mut table: Vec<Vec<String>> = Vec::new();
    if headers {
        table.push(header.iter().map(|h| h.to_string()).collect());
    }
    for s in rows {
        let shard = s.shard.clone().unwrap_or_default();
        let tmpfs = s.tmpfs.clone().unwrap_or_default();
        table.push(vec![
            s.node_name.clone(),
            state_name(s).to_owned(),
            s.epoch.to_string(),
            s.restarts.to_string(),
            shard.endpoint,
            if shard.etcd_version.is_empty() {
                "-".into()
            } else {
                shard.etcd_version
            },
            shard.revision.to_string(),
            shard.key_count.to_string(),
            human_bytes(shard.db_size_bytes.max(0) as u64),
            format!(
                "{}/{}",
                human_bytes(tmpfs.used_bytes),
                human_bytes(tmpfs.size_bytes)
            ),
            if shard.alarms.is_empty() {
                "-".into()
            } else {
                shard.alarms.join(",")
            },
            if s.last_error.is_empty() {
                "-".into()
            } else {
                s.last_error.clone()
            },
        ]);
    }
    let columns = header.len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_humanized() {
        assert_eq!(human_bytes(42), "42B");
        assert_eq!(human_bytes(1536), "1.5Ki");
        assert_eq!(human_bytes(256 << 20), "256Mi");
        assert_eq!(human_bytes(3 << 30), "3.0Gi");
    }

    #[test]
    fn table_aligns_columns() {
        let row = AgentStatus {
            node_name: "node-a".into(),
            state: 2,
            epoch: 3,
            ..Default::default()
        };
        let text = status_table(&[row], true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NODE     STATE     EPOCH"));
        assert!(lines[1].starts_with("node-a   SERVING   3"));
    }
}
