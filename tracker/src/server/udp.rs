//! The UDP front end (BEP 15): one socket per worker, all bound to the same address with
//! `SO_REUSEPORT` so the kernel spreads datagrams over them; each worker thread runs its own
//! single-threaded runtime (no cross-thread wake-ups). A worker reads up to [`BATCH`]
//! datagrams with one `recvmmsg`, answers them in order and sends the answers with one
//! `sendmmsg` (system calls were most of the tracker's CPU time under load), and reuses all its
//! buffers, so the hot path does not allocate.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::guarded;
use crate::metrics::{Outcome, Protocol};
use crate::protocol::connection_id::ConnectionIdIssuer;
use crate::protocol::udp::{
    parse_request, push_peer_v4, push_peer_v6, push_scrape_stats, write_announce_header,
    write_scrape_header, AddressFamily, AnnounceRequest, ConnectResponse, ErrorResponse, Request,
    RequestKind, RequestParseError, ScrapeRequest, TransactionId,
};
use crate::service::{Tracker, Workspace};
use crate::swap::SwapCache;
use crate::types::Families;
use crate::types::{normalize_addr, Announce, InfoHash};

/// Most IPv4 peers in one answer: 20 + 200 x 6 = 1220 bytes, one unfragmented datagram.
pub const MAX_PEERS_V4: usize = 200;
/// Most IPv6 peers in one answer: 20 + 66 x 18 = 1208 bytes.
pub const MAX_PEERS_V6: usize = 66;
/// Datagrams read, and answers sent, per system call (`recvmmsg`/`sendmmsg` on Linux).
const BATCH: usize = 32;
/// Largest datagram read; longer ones are cut and then fail to parse (BEP 41 options cut short).
/// The longest request BEP 15 defines, a 74-hash scrape, is 1496 bytes.
const SLOT: usize = 2048;

/// Binds `workers` sockets sharing `addr` (port 0: the first socket picks the port, the others
/// join it). Returns them with the address actually bound. An IPv6 address is bound IPv6-only,
/// so `0.0.0.0:P` and `[::]:P` can be served side by side (as HTTP does).
///
/// The workers share the port through `SO_REUSEPORT`, which would just as silently let a second
/// tracker process join the group and take half the datagrams (and half of every swarm): a
/// fixed port held by anyone else is refused with `AddrInUse` first.
pub fn bind(
    addr: SocketAddr,
    workers: usize,
) -> io::Result<(Vec<std::net::UdpSocket>, SocketAddr)> {
    if addr.port() != 0 {
        ensure_free(addr)?;
    }
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

/// Fails with `AddrInUse` when another socket (of any process) holds `addr`: a socket without
/// `SO_REUSEPORT` cannot join a port others hold.
fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(SockProtocol::UDP),
    )?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                "already in use by another process (a second tracker on one port would split its traffic and its swarms)",
            )
        } else {
            e
        }
    })
}

/// The connection-id issuer the workers use, swapped as a whole when a cluster's key rotates
/// (see [`crate::cluster::keys`]).
pub type Issuers = Arc<arc_swap::ArcSwap<ConnectionIdIssuer>>;

/// Starts one worker thread per socket. The threads stop when `shutdown` turns true.
pub fn spawn_workers(
    tracker: Arc<Tracker>,
    issuer: Issuers,
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
            // Counted as running from now, so /health never sees a worker still starting as down.
            tracker.metrics.udp_workers_running.inc();
            std::thread::Builder::new()
                .name(format!("udp-worker-{i}"))
                .spawn(move || supervise(i, tracker, issuer, socket, shutdown))
        })
        .collect()
}

/// How long a worker waits before restarting after its loop died, so a fault that kills it at
/// once does not spin.
const RESTART_DELAY: Duration = Duration::from_millis(100);

