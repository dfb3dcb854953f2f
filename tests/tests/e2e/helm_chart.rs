//! The Helm chart `charts/logcluster-operator` and the examples (tier 5 of docs/testing.md).
//!
//! * The chart's metadata and CRDs agree with the workspace (appVersion, `crds/` byte-for-byte).
//! * `helm lint --strict` passes with the default values and every `ci/*-values.yaml`; the values
//!   schema is complete (every key titled and described, every object closed) and refuses a
//!   table of bad values, each with its message, in `template`, `lint` and `install`.
//! * Static checks over the rendered manifests: labels and selectors, RBAC identical to
//!   `operator/src/rbac.rs` with no wildcards and nothing cluster-wide in namespaced mode, the
//!   pod's security context, no key material in ConfigMaps or environment variables.
//! * The rendered chart and every example pass a server-side dry-run and are applied with
//!   `kubectl apply --server-side` to the real API server; `helm install` and `upgrade` work.
//! * The operator binary, started with the rendered Deployment's arguments and environment and
//!   acting as the chart's ServiceAccount under the chart's RBAC, reconciles every example into
//!   its owned objects.
//!
//! Test names start with `k8s_chart_` so that `make test-k8s` runs them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::Api;
use logcluster_operator::rbac;
use logcluster_tests::k8s::{self, ControlPlane, Tool};
use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/logcluster-operator");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
/// Upper bound of every wait: the machine may be busy compiling. Not an assertion on speed.
const PATIENCE: Duration = Duration::from_secs(120);
/// The standard labels every object of the chart carries.
const STANDARD_LABELS: [&str; 5] = [
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
];

// ---------------------------------------------------------------------------------------------
// helm and YAML helpers

