//! `logctl produce | consume | servers`: the client commands, over mutual TLS through the
//! leader-aware [`LogClient`].

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use logcluster_api::client::parse_connect_to;
use logcluster_api::log_v1::{Record, ServerRole};
use logcluster_api::{ClientConfig, ClientError, ClientTls, LogClient};

/// Where the cluster is and who we are.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Address of any node (host:port, repeatable or comma-separated); the rest is discovered.
    #[arg(
        long = "addr",
        env = "LOGCLUSTER_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:8400"
    )]
    pub addrs: Vec<String>,
    /// PEM file with the CA that signed the nodes' certificates.
    #[arg(long, env = "LOGCLUSTER_CA", default_value = "certs/ca.pem")]
    pub ca: PathBuf,
    /// PEM file with your client certificate (its CN is your ACL subject).
    #[arg(long, env = "LOGCLUSTER_CERT", default_value = "certs/client.pem")]
    pub cert: PathBuf,
    /// PEM file with your client key.
    #[arg(long, env = "LOGCLUSTER_KEY", default_value = "certs/client-key.pem")]
    pub key: PathBuf,
    /// Verify servers against this name instead of the host dialed.
    #[arg(long, env = "LOGCLUSTER_SERVER_NAME")]
    pub server_name: Option<String>,
    /// Dial a server somewhere other than the address it advertises, still checking its
    /// certificate against the advertised name: `ADVERTISED_HOST:PORT=DIAL_HOST:PORT`
    /// (repeatable), e.g. `demo-0.demo-nodes.default.svc.cluster.local:8400=127.0.0.1:18400`
    /// through a `kubectl port-forward` per pod.
    #[arg(long = "connect-to", value_name = "ADVERTISED=DIAL")]
    pub connect_to: Vec<String>,
    /// How long a call keeps retrying through elections and failovers.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub retry_deadline: Duration,
}

impl ConnectArgs {
    /// TLS settings, after checking the client certificate is usable now (so an expired one
    /// is reported with its dates instead of as an opaque handshake failure).
    pub fn tls(&self) -> Result<ClientTls> {
        let pem = std::fs::read_to_string(&self.cert)
            .with_context(|| format!("reading the client certificate {}", self.cert.display()))?;
        let info = logcluster_certs::inspect(&pem)
            .with_context(|| format!("parsing the client certificate {}", self.cert.display()))?;
        let now = SystemTime::now();
        if info.is_expired_at(now) {
            bail!(
                "the client certificate {} expired on {}; issue a new one (logctl certs issue-client)",
                self.cert.display(),
                humantime::format_rfc3339_seconds(info.not_after)
            );
        }
        if info.is_not_yet_valid_at(now) {
            bail!(
                "the client certificate {} is not valid before {} (check this machine's clock)",
                self.cert.display(),
                humantime::format_rfc3339_seconds(info.not_before)
            );
        }
        let tls = ClientTls::from_files(&self.ca, &self.cert, &self.key)?;
        Ok(match &self.server_name {
            Some(name) => tls.with_server_name(name.clone()),
            None => tls,
        })
    }

    /// The client's settings from these flags.
    pub fn config(&self, seeds: Vec<String>) -> Result<ClientConfig> {
        let mut config = ClientConfig::new(seeds, self.tls()?);
        config.retry_deadline = self.retry_deadline;
        config.connect_to = parse_connect_to(&self.connect_to)?;
        Ok(config)
    }

    /// A connected client.
    pub async fn connect(&self) -> Result<LogClient> {
        let config = self.config(self.addrs.clone())?;
        LogClient::connect(config)
            .await
            .with_context(|| format!("connecting to {}", self.addrs.join(", ")))
    }
}

/// `logctl produce`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Record values; when none are given, every line of standard input is one record.
    pub values: Vec<String>,
    /// Send stdin lines in batches of this many records (one round trip per batch).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

/// `logctl consume`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// First offset to read.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Keep following the tail: print records as they are committed (Ctrl-C stops).
    #[arg(long)]
    pub follow: bool,
    /// Stop after this many records.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// How `logctl consume` prints records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// `<offset>\t<value>` per line (non-UTF-8 bytes replaced).
    Text,
    /// The value only, one per line.
    Value,
    /// One JSON object per line: offset, term, timestamp_unix_ms, value (UTF-8) or value_hex.
    Json,
}

