//! The UDP front end (BEP 15): one socket per worker, all bound to the same address with
//! `SO_REUSEPORT` so the kernel spreads datagrams over them; each worker thread runs its own
//! single-threaded runtime (no cross-thread wake-ups) and reuses one receive and one send
//! buffer, so the hot path does not allocate.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::metrics::{Outcome, Protocol};
use crate::protocol::connection_id::ConnectionIdIssuer;
use crate::protocol::udp::{
    parse_request, push_peer_v4, push_peer_v6, push_scrape_stats, write_announce_header,
    write_scrape_header, AddressFamily, AnnounceRequest, ConnectResponse, ErrorResponse, Request,
    RequestParseError, ScrapeRequest, TransactionId,
};
use crate::service::{Tracker, Workspace};
use crate::swarm::Families;
use crate::types::{normalize_addr, Announce, InfoHash};

/// Most IPv4 peers in one answer: 20 + 200 x 6 = 1220 bytes, one unfragmented datagram.
pub const MAX_PEERS_V4: usize = 200;
/// Most IPv6 peers in one answer: 20 + 66 x 18 = 1208 bytes.
pub const MAX_PEERS_V6: usize = 66;
/// Largest datagram read; longer ones are cut and then fail to parse (BEP 41 options cut short).
const RECV_BUFFER: usize = 8192;

/// Binds `workers` sockets sharing `addr` (port 0: the first socket picks the port, the others
/// join it). Returns them with the address actually bound.
pub fn bind(
    addr: SocketAddr,
    workers: usize,
) -> io::Result<(Vec<std::net::UdpSocket>, SocketAddr)> {
    let mut sockets = Vec::with_capacity(workers);
    let mut bound = addr;
    for _ in 0..workers.max(1) {
        let s = Socket::new(
            Domain::for_address(addr),
            Type::DGRAM,
            Some(SockProtocol::UDP),
        )?;
        s.set_reuse_port(true)?;
        if addr.is_ipv6() {
            // Dual-stack sockets would put IPv4 clients in the IPv6 family's answers.
            s.set_only_v6(true)?;
        }
        s.set_nonblocking(true)?;
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.bind(&bound.into())?;
        let std_socket: std::net::UdpSocket = s.into();
        bound = std_socket.local_addr()?;
        sockets.push(std_socket);
    }
    Ok((sockets, bound))
}

/// Starts one worker thread per socket. The threads stop when `shutdown` turns true.
pub fn spawn_workers(
    tracker: Arc<Tracker>,
    issuer: Arc<ConnectionIdIssuer>,
    sockets: Vec<std::net::UdpSocket>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let tracker = tracker.clone();
            let issuer = issuer.clone();
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("udp-worker-{i}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!("UDP worker {i} cannot start its runtime: {e}");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        match UdpSocket::from_std(socket) {
                            Ok(s) => Worker::new(tracker, issuer).run(s, shutdown).await,
                            Err(e) => tracing::error!("UDP worker {i}: {e}"),
                        }
                    });
                })
        })
        .collect()
}

/// One socket's loop and its reusable buffers.
struct Worker {
    tracker: Arc<Tracker>,
    issuer: Arc<ConnectionIdIssuer>,
    ws: Workspace,
    out: Vec<u8>,
}

impl Worker {
    fn new(tracker: Arc<Tracker>, issuer: Arc<ConnectionIdIssuer>) -> Self {
        Self {
            tracker,
            issuer,
            ws: Workspace::default(),
            out: Vec::with_capacity(2048),
        }
    }

    async fn run(mut self, socket: UdpSocket, mut shutdown: watch::Receiver<bool>) {
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let (len, src) = tokio::select! {
                r = socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // ICMP errors from earlier sends surface here on Linux; keep serving.
                        tracing::debug!("UDP receive error: {e}");
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            self.out.clear();
            self.handle(&buf[..len], src).await;
            if !self.out.is_empty() {
                if let Err(e) = socket.send_to(&self.out, src).await {
                    tracing::debug!("UDP send to {src} failed: {e}");
                }
            }
        }
    }

    /// Answers one datagram into `self.out` (left empty to send nothing).
    async fn handle(&mut self, packet: &[u8], src: SocketAddr) {
        let now = self.tracker.clock.now();
        match parse_request(packet) {
            Ok(Request::Connect(r)) => {
                self.tracker.metrics.connect();
                ConnectResponse {
                    transaction_id: r.transaction_id,
                    connection_id: self.issuer.issue(src, now),
                }
                .write(&mut self.out);
            }
            Ok(Request::Announce(r)) => {
                if self.authenticated(&r.connection_id, src, now, r.transaction_id, packet.len()) {
                    self.announce(&r, src).await;
                } else {
                    self.tracker
                        .metrics
                        .announce(Protocol::Udp, Outcome::BadConnection);
                }
            }
            Ok(Request::Scrape(r)) => {
                if self.authenticated(&r.connection_id, src, now, r.transaction_id, packet.len()) {
                    self.scrape(&r).await;
                } else {
                    self.tracker
                        .metrics
                        .scrape(Protocol::Udp, Outcome::BadConnection);
                }
            }
            Err(e @ RequestParseError::Sendable { connection_id, .. }) => {
                self.tracker
                    .metrics
                    .announce(Protocol::Udp, Outcome::BadRequest);
                // Only a client that proved its address may get more bytes than it sent.
                let limit = if self.issuer.validate(connection_id, src, now) {
                    usize::MAX
                } else {
                    packet.len()
                };
                if let Some(answer) = e.error_response() {
                    answer.write_truncated(&mut self.out, limit);
                }
            }
            Err(RequestParseError::Unsendable) => {}
        }
    }

