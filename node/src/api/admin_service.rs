//! The `admin.v1.Admin` gRPC service: authorizes every call with the `admin` action and runs it
//! on [`ClusterAdmin`]; refusals become statuses through `From<AdminError> for Status`.

use logcluster_api::admin_v1::admin_server::{Admin, AdminServer};
use logcluster_api::admin_v1::{
    AddNodeRequest, AddNodeResponse, ClusterStatusRequest, ClusterStatusResponse,
    InitializeRequest, InitializeResponse, RemoveNodeRequest, RemoveNodeResponse,
    TransferLeaderRequest, TransferLeaderResponse,
};
use tonic::{Request, Response, Status};

use crate::auth::{AccessControl, action};
use crate::raft::ClusterAdmin;
use crate::raft::cluster_admin::FORWARDED_HEADER;

/// The `admin.v1.Admin` gRPC service.
#[derive(Clone)]
pub struct AdminService {
    admin: ClusterAdmin,
    access: AccessControl,
}

impl AdminService {
    pub fn new(admin: ClusterAdmin, access: AccessControl) -> Self {
        AdminService { admin, access }
    }

    pub fn into_server(self) -> AdminServer<AdminService> {
        AdminServer::new(self)
    }
}

fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_HEADER)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn initialize(
        &self,
        request: Request<InitializeRequest>,
    ) -> Result<Response<InitializeResponse>, Status> {
        self.access.check(&request, action::ADMIN)?;
        let initialized = self.admin.initialize(request.into_inner().voters).await?;
        Ok(Response::new(InitializeResponse { initialized }))
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<AddNodeResponse>, Status> {
        self.access.check(&request, action::ADMIN)?;
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let node = request
            .node
            .ok_or_else(|| Status::invalid_argument("AddNodeRequest.node is required"))?;
        let index = self
            .admin
            .add_node(node, request.promote_to_voter, forwarded)
            .await?;
        Ok(Response::new(AddNodeResponse {
            membership_log_index: index,
        }))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        self.access.check(&request, action::ADMIN)?;
        let forwarded = is_forwarded(&request);
        let index = self
            .admin
            .remove_node(request.into_inner().node_id, forwarded)
            .await?;
        Ok(Response::new(RemoveNodeResponse {
            membership_log_index: index,
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        self.access.check(&request, action::ADMIN)?;
        let forwarded = is_forwarded(&request);
        let new_leader_id = self
            .admin
            .transfer_leader(request.into_inner().node_id, forwarded)
            .await?;
        Ok(Response::new(TransferLeaderResponse { new_leader_id }))
    }

    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        self.access.check(&request, action::ADMIN)?;
        Ok(Response::new(self.admin.status()))
    }
}
