//! Authorization: proglog compatibility, default deny, roles, and live policy reload.

use std::time::Duration;

use super::fixtures::replace_file;
use crate::auth::authz::{
    Authorizer, AuthzError, CasbinAuthorizer, DEFAULT_MODEL, WILDCARD_OBJECT, actions,
};

/// proglog's `test/model.conf`, byte for byte in content.
const PROGLOG_MODEL: &str = "# Request definition
[request_definition]
r = sub, obj, act

# Policy definition
[policy_definition]
p = sub, obj, act

# Policy effect
[policy_effect]
e = some(where (p.eft == allow))

# Matchers
[matchers]
m = r.sub == p.sub && r.obj == p.obj && r.act == p.act
";

/// proglog's `test/policy.csv`.
const PROGLOG_POLICY: &str = "p, root, *, produce
p, root, *, consume
";

fn allowed(authz: &impl Authorizer, sub: &str, obj: &str, act: &str) -> bool {
    match authz.authorize(sub, obj, act) {
        Ok(()) => true,
        Err(AuthzError::Denied { .. }) => false,
        Err(e) => panic!("evaluation error: {e}"),
    }
}

#[tokio::test]
async fn proglog_model_and_policy_work_unchanged() {
    let authz = CasbinAuthorizer::from_text(PROGLOG_MODEL, PROGLOG_POLICY)
        .await
        .unwrap();
    assert!(allowed(&authz, "root", WILDCARD_OBJECT, actions::PRODUCE));
    assert!(allowed(&authz, "root", WILDCARD_OBJECT, actions::CONSUME));
    assert!(!allowed(
        &authz,
        "nobody",
        WILDCARD_OBJECT,
        actions::PRODUCE
    ));
    assert!(!allowed(
        &authz,
        "nobody",
        WILDCARD_OBJECT,
        actions::CONSUME
    ));
    assert!(!allowed(
        &authz,
        "root",
        WILDCARD_OBJECT,
        actions::REPLICATE
    ));

    // proglog's policy means the same under our default model.
    let authz = CasbinAuthorizer::from_text(DEFAULT_MODEL, PROGLOG_POLICY)
        .await
        .unwrap();
    assert!(allowed(&authz, "root", WILDCARD_OBJECT, actions::PRODUCE));
    assert!(!allowed(
        &authz,
        "nobody",
        WILDCARD_OBJECT,
        actions::CONSUME
    ));
}

#[tokio::test]
async fn proglog_files_load_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.conf");
    let policy = dir.path().join("policy.csv");
    std::fs::write(&model, PROGLOG_MODEL).unwrap();
    std::fs::write(&policy, PROGLOG_POLICY).unwrap();
    let authz = CasbinAuthorizer::from_files(Some(&model), &policy)
        .await
        .unwrap();
    assert!(allowed(&authz, "root", WILDCARD_OBJECT, actions::CONSUME));
    assert!(!allowed(&authz, "alice", WILDCARD_OBJECT, actions::CONSUME));
}

#[tokio::test]
async fn everything_is_denied_by_default() {
    let authz = CasbinAuthorizer::from_text(DEFAULT_MODEL, "")
        .await
        .unwrap();
    for action in [
        actions::PRODUCE,
        actions::CONSUME,
        actions::REPLICATE,
        actions::ADMIN,
    ] {
        assert!(!allowed(&authz, "root", WILDCARD_OBJECT, action));
        assert!(!allowed(&authz, "", "", action));
    }
    let err = authz.authorize("root", "*", "produce").unwrap_err();
    assert_eq!(err.to_string(), "root is not permitted to produce on *");
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::PermissionDenied
    );
}

