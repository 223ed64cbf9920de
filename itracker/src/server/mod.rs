//! The ALTO service (RFC 7285) with its admin API, metrics and health check.
//!
//! [`build`] binds the listener (port 0 works) and returns a [`Bound`] server with its address;
//! [`Bound::run`] serves until stopped. [`spawn`] runs one on a background thread, for tests
//! and for embedding. `main.rs` only wires configuration to [`run`].

mod admin;
mod endpoint_cost;
mod http;
mod metrics;
mod routes;
mod state;
mod stream;
mod tls;

use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use actix_web::dev::{Server, ServerHandle, Service};
use actix_web::{web, App, HttpResponse, HttpServer};
use arc_swap::ArcSwap;

pub use self::http::{ApiError, Token};
pub use self::metrics::Metrics;
pub use self::routes::directory_message;
pub use self::state::{NetworkPart, Rendered, Served};
pub use self::stream::{MAX_STREAMS, MAX_SUBSTREAMS};
use crate::config::Config;
use crate::model::{LinkLoad, Topology, TopologyError};
use crate::snapshot::SnapshotError;
use crate::source::asn::{AsnDb, AsnError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The topology file is missing or invalid.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The ASN database could not be opened.
    #[error(transparent)]
    Asn(#[from] AsnError),
    /// The topology does not build a lookup snapshot.
    #[error("topology refused: {0}")]
    Snapshot(#[from] SnapshotError),
    /// A token file could not be read.
    #[error("cannot read token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A token (file) is empty or holds only whitespace.
    #[error(
        "the {what} token{} is empty (or only whitespace): write a token, or unset the option",
        path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default()
    )]
    EmptyToken {
        what: &'static str,
        path: Option<PathBuf>,
    },
    /// Only one of `tls_cert` and `tls_key` is configured.
    #[error("TLS: set both tls_cert and tls_key, or neither")]
    TlsHalfConfigured,
    /// A certificate or key file cannot be read or is not PEM.
    #[error("TLS: {path}: {source}")]
    TlsFile {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("TLS: {path}: no certificate found")]
    NoCertificate { path: PathBuf },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("TLS: {0}")]
    TlsConfig(#[source] rustls::Error),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an I/O error after it had started.
    #[error("serving on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The background server's thread ([`spawn`]) could not be started.
    #[error("cannot start the server thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The background server's thread could not build its Tokio runtime.
    #[error("cannot start the server thread's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The background server's thread ended (panicked) before the server was listening.
    #[error("the server thread died before the server was listening")]
    ThreadDied,
}

/// Shared state of all workers.
#[derive(Debug)]
pub struct AppState {
    current: ArcSwap<Served>,
    /// Serialises writers (admin calls, reloads) so that each starts from the version the
    /// previous one produced. A `std` mutex: it is only taken inside blocking sections
    /// (`web::block`, the SIGHUP task's `spawn_blocking`), never across an `.await`.
    writer: Mutex<()>,
    asn: Option<Arc<AsnDb>>,
    topology_path: Option<PathBuf>,
    admin_token: Option<Token>,
    read_token: Option<Token>,
    ird: Rendered,
    metrics: Metrics,
    limits: Limits,
    /// The update streams (RFC 8895): told of every swapped-in version.
    updates: stream::Hub,
}

/// Bounds on what one request may ask for (from [`Config`]).
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_endpoint_pairs: usize,
    max_endpoints: usize,
}

/// What a successful update answers.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// The network map's vtag after the update.
    pub vtag: String,
    /// The numerical cost map's ETag after the update.
    #[serde(rename = "cost-map-etag")]
    pub cost_map_etag: String,
}

impl AppState {
    /// Builds the state from a configuration (loads topology, ASN database, tokens).
    pub fn from_config(config: &Config) -> Result<AppState, ServerError> {
        let topology = match &config.topology {
            Some(path) => Topology::from_file(path)?,
            None => crate::embedded_default(),
        };
        let asn = match &config.asn_db {
            Some(path) => Some(Arc::new(AsnDb::open(path)?)),
            None => None,
        };
        let admin_token = token(
            config.admin_token.as_deref(),
            config.admin_token_file.as_deref(),
            "admin",
        )?;
        let read_token = token(
            config.read_token.as_deref(),
            config.read_token_file.as_deref(),
            "read",
        )?;
        if admin_token.is_none() {
            tracing::info!(
                "admin API off: no admin token configured (admin_token_file or \
                 P4P_ITRACKER_ADMIN_TOKEN); every admin call answers 401"
            );
        }
        let ird = Rendered::new(&directory_message(asn.is_some()), None);
        let served = Arc::new(Served::new(topology, asn.clone())?);
        let metrics = Metrics::default();
        record_gauges(&metrics, &served);
        Ok(AppState {
            current: ArcSwap::from(served.clone()),
            updates: stream::Hub::new(served, metrics.update_streams.clone()),
            writer: Mutex::new(()),
            asn,
            topology_path: config.topology.clone(),
            admin_token,
            read_token,
            ird,
            metrics,
            limits: Limits {
                max_endpoint_pairs: config.max_endpoint_pairs,
                max_endpoints: config.max_endpoints,
            },
        })
    }

