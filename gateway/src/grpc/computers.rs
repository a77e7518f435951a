//! `orgo.v1.Computers`: the lifecycle of the caller's computers over gRPC, through the same
//! functions as REST's `/api/computers` routes (checks, plan limits, turns and sentences).

use tonic::{Request, Response, Status};

use orgo_proto::lifecycle as pb;

use super::caller;
use super::status::status;
use crate::api::computers::create_computer;
use crate::api::viewers::{issue_token, ttl, viewer_mode};
use crate::api::wire::CreateComputer;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{Account, Computer};
use crate::token::Mode;

type Answer<T> = Result<Response<T>, Status>;

pub struct Computers {
    state: AppState,
}

impl Computers {
    pub fn new(state: AppState) -> Self {
        Computers { state }
    }

    /// A computer of an account on `plan` (whose idle time it may take).
    fn computer(&self, c: &Computer, plan: &str) -> pb::Computer {
        let config = &self.state.config;
        let screen = config.resolution_of(c);
        pb::Computer {
            id: c.id.clone(),
            name: c.name.clone(),
            workspace_id: c.project_id.clone(),
            status: c.status.as_str().into(),
            status_reason: c.ended.clone().unwrap_or_default(),
            ram_gb: c.ram_gb,
            cpu: c.cpu,
            url: self.state.links.url(c),
            created_at: c.created_at,
            screen_width: screen.width,
            screen_height: screen.height,
            resolution: screen.to_string(),
            disk_size_gb: config.disk_gb_of(c),
            auto_stop_minutes: config
                .auto_stop(c, plan)
                .map(|d| u32::try_from(d.as_secs() / 60).unwrap_or(u32::MAX)),
        }
    }

    /// The caller's computer a request names.
    async fn find(&self, request: Request<pb::ComputerRef>) -> Result<(Account, Computer), Status> {
        let caller = caller(&self.state, request.metadata()).await?;
        let computer = caller
            .computer(&self.state, &request.into_inner().computer)
            .await?;
        Ok((caller.account, computer))
    }
}

/// A token's lifetime from gRPC's 0-means-default seconds.
fn ttl_of(seconds: u32) -> Result<i64, ApiError> {
    ttl((seconds != 0).then_some(f64::from(seconds)))
}

#[tonic::async_trait]
impl pb::computers_server::Computers for Computers {
    async fn create(&self, request: Request<pb::CreateRequest>) -> Answer<pb::Computer> {
        let caller = caller(&self.state, request.metadata()).await?;
        let r = request.into_inner();
        let asked = CreateComputer {
            workspace_id: (!r.workspace_id.is_empty()).then_some(r.workspace_id),
            name: (!r.name.is_empty()).then_some(r.name),
            ram: (r.ram_gb != 0).then_some(f64::from(r.ram_gb)),
            cpu: (r.cpu != 0.0).then_some(r.cpu),
            resolution: (!r.resolution.is_empty()).then_some(r.resolution),
            disk_size_gb: (r.disk_size_gb != 0).then_some(f64::from(r.disk_size_gb)),
            auto_stop_minutes: r.auto_stop_minutes.map(f64::from),
            ..Default::default()
        };
        let computer = create_computer(&self.state, &caller, asked).await?;
        Ok(Response::new(self.computer(&computer, &caller.account.plan)))
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> Answer<pb::ListResponse> {
        let caller = caller(&self.state, request.metadata()).await?;
        let account = &caller.account;
        let workspace = request.into_inner().workspace_id;
        let store = &self.state.store;
        let computers = if workspace.is_empty() {
            let all = store.computers_of_account(&account.id).await.map_err(status)?;
            // A workspace-scoped key lists its workspace's only.
            all.into_iter()
                .filter(|c| caller.reaches(&c.project_id).is_ok())
                .collect()
        } else {
            let project = store
                .project(&account.id, &workspace)
                .await
                .map_err(status)?
                .ok_or_else(|| status(ApiError::NotFound(format!("workspace {workspace:?} not found"))))?;
            caller.reaches(&project.id)?;
            store
                .computers_of_project(&account.id, &project.id)
                .await
                .map_err(status)?
        };
        Ok(Response::new(pb::ListResponse {
            computers: computers
                .iter()
                .map(|c| self.computer(c, &account.plan))
                .collect(),
        }))
    }

    async fn get(&self, request: Request<pb::ComputerRef>) -> Answer<pb::Computer> {
        let (account, computer) = self.find(request).await?;
        Ok(Response::new(self.computer(&computer, &account.plan)))
    }

    async fn start(&self, request: Request<pb::ComputerRef>) -> Answer<pb::Computer> {
        let (account, mut computer) = self.find(request).await?;
        self.state
            .desktops
            .start(&account, &mut computer)
            .await
            .map_err(status)?;
        Ok(Response::new(self.computer(&computer, &account.plan)))
    }

    async fn stop(&self, request: Request<pb::ComputerRef>) -> Answer<pb::Computer> {
        let (account, mut computer) = self.find(request).await?;
        self.state.desktops.stop(&mut computer).await.map_err(status)?;
        Ok(Response::new(self.computer(&computer, &account.plan)))
    }

    async fn restart(&self, request: Request<pb::ComputerRef>) -> Answer<pb::Computer> {
        let (account, mut computer) = self.find(request).await?;
        self.state
            .desktops
            .restart(&account, &mut computer)
            .await
            .map_err(status)?;
        Ok(Response::new(self.computer(&computer, &account.plan)))
    }

    async fn delete(&self, request: Request<pb::ComputerRef>) -> Answer<pb::DeleteResponse> {
        let (_, computer) = self.find(request).await?;
        self.state.desktops.delete(&computer).await.map_err(status)?;
        Ok(Response::new(pb::DeleteResponse { id: computer.id }))
    }

    async fn create_viewer_token(&self, request: Request<pb::ViewerTokenRequest>) -> Answer<pb::Token> {
        let caller = caller(&self.state, request.metadata()).await?;
        let r = request.into_inner();
        let mode = viewer_mode((!r.mode.is_empty()).then_some(r.mode.as_str()))?;
        let ttl = ttl_of(r.ttl_seconds)?;
        let (computer, grant, token) = issue_token(&self.state, &caller, &r.computer, mode, ttl).await?;
        Ok(Response::new(pb::Token {
            url: self.state.links.viewer_url(&computer, &token),
            token,
            expires_at: grant.expires_at,
            computer: computer.id,
            mode: mode.as_str().into(),
        }))
    }

    async fn create_desktop_token(&self, request: Request<pb::DesktopTokenRequest>) -> Answer<pb::Token> {
        let caller = caller(&self.state, request.metadata()).await?;
        let r = request.into_inner();
        let ttl = ttl_of(r.ttl_seconds)?;
        let (computer, grant, token) =
            issue_token(&self.state, &caller, &r.computer, Mode::Desktop, ttl).await?;
        Ok(Response::new(pb::Token {
            token,
            expires_at: grant.expires_at,
            computer: computer.id,
            url: String::new(),
            mode: Mode::Desktop.as_str().into(),
        }))
    }
}
