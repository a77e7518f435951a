//! gRPC for API clients, on the REST port: requests whose content type is `application/grpc`
//! go to the gateway's gRPC services, everything else to the REST router (see
//! ARCHITECTURE.md for why one port). The services are `orgo.agent.v1.Agent` (every call of
//! the agent's own protocol, for the desktop named by `x-orgo-computer` metadata), the
//! lifecycle service `orgo.v1.Computers`, `grpc.health.v1` and server reflection. Calls are
//! authenticated by `authorization: Bearer <api key>` metadata (or a desktop token, for the
//! Agent calls of its desktop) and go through the same action path, tenancy, plans, rate
//! limits and sentences as REST; errors are mapped once, in `status`.

mod agent;
mod computers;
mod status;
mod streams;

use axum::body::Body;
use axum::http::{Request, header};
use tonic::metadata::MetadataMap;
use tonic_health::server::{HealthReporter, HealthService};
use tower::ServiceExt;

use orgo_proto::lifecycle::computers_server::ComputersServer;
use orgo_proto::v1::agent_server::AgentServer;

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Computer;
use crate::token::Mode;

/// The metadata key naming the computer (id or name) an `orgo.agent.v1.Agent` call drives.
pub const COMPUTER: &str = "x-orgo-computer";

/// The largest answer: a PNG of a large screen fits (the agent's clients' bound). Requests are
/// bounded by `max_body_bytes`, as REST's.
const MAX_MESSAGE: usize = orgo_proto::connect::MAX_MESSAGE;

/// The health service's reporter, each gRPC service marked SERVING (the gateway's readiness
/// is `/readyz`'s; a gateway that answers serves every service).
pub async fn health() -> HealthReporter {
    let reporter = HealthReporter::new();
    reporter.set_serving::<AgentServer<agent::Agent>>().await;
    reporter
        .set_serving::<ComputersServer<computers::Computers>>()
        .await;
    reporter
}

/// The gateway's gRPC services as one router.
pub fn router(state: AppState) -> axum::Router {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(orgo_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the protos' own descriptors decode");
    let health = tonic_health::pb::health_server::HealthServer::new(HealthService::from_health_reporter(
        state.health.clone(),
    ));
    // Requests are read whole before their credentials are checked: REST's body bound holds
    // (the largest valid request, 100,000 characters of text, fits the default 2 MiB).
    let limit = state.config.max_body_bytes;
    let agent = AgentServer::new(agent::Agent::new(state.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(MAX_MESSAGE);
    let computers = ComputersServer::new(computers::Computers::new(state)).max_decoding_message_size(limit);
    tonic::service::Routes::new(agent)
        .add_service(computers)
        .add_service(health)
        .add_service(reflection)
        .prepare()
        .into_axum_router()
}

/// Whether a request is gRPC: its content type is `application/grpc`, alone or with a
/// `+proto`/`;…` suffix, as gRPC over HTTP/2 specifies.
fn is_grpc(request: &Request<Body>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'))
        })
}

/// REST and gRPC on one router: each request goes to `grpc` when it is gRPC, else to `rest`.
pub fn beside(rest: axum::Router, grpc: axum::Router) -> axum::Router {
    axum::Router::new().fallback_service(tower::service_fn(move |request: Request<Body>| {
        let to = if is_grpc(&request) {
            grpc.clone()
        } else {
            rest.clone()
        };
        to.oneshot(request)
    }))
}

/// The `authorization` metadata, as REST's header.
fn authorization(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get(header::AUTHORIZATION.as_str())
        .map(|v| v.to_str().unwrap_or(""))
}

/// The caller of a call's API key, its rate taken; desktop tokens open no lifecycle call.
async fn caller(state: &AppState, metadata: &MetadataMap) -> Result<Caller, ApiError> {
    let credential = auth::bearer(authorization(metadata))?;
    if !auth::is_api_key(credential) {
        return Err(ApiError::Unauthorized(
            "orgo.v1.Computers takes an API key (a desktop token opens only its desktop's orgo.agent.v1.Agent calls)"
                .into(),
        ));
    }
    auth::authenticate_key(state, credential).await
}

/// The computer an Agent call drives: the one `x-orgo-computer` names in the API key's
/// account, or the one a desktop token opens (`x-orgo-computer`, when given, must name it).
async fn target(state: &AppState, metadata: &MetadataMap) -> Result<Computer, ApiError> {
    let credential = auth::bearer(authorization(metadata))?;
    let named = match metadata.get(COMPUTER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::BadRequest(format!("{COMPUTER} must be a computer's id or name")))?,
        ),
    }
    .filter(|n| !n.is_empty());
    if auth::is_api_key(credential) {
        let caller = auth::authenticate_key(state, credential).await?;
        let named = named.ok_or_else(|| {
            ApiError::BadRequest(format!(
                "name the computer to drive with {COMPUTER} metadata (its id or name)"
            ))
        })?;
        return caller.computer(state, named).await;
    }
    let grant = state.links.verify(credential)?;
    if grant.mode != Mode::Desktop {
        return Err(ApiError::Unauthorized(
            "a viewer token opens the live view only; call with an API key or a desktop token (POST /api/computers/{id}/desktop-token)"
                .into(),
        ));
    }
    let account = state
        .store
        .account(&grant.account)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("invalid token".into()))?;
    // One bucket for all of an account's tokens, so minting more buys no more rate.
    auth::take_rate(state, &format!("desktop-tokens:{}", account.id), &account)?;
    let computer = state.desktops.find(&account.id, &grant.computer).await?;
    grant.still_in(&computer.project_id)?;
    // Compared with the token's own computer only: a name says nothing of the others.
    if named.is_some_and(|n| n != computer.id && n != computer.name) {
        return Err(ApiError::Forbidden(
            "this desktop token is for another computer".into(),
        ));
    }
    Ok(computer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_is_told_by_its_content_type() {
        let with = |ct: &str| {
            Request::post("/x")
                .header(header::CONTENT_TYPE, ct)
                .body(Body::empty())
                .unwrap()
        };
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(&with(ct)), "{ct}");
        }
        for ct in [
            "application/json",
            "application/grpc-web",
            "application/grpcx",
            "text/plain",
        ] {
            assert!(!is_grpc(&with(ct)), "{ct}");
        }
        assert!(!is_grpc(&Request::get("/").body(Body::empty()).unwrap()));
    }
}
