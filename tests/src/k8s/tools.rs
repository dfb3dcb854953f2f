//! Where the Kubernetes test binaries are.
//!
//! `scripts/k8s-tools.sh` builds them from the Go modules under `tests/tools/` into
//! `$LOGCLUSTER_TOOLS_DIR/<tool>-<version>/<binary>` (default `/var/tmp/logcluster-tools`); this
//! module derives the same path from the same `go.mod` files, so the two cannot disagree about a
//! version. An explicit per-tool variable (`LOGCLUSTER_ETCD`, …) wins over both.

use std::path::{Path, PathBuf};

use super::{Error, Result};

/// The kubectl of our machine image, preferred over a built one.
pub const SYSTEM_KUBECTL: &str = "/usr/bin/kubectl";

/// Default cache directory of `scripts/k8s-tools.sh`.
pub const DEFAULT_TOOLS_DIR: &str = "/var/tmp/logcluster-tools";

/// A binary the harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Etcd,
    KubeApiserver,
    KubeControllerManager,
    Helm,
    Kubectl,
    Kubelet,
    KubeScheduler,
    KubeProxy,
    Coredns,
    Pause,
}

// NB: included at compile time, so a version bump in a go.mod rebuilds the harness with it.
const ETCD_GO_MOD: &str = include_str!("../../tools/etcd/go.mod");
const KUBE_GO_MOD: &str = include_str!("../../tools/kubernetes/go.mod");
const COREDNS_GO_MOD: &str = include_str!("../../tools/coredns/go.mod");
const PAUSE_MAIN_GO: &str = include_str!("../../tools/pause/main.go");
const HELM_GO_MOD: &str = include_str!("../../tools/helm/go.mod");

impl Tool {
    /// The binary's file name, also the tool name `scripts/k8s-tools.sh` takes.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Etcd => "etcd",
            Tool::KubeApiserver => "kube-apiserver",
            Tool::KubeControllerManager => "kube-controller-manager",
            Tool::Helm => "helm",
            Tool::Kubectl => "kubectl",
            Tool::Kubelet => "kubelet",
            Tool::KubeScheduler => "kube-scheduler",
            Tool::KubeProxy => "kube-proxy",
            Tool::Coredns => "coredns",
            Tool::Pause => "pause",
        }
    }

    /// The variable that names this binary's path directly.
    pub fn env_var(self) -> &'static str {
        match self {
            Tool::Etcd => "LOGCLUSTER_ETCD",
            Tool::KubeApiserver => "LOGCLUSTER_KUBE_APISERVER",
            Tool::KubeControllerManager => "LOGCLUSTER_KUBE_CONTROLLER_MANAGER",
            Tool::Helm => "LOGCLUSTER_HELM",
            Tool::Kubectl => "LOGCLUSTER_KUBECTL",
            Tool::Kubelet => "LOGCLUSTER_KUBELET",
            Tool::KubeScheduler => "LOGCLUSTER_KUBE_SCHEDULER",
            Tool::KubeProxy => "LOGCLUSTER_KUBE_PROXY",
            Tool::Coredns => "LOGCLUSTER_COREDNS",
            Tool::Pause => "LOGCLUSTER_PAUSE",
        }
    }

    /// The version the committed `go.mod` pins (every Kubernetes component, and kubectl when
    /// the machine has none, is built from the one `tools/kubernetes` module); pause, our own
    /// program, carries its version in a `// version:` line of its source.
    pub fn version(self) -> &'static str {
        let (go_mod, module) = match self {
            Tool::Etcd => (ETCD_GO_MOD, "go.etcd.io/etcd/server/v3"),
            Tool::KubeApiserver
            | Tool::KubeControllerManager
            | Tool::Kubectl
            | Tool::Kubelet
            | Tool::KubeScheduler
            | Tool::KubeProxy => (KUBE_GO_MOD, "k8s.io/kubernetes"),
            Tool::Helm => (HELM_GO_MOD, "helm.sh/helm/v3"),
            Tool::Coredns => (COREDNS_GO_MOD, "github.com/coredns/coredns"),
            Tool::Pause => {
                return source_version(PAUSE_MAIN_GO)
                    .expect("tests/tools/pause/main.go has a `// version:` line");
            }
        };
        required_version(go_mod, module).unwrap_or_else(|| {
            panic!(
                "tests/tools go.mod for {} does not require {module}",
                self.name()
            )
        })
    }

    /// Where the binary is: the tool's variable if set, else the build cache — except kubectl,
    /// for which the machine's `/usr/bin/kubectl` comes first. Errors name the command that
    /// provides the binary.
    pub fn path(self) -> Result<PathBuf> {
        self.resolve(
            std::env::var_os(self.env_var()).map(PathBuf::from),
            &tools_dir(),
        )
    }

    /// The path `scripts/k8s-tools.sh` builds this tool to (not checked to exist).
    pub fn cached_path(self) -> PathBuf {
        self.cached_path_in(&tools_dir())
    }

    fn cached_path_in(self, dir: &Path) -> PathBuf {
        dir.join(format!("{}-{}", self.name(), self.version()))
            .join(self.name())
    }

    fn resolve(self, explicit: Option<PathBuf>, dir: &Path) -> Result<PathBuf> {
        if let Some(path) = explicit {
            return if is_executable(&path) {
                Ok(path)
            } else {
                Err(Error::ToolMissing {
                    tool: self.name(),
                    path,
                    hint: format!("{} points at it; fix or unset it", self.env_var()),
                })
            };
        }
        if self == Tool::Kubectl && is_executable(Path::new(SYSTEM_KUBECTL)) {
            return Ok(PathBuf::from(SYSTEM_KUBECTL));
        }
        let path = self.cached_path_in(dir);
        if is_executable(&path) {
            return Ok(path);
        }
        let hint = format!(
            "run `make setup` (or `scripts/k8s-tools.sh build {}`) to build it; set \
             LOGCLUSTER_TOOLS_DIR if your cache is elsewhere, or {} to use another binary",
            self.name(),
            self.env_var(),
        );
        Err(Error::ToolMissing {
            tool: self.name(),
            path,
            hint,
        })
    }
}

