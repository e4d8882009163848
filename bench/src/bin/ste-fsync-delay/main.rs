//! ste-fsync-delay: a FUSE passthrough of one directory that adds a fixed
//! latency to every fsync/fdatasync (and fsync of a directory), a model of
//! a slower disk for ste-bench's persistent etcds and kine.
//!
//! Everything else (lookups, reads, writes, renames, ...) is passed straight
//! to the backing directory. The delayed fsync runs on its own thread, so a
//! slow fsync holds up only the caller, as on a real disk; the file is
//! synced for real after the delay. Mounted with the mount(2) system call
//! (run as root; no fusermount needed). SIGTERM or SIGINT unmounts it.
//!
//! ```text
//! ste-fsync-delay --backing /var/tmp/x/etcd --mount /var/tmp/x/etcd.fuse --delay 2ms
//! ```

mod fs;

use std::path::PathBuf;

use clap::Parser;
use fuser::{Config, MountOption};

use crate::fs::DelayFs;

#[derive(Debug, Parser)]
#[command(
    name = "ste-fsync-delay",
    about = "FUSE passthrough of a directory that adds a fixed latency to every fsync"
)]
struct Args {
    /// The directory whose contents are shown (it must exist).
    #[arg(long)]
    backing: PathBuf,
    /// Where to mount the passthrough (an existing empty directory).
    #[arg(long)]
    mount: PathBuf,
    /// Added to each fsync/fdatasync before the real one, e.g. 0, 500us, 2ms.
    #[arg(long, default_value = "0s")]
    delay: humantime::Duration,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = args.backing.canonicalize()?;
    anyhow::ensure!(root.is_dir(), "{} is not a directory", root.display());
    let fs = DelayFs::new(root.clone(), args.delay.into());
    // Block the stop signals in every thread before any is spawned, so
    // only the sigwait below receives them.
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals.add(nix::sys::signal::Signal::SIGINT);
    signals.add(nix::sys::signal::Signal::SIGHUP);
    signals.thread_block()?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(root.display().to_string()),
        MountOption::Subtype("ste-fsync-delay".into()),
        MountOption::DefaultPermissions,
    ];
    let session = fuser::spawn_mount(fs, &args.mount, &config)?;
    eprintln!(
        "ste-fsync-delay: {} mounted at {} (+{} per fsync)",
        root.display(),
        args.mount.display(),
        humantime::format_duration(args.delay.into())
    );
    let signal = signals.wait()?;
    eprintln!(
        "ste-fsync-delay: {signal}, unmounting {}",
        args.mount.display()
    );
    session.umount_and_join()?;
    Ok(())
}