    /// The version being served.
    pub fn current(&self) -> Arc<Served> {
        self.current.load_full()
    }

    /// Endpoint properties this server answers.
    fn prop_types(&self) -> Vec<&'static str> {
        use crate::alto::property;
        let mut v = vec![property::PID, property::INTERNAL];
        if self.asn.is_some() {
            v.push(property::ASN);
        }
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn swap(&self, served: Served) -> UpdateOutcome {
        record_gauges(&self.metrics, &served);
        let outcome = UpdateOutcome {
            vtag: served.network.vtag.tag.clone(),
            cost_map_etag: served.cost_num.etag.trim_matches('"').to_string(),
        };
        let served = Arc::new(served);
        let old = self.current.swap(served.clone());
        self.updates.publish(&old, served);
        outcome
    }

    /// Replaces the topology with the text of a topology file: validated in full, written to
    /// the topology file atomically (when there is one), then swapped in. Dynamic link prices
    /// carry over. On error nothing changes.
    pub fn replace_topology(&self, text: &str) -> Result<UpdateOutcome, ApiError> {
        let _guard = self.lock();
        let topology = Topology::from_toml_str_inheriting(text, &self.current().topology)?;
        let served = Served::new(topology, self.asn.clone())?;
        if let Some(path) = &self.topology_path {
            write_atomically(path, text).map_err(|source| ApiError::WriteTopology {
                path: path.clone(),
                source,
            })?;
        }
        let outcome = self.swap(served);
        tracing::info!(vtag = %outcome.vtag, "topology replaced");
        Ok(outcome)
    }

    /// Applies link utilisation measurements (one price update per link named).
    pub fn apply_link_loads(&self, loads: &[LinkLoad]) -> Result<UpdateOutcome, ApiError> {
        let _guard = self.lock();
        let current = self.current();
        let mut topology = current.topology.clone();
        topology.apply_link_loads(loads)?;
        let outcome = self.swap(current.with_new_costs(topology, self.asn.clone())?);
        tracing::info!(links = loads.len(), etag = %outcome.cost_map_etag, "link loads applied");
        Ok(outcome)
    }

    /// Re-reads the topology file (SIGHUP). Dynamic prices carry over; on error the old map
    /// keeps serving.
    pub fn reload(&self) -> Result<UpdateOutcome, ServerError> {
        let _guard = self.lock();
        let Some(path) = &self.topology_path else {
            return Ok(self.outcome_now());
        };
        let result = Topology::from_file_inheriting(path, &self.current().topology)
            .map_err(ServerError::from)
            .and_then(|t| Ok(Served::new(t, self.asn.clone())?));
        // Counted like the admin updates: topology_updates_total{kind="reload",outcome}.
        self.record_update("reload", result.is_ok());
        let outcome = self.swap(result?);
        tracing::info!(vtag = %outcome.vtag, "topology reloaded");
        Ok(outcome)
    }

    fn outcome_now(&self) -> UpdateOutcome {
        let s = self.current();
        UpdateOutcome {
            vtag: s.network.vtag.tag.clone(),
            cost_map_etag: s.cost_num.etag.trim_matches('"').to_string(),
        }
    }

    fn record_update(&self, kind: &str, ok: bool) {
        self.metrics.update(kind, ok);
    }
}

fn record_gauges(metrics: &Metrics, served: &Served) {
    metrics.pids.set(served.topology.pids().len() as i64);
    metrics.links.set(served.topology.links().len() as i64);
}

/// A bearer token given directly or in a file. An empty (or whitespace-only) one is an error,
/// not "no token": it would silently close the admin API (or open the read API).
fn token(
    direct: Option<&str>,
    file: Option<&Path>,
    what: &'static str,
) -> Result<Option<Token>, ServerError> {
    if let Some(t) = direct {
        return Token::new(t)
            .map(Some)
            .ok_or(ServerError::EmptyToken { what, path: None });
    }
    match file {
        None => Ok(None),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ServerError::TokenFile {
                path: path.to_path_buf(),
                source,
            })?;
            Token::new(&text).map(Some).ok_or(ServerError::EmptyToken {
                what,
                path: Some(path.to_path_buf()),
            })
        }
    }
}

/// Writes a file so that readers see the old or the new content, never a mix: a temporary
/// file in the same directory, synced, then renamed over the target.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A future whose poll panicking resolves to `Err(())` instead of unwinding further.
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F> CatchUnwind<F> {
    fn new(f: F) -> Self {
        CatchUnwind(Box::pin(f))
    }
}

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(())),
        }
    }
}

/// A bound, not yet running server.
pub struct Bound {
    addr: SocketAddr,
    tls: bool,
    server: Server,
    state: web::Data<AppState>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Bound {
    /// The bound address (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL (`http://` or `https://`) of the IRD.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/directory", self.addr)
    }

