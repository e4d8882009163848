//! The tmpfs under the shard: mounting it, recognising one that a crashed
//! run left behind, measuring it and unmounting it.
//!
//! `/proc/self/mountinfo` is the source of truth for "is this a tmpfs", and
//! `statvfs(2)` for its usage (sysinfo hides tmpfs).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// One line of `/proc/self/mountinfo` (only the fields we use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted, with the kernel's octal escapes undone.
    pub mount_point: PathBuf,
    /// The filesystem type, e.g. `tmpfs`, `ext4`.
    pub fs_type: String,
    /// The mount source: `ste-tmpfs` for a tmpfs the agent mounted, else
    /// `tmpfs`, a device, ...
    pub source: String,
    /// Per-superblock options, e.g. `rw,size=262144k`.
    pub super_options: String,
}

/// Why the tmpfs could not be set up, inspected or removed. Each message
/// names the path and, where the user can act, what to do.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// `/proc/self/mountinfo` could not be read.
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(#[source] io::Error),
    /// The data dir did not exist and could not be created.
    #[error("cannot create data dir {path}")]
    CreateDir {
        /// The data dir.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Another filesystem is mounted at the data dir (managed mode).
    #[error(
        "{path} is a {fs_type} mount, not a tmpfs: unmount it or choose another --data-dir \
         (STE never stacks a tmpfs over another filesystem)"
    )]
    ForeignMount {
        /// The data dir.
        path: PathBuf,
        /// The filesystem mounted there.
        fs_type: String,
    },
    /// The data dir is not a tmpfs (external mode).
    #[error(
        "{path} is not a tmpfs (it is on {fs_type}): with --mount external the data dir must \
         already be a tmpfs, e.g. an emptyDir with medium: Memory; or use --mount managed"
    )]
    NotTmpfs {
        /// The data dir.
        path: PathBuf,
        /// The filesystem it is on.
        fs_type: String,
    },
    /// mount(2) failed (managed mode).
    #[error("mounting a tmpfs at {path} failed")]
    Mount {
        /// The data dir.
        path: PathBuf,
        /// The error of mount(2).
        #[source]
        source: nix::Error,
    },
    /// umount2(2) failed on shutdown (managed mode).
    #[error("unmounting {path} failed")]
    Unmount {
        /// The data dir.
        path: PathBuf,
        /// The error of umount2(2).
        #[source]
        source: nix::Error,
    },
    /// The data dir does not exist (external mode).
    #[error(
        "{path} does not exist: with --mount external the data dir must already be a \
         mounted tmpfs, e.g. an emptyDir with medium: Memory"
    )]
    Missing {
        /// The data dir as given.
        path: PathBuf,
    },
    /// Emptying etcd's data dir before a start failed.
    #[error("cannot wipe {path}")]
    Wipe {
        /// The directory being emptied.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Measuring the tmpfs failed.
    #[error("statvfs on {path} failed")]
    Statvfs {
        /// The mount point.
        path: PathBuf,
        /// The error of statvfs(2).
        #[source]
        source: nix::Error,
    },
}

/// Undoes the octal escapes (`\040` for a space, ...) the kernel writes in
/// mountinfo paths.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(value) = u8::from_str_radix(octal, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of a mountinfo file. Lines that do not follow the format
/// are skipped rather than failing the whole read.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: right.next()?.to_owned(),
                source: right.next().unwrap_or_default().to_owned(),
                super_options: right.next().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// Every mount stacked on `path`, bottom first (mountinfo lists in mount order).
pub fn mounts_at(path: &Path) -> Result<Vec<MountEntry>, MountError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(parse_mountinfo(&text)
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect())
}

/// The filesystem type the path lives on, from the longest mount-point prefix.
fn fs_type_of(path: &Path) -> Result<String, MountError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(parse_mountinfo(&text)
        .into_iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .map(|m| m.fs_type)
        .unwrap_or_else(|| "unknown".into()))
}

/// Size and usage of a mounted filesystem, from statvfs(2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Capacity of the filesystem, in bytes.
    pub size_bytes: u64,
    /// Bytes in use (capacity minus free blocks).
    pub used_bytes: u64,
}

/// Size and use of the filesystem holding `path`.
///
/// # Errors
///
/// [`MountError::Statvfs`] when statvfs(2) fails (e.g. `path` is gone).
pub fn usage(path: &Path) -> Result<Usage, MountError> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|source| MountError::Statvfs {
        path: path.to_path_buf(),
        source,
    })?;
    let block = stat.fragment_size() as u64;
    let blocks = stat.blocks() as u64;
    let free = stat.blocks_free() as u64;
    Ok(Usage {
        size_bytes: blocks * block,
        used_bytes: blocks.saturating_sub(free) * block,
    })
}

/// Removes everything inside `dir`, keeping `dir` itself (it may be a mount point).
pub fn wipe(dir: &Path) -> Result<(), MountError> {
    let wipe_error = |source| MountError::Wipe {
        path: dir.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(wipe_error)? {
        let entry = entry.map_err(wipe_error)?;
        let path = entry.path();
        let result = if entry.file_type().map_err(wipe_error)?.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        result.map_err(wipe_error)?;
    }
    Ok(())
}

/// How the data dir became a tmpfs, which decides who unmounts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Mounted by this run.
    Mounted,
    /// A tmpfs left by an earlier (crashed) run in managed mode; adopted.
    Adopted,
    /// Provided from outside (`--mount external`); never unmounted by us.
    External,
}

