//! Mocked Kubernetes API (`tower_test::mock`) and a scripted [`NodeAdmin`], for reconcile
//! branches that are hard to reach against a real API server: API errors, a missing CA Secret,
//! admin steps against a cluster in a given state, cleanup.
//!
//! The mock answers like a very small API server (GET from a map of objects, server-side apply
//! echoes the object back, lists are empty unless given, deletes succeed) and records every
//! request, so a test states the situation, runs one reconcile and asserts what was sent.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use logcluster_api::admin_v1::{ClusterStatusResponse, MemberRole, MemberStatus};
use serde_json::{Value, json};

use crate::certificates::ClientTls;
use crate::controller::Context;
use crate::metrics::Metrics;
use crate::node_client::{NodeAdmin, NodeConnector};
use crate::node_id::NodeId;
use crate::resources::BuildSettings;
use crate::resources::names::ClusterNames;
use crate::{Error, Result};

/// One request the operator sent.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// Body as JSON (`Null` when empty or not JSON).
    pub body: Value,
}

impl Recorded {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

type Override = Box<dyn Fn(&Method, &str, &Value) -> Option<(StatusCode, Value)> + Send + Sync>;

/// A small fake API server.
#[derive(Clone, Default)]
pub struct MockApi {
    objects: Arc<Mutex<HashMap<String, Value>>>,
    lists: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    overrides: Arc<Mutex<Vec<Override>>>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
}

fn not_found(path: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
               "message": format!("{path} not found"), "code": 404}),
    )
}

/// A `Status` error body.
pub fn status_error(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
           "message": message, "code": code})
}

impl MockApi {
    /// A client talking to a new mock.
    pub fn start() -> (Self, kube::Client) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = MockApi::default();
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let uri = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let (status, answer) = server.answer(&parts.method, &uri, &body);
                server.recorded.lock().unwrap().push(Recorded {
                    method: parts.method.clone(),
                    uri,
                    body,
                });
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
        (api, kube::Client::new(service, "default"))
    }

    /// Makes `GET path` return `object`.
    pub fn put(&self, path: &str, object: Value) {
        self.objects.lock().unwrap().insert(path.to_owned(), object);
    }

    /// Makes `GET path` (a list) return these items.
    pub fn put_list(&self, path: &str, items: Vec<Value>) {
        self.lists.lock().unwrap().insert(path.to_owned(), items);
    }

    /// Answers requests `f` matches with its answer (checked before the defaults).
    pub fn on(
        &self,
        f: impl Fn(&Method, &str, &Value) -> Option<(StatusCode, Value)> + Send + Sync + 'static,
    ) {
        self.overrides.lock().unwrap().push(Box::new(f));
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    /// Requests with this method whose path ends with `suffix`.
    pub fn find(&self, method: &Method, suffix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path().ends_with(suffix))
            .collect()
    }

    fn answer(&self, method: &Method, uri: &str, body: &Value) -> (StatusCode, Value) {
        for f in self.overrides.lock().unwrap().iter() {
            if let Some(answer) = f(method, uri, body) {
                return answer;
            }
        }
        let path = uri.split('?').next().unwrap_or_default();
        match *method {
            Method::GET => {
                if let Some(items) = self.lists.lock().unwrap().get(path) {
                    return (
                        StatusCode::OK,
                        json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
                    );
                }
                match self.objects.lock().unwrap().get(path) {
                    Some(o) => (StatusCode::OK, o.clone()),
                    // A list of a collection nobody filled: empty.
                    None if uri.contains("labelSelector") || is_collection(path) => (
                        StatusCode::OK,
                        json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}),
                    ),
                    None => not_found(path),
                }
            }
            Method::PATCH if body.is_array() => {
                // A JSON patch (the finalizer helper): answer with the stored object.
                match self.objects.lock().unwrap().get(path) {
                    Some(o) => (StatusCode::OK, o.clone()),
                    None => not_found(path),
                }
            }
            Method::PATCH => {
                // Server-side apply and merge patches: echo the object with server fields.
                let mut object = self
                    .objects
                    .lock()
                    .unwrap()
                    .get(path.trim_end_matches("/status"))
                    .cloned()
                    .unwrap_or(json!({}));
                merge(&mut object, body);
                if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.entry("uid")
                        .or_insert(json!("00000000-0000-4000-8000-000000000000"));
                    meta.insert("resourceVersion".into(), json!("2"));
                }
                (StatusCode::OK, object)
            }
            Method::POST => (StatusCode::CREATED, body.clone()),
            Method::DELETE => (
                StatusCode::OK,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                status_error(405, "MethodNotAllowed", ""),
            ),
        }
    }
}

