//! Authorization: may `subject` perform `action` on `object`?
//!
//! [`CasbinAuthorizer`] evaluates a casbin model and policy. It accepts proglog's `model.conf`
//! and `policy.csv` unchanged; without a model file it uses [`DEFAULT_MODEL`], proglog's ACL
//! model extended with roles (`g, subject, role`) and a wildcard object (`p, sub, *, act`
//! grants `act` on every log). Everything not allowed is denied.
//!
//! The node asks with [`actions`] and an object that is a log name or [`WILDCARD_OBJECT`]:
//!
//! ```text
//! p, root, *, produce          # proglog's policy.csv works as is
//! p, root, *, consume
//! p, node, *, replicate        # Raft peer RPCs: the node role only
//! p, node, *, admin
//! g, lc-0, node                # node certificates' subjects hold the node role
//! ```
//!
//! Hot path: each check reads an `Arc` snapshot of a prebuilt enforcer under a read lock; a
//! reload builds a new enforcer off to the side (async) and swaps the `Arc`, so checks never
//! wait for file I/O or parsing. A reload whose model or policy is invalid is refused and logged,
//! and the previous policy stays in force.
//!
//! NB: casbin-rs treats `&str` arguments of `Enforcer::new` as file paths. We read files
//! ourselves and pass text through `DefaultModel::from_str` and `StringAdapter`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use casbin::{CoreApi, DefaultModel, Enforcer, Model, StringAdapter};
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::AuthError;
use super::watch::{Reload, WatchedFiles, spawn_poller};

/// The embedded default model (see the module documentation).
pub const DEFAULT_MODEL: &str = include_str!("model.conf");

/// Object meaning "every log" (proglog's `objectWildcard`).
pub const WILDCARD_OBJECT: &str = "*";

/// Actions the node checks.
pub mod actions {
    /// Append records (`Produce`, `ProduceStream`, batch produce).
    pub const PRODUCE: &str = "produce";
    /// Read records (`Consume`, `ConsumeStream`, `GetServers`).
    pub const CONSUME: &str = "consume";
    /// Raft peer RPCs (`raft.v1`): node certificates only.
    pub const REPLICATE: &str = "replicate";
    /// Membership changes and leadership transfer (`admin.v1`).
    pub const ADMIN: &str = "admin";
}

/// A refused or failed authorization check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    /// The policy does not allow it. Maps to gRPC `PERMISSION_DENIED`.
    #[error("{subject} is not permitted to {action} on {object}")]
    Denied {
        /// Who asked.
        subject: String,
        /// On what.
        object: String,
        /// To do what.
        action: String,
    },
    /// The policy could not be evaluated (treated as a denial). Maps to gRPC `INTERNAL`.
    #[error("authorization check failed: {0}")]
    Evaluation(String),
}

impl From<AuthzError> for tonic::Status {
    fn from(e: AuthzError) -> Self {
        match e {
            AuthzError::Denied { .. } => tonic::Status::permission_denied(e.to_string()),
            AuthzError::Evaluation(_) => tonic::Status::internal(e.to_string()),
        }
    }
}

/// Decides whether a subject may perform an action on an object. Default deny.
pub trait Authorizer: Send + Sync {
    /// `Ok(())` when allowed.
    fn authorize(&self, subject: &str, object: &str, action: &str) -> Result<(), AuthzError>;
}

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ModelSource {
    Embedded,
    File(PathBuf),
}

/// Where the policy and model text come from, for reloads.
#[derive(Debug, Clone)]
enum PolicySource {
    /// Fixed text: never reloaded.
    Text,
    /// Files polled for changes.
    Files { model: ModelSource, policy: PathBuf },
}

struct AuthzState {
    source: PolicySource,
    enforcer: RwLock<Arc<Enforcer>>,
    watched: Option<tokio::sync::Mutex<WatchedFiles>>,
    generation: watch::Sender<u64>,
}

/// The casbin [`Authorizer`]. Cheap to clone; clones share the policy.
#[derive(Clone)]
pub struct CasbinAuthorizer {
    state: Arc<AuthzState>,
}

impl fmt::Debug for CasbinAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CasbinAuthorizer")
            .field("source", &self.state.source)
            .finish()
    }
}

impl CasbinAuthorizer {
    /// An authorizer from model and policy text (no reload). Use [`DEFAULT_MODEL`] for the
    /// default model.
    pub async fn from_text(model: &str, policy: &str) -> Result<Self, AuthError> {
        let enforcer = build_enforcer(model, "text", policy, "text").await?;
        Ok(Self::with_state(PolicySource::Text, enforcer, None))
    }

