//! A local STE cluster: one agent per "node", each on its own loopback
//! address (127.0.0.2, 127.0.0.3, ...), as the README's local cluster.

use std::net::Ipv4Addr;

use crate::agent::{AgentOptions, TestAgent};

pub struct TestCluster {
    pub agents: Vec<TestAgent>,
}

impl TestCluster {
    /// Starts `n` agents named node-a, node-b, ... on 127.0.0.2, 127.0.0.3, ...
    /// concurrently and waits until all serve.
    pub async fn start(n: u8) -> anyhow::Result<Self> {
        let mut agents = Vec::new();
        for i in 0..n {
            let name = format!("node-{}", (b'a' + i) as char);
            let ip = Ipv4Addr::new(127, 0, 0, 2 + i);
            agents.push(TestAgent::spawn_new(AgentOptions::new(&name, ip))?);
        }
        for agent in &agents {
            agent.wait_serving().await?;
        }
        Ok(TestCluster { agents })
    }
}
