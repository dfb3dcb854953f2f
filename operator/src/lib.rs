//! The LogCluster Kubernetes operator.
