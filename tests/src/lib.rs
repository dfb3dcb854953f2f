//! Harnesses for LogCluster integration and end-to-end tests.
