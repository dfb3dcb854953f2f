// Command etcd is a single-member etcd server for the LogCluster Kubernetes test harness.
//
// etcd publishes its server only as release binaries, which this machine cannot download; the
// go.etcd.io/etcd/server/v3/embed package is the same server as a library, so these few lines
// give the harness an etcd built from the Go module proxy. It is for tests only: one member,
// plain HTTP on the URLs given, and fsync optional.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	name := flag.String("name", "default", "member name")
	dataDir := flag.String("data-dir", "", "directory for the member's data (required)")
	clientURL := flag.String("listen-client-urls", "http://127.0.0.1:2379", "URL to serve clients on (also advertised)")
	peerURL := flag.String("listen-peer-urls", "http://127.0.0.1:2380", "URL to serve peers on (also advertised)")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	noFsync := flag.Bool("unsafe-no-fsync", false, "skip fsync: faster, and fine for throw-away test data")
	startTimeout := flag.Duration("start-timeout", 60*time.Second, "how long to wait for the server to become ready")
	flag.Parse()
	if *dataDir == "" {
		fail("--data-dir is required")
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cfg.LogLevel = *logLevel
	cfg.UnsafeNoFsync = *noFsync
	cu := mustURL(*clientURL)
	pu := mustURL(*peerURL)
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{pu}
	cfg.InitialCluster = fmt.Sprintf("%s=%s", *name, pu.String())

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fail("starting etcd: %v", err)
	}

	// SIGTERM/SIGINT close the server cleanly (the harness sends SIGTERM first, SIGKILL later).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "etcd: ready, serving clients on %s\n", cu.String())
	case err := <-e.Err():
		fail("etcd failed before becoming ready: %v", err)
	case <-time.After(*startTimeout):
		e.Server.Stop()
		fail("etcd not ready after %s", *startTimeout)
	case s := <-sigs:
		e.Close()
		fmt.Fprintf(os.Stderr, "etcd: stopped by %s before becoming ready\n", s)
		return
	}

	select {
	case err := <-e.Err():
		e.Close()
		fail("etcd: %v", err)
	case s := <-sigs:
		e.Close()
		fmt.Fprintf(os.Stderr, "etcd: stopped by %s\n", s)
	}
}

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		fail("bad URL %q: %v", s, err)
	}
	return *u
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "etcd: "+format+"\n", args...)
	os.Exit(1)
}
