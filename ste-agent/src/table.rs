//! The agent status table printed by `ste-agent-status`: one row per agent,
//! in the workspace's kubectl layout ([`ste_core::table`]) with byte sizes
//! as kubectl prints them ([`ste_core::units::format_bytes`]).

use ste_core::table::{Cell, Table};
use ste_core::units::format_bytes;
use ste_proto::v1::AgentStatus;

/// The columns, in order. STATE is the agent state without its
/// `AGENT_STATE_` prefix; TMPFS is used/size.
const HEADERS: [&str; 12] = [
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

fn state_name(status: &AgentStatus) -> &'static str {
    status
        .state()
        .as_str_name()
        .strip_prefix("AGENT_STATE_")
        .unwrap_or("UNKNOWN")
}

/// `-` for an empty value, so every row has a cell in every column and the
/// table can be split on whitespace.
fn or_dash(text: String) -> Cell {
    Cell::from(if text.is_empty() {
        "-".to_owned()
    } else {
        text
    })
}

/// The statuses as a table, one line per agent in the order given, each
/// ending in `\n`; with `headers` the first line names the columns. A
/// negative database size (never sent by a sane agent) is shown as `0B`.
pub fn status_table(rows: &[AgentStatus], headers: bool) -> String {
    let mut table = Table::new(HEADERS);
    for s in rows {
        let shard = s.shard.clone().unwrap_or_default();
        let tmpfs = s.tmpfs.clone().unwrap_or_default();
        table.row(vec![
            Cell::from(s.node_name.as_str()),
            Cell::from(state_name(s)),
            Cell::from(s.epoch.to_string()),
            Cell::from(s.restarts.to_string()),
            Cell::from(shard.endpoint),
            or_dash(shard.etcd_version),
            Cell::from(shard.revision.to_string()),
            Cell::from(shard.key_count.to_string()),
            Cell::from(format_bytes(shard.db_size_bytes.max(0) as u64)),
            Cell::from(format!(
                "{}/{}",
                format_bytes(tmpfs.used_bytes),
                format_bytes(tmpfs.size_bytes)
            )),
            or_dash(shard.alarms.join(",")),
            or_dash(s.last_error.clone()),
        ]);
    }
    table.render(headers, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ste_proto::v1::{ShardStatus, TmpfsStatus};

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

    #[test]
    fn sizes_and_empty_cells() {
        let row = AgentStatus {
            node_name: "node-a".into(),
            state: 2,
            shard: Some(ShardStatus {
                db_size_bytes: 32 << 10,
                alarms: vec!["NOSPACE".into()],
                ..Default::default()
            }),
            tmpfs: Some(TmpfsStatus {
                used_bytes: 122 << 20,
                size_bytes: 3 << 30,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = status_table(&[row], false);
        let cells: Vec<&str> = text.split_whitespace().collect();
        // NODE STATE EPOCH RESTARTS SHARD(empty, so absent) ETCD ...
        assert_eq!(
            cells,
            [
                "node-a",
                "SERVING",
                "0",
                "0",
                "-",
                "0",
                "0",
                "32Ki",
                "122Mi/3Gi",
                "NOSPACE",
                "-"
            ]
        );
    }
}
