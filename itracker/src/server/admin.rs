//! Admin API: replace the topology, feed link utilisation. Bearer token required.
//!
//! Every update is validated in full and built off to the side; only then is the new version
//! swapped in (and, for a topology, the file rewritten first). On any error the old version
//! keeps serving and the caller gets 422 with the precise reason.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::http::{authorize, ApiError};
use super::routes::only;
use super::AppState;
use crate::model::LinkLoad;

/// Largest topology accepted by `PUT /admin/topology`.
pub const MAX_TOPOLOGY_BYTES: usize = 16 * 1024 * 1024;

/// Largest link-load body accepted by `POST /admin/link-load`.
pub const MAX_LINK_LOAD_BYTES: usize = 256 * 1024;

/// Registers the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(only("/admin/topology", "PUT", web::put().to(put_topology)))
        .service(only(
            "/admin/link-load",
            "POST",
            web::post().to(post_link_load),
        ));
}

/// Body of `POST /admin/link-load`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkLoadBody {
    /// One measurement per link.
    pub links: Vec<LinkLoad>,
}

/// Authorises an admin call from its headers alone, then reads its body (at most `limit`
/// bytes). The body of an unauthorised call is never read: answering 401 costs nothing
/// whatever it announces.
async fn authorised_body(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    if let Err(e) = authorize(req, state.admin_token.as_ref(), true) {
        tracing::warn!(
            peer = ?req.peer_addr(),
            path = req.path(),
            admin_api = if state.admin_token.is_some() { "on" } else { "off (no token configured)" },
            "admin call refused: missing or invalid bearer token"
        );
        return Err(e);
    }
    match payload.to_bytes_limited(limit).await {
        Ok(body) => body.map_err(|e| ApiError::Payload(e.to_string())),
        Err(_) => Err(ApiError::TooLarge(limit)),
    }
}

async fn put_topology(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = authorised_body(&req, &state, payload, MAX_TOPOLOGY_BYTES).await?;
    let text = std::str::from_utf8(&body)
        .map_err(ApiError::NotUtf8)?
        .to_string();
    let state2 = state.clone();
    let outcome = web::block(move || state2.replace_topology(&text)).await?;
    state.record_update("topology", outcome.is_ok());
    Ok(HttpResponse::Ok().json(outcome?))
}

async fn post_link_load(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = authorised_body(&req, &state, payload, MAX_LINK_LOAD_BYTES).await?;
    let loads: LinkLoadBody = serde_json::from_slice(&body).map_err(ApiError::LinkLoadBody)?;
    let state2 = state.clone();
    let outcome = web::block(move || state2.apply_link_loads(&loads.links)).await?;
    state.record_update("link-load", outcome.is_ok());
    Ok(HttpResponse::Ok().json(outcome?))
}