    /// An authorizer from a policy file and an optional model file (`None`: [`DEFAULT_MODEL`]).
    /// The files can be reloaded with [`CasbinAuthorizer::reload_now`] or
    /// [`CasbinAuthorizer::spawn_watcher`].
    pub async fn from_files(model: Option<&Path>, policy: &Path) -> Result<Self, AuthError> {
        let model = match model {
            Some(path) => ModelSource::File(path.to_path_buf()),
            None => ModelSource::Embedded,
        };
        let paths = watched_paths(&model, policy);
        let mut contents = Vec::with_capacity(paths.len());
        for path in &paths {
            contents.push(
                tokio::fs::read(path)
                    .await
                    .map_err(|e| AuthError::io(path, e))?,
            );
        }
        let enforcer = enforcer_from_contents(&model, policy, &contents).await?;
        Ok(Self::with_state(
            PolicySource::Files {
                model,
                policy: policy.to_path_buf(),
            },
            enforcer,
            Some(WatchedFiles::new(paths, contents)),
        ))
    }

    fn with_state(source: PolicySource, enforcer: Enforcer, watched: Option<WatchedFiles>) -> Self {
        CasbinAuthorizer {
            state: Arc::new(AuthzState {
                source,
                enforcer: RwLock::new(Arc::new(enforcer)),
                watched: watched.map(tokio::sync::Mutex::new),
                generation: watch::Sender::new(0),
            }),
        }
    }

    /// Re-reads the model and policy files now. `Ok(true)` when they changed and the new
    /// policy is in force, `Ok(false)` when unchanged (or built from text), `Err` when the new
    /// files are invalid: the previous policy stays in force.
    pub async fn reload_now(&self) -> Result<bool, AuthError> {
        self.state.reload().await
    }

    /// Polls the files every `every` and reloads them when their contents change; failures are
    /// logged and keep the previous policy. Ends when every clone has been dropped.
    pub fn spawn_watcher(&self, every: Duration) -> JoinHandle<()> {
        spawn_poller(Arc::downgrade(&self.state), every)
    }

    /// A counter that increases on every successful reload.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.state.generation.subscribe()
    }
}

impl Authorizer for CasbinAuthorizer {
    fn authorize(&self, subject: &str, object: &str, action: &str) -> Result<(), AuthzError> {
        let enforcer = self.state.enforcer.read().clone();
        match enforcer.enforce((subject, object, action)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(AuthzError::Denied {
                subject: subject.to_owned(),
                object: object.to_owned(),
                action: action.to_owned(),
            }),
            Err(e) => Err(AuthzError::Evaluation(e.to_string())),
        }
    }
}

impl Reload for AuthzState {
    const WHAT: &'static str = "casbin policy";

    async fn reload(&self) -> Result<bool, AuthError> {
        let (PolicySource::Files { model, policy }, Some(watched)) = (&self.source, &self.watched)
        else {
            return Ok(false);
        };
        let mut watched = watched.lock().await;
        let Some(contents) = watched.changed().await? else {
            return Ok(false);
        };
        let enforcer = enforcer_from_contents(model, policy, &contents).await?;
        *self.enforcer.write() = Arc::new(enforcer);
        self.generation.send_modify(|g| *g += 1);
        tracing::info!(policy = %policy.display(), "reloaded casbin policy");
        Ok(true)
    }
}

fn watched_paths(model: &ModelSource, policy: &Path) -> Vec<PathBuf> {
    match model {
        ModelSource::Embedded => vec![policy.to_path_buf()],
        ModelSource::File(model) => vec![model.clone(), policy.to_path_buf()],
    }
}

/// Builds an enforcer from the watched files' contents (`[model,] policy`).
async fn enforcer_from_contents(
    model: &ModelSource,
    policy: &Path,
    contents: &[Vec<u8>],
) -> Result<Enforcer, AuthError> {
    let text = |path: &Path, bytes: &[u8]| {
        String::from_utf8(bytes.to_vec()).map_err(|_| AuthError::Pem {
            path: path.to_path_buf(),
            reason: "not UTF-8 text".to_owned(),
        })
    };
    let policy_name = policy.display().to_string();
    match (model, contents) {
        (ModelSource::Embedded, [policy_bytes]) => {
            let policy_text = text(policy, policy_bytes)?;
            build_enforcer(
                DEFAULT_MODEL,
                "embedded default model",
                &policy_text,
                &policy_name,
            )
            .await
        }
        (ModelSource::File(model_path), [model_bytes, policy_bytes]) => {
            let model_text = text(model_path, model_bytes)?;
            let policy_text = text(policy, policy_bytes)?;
            let model_name = model_path.display().to_string();
            build_enforcer(&model_text, &model_name, &policy_text, &policy_name).await
        }
        _ => Err(AuthError::Policy {
            source_name: policy_name,
            reason: "internal error: unexpected number of files".to_owned(),
        }),
    }
}

