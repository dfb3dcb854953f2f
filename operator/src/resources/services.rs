//! The headless Service (`<cluster>-nodes`: stable pod DNS names and the gossip seed) and the
//! client Service (`<cluster>`).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec as K8sServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{ClusterNames, GOSSIP_PORT, GRPC_PORT, HTTP_PORT};
use crate::Result;
use crate::crd::LogCluster;

fn port(name: &str, port: i32, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some(protocol.to_owned()),
        ..ServicePort::default()
    }
}

/// The headless Service.
///
/// `publishNotReadyAddresses: true`: a node must be resolvable (and reachable by gossip) before
/// it is ready, because it only becomes ready after it has joined — which needs exactly those
/// addresses.
pub fn headless_service(lc: &LogCluster, names: &ClusterNames) -> Result<Service> {
    Ok(Service {
        metadata: super::child_meta(lc, names, names.headless_service(), "peers")?,
        spec: Some(K8sServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names.selector_labels()),
            ports: Some(vec![
                port("grpc", GRPC_PORT, "TCP"),
                port("gossip", GOSSIP_PORT, "UDP"),
                port("http", HTTP_PORT, "TCP"),
            ]),
            ..K8sServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The client Service: gRPC only, on ready pods only.
pub fn client_service(lc: &LogCluster, names: &ClusterNames) -> Result<Service> {
    let mut metadata = super::child_meta(lc, names, names.client_service(), "client")?;
    if !lc.spec.service.annotations.is_empty() {
        metadata.annotations = Some(lc.spec.service.annotations.clone());
    }
    Ok(Service {
        metadata,
        spec: Some(K8sServiceSpec {
            type_: Some(lc.spec.service.type_.as_str().to_owned()),
            selector: Some(names.selector_labels()),
            ports: Some(vec![port("grpc", GRPC_PORT, "TCP")]),
            ..K8sServiceSpec::default()
        }),
        ..Service::default()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::fixtures::{cluster, cluster_with};

    #[test]
    fn headless_service_publishes_not_ready_pods_on_all_ports() {
        let lc = cluster();
        let names = ClusterNames::new(&lc, "cluster.local").unwrap();
        let svc = headless_service(&lc, &names).unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("demo-nodes"));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: Vec<_> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.port, p.protocol.unwrap()))
            .collect();
        assert_eq!(
            ports,
            [
                (8400, "TCP".into()),
                (8401, "UDP".into()),
                (8402, "TCP".into())
            ]
        );
        assert_eq!(spec.selector, Some(names.selector_labels()));
    }

    #[test]
    fn client_service_takes_type_and_annotations_from_the_spec() {
        let lc =
            cluster_with(json!({"service": {"type": "LoadBalancer", "annotations": {"a": "b"}}}));
        let names = ClusterNames::new(&lc, "cluster.local").unwrap();
        let svc = client_service(&lc, &names).unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("demo"));
        assert_eq!(svc.metadata.annotations.unwrap()["a"], "b");
        let owner = &svc.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("LogCluster", Some(true))
        );
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.unwrap().len(), 1);
    }
}
