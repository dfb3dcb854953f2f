//! The test node's volume provisioner: binds each pending claim of the test StorageClass to a
//! new `local` PersistentVolume (a directory of the node) and deletes released volumes.
//!
//! `local` rather than `hostPath`: the kubelet applies a pod's `fsGroup` to local volumes (not to
//! host paths), and a local volume carries node affinity, as a real provisioner's would. The
//! directory starts owned by root with mode 0755, so a non-root pod can only write to it
//! through its `fsGroup` — the same as on a cloud disk.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::http::ApiProbe;

const OWNER_LABEL: &str = "logcluster.io/test-provisioner";

pub(super) struct LocalProvisioner {
    pub probe: ApiProbe,
    pub volumes: PathBuf,
    pub log: PathBuf,
    pub storage_class: &'static str,
    pub provisioner: &'static str,
    pub node_name: &'static str,
}

impl LocalProvisioner {
    /// One pass: provision for pending claims, delete released volumes. Errors are logged and
    /// retried on the next pass, as a controller would.
    pub fn reconcile(&self) {
        if let Err(e) = self.provision_pending() {
            self.note(&format!("provisioning: {e}"));
        }
        if let Err(e) = self.delete_released() {
            self.note(&format!("deleting released volumes: {e}"));
        }
    }

    fn provision_pending(&self) -> Result<(), String> {
        let claims = self.get("/api/v1/persistentvolumeclaims")?;
        for claim in claims["items"].as_array().into_iter().flatten() {
            let spec = &claim["spec"];
            let wanted = spec["storageClassName"] == self.storage_class
                && claim["status"]["phase"] == "Pending"
                && spec["volumeName"].as_str().unwrap_or_default().is_empty()
                && claim["metadata"]["deletionTimestamp"].is_null();
            if !wanted {
                continue;
            }
            let meta = &claim["metadata"];
            let (Some(uid), Some(name), Some(namespace)) = (
                meta["uid"].as_str(),
                meta["name"].as_str(),
                meta["namespace"].as_str(),
            ) else {
                continue;
            };
            let volume = format!("pvc-{uid}");
            let dir = self.volumes.join(&volume);
            match std::fs::DirBuilder::new().mode(0o755).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("creating {}: {e}", dir.display())),
            }
            let pv = json!({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": volume,
                    "labels": { OWNER_LABEL: "true" },
                    "annotations": { "pv.kubernetes.io/provisioned-by": self.provisioner },
                },
                "spec": {
                    "capacity": { "storage": spec["resources"]["requests"]["storage"] },
                    "accessModes": spec["accessModes"],
                    "volumeMode": "Filesystem",
                    "storageClassName": self.storage_class,
                    "persistentVolumeReclaimPolicy": "Delete",
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": namespace,
                        "name": name,
                        "uid": uid,
                    },
                    "local": { "path": dir },
                    "nodeAffinity": { "required": { "nodeSelectorTerms": [{
                        "matchExpressions": [{
                            "key": "kubernetes.io/hostname",
                            "operator": "In",
                            "values": [self.node_name],
                        }],
                    }] } },
                },
            });
            let (status, body) = self
                .probe
                .request("POST", "/api/v1/persistentvolumes", Some(&pv.to_string()))
                .map_err(|e| e.to_string())?;
            match status {
                201 => self.note(&format!("provisioned {volume} for {namespace}/{name}")),
                409 => {}
                _ => return Err(format!("creating {volume}: {status} {body}")),
            }
        }
        Ok(())
    }

    fn delete_released(&self) -> Result<(), String> {
        let volumes = self.get(&format!(
            "/api/v1/persistentvolumes?labelSelector={OWNER_LABEL}"
        ))?;
        for pv in volumes["items"].as_array().into_iter().flatten() {
            let phase = pv["status"]["phase"].as_str().unwrap_or_default();
            if !matches!(phase, "Released" | "Failed") {
                continue;
            }
            let Some(name) = pv["metadata"]["name"].as_str() else {
                continue;
            };
            let path = format!("/api/v1/persistentvolumes/{name}");
            let (status, body) = self
                .probe
                .request("DELETE", &path, None)
                .map_err(|e| e.to_string())?;
            if !matches!(status, 200 | 202 | 404) {
                return Err(format!("DELETE {path}: {status} {body}"));
            }
            let dir = self.volumes.join(name);
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(format!("removing {}: {e}", dir.display()));
            }
            self.note(&format!("deleted released {name}"));
        }
        Ok(())
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        let (status, body) = self
            .probe
            .request("GET", path, None)
            .map_err(|e| format!("GET {path}: {e}"))?;
        if status != 200 {
            return Err(format!("GET {path}: {status} {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}"))
    }

    fn note(&self, line: &str) {
        if let Ok(mut file) = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}
