//! Admin API: replace the topology, feed link utilisation. Bearer token required.
//!
//! Every update is validated in full and built off to the side; only then is the new version
//! swapped in (and, for a topology, the file rewritten first). On any error the old version
//! keeps serving and the caller gets 422 with the precise reason.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::http::{authorize, ApiError};
use super::AppState;
use crate::model::LinkLoad;

/// Largest topology accepted by `PUT /admin/topology`.
pub const MAX_TOPOLOGY_BYTES: usize = 16 * 1024 * 1024;

/// Registers the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/topology")
            .app_data(web::PayloadConfig::new(MAX_TOPOLOGY_BYTES))
            .route(web::put().to(put_topology)),
    )
    .route("/admin/link-load", web::post().to(post_link_load));
}

/// Body of `POST /admin/link-load`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkLoadBody {
    /// One measurement per link.
    pub links: Vec<LinkLoad>,
}

async fn put_topology(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, state.admin_token.as_ref(), true)?;
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
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, state.admin_token.as_ref(), true)?;
    let loads: LinkLoadBody = serde_json::from_slice(&body).map_err(ApiError::LinkLoadBody)?;
    let state2 = state.clone();
    let outcome = web::block(move || state2.apply_link_loads(&loads.links)).await?;
    state.record_update("link-load", outcome.is_ok());
    Ok(HttpResponse::Ok().json(outcome?))
}
