//! The HTTP front end (actix-web): thin handlers over [`Tracker`].
//!
//! Tracker errors are bencoded `failure reason` dictionaries with status 200: BitTorrent clients
//! read the body, not the status.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::header::{ContentType, HeaderMap};
use actix_web::{web, App, HttpRequest, HttpResponse};

use super::guarded;
use super::scrape_all::{names_info_hash, FullScrape};
use crate::metrics::{Outcome, Protocol, Tally};
use crate::protocol::bencode;
use crate::protocol::http::{self as codec, AnnounceAnswer};
use crate::service::{with_workspace, Tracker, Workspace};
use crate::types::Families;
use crate::types::{normalize_ip, Announce};

pub(super) type State = web::Data<Arc<Tracker>>;

/// Builds the HTTP server on already-bound listeners (port 0 works; tests read the port back).
pub fn build(tracker: Arc<Tracker>, listeners: Vec<TcpListener>) -> std::io::Result<Server> {
    let max_query_len = tracker.config.http.max_query_len;
    let workers = match tracker.config.http.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // With an ops listener, /metrics, /health and /topology are served there only.
    let ops_routes = tracker.config.ops.bind.is_none();
    let full_scrape = web::Data::new(FullScrape::new(&tracker.config.http));
    let state = web::Data::new(tracker);
    let app = move || {
        let app = App::new()
            .app_data(state.clone())
            .app_data(full_scrape.clone())
            .route("/announce", web::get().to(announce))
            .route("/scrape", web::get().to(scrape));
        if ops_routes {
            app.configure(ops_routes_on)
        } else {
            app
        }
    };
    // actix-web's `HttpServer`, but with each connection read through a [`LineGuard`], so an
    // over-long request line gets a failure reason (see `line_guard`). The settings are
    // `HttpServer`'s defaults.
    let limit = super::line_guard::line_limit(max_query_len);
    let mut server = actix_server::Server::build()
        .workers(workers)
        .disable_signals();
    for l in listeners {
        let addr = l.local_addr()?;
        let app = app.clone();
        server = server.listen(format!("p4p-http-{addr}"), l, move || {
            let guarded =
                actix_service::fn_service(move |io: actix_rt::net::TcpStream| async move {
                    let peer = io.peer_addr().ok();
                    let io = super::line_guard::LineGuard::new(io, limit);
                    Ok::<_, actix_http::error::DispatchError>((
                        io,
                        actix_http::Protocol::Http1,
                        peer,
                    ))
                });
            let service = actix_http::HttpService::build()
                .client_request_timeout(std::time::Duration::from_secs(5))
                .client_disconnect_timeout(std::time::Duration::from_secs(1))
                .local_addr(addr)
                .finish(actix_service::map_config(
                    actix_service::IntoServiceFactory::into_factory(app()),
                    // Host and local address for URL building, which no route uses.
                    |_| actix_web::dev::AppConfig::default(),
                ));
            actix_service::ServiceFactoryExt::and_then(guarded, service)
        })?;
    }
    Ok(server.run())
}

/// The read-only operations routes (on the tracker's port without an ops listener; see
/// [`super::ops`]).
pub(super) fn ops_routes_on(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/health", web::get().to(health))
        .route("/topology", web::get().to(topology));
}

fn bencoded(body: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body(body)
}

pub(super) fn failure(reason: &str) -> HttpResponse {
    bencoded(bencode::failure(reason))
}

/// The client's address: the TCP peer, or the proxy's headers when configured to trust them.
fn client_ip(req: &HttpRequest, reverse_proxy: bool) -> Option<IpAddr> {
    if reverse_proxy {
        return forwarded_ip(req.headers());
    }
    req.peer_addr().map(|a| normalize_ip(a.ip()))
}

/// The address a reverse proxy reports: the last `X-Forwarded-For` entry (the one the proxy
/// itself appended), else `X-Real-IP`.
fn forwarded_ip(headers: &HeaderMap) -> Option<IpAddr> {
    let last_forwarded = headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .and_then(|s| s.trim().parse().ok());
    let real = || headers.get("x-real-ip")?.to_str().ok()?.trim().parse().ok();
    last_forwarded.or_else(real).map(normalize_ip)
}

