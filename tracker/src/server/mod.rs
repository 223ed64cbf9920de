//! Front ends and background tasks, started and stopped together.
//!
//! [`start`] binds every configured listener (port 0 works: the bound addresses are returned, so
//! tests can talk to the server), starts the HTTP server, the UDP workers and the background
//! [`tasks`] (sweeper, topology refresher), and returns a [`Running`] handle whose [`Running::stop`] shuts everything down gracefully.

pub mod http;
pub mod ops;
pub mod scrape_all;
pub mod tasks;
pub mod udp;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::{Metrics, Protocol};
use crate::service::Tracker;

/// A started tracker.
#[derive(Debug)]
pub struct Running {
    /// Where HTTP listens, in the order of `config.http.bind`.
    pub http_addrs: Vec<SocketAddr>,
    /// Where UDP listens, in the order of `config.udp.bind`.
    pub udp_addrs: Vec<SocketAddr>,
    /// Where the ops listener listens (`ops.bind`), if configured.
    pub ops_addr: Option<SocketAddr>,
    pub tracker: Arc<Tracker>,
    http: Option<actix_web::dev::ServerHandle>,
    ops: Option<actix_web::dev::ServerHandle>,
    tasks: Vec<JoinHandle<()>>,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

/// Binds and starts everything `tracker.config` asks for. Must run inside a tokio runtime.
pub async fn start(tracker: Arc<Tracker>) -> std::io::Result<Running> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    // First: a bad access list or admin token refuses the start before anything listens.
    let ops = ops::start(&tracker, &shutdown_rx)?;
    let mut tasks = ops.tasks;
    let mut http_addrs = Vec::new();
    let mut http = None;
    if !tracker.config.http.bind.is_empty() {
        let mut listeners = Vec::new();
        for addr in &tracker.config.http.bind {
            let Some(l) = listener("HTTP", *addr, bind_tcp(*addr))? else {
                continue;
            };
            http_addrs.push(l.local_addr()?);
            listeners.push(l);
        }
        let server = http::build(tracker.clone(), listeners)?;
        http = Some(server.handle());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!("HTTP server failed: {e}");
            }
        }));
        for a in &http_addrs {
            tracing::info!("HTTP tracker listening on http://{a}/announce");
        }
    }
    // The cluster's key ring (and replication tasks), or a random connection-id secret.
    let cluster = crate::cluster::start(&tracker, &shutdown_rx).await?;
    tasks.extend(cluster.tasks);
    let issuer = cluster.issuers;
    let mut udp_addrs = Vec::new();
    let mut udp_threads = Vec::new();
    if !tracker.config.udp.bind.is_empty() {
        let workers = match tracker.config.udp.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        for addr in &tracker.config.udp.bind {
            let Some((sockets, bound)) = listener("UDP", *addr, udp::bind(*addr, workers))? else {
                continue;
            };
            tracker
                .metrics
                .udp_workers_configured
                .inc_by(sockets.len() as i64);
            udp_addrs.push(bound);
            tracing::info!("UDP tracker listening on udp://{bound}/announce ({workers} workers)");
            udp_threads.extend(udp::spawn_workers(
                tracker.clone(),
                issuer.clone(),
                sockets,
                shutdown_rx.clone(),
            )?);
        }
    }
    tasks.push(tokio::spawn(tasks::sweeper(
        tracker.clone(),
        shutdown_rx.clone(),
    )));
    if !tracker.config.topology.alto.is_empty() {
        let urls = tracker.config.topology.alto.clone();
        tasks.push(tokio::spawn(tasks::refresh_topology(
            tracker.clone(),
            urls,
            shutdown_rx.clone(),
        )));
    }
    Ok(Running {
        http_addrs,
        udp_addrs,
        ops_addr: ops.addr,
        tracker,
        http,
        ops: ops.server,
        tasks,
        udp_threads,
        shutdown,
    })
}

/// A TCP listener on `addr`; IPv6 addresses IPv6-only, so that `0.0.0.0:P` and `[::]:P` are
/// two listeners side by side, as the UDP ones are.
fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// What binding a listener gave: its error names the listener and the address; a host without
/// IPv6 skips the IPv6 wildcard address (part of the default binds) with a warning instead.
fn listener<T>(
    kind: &str,
    addr: SocketAddr,
    bound: std::io::Result<T>,
) -> std::io::Result<Option<T>> {
    match bound {
        Ok(l) => Ok(Some(l)),
        Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() && ipv6_missing(&e) => {
            tracing::warn!("{kind} listener {addr}: IPv6 is not available on this host ({e}); serving IPv4 only");
            Ok(None)
        }
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{kind} listener {addr}: {e}"),
        )),
    }
}

/// Whether a bind failed because the host has no IPv6 at all.
fn ipv6_missing(e: &std::io::Error) -> bool {
    // EAFNOSUPPORT (97) and EADDRNOTAVAIL (99) on Linux.
    matches!(e.raw_os_error(), Some(97 | 99)) || e.kind() == std::io::ErrorKind::AddrNotAvailable
}

/// Runs one request's handling; a panic inside it is caught and counted, and costs this
/// answer only (`None`), never the worker that runs it.
pub(crate) async fn guarded<T>(
    handling: impl std::future::Future<Output = T>,
    metrics: &Metrics,
    protocol: Protocol,
) -> Option<T> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(handling).catch_unwind().await {
        Ok(out) => Some(out),
        Err(_) => {
            metrics.handler_panicked(protocol);
            tracing::error!(
                ?protocol,
                "a request's handling panicked; it gets no answer"
            );
            None
        }
    }
}

impl Running {
    /// A receiver that turns true at shutdown, for tasks started beside the tracker.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Stops accepting, lets in-flight requests finish, stops every task.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Some(h) = &self.http {
            h.stop(true).await;
        }
        if let Some(h) = &self.ops {
            h.stop(true).await;
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        let threads = self.udp_threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_request_costs_its_answer_and_is_counted() {
        let metrics = Metrics::new();
        assert_eq!(guarded(async { 7 }, &metrics, Protocol::Udp).await, Some(7));
        let lost = guarded(
            async {
                panic!("injected fault");
            },
            &metrics,
            Protocol::Udp,
        )
        .await;
        assert_eq!(lost, None::<()>);
        let text = metrics.render(Default::default());
        assert!(
            text.contains("p4p_tracker_handler_panics_total{protocol=\"udp\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("p4p_tracker_handler_panics_total{protocol=\"http\"} 0"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_bind_error_names_the_listener_and_its_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let mut config = crate::config::Config::default();
        config.http.bind = vec![addr];
        config.udp.bind = vec![];
        let tracker = Tracker::new(
            config,
            crate::clock::Clock::new(),
            p4p_itracker::Snapshot::single_pid(),
            false,
        );
        let e = start(Arc::new(tracker))
            .await
            .expect_err("the port is taken");
        assert!(
            e.to_string()
                .starts_with(&format!("HTTP listener {addr}: ")),
            "{e}"
        );
    }

    #[test]
    #[ignore = "needs IPv6 (::); scripts/test runs it"]
    fn ipv4_and_ipv6_wildcards_share_a_port_on_both_protocols() {
        let v4 = bind_tcp("0.0.0.0:0".parse().expect("addr")).expect("IPv4");
        let port = v4.local_addr().expect("addr").port();
        bind_tcp(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)))
            .expect("IPv6 beside IPv4");
        let (_, v4) = udp::bind("0.0.0.0:0".parse().expect("addr"), 2).expect("UDP IPv4");
        udp::bind(
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, v4.port())),
            2,
        )
        .expect("UDP IPv6 beside IPv4");
    }
}
