//! The LogCluster node.
