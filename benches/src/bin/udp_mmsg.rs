//! `udp_mmsg`: an experiment, not a product. The tracker's UDP front end rebuilt around
//! `recvmmsg`/`sendmmsg` (no tokio, no epoll; `poll(2)` only when the socket is empty), over the unchanged
//! p4p-tracker library (same `Tracker`, codecs, swarm store and selection). It exists so the race
//! can measure what batching the syscalls would gain before anyone changes
//! `tracker/src/server/udp.rs`; see `benches/race/README.md` for the result.
//!
//! IPv4 only, one socket, one thread; no HTTP, metrics endpoint or sweeper.
//!
//! `udp_mmsg --bind 127.0.0.1:3000 --policy p4p --topology topology-data/loopback.toml`

use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use clap::Parser;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrIn};
use p4p_tracker::clock::Clock;
use p4p_tracker::config::{Config, PolicyKind};
use p4p_tracker::metrics::{Outcome, Protocol};
use p4p_tracker::protocol::connection_id::ConnectionIdIssuer;
use p4p_tracker::protocol::udp::{
    parse_request, push_peer_v4, push_scrape_stats, write_announce_header, write_scrape_header,
    AnnounceRequest, ConnectResponse, ErrorResponse, Request, RequestParseError, ScrapeRequest,
    MAX_SCRAPE_TORRENTS,
};
use p4p_tracker::service::{Tracker, Workspace};
use p4p_tracker::swarm::Families;
use p4p_tracker::types::{Announce, InfoHash};

/// Datagrams per syscall.
const BATCH: usize = 64;
/// Largest datagram read (as in the tracker).
const RECV: usize = 2048;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:3000")]
    bind: SocketAddrV4,
    #[arg(long, value_enum, default_value_t = PolicyKind::P4p)]
    policy: PolicyKind,
    #[arg(long)]
    topology: Option<PathBuf>,
    #[arg(long, default_value_t = 30)]
    max_numwant: usize,
    /// Datagrams per recvmmsg/sendmmsg (1 = one syscall per datagram, as the tracker does).
    #[arg(long, default_value_t = BATCH)]
    batch: usize,
    /// Empty `recvmmsg` rounds before sleeping in `poll(2)` (0 = sleep as soon as the socket is
    /// empty). Spinning trades idle CPU for fewer sleeps and wake-ups.
    #[arg(long, default_value_t = 0)]
    spin: u32,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut config = Config::default();
    config.selection.policy = args.policy;
    config.topology.file = args.topology.clone();
    config.announce.max_numwant = args.max_numwant;
    let (snapshot, _) = p4p_tracker::topology::initial_snapshot(&config.topology)?;
    let tracker = Arc::new(Tracker::new(config, Clock::new(), snapshot, true));
    // The tracker's buffers (4 MiB each way): with the default ~200 KiB a burst overflows the
    // receive queue, and the aquatic tester throttles itself once 10 % of its requests are lost.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(args.bind).into())?;
    let socket: UdpSocket = s.into();
    let mut server = Server {
        tracker,
        issuer: ConnectionIdIssuer::random(),
        ws: Workspace::default(),
    };
    server.run(&socket, args.batch.clamp(1, 1024), args.spin)
}

struct Server {
    tracker: Arc<Tracker>,
    issuer: ConnectionIdIssuer,
    ws: Workspace,
}

