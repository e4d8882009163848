//! The real krew (`kubectl krew`, built by `scripts/build-counterparts.sh`)
//! run by the real kubectl against a krew root of the test's own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::procs::krew_bin;

/// A krew root (`KREW_ROOT`) in a directory the test owns.
pub struct KrewRoot {
    pub root: PathBuf,
}

impl KrewRoot {
    /// A krew root at `root`, with an empty local plugin index: `kubectl
    /// krew list` refuses to run until an index exists, and `kubectl krew
    /// update` would clone the public one over the network, which tests
    /// never reach. Installing from `--manifest`/`--archive` needs no index.
    pub fn new(root: &Path) -> anyhow::Result<Self> {
        let index = root.join("index/default");
        std::fs::create_dir_all(index.join("plugins"))?;
        let out = Command::new("git")
            .args(["init", "--quiet"])
            .arg(&index)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "git init {}: {}",
            index.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(KrewRoot {
            root: root.to_path_buf(),
        })
    }

    /// The directory krew links plugins into.
    pub fn bin(&self) -> PathBuf {
        self.root.join("bin")
    }

    /// PATH with krew's bin dir and the directory of the krew binary first.
    pub fn path(&self) -> String {
        let krew = krew_bin();
        format!(
            "{}:{}:{}",
            self.bin().display(),
            krew.parent().expect("krew in a directory").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// `kubectl krew ARGS` (kubectl runs `kubectl-krew` from PATH).
    pub fn krew(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("krew")
            .args(args)
            .env("KREW_ROOT", &self.root)
            .env("PATH", self.path())
            .env("KREW_NO_UPGRADE_CHECK", "1")
            .output()
            .expect("kubectl is installed")
    }

    /// `kubectl krew ARGS`, which must succeed; its stdout.
    pub fn krew_ok(&self, args: &[&str]) -> String {
        let out = self.krew(args);
        assert!(
            out.status.success(),
            "kubectl krew {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
