//! The configuration files of the one-node cluster's components, as text.
//!
//! Every value here is a fact of the test machines or a decision of the harness, explained where
//! it is not obvious: cgroup v1 without systemd (cgroupfs driver), root without
//! `CAP_SYS_RESOURCE` (containerd may not lower OOM scores), no registry (a locally built pause
//! image), one node whose pods and Services live in the harness's own network namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where a node's files are, all under its directory.
#[derive(Debug, Clone)]
pub(super) struct NodePaths {
    pub root: PathBuf,
}

impl NodePaths {
    pub fn containerd_config(&self) -> PathBuf {
        self.root.join("containerd.toml")
    }
    pub fn containerd_socket(&self) -> PathBuf {
        self.root.join("containerd.sock")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.root.join("cni")
    }
    pub fn ipam_dir(&self) -> PathBuf {
        self.root.join("ipam")
    }
    pub fn kubelet_config(&self) -> PathBuf {
        self.root.join("kubelet.yaml")
    }
    /// Bind-mounted on `/var/lib/kubelet` inside the namespace (the kubelet writes there whatever
    /// its `--root-dir`), so pod volumes survive for a post-mortem with `LOGCLUSTER_K8S_KEEP`.
    pub fn kubelet_dir(&self) -> PathBuf {
        self.root.join("kubelet")
    }
    /// Bind-mounted on `/var/log` inside the namespace: container logs (`pods/`).
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }
    pub fn volume_plugin_dir(&self) -> PathBuf {
        self.root.join("volume-plugins")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.root.join("resolv.conf")
    }
    pub fn corefile(&self) -> PathBuf {
        self.root.join("Corefile")
    }
    /// Persistent volumes the test provisioner creates, one directory each.
    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }
    pub fn logs(&self, component: &str) -> PathBuf {
        self.root.join(format!("{component}.log"))
    }
}

/// containerd's configuration: its own root, state and socket; the CRI plugin with our pause
/// image and CNI configuration.
pub(super) fn containerd(paths: &NodePaths, pause_image: &str) -> String {
    let q = |p: &Path| toml_string(&p.display().to_string());
    format!(
        r#"version = 2
# /var/lib and /run are the namespace's own tmpfs mounts: nothing outlives the node.
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = {socket}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {pause}
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails with "can't get final
  # child's PID from pipe: EOF" (runc may not lower a process's OOM score adjustment).
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = {cni}
"#,
        socket = q(&paths.containerd_socket()),
        pause = toml_string(pause_image),
        cni = q(&paths.cni_conf_dir()),
    )
}

/// The pod network: a bridge on the node whose gateway is the node, addresses from
/// `pod_subnet`, and `portmap` for `hostPort`.
pub(super) fn cni(paths: &NodePaths, pod_subnet: &str) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "logcluster-test",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                // Pod traffic stays in the namespace: nothing to masquerade towards.
                "ipMasq": false,
                // A pod reaching itself through its own Service comes back over the bridge.
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": pod_subnet }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": paths.ipam_dir(),
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    })
    .to_string()
}

/// The kubelet's configuration file.
pub(super) fn kubelet(
    paths: &NodePaths,
    node_ip: Ipv4Addr,
    client_ca: &Path,
    cgroup_root: &str,
    pod_subnet: &str,
) -> String {
    serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // The test machines run cgroup v1, which kubelet 1.35 refuses unless told otherwise,
        // and no systemd.
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        // Every pod cgroup under one tree of our own, removed when the node stops.
        "cgroupRoot": cgroup_root,
        "containerRuntimeEndpoint": format!("unix://{}", paths.containerd_socket().display()),
        "address": node_ip.to_string(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        // The API server authenticates to the kubelet (logs, exec) with the admin certificate.
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": false },
            "x509": { "clientCAFile": client_ca },
        },
        "authorization": { "mode": "AlwaysAllow" },
        // CoreDNS runs on the node itself, serving the cluster domain only.
        "clusterDomain": "cluster.local",
        "clusterDNS": [node_ip.to_string()],
        "resolvConf": paths.resolv_conf(),
        "podCIDR": pod_subnet,
        "failSwapOn": false,
        "volumePluginDir": paths.volume_plugin_dir(),
        // A shared build machine's disk and memory are not ours to police: no evictions, no
        // image garbage collection (our images cannot be pulled back).
        // (An empty map, not a missing one: missing means the kubelet's defaults.)
        "evictionHard": {},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "enforceNodeAllocatable": ["none"],
        "serializeImagePulls": false,
        // Pod status reaches the API server sooner: tests wait on it.
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
    })
    .to_string()
}

/// CoreDNS: the cluster domain from the API server, on the node's address (pods' resolver) and
/// a readiness endpoint on the namespace's loopback. Nothing is forwarded off the machine.
pub(super) fn corefile(node_ip: Ipv4Addr, kubeconfig: &Path, ready_port: u16) -> String {
    format!(
        ".:53 {{\n    bind {node_ip}\n    errors\n    ready 127.0.0.1:{ready_port}\n    \
         kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        kubeconfig {kubeconfig}\n        \
         pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n    }}\n}}\n",
        kubeconfig = kubeconfig.display(),
    )
}

/// The resolver configuration the kubelet gives pods with `dnsPolicy: Default`, and the base of
/// every pod's: the node's CoreDNS.
pub(super) fn resolv_conf(node_ip: Ipv4Addr) -> String {
    format!("nameserver {node_ip}\n")
}

fn toml_string(s: &str) -> String {
    // A JSON string is a valid TOML basic string for the paths and names we write.
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> NodePaths {
        NodePaths {
            root: PathBuf::from("/var/tmp/node \"x\""),
        }
    }

    #[test]
    fn containerd_config_quotes_paths_and_restricts_oom_score() {
        let text = containerd(&paths(), "localhost/logcluster/pause:v1");
        assert!(
            text.contains(r#"address = "/var/tmp/node \"x\"/containerd.sock""#),
            "{text}"
        );
        assert!(text.contains("restrict_oom_score_adj = true"), "{text}");
        assert!(
            text.contains(r#"sandbox_image = "localhost/logcluster/pause:v1""#),
            "{text}"
        );
    }

    #[test]
    fn kubelet_config_is_json_with_the_machine_facts() {
        let text = kubelet(
            &paths(),
            Ipv4Addr::new(10, 200, 0, 1),
            Path::new("/ca.pem"),
            "/lc",
            "10.244.0.0/24",
        );
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(value["failCgroupV1"], false);
        assert_eq!(value["cgroupDriver"], "cgroupfs");
        assert_eq!(value["clusterDNS"][0], "10.200.0.1");
        assert_eq!(value["authentication"]["x509"]["clientCAFile"], "/ca.pem");
    }

    #[test]
    fn cni_config_uses_the_pod_subnet() {
        let value: serde_json::Value =
            serde_json::from_str(&cni(&paths(), "10.244.0.0/24")).expect("valid JSON");
        assert_eq!(
            value["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.0.0/24"
        );
    }
}