/// Runs the cached helm without a cluster, with private helm directories.
fn helm(args: &[&str]) -> Result<Output> {
    let home = tempfile::tempdir()?;
    let out = Command::new(Tool::Helm.path()?)
        .args(args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        // No cluster: `template` and `lint` must not try one.
        .env("KUBECONFIG", home.path().join("no-kubeconfig"))
        .stdin(Stdio::null())
        .output()
        .context("running helm")?;
    Ok(out)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn helm_ok(args: &[&str]) -> Result<String> {
    let out = helm(args)?;
    ensure!(
        out.status.success(),
        "helm {} failed:\n{}{}",
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
    Ok(text(&out.stdout))
}

/// Every non-empty document of a multi-document YAML stream (`---` separated, as helm and the
/// examples write them), as JSON values.
fn parse_documents(yaml: &str) -> Result<Vec<Value>> {
    let mut chunks = vec![String::new()];
    for line in yaml.lines() {
        if line.trim_end() == "---" {
            chunks.push(String::new());
        } else if let Some(chunk) = chunks.last_mut() {
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    let mut docs = Vec::new();
    for chunk in chunks {
        let value: Value = serde_yaml::from_str(&chunk)
            .with_context(|| format!("parsing YAML document:\n{chunk}"))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// `helm template <release> <chart> -n <namespace> <extra>`: the text and its documents.
fn render(release: &str, namespace: &str, extra: &[&str]) -> Result<(String, Vec<Value>)> {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    args.extend_from_slice(extra);
    let yaml = helm_ok(&args)?;
    let docs = parse_documents(&yaml)?;
    Ok((yaml, docs))
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

fn one_of_kind<'a>(docs: &'a [Value], k: &str) -> Result<&'a Value> {
    let found = of_kind(docs, k);
    ensure!(found.len() == 1, "expected one {k}, found {}", found.len());
    Ok(found[0])
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// The `ci/*-values.yaml` files: the example values the chart is linted and rendered with.
fn ci_values_files() -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(CHART).join("ci"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.to_string_lossy().ends_with("-values.yaml"));
    files.sort();
    ensure!(!files.is_empty(), "no ci/*-values.yaml in the chart");
    Ok(files)
}

fn example_files() -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(EXAMPLES)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    Ok(files)
}

/// The `version` of `[workspace.package]` in the root Cargo.toml.
fn workspace_version() -> Result<String> {
    let manifest = std::fs::read_to_string(format!("{ROOT}/Cargo.toml"))?;
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && let Some(rest) = line.strip_prefix("version") {
            let value = rest.trim_start().trim_start_matches('=').trim();
            return Ok(value.trim_matches('"').to_owned());
        }
    }
    bail!("no version in [workspace.package] of Cargo.toml")
}

// ---------------------------------------------------------------------------------------------
// Metadata, CRDs, lint, schema

#[test]
fn k8s_chart_app_version_is_the_workspace_version() -> Result<()> {
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{CHART}/Chart.yaml"))?)?;
    let version = workspace_version()?;
    assert_eq!(chart["appVersion"].as_str(), Some(version.as_str()));
    assert_eq!(chart["name"].as_str(), Some("logcluster-operator"));
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
    // The operator's own default node image carries the same version as the chart's default.
    assert_eq!(
        logcluster_operator::resources::default_node_image(),
        format!("ghcr.io/logcluster/lognode:{version}")
    );
    Ok(())
}

#[test]
fn k8s_chart_crds_are_identical_to_the_generated_crds() -> Result<()> {
    let generated = std::fs::read(format!("{ROOT}/crds/logcluster.yaml"))?;
    let mut chart_crds: Vec<PathBuf> = std::fs::read_dir(format!("{CHART}/crds"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    chart_crds.sort();
    let expected = vec![PathBuf::from(format!("{CHART}/crds/logcluster.yaml"))];
    assert_eq!(
        chart_crds, expected,
        "the chart's crds/ holds exactly the LogCluster CRD"
    );
    let copy = std::fs::read(&expected[0])?;
    ensure!(
        copy == generated,
        "charts/logcluster-operator/crds/logcluster.yaml differs from crds/logcluster.yaml: \
         run `make crds`"
    );
    Ok(())
}

#[test]
fn k8s_chart_lint_strict_passes_with_default_and_example_values() -> Result<()> {
    let out = helm_ok(&["lint", "--strict", CHART])?;
    ensure!(
        out.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{out}"
    );
    for file in ci_values_files()? {
        let file = file.display().to_string();
        let out = helm_ok(&["lint", "--strict", CHART, "--values", &file])?;
        ensure!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{file}: {out}"
        );
        // And it renders.
        let (_, docs) = render("lint", "ops", &["--values", &file])?;
        ensure!(!of_kind(&docs, "Deployment").is_empty(), "{file}");
    }
    Ok(())
}

/// Every property has a title and a description; every object schema is closed
/// (`additionalProperties: false`) or is a map of strings.
fn check_schema(path: &str, schema: &Value, problems: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        if schema.get("additionalProperties") != Some(&Value::Bool(false)) {
            problems.push(format!("{path}: additionalProperties is not false"));
        }
        for (key, prop) in props {
            let here = format!("{path}.{key}");
            for field in ["title", "description"] {
                if prop
                    .get(field)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    problems.push(format!("{here}: no {field}"));
                }
            }
            check_schema(&here, prop, problems);
        }
    } else if schema.get("type") == Some(&Value::from("object")) {
        // A free-form map (labels, annotations, node selector): its values must be strings.
        if schema.get("additionalProperties") != Some(&serde_json::json!({"type": "string"})) {
            problems.push(format!(
                "{path}: an object without properties must be a map of strings"
            ));
        }
    }
    if let Some(items) = schema.get("items") {
        check_schema(&format!("{path}[]"), items, problems);
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        for (i, sub) in schema
            .get(combinator)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            check_schema(&format!("{path}/{combinator}{i}"), sub, problems);
        }
    }
}

#[test]
fn k8s_chart_values_schema_is_complete_and_closed() -> Result<()> {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(format!(
        "{CHART}/values.schema.json"
    ))?)?;
    let mut problems = Vec::new();
    check_schema("values", &schema, &mut problems);
    for (name, def) in schema["definitions"].as_object().context("definitions")? {
        check_schema(&format!("definitions.{name}"), def, &mut problems);
    }
    ensure!(
        problems.is_empty(),
        "schema problems:\n{}",
        problems.join("\n")
    );

    // Every top-level key of the schema is in values.yaml, with its documented default.
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{CHART}/values.yaml"))?)?;
    let in_values: BTreeSet<_> = values.as_object().context("values")?.keys().collect();
    let in_schema: BTreeSet<_> = schema["properties"]
        .as_object()
        .context("properties")?
        .keys()
        .collect();
    assert_eq!(in_values, in_schema);
    Ok(())
}

/// Bad values and what the schema says about each: `helm template` must refuse every one.
const BAD_VALUES: &[(&[&str], &str)] = &[
    (
        &["--set", "replicas=3"],
        "at '': additional properties 'replicas' not allowed",
    ),
    (
        &["--set", "image.name=op"],
        "at '/image': additional properties 'name' not allowed",
    ),
    (
        &["--set", "replicaCount=0"],
        "at '/replicaCount': minimum: got 0, want 1",
    ),
    (
        &[
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=false",
        ],
        "at '/leaderElection/enabled': value must be one of true, <nil>",
    ),
    (
        &["--set", "image.pullPolicy=Sometimes"],
        "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
    ),
    (
        &["--set", "image.digest=sha256:abc"],
        "at '/image/digest': 'sha256:abc' does not match pattern",
    ),
    (
        &["--set", "nodeImage.repository="],
        "at '/nodeImage/repository': minLength: got 0, want 1",
    ),
    (
        &["--set", "watchNamespaces={Team_A}"],
        "at '/watchNamespaces/0': 'Team_A' does not match pattern",
    ),
    (
        &["--set", "watchNamespaces={a,a}"],
        "at '/watchNamespaces': items at 0 and 1 are equal",
    ),
    (
        &["--set-string", "operator.resyncInterval=5 minutes"],
        "at '/operator/resyncInterval': '5 minutes' does not match pattern",
    ),
    (
        &["--set", "operator.logFormat=xml"],
        "at '/operator/logFormat': value must be one of 'json', 'plain'",
    ),
    (
        &["--set", "runAsUser=0"],
        "at '/runAsUser': minimum: got 0, want 1",
    ),
    (
        &["--set", "httpPort=70000"],
        "at '/httpPort': maximum: got 70,000, want 65,535",
    ),
    (
        &["--set", "serviceAccount.create=yes"],
        "at '/serviceAccount/create': got string, want boolean",
    ),
    (
        &["--set", "resources.limits.memory=lots"],
        "at '/resources/limits/memory': 'lots' does not match pattern",
    ),
    (
        &["--set", "podLabels.app\\.kubernetes\\.io/name=mine"],
        "invalid propertyName 'app.kubernetes.io/name'",
    ),
    (
        &["--set", "tolerations[0].operator=Sometimes"],
        "at '/tolerations/0/operator': value must be one of 'Equal', 'Exists'",
    ),
    (
        &["--set", "affinity.nodeAffinity.near=me"],
        "at '/affinity/nodeAffinity': additional properties 'near' not allowed",
    ),
    (
        &["--set", "networkPolicy.apiServerCIDRs={10.0.0.1}"],
        "at '/networkPolicy/apiServerCIDRs/0': '10.0.0.1' does not match pattern",
    ),
    (
        &["--set", "leaderElection.leaseName=Bad_Name"],
        "at '/leaderElection/leaseName': 'Bad_Name' does not match pattern",
    ),
    (
        &["--set", "serviceMonitor.interval=often"],
        "at '/serviceMonitor/interval': 'often' does not match pattern",
    ),
];

#[test]
fn k8s_chart_schema_rejects_bad_values_with_their_messages() -> Result<()> {
    let mut failures = Vec::new();
    for (args, message) in BAD_VALUES {
        let mut full = vec!["template", "bad", CHART];
        full.extend_from_slice(args);
        let out = helm(&full)?;
        let stderr = text(&out.stderr);
        if out.status.success() {
            failures.push(format!("{args:?} was accepted"));
        } else if !stderr.contains("values don't meet the specifications of the schema")
            || !stderr.contains(message)
        {
            failures.push(format!(
                "{args:?}: expected a schema error with {message:?}, got:\n{stderr}"
            ));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n\n"));

    // `helm lint --strict` refuses a values file with a bad value too.
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad-values.yaml");
    std::fs::write(&bad, "replicaCount: 2\nleaderElection:\n  enabled: false\n")?;
    let out = helm(&[
        "lint",
        "--strict",
        CHART,
        "--values",
        &bad.display().to_string(),
    ])?;
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    ensure!(
        !out.status.success()
            && all.contains("at '/leaderElection/enabled': value must be one of true, <nil>"),
        "{all}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Static checks of the rendered manifests

/// The rules of a rendered Role or ClusterRole.
fn rules_of(doc: &Value) -> Result<Vec<PolicyRule>> {
    serde_json::from_value(doc["rules"].clone())
        .with_context(|| format!("rules of {} {}", kind(doc), name(doc)))
}

fn check_no_wildcards(doc: &Value) -> Result<()> {
    for rule in doc["rules"].as_array().into_iter().flatten() {
        for field in [
            "apiGroups",
            "resources",
            "verbs",
            "resourceNames",
            "nonResourceURLs",
        ] {
            for item in strings(&rule[field]) {
                ensure!(
                    !item.contains('*'),
                    "{} {} has a wildcard in {field}: {rule}",
                    kind(doc),
                    name(doc)
                );
            }
        }
    }
    Ok(())
}

fn grants_secrets(doc: &Value) -> bool {
    doc["rules"].as_array().into_iter().flatten().any(|r| {
        strings(&r["apiGroups"]).contains(&String::new())
            && strings(&r["resources"]).iter().any(|x| x == "secrets")
    })
}

/// What a rendering is expected to contain.
struct Expect<'a> {
    release_namespace: &'a str,
    watch: &'a [&'a str],
    replicas: i64,
    leader_election: bool,
}

/// The checks every rendering must pass: labels, RBAC, pod security, no key material.
fn check_rendered(docs: &[Value], expect: &Expect) -> Result<()> {
    let version = workspace_version()?;
    for doc in docs {
        let labels = &doc["metadata"]["labels"];
        for label in STANDARD_LABELS {
            ensure!(
                labels[label].is_string(),
                "{} {} lacks the label {label}",
                kind(doc),
                name(doc)
            );
        }
        assert_eq!(
            labels["app.kubernetes.io/version"].as_str(),
            Some(version.as_str())
        );
        // Namespaced objects go to the release namespace, except the per-namespace RBAC.
        let ns = doc["metadata"]["namespace"].as_str();
        match kind(doc) {
            "ClusterRole" | "ClusterRoleBinding" => ensure!(ns.is_none(), "{doc}"),
            "Role" | "RoleBinding" => ensure!(
                ns == Some(expect.release_namespace)
                    || ns.is_some_and(|n| expect.watch.contains(&n)),
                "{} {} in namespace {ns:?}",
                kind(doc),
                name(doc)
            ),
            _ => assert_eq!(
                ns,
                Some(expect.release_namespace),
                "{} {}",
                kind(doc),
                name(doc)
            ),
        }
        // Nothing in the chart carries key material: no Secrets at all, and no ConfigMap value
        // that looks like a key or certificate.
        ensure!(kind(doc) != "Secret", "the chart renders a Secret");
        if kind(doc) == "ConfigMap" {
            for (key, value) in doc["data"].as_object().into_iter().flatten() {
                let v = value.as_str().unwrap_or_default();
                ensure!(
                    !v.contains("PRIVATE KEY") && !v.contains("BEGIN CERTIFICATE"),
                    "key material in ConfigMap {} key {key}",
                    name(doc)
                );
            }
        }
    }

    // Selectors: only name and instance.
    let deployment = one_of_kind(docs, "Deployment")?;
    let selector = deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("Deployment selector")?;
    let keys: BTreeSet<_> = selector.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["app.kubernetes.io/instance", "app.kubernetes.io/name"])
    );
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector {
        assert_eq!(&pod_labels[k], v, "pod label {k}");
    }
    let service = one_of_kind(docs, "Service")?;
    assert_eq!(
        service["spec"]["selector"].as_object(),
        Some(selector),
        "the metrics Service selects the operator pods"
    );

    // RBAC: exactly operator/src/rbac.rs, no wildcards, Secrets only where LogClusters live.
    let expected_rules = rbac::rules();
    let expected_lease = rbac::lease_rules();
    let roles = of_kind(docs, "Role");
    let cluster_roles = of_kind(docs, "ClusterRole");
    for doc in roles.iter().chain(cluster_roles.iter()) {
        check_no_wildcards(doc)?;
    }
    if expect.watch.is_empty() {
        ensure!(
            cluster_roles.len() == 1,
            "one ClusterRole in all-namespaces mode"
        );
        assert_eq!(rules_of(cluster_roles[0])?, expected_rules);
        assert_eq!(of_kind(docs, "ClusterRoleBinding").len(), 1);
    } else {
        ensure!(
            cluster_roles.is_empty() && of_kind(docs, "ClusterRoleBinding").is_empty(),
            "nothing cluster-wide in namespaced mode"
        );
        for ns in expect.watch {
            let role = roles
                .iter()
                .find(|r| {
                    r["metadata"]["namespace"] == *ns
                        && rules_of(r).ok() == Some(expected_rules.clone())
                })
                .with_context(|| format!("no Role with the operator's rules in {ns}"))?;
            let binding = of_kind(docs, "RoleBinding")
                .into_iter()
                .find(|b| {
                    b["metadata"]["namespace"] == *ns
                        && b["roleRef"]["name"] == role["metadata"]["name"]
                })
                .with_context(|| format!("no RoleBinding for the Role in {ns}"))?;
            assert_eq!(binding["roleRef"]["kind"], "Role");
        }
        for role in &roles {
            let ns = role["metadata"]["namespace"].as_str().unwrap_or_default();
            if grants_secrets(role) {
                ensure!(
                    expect.watch.contains(&ns),
                    "Secrets granted in {ns}, which is not watched"
                );
            }
        }
    }
    let lease_roles: Vec<_> = roles
        .iter()
        .filter(|r| rules_of(r).ok() == Some(expected_lease.clone()))
        .collect();
    if expect.leader_election {
        ensure!(lease_roles.len() == 1, "one leader election Role");
        assert_eq!(
            lease_roles[0]["metadata"]["namespace"].as_str(),
            Some(expect.release_namespace)
        );
    } else {
        ensure!(
            lease_roles.is_empty(),
            "a Lease Role without leader election"
        );
    }
    // Every binding names the chart's ServiceAccount.
    let pod = &deployment["spec"]["template"]["spec"];
    let sa = pod["serviceAccountName"]
        .as_str()
        .context("serviceAccountName")?;
    for binding in of_kind(docs, "RoleBinding")
        .into_iter()
        .chain(of_kind(docs, "ClusterRoleBinding"))
    {
        let subjects = binding["subjects"].as_array().context("subjects")?;
        ensure!(subjects.len() == 1, "{binding}");
        assert_eq!(subjects[0]["kind"], "ServiceAccount");
        assert_eq!(subjects[0]["name"], sa);
        assert_eq!(subjects[0]["namespace"], expect.release_namespace);
    }
    ensure!(
        of_kind(docs, "ServiceAccount")
            .iter()
            .any(|s| name(s) == sa),
        "the ServiceAccount {sa} is rendered"
    );

    // The pod: non-root, read-only root filesystem, no privilege escalation, no capabilities.
    assert_eq!(
        deployment["spec"]["replicas"].as_i64(),
        Some(expect.replicas)
    );
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    ensure!(psc["runAsUser"].as_i64().is_none_or(|u| u > 0), "{psc}");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        ensure!(pod[host].is_null() || pod[host] == false, "{host} is set");
    }
    ensure!(
        pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|v| v["hostPath"].is_null()),
        "hostPath volume"
    );
    let containers = pod["containers"].as_array().context("containers")?;
    ensure!(
        pod["initContainers"].is_null(),
        "init containers are not expected"
    );
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    ensure!(sc["privileged"].is_null() || sc["privileged"] == false);
    assert_eq!(strings(&sc["capabilities"]["drop"]), vec!["ALL".to_owned()]);
    ensure!(sc["capabilities"]["add"].is_null(), "capabilities added");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    ensure!(
        c["resources"]["requests"]["memory"].is_string()
            && c["resources"]["limits"]["memory"].is_string(),
        "resources: {}",
        c["resources"]
    );
    // Probes on the health port.
    let port = c["ports"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "http"))
        .context("http port")?;
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
    }
    let args = strings(&c["args"]);
    let http_arg = format!("--http-addr=0.0.0.0:{}", port["containerPort"]);
    ensure!(args.contains(&http_arg), "{http_arg} missing from {args:?}");
    // No key material in the environment: only downward-API fields.
    for env in c["env"].as_array().into_iter().flatten() {
        ensure!(
            env["valueFrom"]["secretKeyRef"].is_null(),
            "Secret in env {}",
            env["name"]
        );
        let value = env["value"].as_str().unwrap_or_default();
        ensure!(
            !value.contains("PRIVATE KEY") && !value.contains("BEGIN CERTIFICATE"),
            "key material in env {}",
            env["name"]
        );
    }
    ensure!(c["envFrom"].is_null(), "envFrom pulls in unknown variables");

    // Leader election and the update strategy.
    let le = if expect.leader_election {
        "true"
    } else {
        "false"
    };
    ensure!(
        args.contains(&format!("--leader-election={le}")),
        "{args:?}"
    );
    let strategy = deployment["spec"]["strategy"]["type"].as_str();
    if expect.leader_election {
        assert_eq!(strategy, Some("RollingUpdate"));
        ensure!(args.contains(&format!(
            "--leader-election-namespace={}",
            expect.release_namespace
        )));
    } else {
        assert_eq!(
            strategy,
            Some("Recreate"),
            "without leader election two operators must never overlap"
        );
    }
    let ns_arg = args.iter().find(|a| a.starts_with("--namespace="));
    if expect.watch.is_empty() {
        ensure!(ns_arg.is_none(), "{args:?}");
    } else {
        assert_eq!(
            ns_arg.map(String::as_str),
            Some(format!("--namespace={}", expect.watch.join(",")).as_str())
        );
    }
    Ok(())
}