#[tokio::test]
async fn produce_only_and_consume_only_subjects_stay_in_their_lane() {
    let policy = "p, writer, *, produce\np, reader, *, consume\n";
    let authz = CasbinAuthorizer::from_text(DEFAULT_MODEL, policy)
        .await
        .unwrap();
    assert!(allowed(&authz, "writer", WILDCARD_OBJECT, actions::PRODUCE));
    assert!(!allowed(
        &authz,
        "writer",
        WILDCARD_OBJECT,
        actions::CONSUME
    ));
    assert!(allowed(&authz, "reader", WILDCARD_OBJECT, actions::CONSUME));
    assert!(!allowed(
        &authz,
        "reader",
        WILDCARD_OBJECT,
        actions::PRODUCE
    ));
    // A wildcard grant covers named logs.
    assert!(allowed(&authz, "writer", "orders", actions::PRODUCE));
}

#[tokio::test]
async fn grants_on_one_log_do_not_extend_to_others() {
    let policy = "p, alice, orders, consume\n";
    let authz = CasbinAuthorizer::from_text(DEFAULT_MODEL, policy)
        .await
        .unwrap();
    assert!(allowed(&authz, "alice", "orders", actions::CONSUME));
    assert!(!allowed(&authz, "alice", "payments", actions::CONSUME));
    assert!(!allowed(&authz, "alice", WILDCARD_OBJECT, actions::CONSUME));
}

#[tokio::test]
async fn only_the_node_role_may_replicate_and_only_admins_administer() {
    let policy = "\
# peers
p, node, *, replicate
g, lc-0, node
g, lc-1, node
p, operator, *, admin
p, alice, *, produce
p, alice, *, consume
";
    let authz = CasbinAuthorizer::from_text(DEFAULT_MODEL, policy)
        .await
        .unwrap();
    assert!(allowed(&authz, "lc-0", WILDCARD_OBJECT, actions::REPLICATE));
    assert!(allowed(&authz, "lc-1", WILDCARD_OBJECT, actions::REPLICATE));
    assert!(!allowed(
        &authz,
        "alice",
        WILDCARD_OBJECT,
        actions::REPLICATE
    ));
    assert!(!allowed(&authz, "alice", WILDCARD_OBJECT, actions::ADMIN));
    assert!(!allowed(&authz, "lc-0", WILDCARD_OBJECT, actions::ADMIN));
    assert!(allowed(&authz, "operator", WILDCARD_OBJECT, actions::ADMIN));
    assert!(!allowed(
        &authz,
        "operator",
        WILDCARD_OBJECT,
        actions::REPLICATE
    ));
}

#[tokio::test]
async fn malformed_policies_are_refused_with_the_line() {
    for (policy, expected) in [
        ("p, alice, *\n", "line 1"),
        ("p, alice, *, consume\nx, alice, *, consume\n", "line 2"),
        ("p, alice, *, consume, extra\n", "this one has 4"),
        ("g, alice\n", "line 1"),
        ("p, , *, consume\n", "empty field"),
    ] {
        let err = CasbinAuthorizer::from_text(DEFAULT_MODEL, policy)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{policy:?}: {err}");
    }
    // `g` lines need a role definition, which proglog's model lacks.
    let err = CasbinAuthorizer::from_text(PROGLOG_MODEL, "g, alice, node\n")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown policy type"), "{err}");
}

#[tokio::test]
async fn comments_blank_lines_and_crlf_are_fine() {
    let policy = "# header\r\n\r\np, alice, *, consume\r\n  # indented comment\r\n";
    let authz = CasbinAuthorizer::from_text(DEFAULT_MODEL, policy)
        .await
        .unwrap();
    assert!(allowed(&authz, "alice", WILDCARD_OBJECT, actions::CONSUME));
}

#[tokio::test]
async fn models_that_allow_strangers_or_do_not_evaluate_are_refused() {
    let allow_all = PROGLOG_MODEL.replace(
        "m = r.sub == p.sub && r.obj == p.obj && r.act == p.act",
        "m = true",
    );
    let err = CasbinAuthorizer::from_text(&allow_all, PROGLOG_POLICY)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("default deny"), "{err}");

    let two_fields = PROGLOG_MODEL.replace("r = sub, obj, act", "r = sub, act");
    assert!(
        CasbinAuthorizer::from_text(&two_fields, PROGLOG_POLICY)
            .await
            .is_err()
    );

    assert!(
        CasbinAuthorizer::from_text("not a model", PROGLOG_POLICY)
            .await
            .is_err()
    );
}