impl Server {
    fn run(
        &mut self,
        socket: &UdpSocket,
        batch: usize,
        spin: u32,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let fd = socket.as_raw_fd();
        let mut rx = vec![0u8; RECV * batch];
        let mut outs: Vec<Vec<u8>> = (0..batch).map(|_| Vec::with_capacity(1500)).collect();
        let mut srcs: Vec<(usize, SockaddrIn)> = Vec::with_capacity(batch);
        let mut rx_headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
        let mut tx_headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
        let mut empty_rounds = 0u32;
        loop {
            srcs.clear();
            {
                let slices: Vec<[IoSliceMut<'_>; 1]> =
                    rx.chunks_mut(RECV).map(|c| [IoSliceMut::new(c)]).collect();
                match recvmmsg(
                    fd,
                    &mut rx_headers,
                    slices.iter(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) {
                    Ok(results) => {
                        empty_rounds = 0;
                        for r in results {
                            if let Some(a) = r.address {
                                srcs.push((r.bytes, a));
                            }
                        }
                    }
                    Err(nix::errno::Errno::EAGAIN) => {
                        empty_rounds += 1;
                        if empty_rounds > spin {
                            // Idle: sleep in poll(2) until a datagram arrives (or 200 ms pass).
                            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
                            let _ = poll(&mut fds, 200);
                            empty_rounds = 0;
                        }
                        continue;
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        eprintln!("recvmmsg: {e}");
                        continue;
                    }
                }
            }
            let mut replies: Vec<usize> = Vec::with_capacity(srcs.len());
            for (i, &(len, addr)) in srcs.iter().enumerate() {
                let src = SocketAddr::V4(SocketAddrV4::new(addr.ip().into(), addr.port()));
                let out = &mut outs[i];
                out.clear();
                self.handle(&rx[i * RECV..i * RECV + len.min(RECV)], src, out);
                if !out.is_empty() {
                    replies.push(i);
                }
            }
            if replies.is_empty() {
                continue;
            }
            let iovs: Vec<[std::io::IoSlice<'_>; 1]> = replies
                .iter()
                .map(|&i| [std::io::IoSlice::new(&outs[i])])
                .collect();
            let addrs: Vec<Option<SockaddrIn>> = replies.iter().map(|&i| Some(srcs[i].1)).collect();
            if let Err(e) = sendmmsg(fd, &mut tx_headers, &iovs, &addrs, [], MsgFlags::empty()) {
                eprintln!("sendmmsg: {e}");
            }
        }
    }

    fn handle(&mut self, packet: &[u8], src: SocketAddr, out: &mut Vec<u8>) {
        let now = self.tracker.clock.now();
        match parse_request(packet) {
            Ok(Request::Connect(r)) => {
                self.tracker.metrics.connect();
                ConnectResponse {
                    transaction_id: r.transaction_id,
                    connection_id: self.issuer.issue(src, now),
                }
                .write(out);
            }
            Ok(Request::Announce(r)) => {
                if self.issuer.validate(r.connection_id, src, now) {
                    self.announce(&r, src, out);
                } else {
                    ErrorResponse {
                        transaction_id: r.transaction_id,
                        message: "unknown or expired connection id",
                    }
                    .write_truncated(out, packet.len());
                }
            }
            Ok(Request::Scrape(r)) => {
                if self.issuer.validate(r.connection_id, src, now) {
                    self.scrape(&r, out);
                }
            }
            Err(e @ RequestParseError::Sendable { .. }) => {
                if let Some(answer) = e.error_response() {
                    answer.write_truncated(out, packet.len());
                }
            }
            Err(RequestParseError::Unsendable) => {}
        }
    }

    fn announce(&mut self, r: &AnnounceRequest, src: SocketAddr, out: &mut Vec<u8>) {
        let config = &self.tracker.config;
        let a = Announce {
            info_hash: r.info_hash,
            peer: SocketAddr::new(src.ip(), r.port),
            event: r.event,
            left: r.left,
            numwant: config.numwant(r.peers_wanted().map(i64::from)).min(200),
        };
        let tracker = self.tracker.clone();
        let result = now_or_never(tracker.announce(&a, Families::V4, &mut self.ws));
        match result {
            Some(Ok(stats)) => {
                self.tracker.metrics.announce(Protocol::Udp, Outcome::Ok);
                write_announce_header(
                    out,
                    r.transaction_id,
                    config.announce.interval,
                    stats.incomplete,
                    stats.complete,
                );
                for &p in &self.ws.sink.v4 {
                    push_peer_v4(out, p);
                }
            }
            _ => ErrorResponse {
                transaction_id: r.transaction_id,
                message: "announce refused",
            }
            .write(out),
        }
    }

    fn scrape(&mut self, r: &ScrapeRequest<'_>, out: &mut Vec<u8>) {
        let mut hashes = [InfoHash([0; 20]); MAX_SCRAPE_TORRENTS];
        let n = r.info_hashes.len().min(hashes.len());
        for (slot, h) in hashes.iter_mut().zip(r.info_hashes.iter()) {
            *slot = h;
        }
        let mut stats = std::mem::take(&mut self.ws.scrape);
        let tracker = self.tracker.clone();
        let _ = now_or_never(tracker.scrape(&hashes[..n], &mut stats));
        write_scrape_header(out, r.transaction_id);
        for (_, s) in &stats {
            push_scrape_stats(out, (*s).into());
        }
        self.ws.scrape = stats;
    }
}

/// Polls a future once: the memory store never waits, so its announce is ready at once.
fn now_or_never<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}
