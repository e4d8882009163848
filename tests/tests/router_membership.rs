//! Live ring changes: a member joins and another leaves while writers write
//! and watchers watch. Exactly the keys whose owner changes move; nothing is
//! lost, duplicated or renumbered; watchers see every acknowledged write
//! once, in order.

// The workload and the tests live in router_membership/; this file stays
// the target's root (scripts/test.sh runs every tests/tests/router_*.rs by
// name).
#[path = "router_membership/under_load.rs"]
mod under_load;
#[path = "router_membership/while_moving.rs"]
mod while_moving;
#[path = "router_membership/workload.rs"]
mod workload;