/// Why a request got a failure reason instead of an answer: the outcome it is counted under
/// and the text the client reads.
type Refusal = (Outcome, &'static str);

async fn announce(req: HttpRequest, state: State) -> HttpResponse {
    let tracker = state.get_ref();
    let answer = async |ws: &mut Workspace| answer_announce(&req, tracker, ws).await;
    serve(tracker, Tally::announce, answer).await
}

async fn scrape(req: HttpRequest, state: State, full: web::Data<FullScrape>) -> HttpResponse {
    let tracker = state.get_ref();
    if tracker.config.http.full_scrape && !names_info_hash(req.query_string()) {
        return full.serve(&req, tracker).await;
    }
    let answer = async |ws: &mut Workspace| answer_scrape(&req, tracker, ws).await;
    serve(tracker, Tally::scrape, answer).await
}

/// Answers one request with this thread's workspace, counts it with `count` (its outcome) and
/// adds the tally to the metrics; a panic while answering costs this answer only.
async fn serve(
    tracker: &Tracker,
    count: fn(&mut Tally, Protocol, Outcome),
    answer: impl AsyncFnOnce(&mut Workspace) -> Result<Vec<u8>, Refusal>,
) -> HttpResponse {
    let handling = with_workspace(|mut ws| async move {
        let (outcome, response) = respond(answer(&mut ws).await);
        count(&mut ws.tally, Protocol::Http, outcome);
        tracker.metrics.add(&mut ws.tally);
        (ws, response)
    });
    guarded(handling, &tracker.metrics, Protocol::Http)
        .await
        .unwrap_or_else(internal_error)
}

/// What a client gets when handling its request panicked (counted by [`guarded`]).
fn internal_error() -> HttpResponse {
    failure("internal error")
}

/// The bencoded answer or failure reason, and the outcome to count.
fn respond(answer: Result<Vec<u8>, Refusal>) -> (Outcome, HttpResponse) {
    match answer {
        Ok(body) => (Outcome::Ok, bencoded(body)),
        Err((outcome, reason)) => (outcome, failure(reason)),
    }
}

async fn answer_announce(
    req: &HttpRequest,
    tracker: &Tracker,
    ws: &mut Workspace,
) -> Result<Vec<u8>, Refusal> {
    let config = &tracker.config;
    let bad = |reason| (Outcome::BadRequest, reason);
    let query = req.query_string().as_bytes();
    if query.len() > config.http.max_query_len {
        return Err(bad("query string too long"));
    }
    let q = codec::parse_announce(query).map_err(bad)?;
    let ip = match (q.ip, config.http.trust_ip_param) {
        (Some(ip), true) => normalize_ip(ip),
        _ => client_ip(req, config.http.reverse_proxy)
            .ok_or(bad("cannot determine the client address"))?,
    };
    let a = Announce {
        info_hash: q.info_hash,
        peer: SocketAddr::new(ip, q.port),
        event: q.event,
        left: q.left,
        numwant: config.numwant(q.numwant),
    };
    let stats = tracker
        .announce(&a, Families::Both, ws)
        .await
        .map_err(|e| (Outcome::of_refusal(&e), e.message()))?;
    let mut body = Vec::with_capacity(96 + ws.sink.len() * 18);
    codec::encode_announce(
        &AnnounceAnswer {
            stats,
            interval: config.announce.interval,
            min_interval: config.announce.min_interval,
            v4: &ws.sink.v4,
            v6: &ws.sink.v6,
            compact: q.compact,
        },
        &mut body,
    );
    Ok(body)
}

async fn answer_scrape(
    req: &HttpRequest,
    tracker: &Tracker,
    ws: &mut Workspace,
) -> Result<Vec<u8>, Refusal> {
    let bad = |reason| (Outcome::BadRequest, reason);
    let query = req.query_string().as_bytes();
    if query.len() > tracker.config.http.max_query_len {
        return Err(bad("query string too long"));
    }
    let mut hashes = Vec::new();
    codec::parse_scrape(
        query,
        tracker.config.announce.max_scrape_hashes,
        &mut hashes,
    )
    .map_err(bad)?;
    tracker
        .scrape(&hashes, &mut ws.scrape)
        .await
        .map_err(|e| (Outcome::of_refusal(&e), e.message()))?;
    let mut body = Vec::with_capacity(16 + ws.scrape.len() * 80);
    codec::encode_scrape(&ws.scrape, &mut body);
    Ok(body)
}

async fn metrics(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.render_metrics())
}

/// `ok` (200) while every front end runs and the store answers; otherwise 503 with the reason,
/// so a load balancer or an operator sees a tracker that cannot serve.
async fn health(state: State) -> HttpResponse {
    let tracker = state.get_ref();
    let mut problems = Vec::new();
    let metrics = &tracker.metrics;
    let (running, configured) = (
        metrics.udp_workers_running.get(),
        metrics.udp_workers_configured.get(),
    );
    if running < configured {
        problems.push(format!("UDP: {running} of {configured} workers running"));
    }
    if let Err(e) = tracker.check_store().await {
        problems.push(format!("swarm store: {}", e.message()));
    }
    if problems.is_empty() {
        return HttpResponse::Ok()
            .content_type(ContentType::plaintext())
            .body("ok\n");
    }
    HttpResponse::ServiceUnavailable()
        .content_type(ContentType::plaintext())
        .body(problems.join("\n") + "\n")
}

/// Debug view of the topology in use: version, PIDs, peers per PID. No peer addresses.
async fn topology(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body(state.describe_topology())
}
