//go:build tools

// Package tools pins the commands this module builds, so that `go mod tidy` keeps their
// dependencies in go.sum. Build one with e.g. `go build k8s.io/kubernetes/cmd/kubelet`;
// scripts/k8s-tools.sh drives the builds (see tests/README.md).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