/// Runs worker `i` on `socket` until shutdown, restarting its loop (and counting the restart)
/// whenever it dies of a panic. A panic while answering one datagram costs that answer only
/// (see [`Worker::run`]); this catches what escapes that. The socket stays open throughout:
/// each run works on a duplicate of its descriptor, so the port keeps its place in the
/// `SO_REUSEPORT` group.
fn supervise(
    i: usize,
    tracker: Arc<Tracker>,
    issuer: Issuers,
    socket: std::net::UdpSocket,
    shutdown: watch::Receiver<bool>,
) {
    let metrics = &tracker.metrics;
    let lives = || run_once(i, &tracker, &issuer, &socket, shutdown.clone());
    keep_alive(i, metrics, &shutdown, RESTART_DELAY, lives);
}

/// Runs `life` until it returns or shutdown is signalled, running it again after each panic.
/// The worker was counted as running when it was spawned; it stops counting when this returns.
fn keep_alive(
    i: usize,
    metrics: &crate::metrics::Metrics,
    shutdown: &watch::Receiver<bool>,
    delay: Duration,
    mut life: impl FnMut() -> io::Result<()>,
) {
    loop {
        let attempt = std::panic::catch_unwind(AssertUnwindSafe(&mut life));
        if *shutdown.borrow() {
            break;
        }
        match attempt {
            Ok(Ok(())) => break,
            Ok(Err(e)) => {
                tracing::error!(worker = i, "UDP worker cannot run: {e}");
                break;
            }
            Err(_) => {
                metrics.udp_worker_restarts.inc();
                tracing::error!(worker = i, "UDP worker died of a panic; restarting it");
                std::thread::sleep(delay);
            }
        }
    }
    metrics.udp_workers_running.dec();
}

/// One life of a worker: its own single-threaded runtime, its loop until shutdown.
fn run_once(
    i: usize,
    tracker: &Arc<Tracker>,
    issuer: &Issuers,
    socket: &std::net::UdpSocket,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = socket.try_clone()?;
    runtime.block_on(async move {
        let socket = UdpSocket::from_std(socket)?;
        tracing::debug!(worker = i, "UDP worker running");
        Worker::new(tracker.clone(), issuer.clone())
            .run(socket, shutdown)
            .await;
        Ok(())
    })
}

/// One socket's loop and its reusable buffers.
struct Worker {
    tracker: Arc<Tracker>,
    issuers: Issuers,
    /// The issuer in use, cached (a cluster swaps in a new one when its key rotates).
    issuer: SwapCache<ConnectionIdIssuer>,
    ws: Workspace,
    out: Vec<u8>,
}

impl Worker {
    fn new(tracker: Arc<Tracker>, issuers: Issuers) -> Self {
        Self {
            tracker,
            issuers,
            issuer: SwapCache::default(),
            ws: Workspace::default(),
            out: Vec::with_capacity(2048),
        }
    }

