//! Running the real etcdctl against the router, and reading its
//! `-w json` output.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, ensure};
use base64::Engine as _;
use serde_json::Value;
use ste_tests::ShardedRouter;

/// Runs etcdctl against one endpoint.
pub(crate) struct Etcdctl {
    pub(crate) endpoint: String,
}

impl Etcdctl {
    pub(crate) fn for_router(cluster: &ShardedRouter) -> Self {
        Etcdctl {
            endpoint: cluster.router.listen.to_string(),
        }
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(ste_tests::procs::etcdctl_bin());
        command
            .arg("--endpoints")
            .arg(&self.endpoint)
            // Generous: the machine may be loaded; a hang still fails the test.
            .arg("--command-timeout=20s")
            .arg("--dial-timeout=10s")
            .args(args);
        command
    }

    pub(crate) fn output(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut command = self.command(args);
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("spawning etcdctl")?;
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().context("etcdctl stdin")?;
            pipe.write_all(text.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// Runs etcdctl, requires exit status 0 and returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        self.ok_with_stdin(args, None)
    }

    pub(crate) fn ok_with_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<String> {
        let output = self.output(args, stdin)?;
        let stdout = String::from_utf8(output.stdout)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            output.status.success(),
            "etcdctl {args:?} failed with {}:\nstdout: {stdout}\nstderr: {stderr}",
            output.status
        );
        Ok(stdout)
    }

    /// Runs etcdctl, requires a failure and returns stdout + stderr.
    pub(crate) fn fails(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.output(args, None)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        ensure!(
            !output.status.success(),
            "etcdctl {args:?} should have failed but exited 0:\n{text}"
        );
        Ok(text)
    }

    pub(crate) fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-w", "json"]);
        let stdout = self.ok(&all)?;
        serde_json::from_str(&stdout).with_context(|| format!("etcdctl {args:?} printed {stdout}"))
    }

    /// `put -w json`; returns the revision of the write.
    pub(crate) fn put(&self, key: &str, value: &str) -> anyhow::Result<i64> {
        let response = self.json(&["put", key, value])?;
        revision(&response)
    }
}

pub(crate) fn revision(response: &Value) -> anyhow::Result<i64> {
    response["header"]["revision"]
        .as_i64()
        .with_context(|| format!("no header.revision in {response}"))
}

pub(crate) fn b64(value: &Value) -> String {
    let text = value.as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("etcdctl printed invalid base64 {text:?}: {e}"));
    String::from_utf8(bytes).expect("utf-8")
}

/// One key of `get -w json`.
pub(crate) use ste_tests::keys::Kv;

pub(crate) fn kvs(response: &Value) -> Vec<Kv> {
    response["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| Kv {
                    key: b64(&kv["key"]),
                    value: b64(&kv["value"]),
                    create: kv["create_revision"].as_i64().unwrap_or(0),
                    modified: kv["mod_revision"].as_i64().unwrap_or(0),
                    version: kv["version"].as_i64().unwrap_or(0),
                    lease: kv["lease"].as_i64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}