#[test]
fn k8s_chart_rendered_manifests_pass_the_static_checks() -> Result<()> {
    // Defaults: one replica, every namespace.
    let (_, docs) = render("lc", "ops", &[])?;
    check_rendered(
        &docs,
        &Expect {
            release_namespace: "ops",
            watch: &[],
            replicas: 1,
            leader_election: false,
        },
    )?;
    let kinds: BTreeSet<_> = docs.iter().map(kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "ServiceAccount"
        ])
    );

    // Namespaced, two replicas (leader election on automatically), NetworkPolicy, ServiceMonitor.
    let (_, docs) = render(
        "lc",
        "ops",
        &[
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "replicaCount=2",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "serviceMonitor.enabled=true",
        ],
    )?;
    check_rendered(
        &docs,
        &Expect {
            release_namespace: "ops",
            watch: &["team-a", "team-b"],
            replicas: 2,
            leader_election: true,
        },
    )?;
    // The ServiceMonitor scrapes the metrics Service's port.
    let service = one_of_kind(&docs, "Service")?;
    let monitor = one_of_kind(&docs, "ServiceMonitor")?;
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("ServiceMonitor selector")?
    {
        assert_eq!(&service["metadata"]["labels"][k], v, "label {k}");
    }
    let port = monitor["spec"]["endpoints"][0]["port"].as_str();
    ensure!(
        service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"].as_str() == port),
        "the ServiceMonitor's port {port:?} is not on the Service"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    // The NetworkPolicy: ingress only to the HTTP port; egress only to DNS, the API, the nodes.
    let policy = one_of_kind(&docs, "NetworkPolicy")?;
    assert_eq!(
        strings(&policy["spec"]["policyTypes"]),
        vec!["Ingress".to_owned(), "Egress".to_owned()]
    );
    let ingress = policy["spec"]["ingress"].as_array().context("ingress")?;
    assert_eq!(ingress.len(), 1);
    assert_eq!(ingress[0]["ports"][0]["port"], "http");
    let egress_ports: BTreeSet<i64> = policy["spec"]["egress"]
        .as_array()
        .context("egress")?
        .iter()
        .flat_map(|rule| rule["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(egress_ports, BTreeSet::from([53, 443, 6443, 8400]));
    let to_nodes = &policy["spec"]["egress"][2]["to"][0];
    assert_eq!(
        strings(&to_nodes["namespaceSelector"]["matchExpressions"][0]["values"]),
        vec!["team-a".to_owned(), "team-b".to_owned()]
    );

    // Leader election forced on with one replica; a release namespace that is also watched.
    let (_, docs) = render(
        "lc",
        "ops",
        &[
            "--set",
            "leaderElection.enabled=true",
            "--set",
            "watchNamespaces={ops}",
        ],
    )?;
    check_rendered(
        &docs,
        &Expect {
            release_namespace: "ops",
            watch: &["ops"],
            replicas: 1,
            leader_election: true,
        },
    )?;

    // Every example values file.
    for file in ci_values_files()? {
        let file = file.display().to_string();
        let values: Value = serde_yaml::from_str(&std::fs::read_to_string(&file)?)?;
        let watch: Vec<String> = strings(&values["watchNamespaces"]);
        let watch: Vec<&str> = watch.iter().map(String::as_str).collect();
        let replicas = values["replicaCount"].as_i64().unwrap_or(1);
        let leader_election = match values["leaderElection"]["enabled"].as_bool() {
            Some(explicit) => explicit,
            None => replicas > 1,
        };
        let (_, docs) = render("lc", "ops", &["--values", &file])?;
        check_rendered(
            &docs,
            &Expect {
                release_namespace: "ops",
                watch: &watch,
                replicas,
                leader_election,
            },
        )
        .with_context(|| file.clone())?;
    }
    Ok(())
}

#[test]
fn k8s_chart_image_values_select_the_images() -> Result<()> {
    let version = workspace_version()?;
    let image_of = |docs: &[Value]| -> Result<(String, Vec<String>)> {
        let c = &one_of_kind(docs, "Deployment")?["spec"]["template"]["spec"]["containers"][0];
        Ok((
            c["image"].as_str().unwrap_or_default().to_owned(),
            strings(&c["args"]),
        ))
    };
    let (_, docs) = render("lc", "ops", &[])?;
    let (image, args) = image_of(&docs)?;
    assert_eq!(
        image,
        format!("ghcr.io/logcluster/logcluster-operator:{version}")
    );
    ensure!(args.contains(&format!(
        "--default-node-image=ghcr.io/logcluster/lognode:{version}"
    )));
    let digest = format!("sha256:{}", "ab".repeat(32));
    let (_, docs) = render(
        "lc",
        "ops",
        &[
            "--set",
            "image.repository=registry.local:5000/lc/operator",
            "--set",
            "image.tag=dev",
            "--set",
            &format!("image.digest={digest}"),
            "--set",
            "nodeImage.repository=registry.local:5000/lc/lognode",
            "--set",
            "nodeImage.tag=dev",
        ],
    )?;
    let (image, args) = image_of(&docs)?;
    assert_eq!(image, format!("registry.local:5000/lc/operator@{digest}"));
    ensure!(
        args.contains(&"--default-node-image=registry.local:5000/lc/lognode:dev".to_owned()),
        "{args:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Against the real API server

static CRD: OnceLock<Result<(), String>> = OnceLock::new();

/// The shared control plane with the chart's CRD installed and established.
fn control_plane() -> Result<&'static ControlPlane> {
    let cp = k8s::shared()?;
    CRD.get_or_init(|| {
        let install = || -> Result<()> {
            let path = format!("{CHART}/crds/logcluster.yaml");
            cp.kubectl_ok(["apply", "--server-side", "-f", &path])?;
            poll("the LogCluster CRD to be established", || {
                let crd =
                    cp.kubectl_ok(["get", "crd", "logclusters.logcluster.io", "-o", "json"])?;
                let crd: Value = serde_json::from_str(&crd)?;
                Ok(crd["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    })
                    .then_some(()))
            })
        };
        install().map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)?;
    Ok(cp)
}

/// Polls `f` until it returns `Some`, for at most [`PATIENCE`].
fn poll<T>(what: &str, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::new();
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("gave up waiting for {what} (last error: {last})");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `kubectl apply --server-side` of `yaml`: first as a server-side dry-run, then for real. With
/// `ns`, objects without a namespace go there; the chart's objects each name their own.
fn dry_run_then_apply(cp: &ControlPlane, ns: Option<&str>, yaml: &str, what: &str) -> Result<()> {
    for dry_run in [true, false] {
        let mut args = vec!["apply", "--server-side", "--field-manager=chart-test"];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        if dry_run {
            args.push("--dry-run=server");
        }
        args.extend(["-f", "-"]);
        let out = cp.kubectl_with_stdin(&args, yaml)?;
        ensure!(
            out.status.success(),
            "{what} (dry run: {dry_run}): {}",
            text(&out.stderr)
        );
    }
    Ok(())
}

#[test]
fn k8s_chart_and_examples_apply_server_side_to_a_real_api_server() -> Result<()> {
    let cp = control_plane()?;
    let release_ns = cp.create_namespace("chart-apply")?;
    let team_a = cp.create_namespace("chart-team")?;
    let team_b = cp.create_namespace("chart-team")?;

    // Default values (ClusterRole) and namespaced values with leader election and a
    // NetworkPolicy, each under its own release name (ClusterRoles are cluster-wide).
    let watch = format!("watchNamespaces={{{team_a},{team_b}}}");
    let renderings: Vec<(String, Vec<&str>)> = vec![
        (format!("all-{release_ns}"), vec![]),
        (
            format!("ns-{release_ns}"),
            vec![
                "--set",
                &watch,
                "--set",
                "replicaCount=2",
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "networkPolicy.apiServerCIDRs={10.96.0.1/32}",
            ],
        ),
    ];
    for (release, extra) in &renderings {
        let (yaml, docs) = render(release, &release_ns, extra)?;
        dry_run_then_apply(cp, None, &yaml, release)?;
        // Everything the chart rendered is now in the API server.
        for doc in &docs {
            let mut args = vec!["get", kind(doc), name(doc), "-o", "name"];
            let ns_arg;
            if let Some(ns) = doc["metadata"]["namespace"].as_str() {
                ns_arg = ns.to_owned();
                args.extend(["-n", &ns_arg]);
            }
            cp.kubectl_ok(&args)
                .with_context(|| format!("{} {} after apply", kind(doc), name(doc)))?;
        }
    }
    // The namespaced rendering's RBAC, as the API server enforces it.
    let sa = format!("system:serviceaccount:{release_ns}:ns-{release_ns}-logcluster-operator");
    for (args, expected) in [
        (vec!["get", "secrets", "-n", team_a.as_str()], "yes"),
        (vec!["delete", "secrets", "-n", team_b.as_str()], "yes"),
        (vec!["list", "secrets", "-n", release_ns.as_str()], "no"),
        (vec!["list", "secrets", "--all-namespaces"], "no"),
        (vec!["create", "pods", "-n", team_a.as_str()], "no"),
        (
            vec!["patch", "logclusters.logcluster.io", "-n", team_a.as_str()],
            "yes",
        ),
        (
            vec![
                "update",
                "leases.coordination.k8s.io",
                "-n",
                release_ns.as_str(),
            ],
            "yes",
        ),
        (
            vec![
                "update",
                "leases.coordination.k8s.io",
                "-n",
                team_a.as_str(),
            ],
            "no",
        ),
        (
            vec!["list", "logclusters.logcluster.io", "--all-namespaces"],
            "no",
        ),
    ] {
        let mut full = vec!["auth", "can-i"];
        full.extend(args.iter().copied());
        full.extend(["--as", sa.as_str()]);
        let out = cp.kubectl(&full)?;
        let answer = text(&out.stdout).trim().to_owned();
        ensure!(answer == expected, "kubectl {} → {answer}", full.join(" "));
    }

    // Every example: server-side dry-run, then apply.
    let examples_ns = cp.create_namespace("chart-examples")?;
    let examples = example_files()?;
    for wanted in ["minimal.yaml", "production.yaml", "existing-ca.yaml"] {
        ensure!(
            examples.iter().any(|p| p.ends_with(wanted)),
            "examples/{wanted} is missing"
        );
    }
    for path in &examples {
        let yaml = std::fs::read_to_string(path)?;
        dry_run_then_apply(cp, Some(&examples_ns), &yaml, &path.display().to_string())?;
        for doc in parse_documents(&yaml)? {
            cp.kubectl_ok(["-n", &examples_ns, "get", "lc", name(&doc), "-o", "name"])?;
        }
    }

    // The manifests of the README's "On Kubernetes" section are valid too.
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md"))?;
    let section = readme
        .split_once("\n## On Kubernetes\n")
        .map(|(_, rest)| rest.split_once("\n## ").map_or(rest, |(s, _)| s))
        .context("README.md has no \"On Kubernetes\" section")?;
    let blocks: Vec<&str> = section
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(yaml, _)| yaml))
        .collect();
    ensure!(
        !blocks.is_empty(),
        "no YAML in the README's Kubernetes section"
    );
    for yaml in blocks {
        dry_run_then_apply(cp, Some(&examples_ns), yaml, "a README manifest")?;
    }
    Ok(())
}

#[test]
fn k8s_chart_helm_install_upgrade_and_a_refused_install() -> Result<()> {
    let cp = control_plane()?;
    let ns = cp.create_namespace("chart-helm")?;
    let release = format!("h-{ns}");
    let out = cp.helm_ok([
        "install",
        &release,
        CHART,
        "--namespace",
        &ns,
        "--set",
        &format!("watchNamespaces={{{ns}}}"),
    ])?;
    // NOTES.txt: what was installed and how to create a first LogCluster.
    for expected in [
        format!("kubectl apply -n {ns} -f examples/minimal.yaml"),
        format!("kubectl get lc -n {ns} -w"),
        "Secret demo-user-app (ca.crt, tls.crt, tls.key)".to_owned(),
        format!("a Role in each watched namespace: {ns}"),
    ] {
        ensure!(
            out.contains(&expected),
            "{expected:?} missing from the notes:\n{out}"
        );
    }
    // The inline LogCluster of the notes is valid.
    let inline = out
        .split_once("-f - <<'EOF'\n")
        .and_then(|(_, rest)| rest.split_once("\nEOF\n"))
        .map(|(manifest, _)| manifest)
        .with_context(|| format!("no inline manifest in the notes:\n{out}"))?;
    dry_run_then_apply(cp, Some(&ns), inline, "the LogCluster in the notes")?;
    let deployment = format!("{release}-logcluster-operator");
    let replicas_and_strategy = || {
        cp.kubectl_ok([
            "-n",
            &ns,
            "get",
            "deployment",
            &deployment,
            "-o",
            "jsonpath={.spec.replicas} {.spec.strategy.type}",
        ])
    };
    assert_eq!(replicas_and_strategy()?, "1 Recreate");
    let upgrade = |set: &str| {
        cp.helm([
            "upgrade",
            &release,
            CHART,
            "--namespace",
            &ns,
            "--reuse-values",
            "--set",
            set,
        ])
    };
    // Upgrade to two replicas: leader election turns on, with its Role.
    let out = upgrade("replicaCount=2")?;
    ensure!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(replicas_and_strategy()?, "2 RollingUpdate");
    cp.kubectl_ok([
        "-n",
        &ns,
        "get",
        "role",
        &format!("{deployment}-leader-election"),
    ])?;
    // Bad values stop an upgrade before anything changes.
    let out = upgrade("leaderElection.enabled=false")?;
    ensure!(
        !out.status.success()
            && text(&out.stderr)
                .contains("at '/leaderElection/enabled': value must be one of true, <nil>"),
        "{}",
        text(&out.stderr)
    );
    let history = cp.helm_ok(["history", &release, "--namespace", &ns, "-o", "json"])?;
    let history: Value = serde_json::from_str(&history)?;
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");
    cp.helm_ok(["uninstall", &release, "--namespace", &ns])?;
    let out = cp.kubectl(["-n", &ns, "get", "deployment", &deployment])?;
    ensure!(
        !out.status.success(),
        "the Deployment outlived the uninstall"
    );
    // Helm leaves CRDs in place on uninstall.
    cp.kubectl_ok(["get", "crd", "logclusters.logcluster.io", "-o", "name"])?;

    // A refused install creates nothing.
    let refused = format!("r-{ns}");
    let out = cp.helm([
        "install",
        &refused,
        CHART,
        "--namespace",
        &ns,
        "--set",
        "runAsUser=0",
    ])?;
    ensure!(
        !out.status.success()
            && text(&out.stderr).contains("at '/runAsUser': minimum: got 0, want 1"),
        "{}",
        text(&out.stderr)
    );
    let secrets = cp.kubectl_ok(["-n", &ns, "get", "secrets", "-o", "name"])?;
    ensure!(
        !secrets.contains(&refused),
        "a release record was stored: {secrets}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The chart's operator, as a process

/// The operator binary built alongside the tests (`<target>/<profile>/logcluster-operator`), or
/// `LOGCLUSTER_OPERATOR_BIN`.
fn operator_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("LOGCLUSTER_OPERATOR_BIN") {
        return Ok(PathBuf::from(path));
    }
    // Test binaries live in <target>/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .and_then(Path::parent)
        .context("unexpected test binary location")?
        .join("logcluster-operator");
    ensure!(
        path.exists(),
        "{} not found: build it first (`cargo build --workspace`; `make test` does)",
        path.display()
    );
    Ok(path)
}

/// Kills the operator if a test fails half-way.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on 127.0.0.1:`port`: (status code, body).
fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    Ok(logcluster_tests::http::get(
        &format!("127.0.0.1:{port}"),
        path,
    )?)
}

/// A kubeconfig for the test API server that acts as `user` (the admin certificate may
/// impersonate anyone): the operator then has exactly the permissions the chart granted.
fn impersonating_kubeconfig(cp: &ControlPlane, path: &Path, user: &str) -> Result<()> {
    let q = |p: &Path| Value::from(p.display().to_string()).to_string();
    let pki = cp.pki();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca}\nusers:\n- name: sa\n  user:\n    client-certificate: {cert}\n    \
         client-key: {key}\n    as: {user}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    \
         user: sa\ncurrent-context: test\n",
        server = cp.server_url(),
        ca = q(&pki.ca_cert),
        cert = q(&pki.admin_cert),
        key = q(&pki.admin_key),
        user = Value::from(user),
    );
    std::fs::write(path, text)?;
    Ok(())
}

/// The environment of a rendered container, with downward-API fields resolved as the kubelet
/// would for a pod named `pod` in `namespace`. Any other source is an error: the test must know
/// every variable the chart sets.
fn container_env(container: &Value, pod: &str, namespace: &str) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().context("env name")?.to_owned();
        let value = if let Some(v) = var["value"].as_str() {
            v.to_owned()
        } else {
            match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod.to_owned(),
                Some("metadata.namespace") => namespace.to_owned(),
                _ => bail!("env {name}: unexpected source {var}"),
            }
        };
        env.push((name, value));
    }
    Ok(env)
}

