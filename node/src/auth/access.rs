//! Who is calling and may they: the verified certificate subject checked against the ACL.

use std::sync::Arc;

use tonic::{Request, Status};

use logcluster_api::errors::{meta, metadata as kv, reason, refusal};
use tonic::Code;

use super::authz::{Authorizer, AuthzError};
use super::identity;

/// Object of every check today: proglog authorizes on the wildcard object.
pub const OBJECT_ANY: &str = "*";

/// ACL actions.
pub mod action {
    /// Append records.
    pub const PRODUCE: &str = "produce";
    /// Read records and the member list.
    pub const CONSUME: &str = "consume";
    /// Raft peer RPCs (node role only).
    pub const REPLICATE: &str = "replicate";
    /// Membership and leadership changes.
    pub const ADMIN: &str = "admin";
}

/// Authenticates (verified peer certificate → subject) and authorizes (casbin) requests.
#[derive(Clone)]
pub struct AccessControl {
    authorizer: Arc<dyn Authorizer>,
}

impl AccessControl {
    pub fn new(authorizer: Arc<dyn Authorizer>) -> Self {
        AccessControl { authorizer }
    }

    /// The caller's subject, or `UNAUTHENTICATED`.
    pub fn subject<T>(&self, request: &Request<T>) -> Result<String, Status> {
        identity::subject_from_request(request).map_err(|e| unauthenticated(&e.to_string()))
    }

    /// The caller's subject if it may do `action` on any object; `UNAUTHENTICATED` or
    /// `PERMISSION_DENIED` otherwise.
    pub fn check<T>(&self, request: &Request<T>, action: &str) -> Result<String, Status> {
        let subject = self.subject(request)?;
        self.check_subject(&subject, action)?;
        Ok(subject)
    }

    /// Whether an already-authenticated subject may do `action`.
    pub fn check_subject(&self, subject: &str, action: &str) -> Result<(), Status> {
        match self.authorizer.authorize(subject, OBJECT_ANY, action) {
            Ok(()) => Ok(()),
            Err(AuthzError::Denied { .. }) => Err(permission_denied(subject, OBJECT_ANY, action)),
            Err(e @ AuthzError::Evaluation(_)) => {
                tracing::error!(error = %e, subject, action, "authorization check failed; denying");
                Err(permission_denied(subject, OBJECT_ANY, action))
            }
        }
    }
}

/// `PERMISSION_DENIED` from the ACL.
fn permission_denied(subject: &str, object: &str, action: &str) -> Status {
    refusal(
        Code::PermissionDenied,
        reason::PERMISSION_DENIED,
        kv([
            (meta::SUBJECT, subject.to_owned()),
            (meta::OBJECT, object.to_owned()),
            (meta::ACTION, action.to_owned()),
            (meta::WRITE_OUTCOME, meta::WRITE_NOT_APPLIED.into()),
        ]),
        format!("subject `{subject}` is not permitted to {action} on `{object}`"),
    )
}

/// `UNAUTHENTICATED`: no verified client identity.
fn unauthenticated(why: &str) -> Status {
    refusal(
        Code::Unauthenticated,
        reason::UNAUTHENTICATED,
        kv([(meta::WRITE_OUTCOME, meta::WRITE_NOT_APPLIED.into())]),
        format!("no verified client identity: {why}"),
    )
}