/// The tmpfs the shard lives on. In managed mode it is unmounted on
/// [`Tmpfs::unmount`] or, as a last resort, on drop.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
    provenance: Provenance,
    unmounted: bool,
}

impl Tmpfs {
    /// Managed mode: mounts a tmpfs of `size_bytes` at `path`
    /// (nosuid, nodev, mode 0700). A tmpfs already mounted there is reused
    /// (resized, wiped) instead of stacking a second one.
    pub fn mount_managed(path: &Path, size_bytes: u64) -> Result<Self, MountError> {
        fs::create_dir_all(path).map_err(|source| MountError::CreateDir {
            path: path.to_path_buf(),
            source,
        })?;
        let path = fs::canonicalize(path).map_err(|source| MountError::CreateDir {
            path: path.to_path_buf(),
            source,
        })?;
        let options = format!("size={size_bytes},mode=0700");
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        let existing = mounts_at(&path)?;
        let provenance = match existing.last() {
            Some(top) if top.fs_type == "tmpfs" => {
                tracing::warn!(path = %path.display(), "reusing a tmpfs left by an earlier run");
                // A remount changes the size in place; the contents are wiped below.
                nix::mount::mount(
                    None::<&str>,
                    &path,
                    None::<&str>,
                    flags | MsFlags::MS_REMOUNT,
                    Some(options.as_str()),
                )
                .map_err(|source| MountError::Mount {
                    path: path.clone(),
                    source,
                })?;
                Provenance::Adopted
            }
            Some(top) => {
                return Err(MountError::ForeignMount {
                    path,
                    fs_type: top.fs_type.clone(),
                });
            }
            None => {
                nix::mount::mount(
                    Some("ste-tmpfs"),
                    &path,
                    Some("tmpfs"),
                    flags,
                    Some(options.as_str()),
                )
                .map_err(|source| MountError::Mount {
                    path: path.clone(),
                    source,
                })?;
                Provenance::Mounted
            }
        };
        let tmpfs = Tmpfs {
            path,
            provenance,
            unmounted: false,
        };
        wipe(&tmpfs.path)?;
        Ok(tmpfs)
    }

    /// External mode: checks that `path` already is a tmpfs and uses it as is.
    pub fn external(path: &Path) -> Result<Self, MountError> {
        let path = fs::canonicalize(path).map_err(|_| MountError::Missing {
            path: path.to_path_buf(),
        })?;
        let fs_type = fs_type_of(&path)?;
        if fs_type != "tmpfs" {
            return Err(MountError::NotTmpfs { path, fs_type });
        }
        Ok(Tmpfs {
            path,
            provenance: Provenance::External,
            unmounted: false,
        })
    }

    /// The mount point (canonical path of the data dir).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Who mounted it: this agent, an earlier run, or someone else.
    pub fn provenance(&self) -> Provenance {
        self.provenance
    }

    /// The agent owns the mount (it or an earlier run mounted it) and
    /// unmounts it on exit; an external tmpfs is never unmounted.
    pub fn managed(&self) -> bool {
        self.provenance != Provenance::External
    }

    /// True while the path is still a tmpfs (someone may have unmounted it).
    pub fn is_mounted(&self) -> bool {
        !self.unmounted && fs_type_of(&self.path).is_ok_and(|t| t == "tmpfs")
    }

    /// Size and use of the tmpfs now; see [`usage`].
    pub fn usage(&self) -> Result<Usage, MountError> {
        usage(&self.path)
    }

    /// Unmounts a managed tmpfs. External mounts are left alone.
    pub fn unmount(&mut self) -> Result<(), MountError> {
        if !self.managed() || self.unmounted {
            return Ok(());
        }
        let result = nix::mount::umount2(&self.path, MntFlags::empty()).or_else(|err| {
            if err == nix::errno::Errno::EBUSY {
                // Something still holds a file open; detach now, free when released.
                nix::mount::umount2(&self.path, MntFlags::MNT_DETACH)
            } else {
                Err(err)
            }
        });
        self.unmounted = true;
        result.map_err(|source| MountError::Unmount {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(err) = self.unmount() {
            tracing::error!(error = %err, "tmpfs left mounted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 0:31 / /var/lib/ste\\040shard rw,nosuid,nodev shared:9 - tmpfs ste-tmpfs rw,size=262144k,mode=700
37 36 0:32 / /var/lib/ste\\040shard rw shared:10 - tmpfs ste-tmpfs rw,size=524288k
garbage line
";

    #[test]
    fn parses_mountinfo_with_escapes_and_stacking() {
        let mounts = parse_mountinfo(SAMPLE);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].fs_type, "ext4");
        assert_eq!(mounts[1].mount_point, PathBuf::from("/var/lib/ste shard"));
        assert_eq!(mounts[1].fs_type, "tmpfs");
        assert_eq!(mounts[1].source, "ste-tmpfs");
        assert!(mounts[2].super_options.contains("size=524288k"));
    }

    #[test]
    fn unescape_leaves_plain_backslashes() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("a\\b"), "a\\b");
        assert_eq!(unescape("end\\"), "end\\");
    }
}
