//! Assembles the tonic server: every gRPC service on one TLS listener, behind the RPC
//! logging/metrics layer, with health and reflection.

use std::future::Future;

use logcluster_api::log_v1::log_server::LogServer;
use tonic::service::Routes;
use tonic::transport::Server;

use super::log_service::LogService;
use super::oversized::OversizedLayer;
use crate::auth::identity;
use crate::auth::tls::TlsIncoming;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::rpc_layer::RpcLayer;

/// Health-service name under which the client API reports SERVING.
pub const LOG_SERVICE_NAME: &str = "log.v1.Log";

/// The gRPC routes of a node, built up service by service.
pub struct GrpcRoutes {
    routes: Routes,
    health: tonic_health::server::HealthReporter,
}

impl GrpcRoutes {
    /// Routes with the client API, gRPC health (`grpc.health.v1`) and server reflection.
    pub async fn new(log_service: LogService) -> Result<Self, tonic_reflection::server::Error> {
        let max_message = log_service.max_message_bytes();
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(LOG_SERVICE_NAME, tonic_health::ServingStatus::Serving)
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(logcluster_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let log = LogServer::new(log_service)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        let routes = Routes::new(log)
            .add_service(health_service)
            .add_service(reflection);
        Ok(GrpcRoutes { routes, health })
    }

    /// Adds another service (Raft peers, admin).
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Error = std::convert::Infallible,
                Response = http::Response<tonic::body::Body>,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes = self.routes.add_service(service);
        self
    }

    /// The health reporter, to flip services to NOT_SERVING on shutdown.
    pub fn health(&self) -> tonic_health::server::HealthReporter {
        self.health.clone()
    }

    /// Serves the routes on `incoming` until `shutdown` completes, then drains in-flight calls.
    pub async fn serve(
        self,
        incoming: TlsIncoming,
        metrics: Metrics,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let layer = RpcLayer::new(metrics)
            .with_subject(|parts| identity::subject_from_extensions(&parts.extensions).ok());
        Server::builder()
            // Peers and clients keep long-lived HTTP/2 connections; detect dead ones.
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
            .tcp_nodelay(true)
            .layer(layer)
            .layer(OversizedLayer)
            .add_routes(self.routes)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }
}
