//! The operations listener (`ops.bind`): `/metrics`, `/health`, `/topology` and the admin API,
//! off the public announce port. Without it those read-only routes are served on the HTTP
//! tracker's addresses and the admin API is off.
//!
//! Admin API (bearer token from `ops.admin_token_file`, compared in constant time; without a
//! token every admin call answers 403):
//! - `PUT /admin/access-list`: the body is the new access-list file; it is checked, written to
//!   the configured file (atomically) and swapped in. 400 with the bad line for a bad text (the
//!   list in use keeps serving), 409 without an access list configured.
//! - `POST /admin/access-list/reload`: re-reads the access-list file (500 with the reason when
//!   it cannot be loaded; the list in use keeps serving).
//! - `POST /admin/reload`: what SIGHUP does (access list and topology file).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::http::header::{self, ContentType};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use p4p_itracker::bearer::BearerToken;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::http::{ops_routes_on, State};
use crate::access::ReplaceError;
use crate::service::Tracker;

/// Largest `PUT /admin/access-list` body: 2 M v1 hashes with their newlines, and room for
/// comments.
const MAX_LIST_BODY: usize = 128 << 20;

/// The admin API's bearer token (see [`p4p_itracker::bearer`]).
#[derive(Clone, Debug)]
pub struct AdminToken(BearerToken);

impl AdminToken {
    /// Reads the token file (surrounding whitespace, such as a final newline, is ignored). An
    /// unreadable, empty or whitespace-only file is an error: the tracker refuses to start
    /// rather than run an admin API nobody can use, or anyone could.
    pub fn from_file(path: &Path) -> std::io::Result<AdminToken> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("ops.admin_token_file: cannot read {}: {e}", path.display()),
            )
        })?;
        BearerToken::new(&text).map(AdminToken).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "ops.admin_token_file: {} is empty (or only whitespace): write a token, or unset the option",
                    path.display()
                ),
            )
        })
    }
}

/// The refusal to send when `req` may not use the admin API (logged); `None` when it may.
fn refusal(req: &HttpRequest, token: Option<&AdminToken>) -> Option<HttpResponse> {
    let who = req.peer_addr();
    let Some(token) = token else {
        return Some(
            HttpResponse::Forbidden()
                .content_type(ContentType::plaintext())
                .body("admin API off: start the tracker with --admin-token-file\n"),
        );
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if token.0.authorizes(authorization) {
        return None;
    }
    tracing::warn!(
        client = ?who,
        path = req.path(),
        "admin call refused: missing or invalid bearer token"
    );
    Some(
        HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .content_type(ContentType::plaintext())
            .body("missing or invalid bearer token\n"),
    )
}

type Token = web::Data<Option<AdminToken>>;

fn text(mut res: actix_web::HttpResponseBuilder, body: String) -> HttpResponse {
    res.content_type(ContentType::plaintext()).body(body + "\n")
}

async fn put_access_list(
    req: HttpRequest,
    body: web::Bytes,
    state: State,
    token: Token,
) -> HttpResponse {
    if let Some(refused) = refusal(&req, token.as_ref().as_ref()) {
        return refused;
    }
    let tracker = state.get_ref().clone();
    let outcome = web::block(move || tracker.replace_access_list(&body)).await;
    match outcome {
        Ok(Ok(n)) => text(
            HttpResponse::Ok(),
            format!("access list replaced: {n} entries"),
        ),
        Ok(Err(e @ ReplaceError::NotConfigured)) => text(HttpResponse::Conflict(), e.to_string()),
        Ok(Err(e @ ReplaceError::Invalid(_))) => text(HttpResponse::BadRequest(), e.to_string()),
        Ok(Err(e @ ReplaceError::Write { .. })) => {
            text(HttpResponse::InternalServerError(), e.to_string())
        }
        Err(e) => text(HttpResponse::InternalServerError(), e.to_string()),
    }
}

async fn reload_access_list(req: HttpRequest, state: State, token: Token) -> HttpResponse {
    if let Some(refused) = refusal(&req, token.as_ref().as_ref()) {
        return refused;
    }
    let tracker = state.get_ref().clone();
    match web::block(move || tracker.reload_access_list()).await {
        Ok(Ok(Some(n))) => text(
            HttpResponse::Ok(),
            format!("access list reloaded: {n} entries"),
        ),
        Ok(Ok(None)) => text(
            HttpResponse::Conflict(),
            ReplaceError::NotConfigured.to_string(),
        ),
        Ok(Err(e)) => text(
            HttpResponse::InternalServerError(),
            format!("access list reload refused, the list in use keeps serving: {e}"),
        ),
        Err(e) => text(HttpResponse::InternalServerError(), e.to_string()),
    }
}

async fn reload(req: HttpRequest, state: State, token: Token) -> HttpResponse {
    if let Some(refused) = refusal(&req, token.as_ref().as_ref()) {
        return refused;
    }
    tracing::info!("admin API: reloading");
    let tracker = state.get_ref().clone();
    match web::block(move || tracker.reload()).await {
        Ok(true) => text(HttpResponse::Ok(), "reloaded".into()),
        Ok(false) => text(
            HttpResponse::InternalServerError(),
            "reload refused in part; what is in use keeps serving (see the log)".into(),
        ),
        Err(e) => text(HttpResponse::InternalServerError(), e.to_string()),
    }
}

/// What [`start`] started.
#[derive(Debug, Default)]
pub struct Started {
    /// Where the ops listener listens, if configured.
    pub addr: Option<SocketAddr>,
    pub server: Option<ServerHandle>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Loads the access list (a bad one refuses the start), starts its file watcher, and the ops
/// listener when `ops.bind` is set (reading the admin token first: an unreadable or empty
/// token file refuses the start).
pub fn start(tracker: &Arc<Tracker>, shutdown: &watch::Receiver<bool>) -> std::io::Result<Started> {
    tracker.load_access_list().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("access list: {e}"))
    })?;
    let mut started = Started::default();
    if tracker.access.is_some() {
        started.tasks.push(tokio::spawn(crate::access::watch(
            tracker.clone(),
            shutdown.clone(),
        )));
    }
    let Some(bind) = tracker.config.ops.bind else {
        return Ok(started);
    };
    let token = match &tracker.config.ops.admin_token_file {
        Some(path) => Some(AdminToken::from_file(path)?),
        None => None,
    };
    let listener = TcpListener::bind(bind)
        .map_err(|e| std::io::Error::new(e.kind(), format!("ops listener on {bind}: {e}")))?;
    let addr = listener.local_addr()?;
    if token.is_none() {
        tracing::info!("admin API off: no admin token configured (--admin-token-file)");
    }
    let state = web::Data::new(tracker.clone());
    let token = web::Data::new(token);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(token.clone())
            .app_data(web::PayloadConfig::new(MAX_LIST_BODY))
            .configure(ops_routes_on)
            .route("/admin/access-list", web::put().to(put_access_list))
            .route(
                "/admin/access-list/reload",
                web::post().to(reload_access_list),
            )
            .route("/admin/reload", web::post().to(reload))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    started.server = Some(server.handle());
    started.tasks.push(tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!("ops listener failed: {e}");
        }
    }));
    tracing::info!("ops listener on http://{addr}/ (metrics, health, topology, admin)");
    started.addr = Some(addr);
    Ok(started)
}