/// `logctl servers`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServersArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Produces records and prints their offsets, one per line.
pub async fn produce(args: ProduceArgs) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let client = args.connect.connect().await?;
    let mut out = crate::output::stdout();
    if !args.values.is_empty() {
        for value in args.values {
            let offset = client.produce(Bytes::from(value)).await.map_err(explain)?;
            writeln!(out, "{offset}")?;
        }
        return Ok(());
    }
    let stdin = std::io::stdin();
    let mut batch = Vec::with_capacity(args.batch);
    for line in stdin.lock().lines() {
        batch.push(Bytes::from(line.context("reading standard input")?));
        if batch.len() == args.batch {
            send_batch(&client, std::mem::take(&mut batch), &mut out).await?;
        }
    }
    if !batch.is_empty() {
        send_batch(&client, batch, &mut out).await?;
    }
    Ok(())
}

async fn send_batch(client: &LogClient, batch: Vec<Bytes>, out: &mut impl Write) -> Result<()> {
    let offsets = if batch.len() == 1 {
        vec![client.produce(batch[0].clone()).await.map_err(explain)?]
    } else {
        client.produce_batch(batch).await.map_err(explain)?
    };
    for offset in offsets {
        writeln!(out, "{offset}")?;
    }
    out.flush()?;
    Ok(())
}

/// Prints committed records from `--from`, to the current end or following the tail.
pub async fn consume(args: ConsumeArgs) -> Result<()> {
    let client = args.connect.connect().await?;
    let mut out = crate::output::stdout();
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    if args.follow {
        let mut stream = Box::pin(client.consume_stream(args.from));
        while printed < limit {
            tokio::select! {
                item = stream.next() => match item {
                    Some(record) => {
                        print_record(&mut out, &record.map_err(explain)?, args.format)?;
                        printed += 1;
                    }
                    None => break,
                },
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        return Ok(());
    }
    // Not following: read up to the end of the committed log as it is now (how the end is
    // found, also from servers other than ours: `LogClient::consume_to_end`).
    let mut stream = client.consume_to_end(args.from).await.map_err(explain)?;
    while printed < limit {
        match stream.next().await {
            Some(record) => {
                print_record(&mut out, &record.map_err(explain)?, args.format)?;
                printed += 1;
            }
            None => break,
        }
    }
    Ok(())
}

fn print_record(out: &mut impl Write, record: &Record, format: OutputFormat) -> Result<()> {
    match format {
        OutputFormat::Text => writeln!(
            out,
            "{}\t{}",
            record.offset,
            String::from_utf8_lossy(&record.value)
        )?,
        OutputFormat::Value => writeln!(out, "{}", String::from_utf8_lossy(&record.value))?,
        OutputFormat::Json => {
            let mut object = serde_json::json!({
                "offset": record.offset,
                "term": record.term,
                "timestamp_unix_ms": record.timestamp_unix_ms,
            });
            match std::str::from_utf8(&record.value) {
                Ok(text) => object["value"] = text.into(),
                Err(_) => object["value_hex"] = hex_string(&record.value).into(),
            }
            writeln!(out, "{object}")?;
        }
    }
    Ok(())
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prints the cluster members.
pub async fn servers(args: ServersArgs) -> Result<()> {
    let client = args.connect.connect().await?;
    let servers = client.servers().await.map_err(explain)?;
    let mut out = crate::output::stdout();
    writeln!(
        out,
        "{:<6} {:<32} {:<8} {:<7} {:>12}",
        "ID", "ADDRESS", "ROLE", "LEADER", "REPLICATED"
    )?;
    for server in servers {
        let role = match ServerRole::try_from(server.role) {
            Ok(ServerRole::Voter) => "voter",
            Ok(ServerRole::Learner) => "learner",
            _ => "-",
        };
        writeln!(
            out,
            "{:<6} {:<32} {:<8} {:<7} {:>12}",
            server.id,
            server.rpc_addr,
            role,
            if server.is_leader { "yes" } else { "" },
            server.replicated_offset
        )?;
    }
    Ok(())
}

/// Adds what a person can do about an error to its message.
pub fn explain(error: ClientError) -> anyhow::Error {
    let hint = match &error {
        ClientError::PermissionDenied(_) => {
            Some("ask for the permission in the ACL policy (policy.csv)")
        }
        ClientError::Unauthenticated(_) => {
            Some("check --cert/--key: the server did not accept your certificate")
        }
        ClientError::NoServerReachable { .. } => Some(
            "check --addr, that the nodes run, and that --ca is the CA that signed them \
             (a TLS error names the certificate problem)",
        ),
        ClientError::OutcomeUnknown(_) => Some(
            "the record may or may not have been written; consume to check before producing it again",
        ),
        _ => None,
    };
    match hint {
        Some(hint) => anyhow::anyhow!("{error}\nhint: {hint}"),
        None => anyhow::anyhow!("{error}"),
    }
}