struct PolicyFiles {
    _dir: tempfile::TempDir,
    policy: std::path::PathBuf,
    model: std::path::PathBuf,
}

fn policy_files(policy: &str) -> PolicyFiles {
    let dir = tempfile::tempdir().unwrap();
    let files = PolicyFiles {
        policy: dir.path().join("policy.csv"),
        model: dir.path().join("model.conf"),
        _dir: dir,
    };
    std::fs::write(&files.policy, policy).unwrap();
    std::fs::write(&files.model, DEFAULT_MODEL).unwrap();
    files
}

#[tokio::test]
async fn policy_reload_grants_and_revokes_live() {
    let files = policy_files("p, alice, *, produce\n");
    let authz = CasbinAuthorizer::from_files(None, &files.policy)
        .await
        .unwrap();
    let shared = authz.clone(); // what a running service holds
    assert!(!allowed(
        &shared,
        "alice",
        WILDCARD_OBJECT,
        actions::CONSUME
    ));
    assert!(!authz.reload_now().await.unwrap(), "nothing changed");

    replace_file(
        &files.policy,
        b"p, alice, *, produce\np, alice, *, consume\n",
    );
    assert!(authz.reload_now().await.unwrap());
    assert!(allowed(&shared, "alice", WILDCARD_OBJECT, actions::CONSUME));

    replace_file(&files.policy, b"p, alice, *, consume\n");
    assert!(authz.reload_now().await.unwrap());
    assert!(allowed(&shared, "alice", WILDCARD_OBJECT, actions::CONSUME));
    assert!(!allowed(
        &shared,
        "alice",
        WILDCARD_OBJECT,
        actions::PRODUCE
    ));
    assert_eq!(*authz.subscribe().borrow(), 2);
}

#[tokio::test]
async fn bad_policy_or_model_reload_keeps_the_old_policy() {
    let files = policy_files("p, alice, *, consume\n");
    let authz = CasbinAuthorizer::from_files(Some(&files.model), &files.policy)
        .await
        .unwrap();

    replace_file(&files.policy, b"p, alice, *\np, mallory, *, consume\n");
    let err = authz.reload_now().await.unwrap_err();
    assert!(err.to_string().contains("policy.csv"), "{err}");
    assert!(allowed(&authz, "alice", WILDCARD_OBJECT, actions::CONSUME));
    assert!(!allowed(
        &authz,
        "mallory",
        WILDCARD_OBJECT,
        actions::CONSUME
    ));

    replace_file(&files.policy, b"p, alice, *, consume\n");
    replace_file(&files.model, b"[matchers]\nm = \n");
    let err = authz.reload_now().await.unwrap_err();
    assert!(err.to_string().contains("model.conf"), "{err}");
    assert!(allowed(&authz, "alice", WILDCARD_OBJECT, actions::CONSUME));

    std::fs::remove_file(&files.policy).unwrap();
    let err = authz.reload_now().await.unwrap_err();
    assert!(err.to_string().contains("policy.csv"), "{err}");
    assert!(allowed(&authz, "alice", WILDCARD_OBJECT, actions::CONSUME));
    assert_eq!(*authz.subscribe().borrow(), 0);
}

#[tokio::test]
async fn watcher_applies_policy_changes() {
    let files = policy_files("");
    let authz = CasbinAuthorizer::from_files(None, &files.policy)
        .await
        .unwrap();
    let watcher = authz.spawn_watcher(Duration::from_millis(50));
    let mut generation = authz.subscribe();
    replace_file(&files.policy, b"p, bob, *, produce\n");
    tokio::time::timeout(Duration::from_secs(10), generation.wait_for(|g| *g >= 1))
        .await
        .expect("the watcher did not reload within 10s")
        .unwrap();
    assert!(allowed(&authz, "bob", WILDCARD_OBJECT, actions::PRODUCE));
    watcher.abort();
}

#[tokio::test]
async fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.csv");
    let err = CasbinAuthorizer::from_files(None, &missing)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope.csv"), "{err}");
}
