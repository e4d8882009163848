//! The kubectl plugin's krew packaging: scripts/package-plugin.sh renders
//! krew/ste.yaml.tmpl and packs the archives; the manifest is checked
//! against krew's own validation rules (krew's internal/index/validation
//! and its index's checks), every archive against its manifest entry, and
//! the real krew (`kubectl krew install --manifest --archive`, built by
//! scripts/build-counterparts.sh) installing, listing and uninstalling it,
//! and the real kubectl finding and running the plugin through krew's links.
//!
//! The manifest tests package stand-in binaries (krew never runs them); the
//! layout test packages the real kubectl-ste from the target dir.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use ste_tests::krew::KrewRoot;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const BINS: [&str; 2] = ["kubectl-ste", "kubectl_complete-ste"];
/// The release set: krew platform → the Rust target built for it.
const RELEASE: [(&str, &str, &str); 4] = [
    ("linux", "amd64", "x86_64-unknown-linux-musl"),
    ("linux", "arm64", "aarch64-unknown-linux-musl"),
    ("darwin", "amd64", "x86_64-apple-darwin"),
    ("darwin", "arm64", "aarch64-apple-darwin"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn host_platform() -> (&'static str, &'static str) {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    (os, arch)
}

/// Runs a command and returns its output; panics with its stderr if it fails.
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// scripts/package-plugin.sh with a clean environment of its settings.
fn package_plugin(dist: &Path) -> Command {
    let mut command = Command::new(repo().join("scripts/package-plugin.sh"));
    for var in [
        "STE_PLUGIN_BIN_DIR",
        "STE_PLUGIN_TARGETS",
        "STE_RELEASE_URL_BASE",
        "STE_HOMEPAGE",
        "CARGO_TARGET_DIR",
        "SOURCE_DATE_EPOCH",
    ] {
        command.env_remove(var);
    }
    command.env("STE_DIST_DIR", dist);
    command
}

/// Stand-in binaries that say which target they were built for.
fn fake_bins(dir: &Path, target: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    for bin in BINS {
        let path = dir.join(bin);
        std::fs::write(&path, format!("#!/bin/sh\necho {bin} {target}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum prints the digest")
        .to_owned()
}

fn tar_list(archive: &Path) -> BTreeSet<String> {
    let out = run(Command::new("tar").arg("-tzf").arg(archive));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

fn parse_manifest(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let mut docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{}: one document", path.display());
    docs.remove(0)
}

/// `v` + semantic version, as krew parses it (k8s.io/apimachinery's
/// ParseSemantic after checking the `v`).
fn is_krew_semver(version: &str) -> bool {
    let Some(rest) = version.strip_prefix('v') else {
        return false;
    };
    let (rest, build) = rest
        .split_once('+')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    let (core, pre) = rest
        .split_once('-')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    let numbers: Vec<&str> = core.split('.').collect();
    let number_ok = |n: &&str| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (*n == "0" || !n.starts_with('0'))
    };
    let ident_ok = |s: &str| {
        s.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    numbers.len() == 3
        && numbers.iter().all(number_ok)
        && pre.is_none_or(ident_ok)
        && build.is_none_or(ident_ok)
}

/// krew's ValidatePlugin (name taken from the file, as the index does),
/// validatePlatform, validateFiles and validateSelector, plus the index's
/// rule that no two platforms match the same OS/arch. Returns the
/// platforms as (os, arch) → platform.
fn validate_krew_manifest(path: &Path, plugin: &Value) -> BTreeMap<(String, String), Value> {
    let file_name = path.file_stem().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        path.extension().unwrap(),
        "yaml",
        "krew manifests are .yaml"
    );
    assert_eq!(
        plugin["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(plugin["kind"], "Plugin");
    let name = plugin["metadata"]["name"].as_str().expect("metadata.name");
    assert!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "plugin name {name:?} must match ^[\\w-]+$"
    );
    assert_eq!(
        name, file_name,
        "the manifest file must be named after the plugin"
    );
    let spec = &plugin["spec"];
    let short = spec["shortDescription"]
        .as_str()
        .expect("spec.shortDescription");
    assert!(
        !short.is_empty() && !short.contains(['\r', '\n']),
        "shortDescription: one line"
    );
    assert!(
        short.len() <= 50,
        "shortDescription {short:?} should be short"
    );
    for field in ["description", "homepage", "caveats"] {
        assert!(
            spec[field].as_str().is_some_and(|s| !s.is_empty()),
            "spec.{field}"
        );
    }
    let version = spec["version"].as_str().expect("spec.version");
    assert!(
        is_krew_semver(version),
        "spec.version {version:?} is not v<semver>"
    );

    let platforms = spec["platforms"].as_array().expect("spec.platforms");
    assert!(!platforms.is_empty(), "should have a platform specified");
    let mut by_os_arch = BTreeMap::new();
    for platform in platforms {
        let uri = platform["uri"].as_str().unwrap_or_default();
        assert!(!uri.is_empty(), "`uri` has to be set: {platform}");
        let sha = platform["sha256"].as_str().unwrap_or_default();
        assert!(
            sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "`sha256` {sha:?} must match ^[a-f0-9]{{64}}$"
        );
        assert!(
            platform["bin"].as_str().is_some_and(|b| !b.is_empty()),
            "`bin` has to be set"
        );
        if let Some(files) = platform.get("files") {
            let files = files.as_array().expect("files is a list");
            assert!(
                !files.is_empty(),
                "`files` has to be unspecified or non-empty"
            );
            for op in files {
                for key in ["from", "to"] {
                    assert!(
                        op[key].as_str().is_some_and(|s| !s.is_empty()),
                        "files.{key}"
                    );
                }
            }
        }
        let selector = platform["selector"]
            .as_object()
            .expect("nil selector is not supported");
        assert!(
            selector.keys().all(|k| k == "matchLabels"),
            "only matchLabels is used here: {selector:?}"
        );
        let labels = selector["matchLabels"].as_object().expect("matchLabels");
        assert!(!labels.is_empty(), "`matchLabels` specified but empty");
        for key in labels.keys() {
            assert!(
                key == "os" || key == "arch",
                "selector key {key:?} not supported"
            );
        }
        let os = labels["os"].as_str().expect("os").to_owned();
        let arch = labels["arch"].as_str().expect("arch").to_owned();
        let previous = by_os_arch.insert((os.clone(), arch.clone()), platform.clone());
        assert!(previous.is_none(), "two platforms for {os}/{arch}");
    }
    by_os_arch
}

/// Every platform: the uri names the archive built for it, the sha256 is
/// the archive's, and the archive holds exactly the binaries and LICENSE
/// the manifest's `files` and `bin` refer to.
fn check_archives(dist: &Path, url_base: &str, platforms: &BTreeMap<(String, String), Value>) {
    let license = std::fs::read(repo().join("LICENSE")).unwrap();
    for ((os, arch), platform) in platforms {
        let file = format!("kubectl-ste_v{VERSION}_{os}_{arch}.tar.gz");
        assert_eq!(platform["uri"], format!("{url_base}/{file}"));
        let archive = dist.join(&file);
        assert_eq!(
            platform["sha256"],
            sha256(&archive),
            "{file}: sha256 in the manifest"
        );
        let entries = tar_list(&archive);
        let expected: BTreeSet<String> = ["LICENSE", "kubectl-ste", "kubectl_complete-ste"]
            .map(String::from)
            .into();
        assert_eq!(entries, expected, "{file}: the files at the archive root");
        assert_eq!(platform["bin"], "kubectl-ste");
        let froms: Vec<&str> = platform["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["from"].as_str().unwrap())
            .collect();
        assert_eq!(froms, ["kubectl-ste", "kubectl_complete-ste", "LICENSE"]);
        assert!(
            platform["files"]
                .as_array()
                .unwrap()
                .iter()
                .all(|op| op["to"] == ".")
        );

        let unpacked = tempfile::tempdir().unwrap();
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(unpacked.path()));
        assert_eq!(
            std::fs::read(unpacked.path().join("LICENSE")).unwrap(),
            license
        );
        let target = RELEASE
            .iter()
            .find(|(o, a, _)| o == os && a == arch)
            .map(|(_, _, t)| *t)
            .unwrap();
        let bin = std::fs::read_to_string(unpacked.path().join("kubectl-ste")).unwrap();
        assert!(
            bin.contains(target),
            "{file} holds the {target} build: {bin}"
        );
    }
}

#[test]
fn release_manifest_follows_krews_rules_for_all_four_platforms() {
    let tmp = tempfile::tempdir().unwrap();
    let target_dir = tmp.path().join("target");
    for (_, _, triple) in RELEASE {
        fake_bins(&target_dir.join(triple).join("release"), triple);
    }
    let dist = tmp.path().join("dist");
    let url_base = format!("https://releases.example.invalid/ste/v{VERSION}");
    let triples = RELEASE.map(|(_, _, t)| t);
    run(package_plugin(&dist)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "STE_PLUGIN_TARGETS",
            format!(
                "{},{} {}, {}",
                triples[0], triples[1], triples[2], triples[3]
            ),
        )
        .env("STE_RELEASE_URL_BASE", format!("{url_base}/")));

    let manifest = dist.join("ste.yaml");
    let plugin = parse_manifest(&manifest);
    let platforms = validate_krew_manifest(&manifest, &plugin);
    assert_eq!(plugin["spec"]["version"], format!("v{VERSION}"));
    let expected: BTreeSet<(String, String)> = RELEASE
        .iter()
        .map(|(os, arch, _)| (os.to_string(), arch.to_string()))
        .collect();
    assert_eq!(platforms.keys().cloned().collect::<BTreeSet<_>>(), expected);
    check_archives(&dist, &url_base, &platforms);
}

#[test]
fn default_manifest_lists_only_the_host_archive_and_install_checks_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bins = tmp.path().join("bins");
    fake_bins(&bins, "host");
    let dist = tmp.path().join("dist");
    run(package_plugin(&dist).env("STE_PLUGIN_BIN_DIR", &bins));

    let manifest = dist.join("ste.yaml");
    let plugin = parse_manifest(&manifest);
    let platforms = validate_krew_manifest(&manifest, &plugin);
    let (os, arch) = host_platform();
    assert_eq!(
        platforms.keys().collect::<Vec<_>>(),
        [&(os.to_owned(), arch.to_owned())],
        "only the archive that was built"
    );
    let platform = &platforms[&(os.to_owned(), arch.to_owned())];
    let default_base = format!("https://github.com/OWNER/ste/releases/download/v{VERSION}");
    let archive = dist.join(format!("kubectl-ste_v{VERSION}_{os}_{arch}.tar.gz"));
    assert_eq!(
        platform["uri"],
        format!(
            "{default_base}/{}",
            archive.file_name().unwrap().to_string_lossy()
        )
    );
    assert_eq!(platform["sha256"], sha256(&archive));

    // The real krew refuses an archive whose sha256 is not the manifest's,
    // installs the right one, lists it, and uninstalls it.
    let tampered = tmp.path().join("tampered").join("ste.yaml");
    std::fs::create_dir_all(tampered.parent().unwrap()).unwrap();
    let sha = platform["sha256"].as_str().unwrap();
    let other = if sha.starts_with('0') { "1" } else { "0" };
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &tampered,
        text.replace(sha, &format!("{other}{}", &sha[1..])),
    )
    .unwrap();
    let krew = KrewRoot::new(&tmp.path().join("krew")).unwrap();
    let archive_arg = format!("--archive={}", archive.display());
    let refused = krew.krew(&[
        "install",
        &format!("--manifest={}", tampered.display()),
        &archive_arg,
    ]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("checksum does not match"),
        "a wrong sha256 must be refused: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        !krew.root.join("receipts/ste.yaml").exists(),
        "nothing installed"
    );

    krew.krew_ok(&[
        "install",
        &format!("--manifest={}", manifest.display()),
        &archive_arg,
    ]);
    assert!(krew.root.join("receipts/ste.yaml").is_file());
    assert_eq!(
        krew.krew_ok(&["list"]).lines().collect::<Vec<_>>(),
        ["detached/ste"],
        "krew lists the plugin installed from a manifest file as detached"
    );
    let again = krew.krew(&[
        "install",
        &format!("--manifest={}", manifest.display()),
        &archive_arg,
    ]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already installed"),
        "krew does not install over an installed plugin: {}",
        String::from_utf8_lossy(&again.stderr)
    );

    krew.krew_ok(&["uninstall", "ste"]);
    for gone in ["bin/kubectl-ste", "store/ste", "receipts/ste.yaml"] {
        assert!(
            !krew.root.join(gone).exists() && !krew.root.join(gone).is_symlink(),
            "{gone} removed"
        );
    }
    assert_eq!(krew.krew_ok(&["list"]).trim(), "");
}

#[test]
fn krew_layout_lets_kubectl_find_and_run_the_real_plugin() {
    // The real binaries, from `cargo build --workspace --bins`, without
    // their debug info (a debug build is hundreds of MB to compress).
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = tmp.path().join("bins");
    std::fs::create_dir_all(&bin_dir).unwrap();
    for bin in BINS {
        let built = ste_tests::procs::workspace_bin(bin);
        run(Command::new("strip")
            .arg("-o")
            .arg(bin_dir.join(bin))
            .arg(&built));
    }
    let dist = tmp.path().join("dist");
    let root = tmp.path().join("krew");
    run(package_plugin(&dist)
        .env("STE_PLUGIN_BIN_DIR", &bin_dir)
        .arg("--install-krew-root")
        .arg(&root));

    // krew's layout: store/<name>/<version>/, bin/kubectl-<name> as a
    // link into it, receipts/<name>.yaml.
    let store = root.join(format!("store/ste/v{VERSION}"));
    for file in ["kubectl-ste", "kubectl_complete-ste", "LICENSE"] {
        assert!(store.join(file).is_file(), "{file} in {}", store.display());
    }
    for file in BINS {
        assert_eq!(
            sha256(&store.join(file)),
            sha256(&bin_dir.join(file)),
            "{file} installed from the archive"
        );
    }
    let link = root.join("bin/kubectl-ste");
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(store.join("kubectl-ste")).unwrap()
    );
    assert!(
        !root.join("bin/kubectl_complete-ste").exists(),
        "krew links only the plugin's bin"
    );
    let manifest = parse_manifest(&dist.join("ste.yaml"));
    let receipt = parse_manifest(&root.join("receipts/ste.yaml"));
    assert_eq!(receipt["spec"], manifest["spec"]);
    assert_eq!(receipt["metadata"]["name"], "ste");
    assert!(receipt["metadata"]["creationTimestamp"].is_string());
    assert_eq!(receipt["status"]["source"]["name"], "detached");

    // The real kubectl finds the plugin on PATH through the link and runs it.
    // PATH holds only krew's bin dir and kubectl's own: a kubectl-ste
    // installed elsewhere on this machine (`scripts/local-cluster.sh up`
    // links one into /usr/local/bin) would make `kubectl plugin list` warn
    // and exit 1.
    let kubectl_dir = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .find(|dir| dir.join("kubectl").is_file())
        .expect("kubectl is on PATH");
    let path = format!("{}:{}", root.join("bin").display(), kubectl_dir.display());
    let kubectl = |args: &[&str]| {
        Command::new("kubectl")
            .args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", tmp.path().join("no-kubeconfig"))
            .output()
            .expect("kubectl is installed")
    };
    let list = kubectl(&["plugin", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success() && listed.lines().any(|l| Path::new(l.trim()) == link),
        "kubectl plugin list does not list {}:\n{listed}{}",
        link.display(),
        String::from_utf8_lossy(&list.stderr)
    );
    let help = kubectl(&["ste", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.status.success() && text.contains("Usage:"),
        "`kubectl ste --help` through {} printed no usage ({}): kubectl-ste in {} is not \
         the finished plugin yet (a stub?).\nstdout:\n{text}\nstderr:\n{}",
        link.display(),
        help.status,
        bin_dir.display(),
        String::from_utf8_lossy(&help.stderr)
    );
}