fn secret_text(secret: &Secret, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("{:?} has no {key}", secret.metadata.name))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

/// `kubectl get <kind> <name> -o json` in `ns`, or `None` when it does not exist.
fn get_json(cp: &ControlPlane, ns: &str, kind: &str, name: &str) -> Result<Option<Value>> {
    let out = cp.kubectl_ok([
        "-n",
        ns,
        "get",
        kind,
        name,
        "-o",
        "json",
        "--show-managed-fields",
        "--ignore-not-found",
    ])?;
    Ok(if out.trim().is_empty() {
        None
    } else {
        Some(serde_json::from_str(&out)?)
    })
}

/// `object` is controlled by the LogCluster `lc` and written by the operator's field manager.
fn check_owned_by(object: &Value, lc: &Value) -> Result<()> {
    let what = format!("{} {}", kind(object), name(object));
    let owner = object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["controller"] == true)
        .with_context(|| format!("{what} has no controller owner"))?;
    ensure!(
        owner["kind"] == "LogCluster" && owner["uid"] == lc["metadata"]["uid"],
        "{what} is owned by {owner}"
    );
    let managers: Vec<&str> = object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    ensure!(
        managers.contains(&"logcluster-operator"),
        "{what}: managers {managers:?}"
    );
    Ok(())
}

