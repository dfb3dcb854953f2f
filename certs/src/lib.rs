//! LogCluster PKI.
