//! The disk model: an `ste-fsync-delay` FUSE passthrough in front of a
//! persistent target's data dir, adding a fixed latency to every fsync.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use crate::sys::{self, Proc};

/// A mounted `ste-fsync-delay`. Drop stops it (it unmounts on SIGTERM) and
/// detaches the mount if it is still there.
pub struct DelayMount {
    /// Where the passthrough is mounted: use this as the data dir.
    pub mount_point: PathBuf,
    proc: Proc,
}

impl DelayMount {
    /// Mounts `backing` at `<backing>.fuse` with `delay` added to each
    /// fsync, and waits until the mount is there.
    pub fn start(
        bin_dir: &Path,
        backing: &Path,
        delay: Duration,
        ready: Duration,
    ) -> anyhow::Result<Self> {
        let mount_point = backing.with_extension("fuse");
        std::fs::create_dir_all(&mount_point)?;
        let mut command = Command::new(bin_dir.join("ste-fsync-delay"));
        command
            .arg("--backing")
            .arg(backing)
            .arg("--mount")
            .arg(&mount_point)
            .arg("--delay")
            .arg(humantime::format_duration(delay).to_string());
        let mut proc = Proc::spawn(
            "ste-fsync-delay",
            command,
            backing.with_extension("fuse.log"),
            Signal::SIGTERM,
            Duration::from_secs(10),
        )?;
        let deadline = Instant::now() + ready;
        while !sys::mounts_under(&mount_point)
            .iter()
            .any(|m| m.fs_type.starts_with("fuse"))
        {
            proc.ensure_running()
                .context("ste-fsync-delay (is /dev/fuse there, and are we root?)")?;
            if Instant::now() >= deadline {
                bail!(
                    "ste-fsync-delay did not mount {} within {ready:?}",
                    mount_point.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(DelayMount { mount_point, proc })
    }

    /// The passthrough's process id (its CPU is reported).
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }
}

impl Drop for DelayMount {
    fn drop(&mut self) {
        self.proc.stop_blocking(Duration::from_secs(10));
        sys::unmount_all_under(&self.mount_point);
    }
}
