// The pod sandbox ("pause") process for the test cluster's pods: containerd cannot pull
// registry.k8s.io/pause here, so the harness builds this and imports it as a local image.
module logcluster.io/tests/tools/pause

go 1.25.0