/// `$LOGCLUSTER_TOOLS_DIR`, or [`DEFAULT_TOOLS_DIR`].
pub fn tools_dir() -> PathBuf {
    std::env::var_os("LOGCLUSTER_TOOLS_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_TOOLS_DIR), PathBuf::from)
}

/// The version `go_mod` requires of `module`, from either `require m v` or a `require (` block.
fn required_version<'a>(go_mod: &'a str, module: &str) -> Option<&'a str> {
    go_mod.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let first = words.next()?;
        let first = if first == "require" {
            words.next()?
        } else {
            first
        };
        (first == module).then(|| words.next()).flatten()
    })
}

/// The version in a `// version: vN` line of a Go source file.
fn source_version(source: &str) -> Option<&str> {
    source
        .lines()
        .find_map(|line| line.strip_prefix("// version:"))
        .map(str::trim)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_version_reads_single_and_block_requires() {
        let go_mod =
            "module x\n\nrequire a.io/b v1.2.3\n\nrequire (\n\tc.io/d v0.1.0 // indirect\n)\n";
        assert_eq!(required_version(go_mod, "a.io/b"), Some("v1.2.3"));
        assert_eq!(required_version(go_mod, "c.io/d"), Some("v0.1.0"));
        assert_eq!(required_version(go_mod, "e.io/f"), None);
    }

    #[test]
    fn committed_go_mods_pin_the_expected_lines() {
        // k8s-openapi's `v1_35` feature in the root Cargo.toml must match the API server built.
        assert!(Tool::KubeApiserver.version().starts_with("v1.35."));
        assert!(Tool::Etcd.version().starts_with("v3.6."));
        assert!(Tool::Helm.version().starts_with("v3."));
        assert_eq!(Tool::Kubelet.version(), Tool::KubeApiserver.version());
        assert!(Tool::Coredns.version().starts_with("v1."));
        assert_eq!(Tool::Pause.version(), "v1");
    }

    #[test]
    fn missing_binary_error_names_the_setup_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = Tool::Etcd
            .resolve(None, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("make setup"), "{err}");
        assert!(err.contains("scripts/k8s-tools.sh build etcd"), "{err}");
        let expected = dir
            .path()
            .join(format!("etcd-{}/etcd", Tool::Etcd.version()));
        assert!(err.contains(&expected.display().to_string()), "{err}");
    }
}
