//! A long-running command (`kubectl get --watch`) whose output is
//! collected in the background while the test goes on.

use std::sync::{Arc, Mutex};

use serde_json::Value;

/// A running command whose output is collected in the background
/// (`kubectl get --watch`); killed on drop.
pub struct Streamed {
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    exit: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Streamed {
    /// Starts `command` (with stdout and stderr piped).
    pub fn spawn(mut command: tokio::process::Command) -> anyhow::Result<Streamed> {
        let mut child = command.kill_on_drop(true).spawn()?;
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let exit = Arc::new(Mutex::new(None));
        let task = {
            let (stdout, stderr, exit) = (stdout.clone(), stderr.clone(), exit.clone());
            // The child lives in the task: aborting it drops (kills) the child.
            tokio::spawn(async move {
                tokio::join!(collect(out, &stdout), collect(err, &stderr));
                let status = child.wait().await;
                *exit.lock().expect("exit") = Some(format!("{status:?}"));
            })
        };
        Ok(Streamed {
            stdout,
            stderr,
            exit,
            task,
        })
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout").clone()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// The exit status, once the process has exited.
    pub fn exited(&self) -> Option<String> {
        self.exit.lock().expect("exit").clone()
    }

    /// The JSON values written so far (a trailing incomplete one is left
    /// out), or an error naming the first bad one.
    pub fn json_values(&self) -> Result<Vec<Value>, String> {
        let text = self.stdout();
        let mut values = Vec::new();
        for value in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
            match value {
                Ok(value) => values.push(value),
                Err(e) if e.is_eof() => break,
                Err(e) => return Err(format!("bad JSON in the output: {e}")),
            }
        }
        Ok(values)
    }
}

/// Appends everything `from` yields to `into`, as it comes.
async fn collect(mut from: impl tokio::io::AsyncRead + Unpin, into: &Mutex<String>) {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
        // Whole UTF-8 characters only: a read can end inside one.
        let valid = match std::str::from_utf8(&bytes) {
            Ok(text) => text.len(),
            Err(e) => e.valid_up_to(),
        };
        into.lock()
            .expect("output")
            .push_str(std::str::from_utf8(&bytes[..valid]).expect("valid prefix"));
        bytes.drain(..valid);
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        self.task.abort();
    }
}
