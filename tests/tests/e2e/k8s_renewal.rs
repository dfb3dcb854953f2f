//! Certificate renewal on real mounted Secrets: a LogCluster with three-minute certificates runs
//! past the expiry of its first ones. The operator renews them into the same Secrets, the kubelet
//! updates the pods' volumes in place, and every node serves the renewed certificate without a
//! restart; clients and peers keep working once the first certificates have expired.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use logcluster_certs::inspect;
use logcluster_tests::k8s::node::{self, KubeNode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_yaml::Value;

use super::k8s_journey::{
    OPERATOR_NAMESPACE, client_pod, one_cluster_with_operator, run_client, step, wait_for_cluster,
    workspace,
};

const CLUSTER: &str = "demo";
const PODS: [&str; 3] = ["demo-0", "demo-1", "demo-2"];
/// Renewed 30 s after issue; the rest of the validity is the kubelet's time to update the
/// mounted Secrets (its sync period is a minute) and the nodes' to pick the files up.
const VALIDITY: &str = "3m";
const RENEW_BEFORE: &str = "150s";
/// Past the first certificates' expiry, with room for the kubelet.
const PATIENCE: Duration = Duration::from_secs(420);

/// The Secret's text values (`data`, decoded).
fn secret_text(node: &KubeNode, namespace: &str, name: &str) -> Result<BTreeMap<String, String>> {
    node.block_on(async {
        let secrets: Api<Secret> =
            Api::namespaced(node.control_plane().kube_client().await?, namespace);
        let secret = secrets.get(name).await?;
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| Ok((k, String::from_utf8(v.0)?)))
            .collect()
    })
}

fn der_of(pem: &str) -> Result<Vec<u8>> {
    let cert = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .context("no certificate in the PEM")??;
    Ok(cert.to_vec())
}

/// The certificate a pod's gRPC port presents, fetched by a TLS handshake from the node's
/// network with the user's certificate (the port asks for one).
fn served_certificate(
    node: &KubeNode,
    namespace: &str,
    pod: &str,
    user: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let ip = node.control_plane().kubectl_ok([
        "-n",
        namespace,
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.podIP}",
    ])?;
    let addr: SocketAddr = format!("{}:8400", ip.trim())
        .parse()
        .with_context(|| format!("pod {pod} has no IP yet ({ip:?})"))?;
    let field = |key: &str| {
        user.get(key)
            .cloned()
            .with_context(|| format!("the user Secret has no {key}"))
    };
    let (ca, cert, key) = (field("ca.crt")?, field("tls.crt")?, field("tls.key")?);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c?)?;
    }
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?;
    let name = ServerName::try_from(format!(
        "{pod}.{CLUSTER}-nodes.{namespace}.svc.cluster.local"
    ))?;
    let served = node.in_network(move || {
        let mut conn =
            rustls::ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
        let mut socket = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        socket.set_read_timeout(Some(Duration::from_secs(10)))?;
        socket.set_write_timeout(Some(Duration::from_secs(10)))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut socket)?;
        }
        conn.peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.to_vec())
            .ok_or_else(|| io::Error::other("the server sent no certificate"))
    })?;
    Ok(served)
}

#[test]
fn k8s_renewal_nodes_serve_renewed_certificates_from_mounted_secrets_without_restarts() -> Result<()>
{
    let started = Instant::now();
    let node = node::shared()?;
    let _one_cluster = one_cluster_with_operator(node)?;
    let cp = node.control_plane();
    let ns = cp.create_namespace("renewal")?;

    step(
        started,
        &format!("a LogCluster with tls.validity {VALIDITY}, renewBefore {RENEW_BEFORE}"),
    );
    let example = std::fs::read_to_string(workspace().join("examples/minimal.yaml"))?;
    let mut lc: Value = serde_yaml::from_str(&example)?;
    lc["spec"]["tls"] = serde_yaml::from_str(&format!(
        "{{validity: {VALIDITY}, renewBefore: {RENEW_BEFORE}}}"
    ))?;
    cp.kubectl_with_stdin_ok(
        ["-n", &ns, "apply", "-f", "-"],
        &serde_yaml::to_string(&lc)?,
    )?;
    wait_for_cluster(node, &ns, CLUSTER, 3)?;

    let node_secret = format!("{CLUSTER}-node-tls");
    let user_secret = format!("{CLUSTER}-user-app");
    let first = secret_text(node, &ns, &node_secret)?;
    let first_pem = first.get("tls.crt").context("no tls.crt")?;
    let first_info = inspect(first_pem)?;
    step(
        started,
        &format!(
            "the first node certificate, serial {}",
            first_info.serial_hex
        ),
    );

    // Every pod serves the Secret's current certificate, and that is a renewal — checked until
    // the first certificate has expired, so that nothing can still be relying on it.
    let deadline = Instant::now() + PATIENCE;
    let mut renewed_serial = None;
    loop {
        let current = secret_text(node, &ns, &node_secret)?;
        let current_pem = current.get("tls.crt").context("no tls.crt")?;
        let info = inspect(current_pem)?;
        let expected = der_of(current_pem)?;
        let user = secret_text(node, &ns, &user_secret)?;
        let mut serving = Vec::new();
        for pod in PODS {
            let served = served_certificate(node, &ns, pod, &user);
            serving.push(matches!(&served, Ok(der) if *der == expected));
        }
        let all_current = serving.iter().all(|s| *s);
        if all_current && info.serial_hex != first_info.serial_hex && renewed_serial.is_none() {
            step(
                started,
                &format!(
                    "every pod serves the renewed certificate {}",
                    info.serial_hex
                ),
            );
            renewed_serial = Some(info.serial_hex.clone());
        }
        if renewed_serial.is_some() && first_info.is_expired_at(SystemTime::now()) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "after {PATIENCE:?}: node certificate {} (first {}), pods serving it: {serving:?}",
            info.serial_hex,
            first_info.serial_hex
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // Past the first certificates' expiry: the peers replicate and a client pod produces with
    // the renewed user certificate, and no container was restarted for any of it.
    step(
        started,
        "the first certificates expired: produce from a pod",
    );
    wait_for_cluster(node, &ns, CLUSTER, 3)?;
    let mut pod = client_pod("renewal-producer", &["produce", "after-renewal"])?;
    let env = &mut pod["spec"]["containers"][0]["env"][0];
    ensure!(
        env["name"].as_str() == Some("LOGCLUSTER_ADDR"),
        "the README's client pod does not start with LOGCLUSTER_ADDR: {env:?}"
    );
    env["value"] = Value::from(format!("{CLUSTER}.{ns}.svc:8400"));
    let (phase, out) = run_client(node, &ns, "renewal-producer", &pod)?;
    ensure!(phase == "Succeeded", "produce after renewal {phase}: {out}");
    let restarts = cp.kubectl_ok([
        "-n",
        &ns,
        "get",
        "pods",
        "-l",
        &format!("app.kubernetes.io/instance={CLUSTER}"),
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
    ])?;
    ensure!(
        restarts.split_whitespace().all(|r| r == "0") && restarts.split_whitespace().count() == 3,
        "container restarts during renewal: {restarts:?}"
    );

    step(started, "cleanup: delete the LogCluster, helm uninstall");
    cp.kubectl_ok(["-n", &ns, "delete", "lc", CLUSTER, "--timeout=300s"])?;
    cp.helm_ok([
        "uninstall",
        "logcluster-operator",
        "--namespace",
        OPERATOR_NAMESPACE,
        "--wait",
    ])?;
    cp.kubectl_ok(["delete", "namespace", &ns, "--wait=false"])?;
    step(started, "done");
    Ok(())
}
