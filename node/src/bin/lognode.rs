//! `lognode`: one LogCluster node. See `lognode --help`.

use anyhow::Result;
use clap::{CommandFactory, Parser};
use logcluster_node::agent::{self, NodeConfig};
use logcluster_node::config::{self, NodeArgs};
use logcluster_node::telemetry;

fn main() -> Result<()> {
    // The YAML file (if any) goes underneath env and flags: export its keys before parsing.
    if let Some(path) = config_file_from_argv() {
        let known: Vec<String> = NodeArgs::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        for (var, value) in config::config_file_env(&path, &known)? {
            // SAFETY: `main` has not started the runtime or any other thread yet, so nothing
            // can read the environment concurrently.
            unsafe { std::env::set_var(var, value) };
        }
    }
    let args = NodeArgs::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lognode")
        .build()?;
    runtime.block_on(async move {
        let _telemetry = telemetry::tracing::init(args.log_format, &args.log_level, "lognode")?;
        let config = NodeConfig::from_args(&args)?;
        Ok(agent::run(config).await?)
    })
}

/// `--config <path>` / `--config=<path>` / `LOGCLUSTER_CONFIG`, looked up before clap runs.
fn config_file_from_argv() -> Option<std::path::PathBuf> {
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return args.next().map(Into::into);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(path.into());
        }
    }
    std::env::var_os(config::ENV_PREFIX.to_owned() + "CONFIG").map(Into::into)
}