    /// The shared state (for reloads from outside, e.g. SIGHUP).
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone().into_inner()
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (handle, or SIGINT/SIGTERM when signals are enabled).
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Binds the listener and prepares the server. Must be called inside a Tokio (or Actix)
/// runtime. `handle_signals`: stop gracefully on SIGINT/SIGTERM.
pub fn build(config: &Config, handle_signals: bool) -> Result<Bound, ServerError> {
    let state = web::Data::new(AppState::from_config(config)?);
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        (None, None) => None,
        _ => return Err(ServerError::TlsHalfConfigured),
    };
    let listener = TcpListener::bind(config.bind).map_err(|source| ServerError::Bind {
        addr: config.bind,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.bind,
        source,
    })?;
    let app_state = state.clone();
    let factory = move || {
        let metrics_state = app_state.clone();
        App::new()
            .app_data(app_state.clone())
            .wrap_fn(move |req, srv| {
                let route = req
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".to_string());
                // A panic in a handler (a bug, or a malformed input a library chokes on) costs
                // this one answer (500), never the worker and its other connections.
                let fut = catch_unwind(AssertUnwindSafe(|| srv.call(req))).map(CatchUnwind::new);
                let st = metrics_state.clone();
                async move {
                    let caught = match fut {
                        Ok(fut) => fut.await,
                        Err(_) => Err(()),
                    };
                    let res = match caught {
                        Ok(res) => res?.map_into_boxed_body(),
                        Err(()) => {
                            // The request went into the panicked service: answer through the
                            // error path (the dispatcher renders ApiError::Panic's 500).
                            tracing::error!(route = %route, "request handler panicked; answered 500");
                            st.metrics.request(&route, 500);
                            return Err(ApiError::Panic.into());
                        }
                    };
                    st.metrics.request(&route, res.status().as_u16());
                    Ok(res)
                }
            })
            .configure(routes::configure)
            .configure(admin::configure)
            .configure(stream::configure)
            .route(
                "/health",
                web::get().to(|| async { HttpResponse::Ok().body("ok\n") }),
            )
            .route("/metrics", web::get().to(metrics_endpoint))
    };
    let mut server = HttpServer::new(factory).workers(config.workers.max(1));
    if !handle_signals {
        server = server.disable_signals();
    }
    let bind_err = |source| ServerError::Bind {
        addr: config.bind,
        source,
    };
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls).map_err(bind_err)?,
        None => server.listen(listener).map_err(bind_err)?,
    };
    let is_tls = config.tls_cert.is_some();
    tracing::info!(%addr, tls = is_tls, "p4p-itracker listening");
    Ok(Bound {
        addr,
        tls: is_tls,
        server: server.run(),
        state,
    })
}

async fn metrics_endpoint(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render())
}

/// Builds and runs a server until SIGINT/SIGTERM; SIGHUP reloads the topology file.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let bound = build(&config, true)?;
    let state = bound.state();
    #[cfg(unix)]
    tokio::spawn(stream::close_on_signal(state.clone()));
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(state));
    #[cfg(not(unix))]
    drop(state);
    let addr = bound.addr();
    bound
        .run()
        .await
        .map_err(|source| ServerError::Serve { addr, source })
}

#[cfg(unix)]
async fn reload_on_sighup(state: Arc<AppState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload by PUT /admin/topology");
        return;
    };
    while hup.recv().await.is_some() {
        let st = state.clone();
        match tokio::task::spawn_blocking(move || st.reload()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "reload failed; the old map keeps serving"),
            Err(e) => tracing::error!(error = %e, "reload task failed"),
        }
    }
}

/// A server running on its own thread (with its own runtime); stopped on [`Background::stop`]
/// or drop.
#[derive(Debug)]
pub struct Background {
    addr: SocketAddr,
    url: String,
    state: Arc<AppState>,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts a server on a background thread and returns once it is listening.
pub fn spawn(config: Config) -> Result<Background, ServerError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("p4p-itracker".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(ServerError::Runtime(e)));
                    return;
                }
            };
            rt.block_on(async move {
                match build(&config, false) {
                    Ok(bound) => {
                        let _ = tx.send(Ok((
                            bound.addr(),
                            bound.url(),
                            bound.state(),
                            bound.handle(),
                        )));
                        let _ = bound.run().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(ServerError::Thread)?;
    let (addr, url, state, handle) = rx.recv().map_err(|_| ServerError::ThreadDied)??;
    Ok(Background {
        addr,
        url,
        state,
        handle,
        thread: Some(thread),
    })
}

impl Background {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The IRD URL (`http(s)://addr/directory`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The shared state (to reload or update without HTTP).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            let handle = self.handle.clone();
            // `stop` returns a future that completes once stopped; the server's own runtime
            // drives it, so block on a tiny runtime here.
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() {
                rt.block_on(handle.stop(false));
            }
            let _ = thread.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16 item 3: what the request middleware relies on: a handler future that panics
    /// resolves to `Err(())` (answered 500) instead of unwinding through the worker.
    #[test]
    fn a_panicking_handler_future_is_caught() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let caught = rt.block_on(CatchUnwind::new(async {
            let v: Vec<u32> = Vec::new();
            v[usize::from(v.is_empty())]
        }));
        assert_eq!(caught, Err(()));
        assert_eq!(rt.block_on(CatchUnwind::new(async { 7 })), Ok(7));
    }
}