    async fn run(mut self, socket: UdpSocket, mut shutdown: watch::Receiver<bool>) {
        // Reused across batches: datagrams in, their sources, answers out and their targets.
        let mut rx: Box<[[u8; SLOT]; BATCH]> = Box::new([[0u8; SLOT]; BATCH]);
        let mut got: [(usize, Option<SocketAddr>); BATCH] = [(0, None); BATCH];
        let mut outs: [Vec<u8>; BATCH] = std::array::from_fn(|_| Vec::with_capacity(1500));
        let mut dst = [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH];
        let mut io = batch_io::BatchIo::new();
        loop {
            let n = tokio::select! {
                n = io.recv(&socket, &mut rx, &mut got) => n,
                _ = shutdown.changed() => return,
            };
            // Parse the whole batch first, then start every announce's cache misses at once
            // (see `Tracker::prefetch`), so they overlap instead of stalling one by one.
            let now = self.tracker.clock.now();
            let mut parsed: [Option<Result<Request<'_>, RequestParseError>>; BATCH] =
                std::array::from_fn(|_| None);
            let mut hints = [(InfoHash([0; 20]), SocketAddr::from(([0, 0, 0, 0], 0))); BATCH];
            let mut announces = 0;
            for ((packet, &(len, src)), slot) in rx.iter().zip(&got[..n]).zip(&mut parsed) {
                let Some(src) = src else { continue };
                let request = parse_request(&packet[..len.min(SLOT)]);
                if let Ok(Request::Announce(r)) = &request {
                    let (a, _) = self.announce_of(r, src);
                    hints[announces] = (a.info_hash, a.peer);
                    announces += 1;
                }
                *slot = Some(request);
            }
            self.tracker.prefetch(&hints[..announces]);
            // A handle of its own for the metrics while `handle` borrows the worker (one
            // reference count per batch).
            let tracker = self.tracker.clone();
            let mut replies = 0;
            for (&(len, src), request) in got[..n].iter().zip(parsed) {
                let (Some(src), Some(request)) = (src, request) else {
                    continue;
                };
                self.out.clear();
                let answer = self.handle(request, len.min(SLOT), src, now);
                if guarded(answer, &tracker.metrics, Protocol::Udp)
                    .await
                    .is_none()
                {
                    // One bad input costs one answer: nothing is sent for it.
                    self.out.clear();
                }
                if !self.out.is_empty() {
                    std::mem::swap(&mut self.out, &mut outs[replies]);
                    dst[replies] = src;
                    replies += 1;
                }
            }
            self.tracker.metrics.add(&mut self.ws.tally);
            io.send(&socket, &outs, &dst, replies).await;
        }
    }

    /// Answers one parsed datagram of `len` bytes into `self.out` (left empty to send
    /// nothing). `now`: the clock, read once per batch.
    async fn handle(
        &mut self,
        request: Result<Request<'_>, RequestParseError>,
        len: usize,
        src: SocketAddr,
        now: u64,
    ) {
        match request {
            Ok(Request::Connect(r)) => {
                self.ws.tally.connect();
                ConnectResponse {
                    transaction_id: r.transaction_id,
                    connection_id: self.issuer.load(&self.issuers).issue(src, now),
                }
                .write(&mut self.out);
            }
            Ok(Request::Announce(r)) => {
                if self.authenticated(&r.connection_id, src, now, r.transaction_id, len) {
                    self.announce(&r, src).await;
                } else {
                    self.ws
                        .tally
                        .announce(Protocol::Udp, Outcome::BadConnection);
                }
            }
            Ok(Request::Scrape(r)) => {
                if self.authenticated(&r.connection_id, src, now, r.transaction_id, len) {
                    self.scrape(&r).await;
                } else {
                    self.ws.tally.scrape(Protocol::Udp, Outcome::BadConnection);
                }
            }
            Err(
                e @ RequestParseError::Sendable {
                    connection_id,
                    kind,
                    ..
                },
            ) => {
                match kind {
                    RequestKind::Announce => {
                        self.ws.tally.announce(Protocol::Udp, Outcome::BadRequest)
                    }
                    RequestKind::Scrape => self.ws.tally.scrape(Protocol::Udp, Outcome::BadRequest),
                    RequestKind::Connect | RequestKind::Unknown => self.ws.tally.malformed(),
                }
                // Only a client that proved its address may get more bytes than it sent.
                let limit = if self
                    .issuer
                    .load(&self.issuers)
                    .validate(connection_id, src, now)
                {
                    usize::MAX
                } else {
                    len
                };
                if let Some(answer) = e.error_response() {
                    answer.write_truncated(&mut self.out, limit);
                }
            }
            Err(RequestParseError::Unsendable) => self.ws.tally.malformed(),
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
        if self.issuer.load(&self.issuers).validate(*id, src, now) {
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

    /// The announce a request makes from `src`, and the families its answer may carry: the
    /// same for the batch's prefetch hints and for the answer.
    fn announce_of(&self, r: &AnnounceRequest, src: SocketAddr) -> (Announce, Families) {
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
        (a, families)
    }

    async fn announce(&mut self, r: &AnnounceRequest, src: SocketAddr) {
        let (a, families) = self.announce_of(r, src);
        let config = &self.tracker.config;
        match self.tracker.announce(&a, families, &mut self.ws).await {
            Ok(stats) => {
                self.ws.tally.announce(Protocol::Udp, Outcome::Ok);
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
                self.ws
                    .tally
                    .announce(Protocol::Udp, Outcome::of_refusal(&e));
                ErrorResponse {
                    transaction_id: r.transaction_id,
                    message: e.message(),
                }
                .write(&mut self.out);
            }
        }
    }

    async fn scrape(&mut self, r: &ScrapeRequest<'_>) {
        let max = self.tracker.config.announce.max_scrape_hashes;
        if r.info_hashes.len() > max {
            self.ws.tally.scrape(Protocol::Udp, Outcome::BadRequest);
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
            self.ws.tally.scrape(Protocol::Udp, Outcome::Refused);
            ErrorResponse {
                transaction_id: r.transaction_id,
                message: e.message(),
            }
            .write(&mut self.out);
            return;
        }
        write_scrape_header(&mut self.out, r.transaction_id);
        for (_, s) in &stats {
            push_scrape_stats(&mut self.out, (*s).into());
        }
        self.ws.scrape = stats;
        self.ws.tally.scrape(Protocol::Udp, Outcome::Ok);
    }
}

/// Batched datagram I/O over a tokio socket: readiness from tokio, the transfer itself with
/// `recvmmsg`/`sendmmsg` (safe wrappers from `nix`).
#[cfg(target_os = "linux")]
mod batch_io {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
    use tokio::io::Interest;
    use tokio::net::UdpSocket;

    use super::{BATCH, SLOT};

    pub(super) struct BatchIo {
        rx: MultiHeaders<SockaddrStorage>,
        tx: MultiHeaders<SockaddrStorage>,
        to: [Option<SockaddrStorage>; BATCH],
    }

    impl BatchIo {
        pub(super) fn new() -> Self {
            Self {
                rx: MultiHeaders::preallocate(BATCH, None),
                tx: MultiHeaders::preallocate(BATCH, None),
                to: [None; BATCH],
            }
        }

        /// Waits for datagrams and reads up to [`BATCH`] of them: `got[i]` is datagram i's
        /// length and source. Returns how many were read (at least one).
        pub(super) async fn recv(
            &mut self,
            socket: &UdpSocket,
            rx: &mut [[u8; SLOT]; BATCH],
            got: &mut [(usize, Option<SocketAddr>); BATCH],
        ) -> usize {
            let fd = socket.as_raw_fd();
            loop {
                if let Err(e) = socket.readable().await {
                    tracing::debug!("UDP socket not readable: {e}");
                    continue;
                }
                let headers = &mut self.rx;
                let read = socket.try_io(Interest::READABLE, || {
                    let slices = rx.each_mut().map(|b| [IoSliceMut::new(b)]);
                    let results =
                        recvmmsg(fd, headers, slices.iter(), MsgFlags::MSG_DONTWAIT, None)?;
                    let mut n = 0;
                    for (slot, r) in got.iter_mut().zip(results) {
                        *slot = (r.bytes, r.address.as_ref().and_then(to_std));
                        n += 1;
                    }
                    Ok(n)
                });
                match read {
                    Ok(0) => {}
                    Ok(n) => return n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // ICMP errors from earlier sends can surface here; keep serving.
                    Err(e) => tracing::debug!("UDP receive error: {e}"),
                }
            }
        }

        /// Sends `outs[..n]` to `dst[..n]`, as few system calls as the socket allows. A datagram
        /// the kernel refuses (not for lack of buffer space) is dropped and logged.
        pub(super) async fn send(
            &mut self,
            socket: &UdpSocket,
            outs: &[Vec<u8>; BATCH],
            dst: &[SocketAddr; BATCH],
            n: usize,
        ) {
            let fd = socket.as_raw_fd();
            for (to, d) in self.to.iter_mut().zip(&dst[..n]) {
                *to = Some(SockaddrStorage::from(*d));
            }
            let mut start = 0;
            while start < n {
                let headers = &mut self.tx;
                let to = &self.to;
                let sent = socket.try_io(Interest::WRITABLE, || {
                    let iovs = outs.each_ref().map(|o| [IoSlice::new(o)]);
                    let results = sendmmsg(
                        fd,
                        headers,
                        iovs[start..n].iter(),
                        &to[start..n],
                        [],
                        MsgFlags::empty(),
                    )?;
                    Ok(results.count())
                });
                match sent {
                    Ok(k) => start += k.max(1),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Err(e) = socket.writable().await {
                            tracing::debug!("UDP socket not writable: {e}");
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!("UDP send to {} failed: {e}", dst[start]);
                        start += 1;
                    }
                }
            }
        }
    }

    fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = a.as_sockaddr_in() {
            return Some(SocketAddr::V4((*v4).into()));
        }
        a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
    }
}

/// One datagram per system call where `recvmmsg`/`sendmmsg` are not available.
#[cfg(not(target_os = "linux"))]
mod batch_io {
    use std::net::SocketAddr;

    use tokio::net::UdpSocket;

    use super::{BATCH, SLOT};

    pub(super) struct BatchIo;

    impl BatchIo {
        pub(super) fn new() -> Self {
            Self
        }

        pub(super) async fn recv(
            &mut self,
            socket: &UdpSocket,
            rx: &mut [[u8; SLOT]; BATCH],
            got: &mut [(usize, Option<SocketAddr>); BATCH],
        ) -> usize {
            loop {
                match socket.recv_from(&mut rx[0]).await {
                    Ok((len, src)) => {
                        got[0] = (len, Some(src));
                        return 1;
                    }
                    Err(e) => tracing::debug!("UDP receive error: {e}"),
                }
            }
        }

        pub(super) async fn send(
            &mut self,
            socket: &UdpSocket,
            outs: &[Vec<u8>; BATCH],
            dst: &[SocketAddr; BATCH],
            n: usize,
        ) {
            for (out, to) in outs.iter().zip(dst).take(n) {
                if let Err(e) = socket.send_to(out, to).await {
                    tracing::debug!("UDP send to {to} failed: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn a_worker_that_panics_is_restarted_and_counted() {
        let metrics = Metrics::new();
        metrics.udp_workers_running.inc();
        let (_tx, rx) = watch::channel(false);
        let mut lives = 0;
        keep_alive(0, &metrics, &rx, Duration::ZERO, || {
            lives += 1;
            assert!(metrics.udp_workers_running.get() == 1, "counted as running");
            if lives < 3 {
                panic!("injected fault {lives}");
            }
            Ok(())
        });
        assert_eq!(lives, 3);
        assert_eq!(metrics.udp_worker_restarts.get(), 2);
        assert_eq!(metrics.udp_workers_running.get(), 0, "ended normally");
    }

    #[test]
    fn a_worker_is_not_restarted_after_shutdown() {
        let metrics = Metrics::new();
        let (tx, rx) = watch::channel(false);
        let mut lives = 0;
        keep_alive(0, &metrics, &rx, Duration::ZERO, || {
            lives += 1;
            let _ = tx.send(true);
            panic!("dies during shutdown");
        });
        assert_eq!(lives, 1);
        assert_eq!(metrics.udp_worker_restarts.get(), 0);
    }

    #[test]
    fn a_udp_port_held_by_another_socket_is_refused() {
        let other = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let taken = other.local_addr().expect("addr");
        let e = bind(taken, 2).expect_err("the port is taken");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        // Our own workers still share a port among themselves.
        let (sockets, bound) = bind("127.0.0.1:0".parse().expect("addr"), 3).expect("bind");
        assert_eq!(sockets.len(), 3);
        assert!(sockets.iter().all(|s| s.local_addr().ok() == Some(bound)));
    }
}