/// Parses and checks a model and a policy, and builds an enforcer from them.
///
/// casbin itself silently skips policy lines of unknown types and accepts lines with a wrong
/// number of fields, so a typo could quietly revoke (or, with a permissive matcher, grant)
/// access; we refuse such policies instead. We also refuse a model whose request is not
/// `(sub, obj, act)`, whose matcher does not evaluate, or that allows a subject the policy has
/// never heard of (default deny).
async fn build_enforcer(
    model_text: &str,
    model_name: &str,
    policy_text: &str,
    policy_name: &str,
) -> Result<Enforcer, AuthError> {
    let model_err = |reason: String| AuthError::Model {
        source_name: model_name.to_owned(),
        reason,
    };
    let model = DefaultModel::from_str(model_text)
        .await
        .map_err(|e| model_err(e.to_string()))?;

    let sections = model.get_model();
    let request_arity = sections
        .get("r")
        .and_then(|r| r.get("r"))
        .map(|r| r.tokens.len());
    if request_arity != Some(3) {
        return Err(model_err(
            "the request definition must be `r = sub, obj, act`".to_owned(),
        ));
    }
    if !sections.get("m").is_some_and(|m| m.contains_key("m")) {
        return Err(model_err("no matcher `m` in [matchers]".to_owned()));
    }
    let mut arities = std::collections::HashMap::new();
    if let Some(p) = sections.get("p") {
        for (key, assertion) in p {
            arities.insert(key.clone(), assertion.tokens.len());
        }
    }
    if let Some(g) = sections.get("g") {
        for (key, assertion) in g {
            arities.insert(key.clone(), assertion.value.split(',').count());
        }
    }
    if !arities.contains_key("p") {
        return Err(model_err("no policy definition `p`".to_owned()));
    }
    check_policy(policy_text, policy_name, &arities)?;

    let adapter = StringAdapter::new(policy_text);
    let enforcer = Enforcer::new(model, adapter)
        .await
        .map_err(|e| AuthError::Policy {
            source_name: policy_name.to_owned(),
            reason: e.to_string(),
        })?;

    // A subject that cannot appear in any policy (it contains a NUL) must be denied: this
    // evaluates the matcher once (catching errors that would otherwise surface on the first
    // request) and enforces default deny.
    let stranger = "\u{0}logcluster-nobody";
    match enforcer.enforce((stranger, WILDCARD_OBJECT, actions::CONSUME)) {
        Ok(false) => Ok(enforcer),
        Ok(true) => Err(model_err(
            "the model allows a subject that no policy line names; LogCluster requires default deny"
                .to_owned(),
        )),
        Err(e) => Err(model_err(format!("the matcher does not evaluate: {e}"))),
    }
}

/// Checks every policy line: a known policy type and the model's number of fields.
fn check_policy(
    policy_text: &str,
    policy_name: &str,
    arities: &std::collections::HashMap<String, usize>,
) -> Result<(), AuthError> {
    for (index, line) in policy_text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_csv(line);
        let line_err = |reason: String| AuthError::Policy {
            source_name: policy_name.to_owned(),
            reason: format!("line {}: {reason}: {line:?}", index + 1),
        };
        let (ptype, values) = fields
            .split_first()
            .ok_or_else(|| line_err("empty rule".to_owned()))?;
        let Some(&arity) = arities.get(ptype.as_str()) else {
            return Err(line_err(format!(
                "unknown policy type {ptype:?} (the model defines {})",
                sorted_keys(arities)
            )));
        };
        if values.len() != arity {
            return Err(line_err(format!(
                "{ptype} rules have {arity} fields, this one has {}",
                values.len()
            )));
        }
        if values.iter().any(String::is_empty) {
            return Err(line_err("empty field".to_owned()));
        }
    }
    Ok(())
}

fn sorted_keys(map: &std::collections::HashMap<String, usize>) -> String {
    let mut keys: Vec<_> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys.join(", ")
}

/// Splits a CSV line the way casbin does: commas outside double quotes, fields trimmed,
/// surrounding quotes removed.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => fields.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    fields.push(current);
    fields
        .into_iter()
        .map(|f| {
            let f = f.trim();
            f.strip_prefix('"')
                .and_then(|f| f.strip_suffix('"'))
                .unwrap_or(f)
                .to_owned()
        })
        .collect()
}