fn is_collection(path: &str) -> bool {
    // .../namespaces/<ns>/<plural> has an even number of segments after the group version.
    let plural = path.rsplit('/').next().unwrap_or_default();
    ["persistentvolumeclaims", "secrets", "events"].contains(&plural)
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// A scripted admin API: answers `ClusterStatus` per node from a table, records every call and
/// fails the calls it is told to.
#[derive(Clone, Default)]
pub struct FakeAdmin {
    pub status: Arc<Mutex<BTreeMap<NodeId, ClusterStatusResponse>>>,
    pub calls: Arc<Mutex<Vec<String>>>,
    pub fail: Arc<Mutex<Vec<&'static str>>>,
}

impl FakeAdmin {
    /// Every node in `answering` reports `leader` leading `voters` (plus `learners`).
    pub fn led(
        leader: NodeId,
        voters: &[NodeId],
        learners: &[NodeId],
        answering: &[NodeId],
    ) -> Self {
        let mut members: Vec<MemberStatus> = voters
            .iter()
            .map(|&id| MemberStatus {
                node_id: id,
                rpc_addr: format!("n{id}:8400"),
                role: if id == leader {
                    MemberRole::Leader
                } else {
                    MemberRole::Voter
                } as i32,
                matched_index: 10,
                lag: 0,
                healthy: true,
            })
            .collect();
        members.extend(learners.iter().map(|&id| MemberStatus {
            node_id: id,
            rpc_addr: format!("n{id}:8400"),
            role: MemberRole::Learner as i32,
            matched_index: 1,
            lag: 9,
            healthy: true,
        }));
        let fake = FakeAdmin::default();
        for &node in answering {
            fake.status.lock().unwrap().insert(
                node,
                ClusterStatusResponse {
                    node_id: node,
                    leader_id: Some(leader),
                    term: 2,
                    commit_index: 10,
                    members: members.clone(),
                    ..ClusterStatusResponse::default()
                },
            );
        }
        fake
    }

    /// Calls so far (`"remove_node via=2 node=2"`, …).
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, name: &'static str, call: String) -> Result<()> {
        self.calls.lock().unwrap().push(call);
        if self.fail.lock().unwrap().contains(&name) {
            return Err(Error::Admin {
                node: "fake".into(),
                reason: format!("{name} failed (scripted)"),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl NodeAdmin for FakeAdmin {
    async fn cluster_status(&self, node: NodeId) -> Result<ClusterStatusResponse> {
        self.status
            .lock()
            .unwrap()
            .get(&node)
            .cloned()
            .ok_or_else(|| Error::Admin {
                node: format!("node {node}"),
                reason: "Unavailable: connection refused".into(),
            })
    }
    async fn initialize(&self, node: NodeId) -> Result<bool> {
        self.record("initialize", format!("initialize node={node}"))?;
        Ok(true)
    }
    async fn add_node(&self, via: NodeId, node: NodeId) -> Result<()> {
        self.record("add_node", format!("add_node via={via} node={node}"))
    }
    async fn remove_node(&self, via: NodeId, node: NodeId) -> Result<()> {
        self.record("remove_node", format!("remove_node via={via} node={node}"))
    }
    async fn transfer_leader(&self, via: NodeId, to: NodeId) -> Result<()> {
        self.record(
            "transfer_leader",
            format!("transfer_leader via={via} to={to}"),
        )
    }
}

/// Hands out one [`FakeAdmin`] and remembers the credentials it was given.
#[derive(Clone, Default)]
pub struct FakeConnector {
    pub admin: FakeAdmin,
    pub connected_with: Arc<Mutex<Vec<String>>>,
}

impl NodeConnector for FakeConnector {
    fn connect(&self, _names: &ClusterNames, tls: &ClientTls) -> Result<Arc<dyn NodeAdmin>> {
        let cn = logcluster_certs::inspect(&tls.cert_pem)
            .ok()
            .and_then(|i| i.subject_common_name)
            .unwrap_or_default();
        self.connected_with.lock().unwrap().push(cn);
        Ok(Arc::new(self.admin.clone()))
    }
}

/// A context over the mock API and a fake admin.
pub fn context(client: kube::Client, connector: FakeConnector) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        BuildSettings::default(),
        Arc::new(connector),
        Arc::new(Metrics::new()),
    ))
}
