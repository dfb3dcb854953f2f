//! `logctl admin`: cluster membership and leadership (the admin role's API, `admin.v1`).

use std::io::Write;

use anyhow::{Context, Result};
use logcluster_api::admin_v1::admin_client::AdminClient;
use logcluster_api::admin_v1::{
    AddNodeRequest, ClusterStatusRequest, Member, MemberRole, RemoveNodeRequest,
    TransferLeaderRequest,
};
use tonic::transport::Channel;

use super::client::{ConnectArgs, explain};

/// `logctl admin …`.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// Admin operations (need the `admin` permission).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Members, roles, leader, term, commit index and per-member lag.
    Status,
    /// Add a node as a learner; it becomes a voter once it has caught up (unless --learner).
    Add {
        /// The new node's id.
        #[arg(long)]
        node_id: u64,
        /// host:port other nodes dial to reach it.
        #[arg(long)]
        rpc_addr: String,
        /// Keep it a learner (it replicates but does not vote).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node from the cluster (leadership moves away first if it leads).
    Remove {
        /// The node to remove.
        #[arg(long)]
        node_id: u64,
    },
    /// Move leadership to another voter (the most up-to-date one unless --to is given).
    TransferLeader {
        /// The voter that should lead.
        #[arg(long)]
        to: Option<u64>,
    },
}

async fn admin_client(connect: &ConnectArgs) -> Result<AdminClient<Channel>> {
    let client = connect.connect().await?;
    let channel = client
        .leader_channel()
        .await
        .map_err(explain)
        .context("reaching the leader")?;
    Ok(AdminClient::new(channel))
}

/// Runs an admin command and prints its outcome.
pub async fn admin(args: AdminArgs) -> Result<()> {
    let mut client = admin_client(&args.connect).await?;
    let mut out = crate::output::stdout();
    match args.command {
        AdminCommand::Status => {
            let status = client
                .cluster_status(ClusterStatusRequest {})
                .await
                .map_err(|s| explain(s.into()))?
                .into_inner();
            let leader = status
                .leader_id
                .map_or_else(|| "none".to_owned(), |id| id.to_string());
            writeln!(
                out,
                "leader: {leader}  term: {}  commit index: {}  offsets: [{}, {})  membership log index: {}{}",
                status.term,
                status.commit_index,
                status.first_offset,
                status.next_offset,
                status.membership_log_index,
                if status.membership_changing {
                    "  (membership change in progress)"
                } else {
                    ""
                }
            )?;
            writeln!(
                out,
                "{:<6} {:<32} {:<8} {:>12} {:>8} {:<8}",
                "ID", "ADDRESS", "ROLE", "MATCHED", "LAG", "HEALTHY"
            )?;
            for member in status.members {
                let role = match MemberRole::try_from(member.role) {
                    Ok(MemberRole::Leader) => "leader",
                    Ok(MemberRole::Voter) => "voter",
                    Ok(MemberRole::Learner) => "learner",
                    _ => "-",
                };
                writeln!(
                    out,
                    "{:<6} {:<32} {:<8} {:>12} {:>8} {:<8}",
                    member.node_id,
                    member.rpc_addr,
                    role,
                    member.matched_index,
                    member.lag,
                    if member.healthy { "yes" } else { "no" }
                )?;
            }
        }
        AdminCommand::Add {
            node_id,
            rpc_addr,
            learner,
        } => {
            let response = client
                .add_node(AddNodeRequest {
                    node: Some(Member { node_id, rpc_addr }),
                    promote_to_voter: !learner,
                })
                .await
                .map_err(|s| explain(s.into()))?
                .into_inner();
            writeln!(
                out,
                "node {node_id} added as {} (membership log index {})",
                if learner { "learner" } else { "voter" },
                response.membership_log_index
            )?;
        }
        AdminCommand::Remove { node_id } => {
            let response = client
                .remove_node(RemoveNodeRequest { node_id })
                .await
                .map_err(|s| explain(s.into()))?
                .into_inner();
            writeln!(
                out,
                "node {node_id} removed (membership log index {})",
                response.membership_log_index
            )?;
        }
        AdminCommand::TransferLeader { to } => {
            let response = client
                .transfer_leader(TransferLeaderRequest { node_id: to })
                .await
                .map_err(|s| explain(s.into()))?
                .into_inner();
            writeln!(out, "node {} now leads", response.new_leader_id)?;
        }
    }
    Ok(())
}
