//! The one-node Kubernetes of the harness ([`k8s::node`]): real pods, volumes, Services and DNS,
//! inside namespaces the harness made. The user journeys on it are in `k8s_journey`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use logcluster_tests::k8s::node::{self, KubeNode};

/// Generous: the machine may be compiling while pods start.
const POD_PATIENCE: Duration = Duration::from_secs(240);

/// Waits until `kubectl get` of `what` prints `expected` for the JSONPath `path`.
pub fn wait_for_jsonpath(
    node: &KubeNode,
    namespace: &str,
    what: &str,
    path: &str,
    expected: &str,
    patience: Duration,
) -> Result<()> {
    let cp = node.control_plane();
    let deadline = Instant::now() + patience;
    let mut last;
    loop {
        let out = cp.kubectl([
            "-n",
            namespace,
            "get",
            what,
            "-o",
            &format!("jsonpath={path}"),
        ])?;
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() && last.trim() == expected {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let describe = cp
                .kubectl(["-n", namespace, "describe", what])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            bail!(
                "{what} in {namespace}: {path} is {last:?}, not {expected:?} after {patience:?}\n{describe}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn k8s_node_runs_a_pod_with_a_volume_its_fs_group_can_write() -> Result<()> {
    let node = node::shared()?;
    let cp = node.control_plane();
    let ns = cp.create_namespace("node")?;
    let manifest = format!(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{ name: data }}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{ requests: {{ storage: 64Mi }} }}
---
apiVersion: v1
kind: Pod
metadata: {{ name: writer }}
spec:
  restartPolicy: Never
  securityContext: {{ runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532 }}
  containers:
    - name: logctl
      image: ghcr.io/logcluster/lognode:{version}
      imagePullPolicy: Never
      command: ["/usr/local/bin/logctl"]
      args: ["certs", "init", "--dir", "/data/ca"]
      volumeMounts: [{{ name: data, mountPath: /data }}]
  volumes:
    - name: data
      persistentVolumeClaim: {{ claimName: data }}
"#,
        version = env!("CARGO_PKG_VERSION")
    );
    cp.kubectl_with_stdin_ok(["-n", &ns, "apply", "-f", "-"], &manifest)
        .context("applying the pod")?;
    wait_for_jsonpath(
        node,
        &ns,
        "pod/writer",
        "{.status.phase}",
        "Succeeded",
        POD_PATIENCE,
    )?;
    Ok(())
}
