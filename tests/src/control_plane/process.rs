//! One Kubernetes component (kube-apiserver, kube-controller-manager,
//! kube-scheduler, kwok) as a child process with its log in a file,
//! killed (SIGKILL) and reaped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running component; its stdout and stderr go to `<dir>/<name>.log`.
pub struct KubeProcess {
    /// The component's name, e.g. `kube-apiserver`.
    pub name: String,
    log: PathBuf,
    child: Child,
}

impl KubeProcess {
    /// Starts `program args…` with its output in `<dir>/<name>.log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], dir: &Path) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", program.display()))?;
        Ok(KubeProcess {
            name: name.into(),
            log,
            child,
        })
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log, headed by the component's name.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "--- {} (last {lines} lines of {}) ---\n{}",
            self.name,
            self.log.display(),
            tail(&self.log(), lines)
        )
    }

    /// `Err` with the exit status if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!("{} exited: {status}\n{}", self.name, self.log_tail(40)),
        }
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for KubeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