/// Waits until the operator has reconciled the LogCluster `name` (certificates issued, status for
/// the current generation) and every object it must own exists, controlled by it.
fn check_reconciled(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    users: &[&str],
    managed_ca: bool,
) -> Result<Value> {
    let lc = poll(&format!("LogCluster {name} to be reconciled"), || {
        let lc = get_json(cp, ns, "logcluster", name)?.context("no LogCluster")?;
        let certificates_ready = lc["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "CertificatesReady" && c["status"] == "True");
        let current = lc["status"]["observedGeneration"] == lc["metadata"]["generation"];
        ensure!(certificates_ready && current, "status {}", lc["status"]);
        Ok(Some(lc))
    })?;
    let mut owned: Vec<(&str, String)> = vec![
        ("secret", format!("{name}-node-tls")),
        ("secret", format!("{name}-operator-tls")),
        ("secret", format!("{name}-gossip")),
        ("service", name.to_owned()),
        ("service", format!("{name}-nodes")),
        ("configmap", format!("{name}-config")),
        ("statefulset", name.to_owned()),
        ("poddisruptionbudget", name.to_owned()),
    ];
    owned.extend(users.iter().map(|u| ("secret", format!("{name}-user-{u}"))));
    if managed_ca {
        owned.push(("secret", format!("{name}-ca")));
    }
    // The StatefulSet and the PDB come after the Secrets: wait for all of them.
    poll(&format!("the objects of LogCluster {name}"), || {
        let mut missing = Vec::new();
        for (kind, object) in &owned {
            match get_json(cp, ns, kind, object)? {
                Some(o) => check_owned_by(&o, &lc)?,
                None => missing.push(format!("{kind} {object}")),
            }
        }
        ensure!(missing.is_empty(), "missing {missing:?}");
        Ok(Some(()))
    })?;
    if !managed_ca {
        ensure!(
            get_json(cp, ns, "secret", &format!("{name}-ca"))?.is_none(),
            "a CA was generated although spec.tls.caSecretName is set"
        );
    }
    Ok(lc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_chart_operator_runs_with_the_rendered_deployment_and_reconciles_the_examples()
-> Result<()> {
    let cp = control_plane()?;
    let binary = operator_binary()?;
    // NB: namespaced mode. An all-namespaces operator would reconcile other tests' LogClusters
    // in the shared control plane.
    let ns = cp.create_namespace("chart-operator")?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let release = "lc";
    let (yaml, docs) = render(
        release,
        &ns,
        &[
            "--set",
            &format!("watchNamespaces={{{ns}}}"),
            // Two replicas: leader election on, as a highly available install runs it.
            "--set",
            "replicaCount=2",
            "--set",
            &format!("httpPort={port}"),
            "--set",
            "operator.adminTimeout=2s",
        ],
    )?;
    check_rendered(
        &docs,
        &Expect {
            release_namespace: &ns,
            watch: &[ns.as_str()],
            replicas: 2,
            leader_election: true,
        },
    )?;
    dry_run_then_apply(cp, None, &yaml, "the chart")?;

    // The process as the kubelet would start it: the Deployment's args and env, nothing else
    // but KUBECONFIG, which stands in for the mounted service-account token.
    let deployment = one_of_kind(&docs, "Deployment")?;
    let pod_spec = &deployment["spec"]["template"]["spec"];
    let container = &pod_spec["containers"][0];
    let args = strings(&container["args"]);
    ensure!(!args.is_empty(), "the Deployment passes no arguments");
    let pod_name = format!("{}-7d9f8-test", name(deployment));
    let env = container_env(container, &pod_name, &ns)?;
    let sa = pod_spec["serviceAccountName"]
        .as_str()
        .context("serviceAccountName")?;
    let kubeconfig = cp.dir().join(format!("kubeconfig-{ns}-operator"));
    impersonating_kubeconfig(cp, &kubeconfig, &format!("system:serviceaccount:{ns}:{sa}"))?;
    let probe_port = container["ports"][0]["containerPort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .context("container port")?;
    assert_eq!(probe_port, port);
    let readiness = container["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .context("readiness path")?;
    let liveness = container["livenessProbe"]["httpGet"]["path"]
        .as_str()
        .context("liveness path")?;

    let log_path = cp.dir().join(format!("operator-{ns}.log"));
    let log = File::create(&log_path)?;
    let child = Command::new(&binary)
        .args(&args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut running = Running(child);
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // The end of the log, for error messages.
    let log_tail = || {
        let text = logs();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };

    // Readiness as the kubelet probes it: the operator can list LogClusters with the chart's RBAC.
    let ready = poll("the readiness probe", || {
        if let Some(status) = running.0.try_wait()? {
            bail!("the operator exited ({status})");
        }
        Ok(http_get(port, readiness).ok().filter(|(c, _)| *c == 200))
    });
    ready.with_context(|| format!("end of the operator log:\n{}", log_tail()))?;
    assert_eq!(http_get(port, liveness)?.0, 200);

    // The existing CA the existing-ca example names.
    let ca = logcluster_certs::CertificateAuthority::generate(
        "Company CA",
        Duration::from_secs(365 * 24 * 3600),
    )?;
    let pki = tempfile::tempdir()?;
    let (ca_cert, ca_key) = (pki.path().join("ca.pem"), pki.path().join("ca-key.pem"));
    std::fs::write(&ca_cert, ca.cert_pem())?;
    std::fs::write(&ca_key, ca.key_pem())?;
    cp.kubectl_ok([
        "-n",
        &ns,
        "create",
        "secret",
        "tls",
        "company-ca",
        &format!("--cert={}", ca_cert.display()),
        &format!("--key={}", ca_key.display()),
    ])?;

    let mut expected = BTreeMap::new();
    for path in example_files()? {
        let yaml = std::fs::read_to_string(&path)?;
        dry_run_then_apply(cp, Some(&ns), &yaml, &path.display().to_string())?;
        for doc in parse_documents(&yaml)? {
            let users: Vec<String> = doc["spec"]["acl"]["users"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u["name"].as_str().map(str::to_owned))
                .collect();
            let managed_ca = doc["spec"]["tls"]["caSecretName"].is_null();
            expected.insert(name(&doc).to_owned(), (users, managed_ca, doc.clone()));
        }
    }
    ensure!(expected.len() >= 3, "{:?}", expected.keys());

    let client = cp.kube_client().await?;
    let node_image = args
        .iter()
        .find_map(|a| a.strip_prefix("--default-node-image="))
        .context("--default-node-image")?;
    for (lc_name, (users, managed_ca, doc)) in &expected {
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        let lc = check_reconciled(cp, &ns, lc_name, &users, *managed_ca)
            .with_context(|| format!("end of the operator log:\n{}", log_tail()))?;
        let sts = Api::<StatefulSet>::namespaced(client.clone(), &ns)
            .get(lc_name)
            .await?;
        let sts_spec = sts.spec.context("StatefulSet spec")?;
        let pod = sts_spec.template.spec.context("pod spec")?;
        // The chart's --default-node-image reached the nodes (no example sets spec.image).
        ensure!(doc["spec"]["image"].is_null());
        assert_eq!(pod.containers[0].image.as_deref(), Some(node_image));
        // Storage class and resources from the example made it into the StatefulSet.
        let claim = &sts_spec
            .volume_claim_templates
            .as_ref()
            .and_then(|t| t.first().cloned())
            .context("volume claim template")?;
        let claim_spec = claim.spec.as_ref().context("claim spec")?;
        assert_eq!(
            claim_spec.storage_class_name.as_deref(),
            doc["spec"]["storage"]["storageClassName"].as_str(),
            "{lc_name}"
        );
        if let Some(cpu) = doc["spec"]["resources"]["requests"]["cpu"].as_str() {
            let requests = pod.containers[0]
                .resources
                .as_ref()
                .and_then(|r| r.requests.clone())
                .context("requests")?;
            assert_eq!(requests.get("cpu").map(|q| q.0.as_str()), Some(cpu));
        }
        // The ACL lists every user.
        let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get(&format!("{lc_name}-config"))
            .await?;
        let policy = cm
            .data
            .as_ref()
            .and_then(|d| d.get("policy.csv"))
            .context("policy.csv")?;
        for user in &users {
            ensure!(
                policy.contains(&format!("p, {user}, ")),
                "{user} missing:\n{policy}"
            );
        }
        if !managed_ca {
            // Certificates come from the CA in the Secret the example names.
            let node = Api::<Secret>::namespaced(client.clone(), &ns)
                .get(&format!("{lc_name}-node-tls"))
                .await?;
            let cert = logcluster_certs::inspect(&secret_text(&node, "tls.crt")?)?;
            let ca_info = logcluster_certs::inspect(ca.cert_pem())?;
            assert_eq!(cert.issuer, ca_info.subject);
            assert_eq!(secret_text(&node, "ca.crt")?.trim(), ca.cert_pem().trim());
        }
        let status = lc["status"].to_string();
        ensure!(
            !status.contains("PRIVATE KEY") && !status.contains("BEGIN CERTIFICATE"),
            "key material in the status of {lc_name}"
        );
    }

    // Leader election: the Lease in the release namespace, held under the pod's name.
    let lease_name = args
        .iter()
        .find_map(|a| a.strip_prefix("--leader-election-lease-name="))
        .context("--leader-election-lease-name")?;
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get(lease_name)
        .await?;
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(pod_name.as_str())
    );

    // The chart's RBAC was enough: the API server never refused the operator.
    let (code, metrics) = http_get(port, "/metrics")?;
    assert_eq!(code, 200);
    ensure!(
        !metrics.contains("reason=\"kube_forbidden\""),
        "the operator was refused by RBAC:\n{metrics}\nend of its log:\n{}",
        log_tail()
    );
    ensure!(
        metrics.contains("logcluster_operator_leader 1"),
        "{metrics}"
    );
    let all_logs = logs();
    ensure!(
        !all_logs.contains("PRIVATE KEY"),
        "key material in the operator's log"
    );

    // SIGTERM, as the kubelet stops a pod: a clean exit.
    let pid = libc::pid_t::try_from(running.0.id())?;
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    ensure!(
        unsafe { libc::kill(pid, libc::SIGTERM) } == 0,
        "kill failed"
    );
    let status = poll("the operator to exit", || Ok(running.0.try_wait()?))?;
    ensure!(
        status.success(),
        "exit {status}; end of the log:\n{}",
        log_tail()
    );
    Ok(())
}