    /// Checks a connection id; on failure writes the (bounded) error or nothing, by config.
    fn authenticated(
        &mut self,
        id: &crate::protocol::udp::ConnectionId,
        src: SocketAddr,
        now: u64,
        transaction_id: TransactionId,
        request_len: usize,
    ) -> bool {
        if self.issuer.validate(*id, src, now) {
            return true;
        }
        if self.tracker.config.udp.error_on_bad_connection_id {
            ErrorResponse {
                transaction_id,
                message: "unknown or expired connection id",
            }
            .write_truncated(&mut self.out, request_len);
        }
        false
    }

    async fn announce(&mut self, r: &AnnounceRequest, src: SocketAddr) {
        let config = &self.tracker.config;
        let src = normalize_addr(src);
        let family = AddressFamily::of(src);
        let ip = match (r.claimed_ip(), config.udp.trust_ip_field, family) {
            (Some(claimed), true, AddressFamily::V4) => IpAddr::V4(claimed),
            _ => src.ip(),
        };
        let (families, cap) = match family {
            AddressFamily::V4 => (Families::V4, MAX_PEERS_V4),
            AddressFamily::V6 => (Families::V6, MAX_PEERS_V6),
        };
        let a = Announce {
            info_hash: r.info_hash,
            peer: SocketAddr::new(ip, r.port),
            event: r.event,
            left: r.left,
            numwant: config.numwant(r.peers_wanted().map(i64::from)).min(cap),
        };
        match self.tracker.announce(&a, families, &mut self.ws).await {
            Ok(stats) => {
                self.tracker.metrics.announce(Protocol::Udp, Outcome::Ok);
                write_announce_header(
                    &mut self.out,
                    r.transaction_id,
                    config.announce.interval,
                    stats.incomplete,
                    stats.complete,
                );
                let sink = &self.ws.sink;
                sink.v4
                    .iter()
                    .for_each(|&p: &SocketAddrV4| push_peer_v4(&mut self.out, p));
                sink.v6
                    .iter()
                    .for_each(|&p: &SocketAddrV6| push_peer_v6(&mut self.out, p));
            }
            Err(e) => {
                self.tracker
                    .metrics
                    .announce(Protocol::Udp, Outcome::Refused);
                ErrorResponse {
                    transaction_id: r.transaction_id,
                    message: store_error_message(&e),
                }
                .write(&mut self.out);
            }
        }
    }

    async fn scrape(&mut self, r: &ScrapeRequest<'_>) {
        let max = self.tracker.config.announce.max_scrape_hashes;
        if r.info_hashes.len() > max {
            self.tracker
                .metrics
                .scrape(Protocol::Udp, Outcome::BadRequest);
            ErrorResponse {
                transaction_id: r.transaction_id,
                message: "too many info hashes in one scrape",
            }
            .write(&mut self.out);
            return;
        }
        let mut hashes = [InfoHash([0; 20]); crate::protocol::udp::MAX_SCRAPE_TORRENTS];
        let n = r.info_hashes.len().min(hashes.len());
        for (slot, h) in hashes.iter_mut().zip(r.info_hashes.iter()) {
            *slot = h;
        }
        let mut stats = std::mem::take(&mut self.ws.scrape);
        if let Err(e) = self.tracker.scrape(&hashes[..n], &mut stats).await {
            self.ws.scrape = stats;
            self.tracker.metrics.scrape(Protocol::Udp, Outcome::Refused);
            ErrorResponse {
                transaction_id: r.transaction_id,
                message: store_error_message(&e),
            }
            .write(&mut self.out);
            return;
        }
        write_scrape_header(&mut self.out, r.transaction_id);
        for (_, s) in &stats {
            push_scrape_stats(&mut self.out, (*s).into());
        }
        self.ws.scrape = stats;
        self.tracker.metrics.scrape(Protocol::Udp, Outcome::Ok);
    }
}

/// The client-facing text of a store refusal, without allocating.
fn store_error_message(e: &crate::swarm::StoreError) -> &'static str {
    match e {
        crate::swarm::StoreError::TooManyTorrents => "tracker is tracking too many torrents",
        crate::swarm::StoreError::SwarmFull => "swarm is full",
        crate::swarm::StoreError::Unavailable => "temporarily unavailable",
    }
}
