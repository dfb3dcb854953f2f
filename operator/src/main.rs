//! `logcluster-operator`: parses the command line, connects to Kubernetes, serves the health and
//! metrics endpoints, and runs the controller (behind leader election when enabled).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kube::api::{Api, ListParams};
use logcluster_operator::config::{LogFormat, OperatorArgs, OperatorConfig};
use logcluster_operator::controller::{self, Context, Scope};
use logcluster_operator::crd::LogCluster;
use logcluster_operator::leader_election::LeaderElector;
use logcluster_operator::metrics::{HttpState, Metrics, router};
use logcluster_operator::node_client::GrpcConnector;
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(env),
        _ => EnvFilter::try_new(level),
    }
    .context("invalid log filter")?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.init(),
    }
    Ok(())
}

/// Waits until the API server answers and the LogCluster CRD is served in every watched
/// namespace, then marks the operator ready.
async fn wait_for_api(client: kube::Client, scope: Scope, ready: Arc<AtomicBool>) {
    let apis: Vec<Api<LogCluster>> = match &scope {
        Scope::All => vec![Api::all(client)],
        Scope::Namespaces(nss) => nss
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect(),
    };
    loop {
        let mut ok = true;
        for api in &apis {
            if let Err(e) = api.list_metadata(&ListParams::default().limit(1)).await {
                tracing::warn!(error = %e, "cannot list LogClusters yet (is the CRD installed?)");
                ok = false;
            }
        }
        if ok {
            ready.store(true, Ordering::Relaxed);
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = OperatorArgs::parse();
    init_tracing(args.log_format, &args.log_level)?;
    // kube and tonic both use rustls; with only the ring provider compiled in, make it explicit.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = OperatorConfig::from_env(&args)?;

    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG or the pod's service account)")?;
    let metrics = Arc::new(Metrics::new());
    let state = HttpState {
        metrics: metrics.clone(),
        ready: Arc::new(AtomicBool::new(false)),
    };
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    tracing::info!(addr = %config.http_addr, "serving /healthz, /readyz and /metrics");
    let ready = state.ready.clone();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state)).await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    });
    tokio::spawn(wait_for_api(client.clone(), config.scope.clone(), ready));

    let connector = Arc::new(GrpcConnector::new(
        config.resolver.clone(),
        config.admin_timeout,
    ));
    let mut ctx = Context::new(
        client.clone(),
        config.settings.clone(),
        connector,
        metrics.clone(),
    );
    ctx.resync = config.resync_interval;
    ctx.step_interval = config.step_interval;
    let ctx = Arc::new(ctx);
    tracing::info!(scope = ?config.scope, leader_election = config.lease.is_some(), "starting the controller");
    let work = controller::run(ctx, config.scope.clone());
    match config.lease.clone() {
        Some(lease) => {
            LeaderElector::new(client, lease)
                .run(&metrics, work)
                .await?
        }
        None => {
            metrics.set_leader(true);
            work.await?;
        }
    }
    tracing::info!("stopped");
    Ok(())
}
