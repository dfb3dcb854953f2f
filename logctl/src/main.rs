//! `logctl`: the LogCluster command line. See `logctl --help`.

use anyhow::Result;
use clap::{Parser, Subcommand};
use logctl::{admin, bench, certs, client, dev, output};

#[derive(Debug, Parser)]
#[command(
    name = "logctl",
    version,
    about = "LogCluster command line: produce, consume, inspect the cluster, manage certificates",
    long_about = "LogCluster command line.\n\nClient commands connect over mutual TLS: give the CA \
and your client certificate with --ca/--cert/--key (or LOGCLUSTER_CA, LOGCLUSTER_CERT, \
LOGCLUSTER_KEY) and any node's address with --addr (LOGCLUSTER_ADDR)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local cluster on loopback in the foreground (generated certificates, gossip key and
    /// data under --dir); prints how to produce and consume. Ctrl-C stops it.
    Dev(dev::DevArgs),
    /// Append records (arguments, or one per line of standard input); prints their offsets.
    Produce(client::ProduceArgs),
    /// Print committed records from an offset, up to the end or following the tail.
    Consume(client::ConsumeArgs),
    /// List the cluster's members, their roles and the leader.
    Servers(client::ServersArgs),
    /// Cluster membership and leadership (needs the admin permission).
    Admin(admin::AdminArgs),
    /// Load the cluster with concurrent producers; prints records/s, MB/s and latency.
    Bench(bench::BenchArgs),
    /// Create a CA and issue node and client certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match run(cli) {
        // `logctl consume | head -1`: the reader has what it wanted; that is a normal end.
        Err(e) if output::is_stdout_closed(&e) => Ok(()),
        outcome => outcome,
    }
}

fn run(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => dev::dev(args).await,
            Command::Produce(args) => client::produce(args).await,
            Command::Consume(args) => client::consume(args).await,
            Command::Servers(args) => client::servers(args).await,
            Command::Admin(args) => admin::admin(args).await,
            Command::Bench(args) => bench::bench(args).await,
            Command::Certs(command) => certs::run(command),
        }
    })
}
