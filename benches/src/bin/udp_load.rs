//! `udp_load`: a UDP (BEP 15) tracker load generator that announces from many source addresses.
//!
//! The aquatic tester sends from one address per worker, so a topology-aware tracker never sees
//! locality under it. This generator binds one socket per source address, spread over the
//! networks given with `--nets` (default: the four PIDs of `topology-data/loopback.toml` and
//! one `default` network), and with `--topology` classifies every returned peer by PID: the
//! share of same-PID and same-ISP peers and the mean p-distance per returned peer tell `p4p`
//! from `random`.
//!
//! Its info hashes are a pure function of `--seed` and the torrent index, so a whitelist-only
//! tracker (Debian's opentracker) can be given them: `udp_load --print-info-hashes`.
//!
//! The load is closed-loop: at most `--window` requests are in flight; a window that got no
//! answer for `--loss-timeout-ms` is presumed lost and refilled. Every `--report-ms` it prints
//! one JSON line (`"kind":"interval"`) with the counts of that interval, and at the end one
//! `"kind":"summary"` line over the part after `--warmup`.
//!
//! `udp_load --server 127.0.0.1:3000 --duration 20 --warmup 5 --topology topology-data/loopback.toml`

use std::collections::HashMap;
use std::io::{self, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use p4p_itracker::{Snapshot, Topology};
use p4p_tracker::protocol::udp::{
    parse_response, AddressFamily, AnnounceRequest, ConnectRequest, ConnectionId, InfoHashes,
    Request, ResponseView, ScrapeRequest, TransactionId,
};
use p4p_tracker::types::{Event, InfoHash, PeerId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A boxed error: this binary only reports errors, it never matches on them.
type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Parser, Debug)]
#[command(about = "UDP tracker load generator with many source addresses")]
struct Args {
    /// Tracker address (loopback only).
    #[arg(long, default_value = "127.0.0.1:3000")]
    server: SocketAddr,
    /// Seconds to run (the whole run, warmup included).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds at the start left out of the summary.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Number of torrents.
    #[arg(long, default_value_t = 1_000_000)]
    torrents: u32,
    /// Number of simulated peers (each a fixed source address, port, torrent and role).
    #[arg(long, default_value_t = 2_000_000)]
    peers: u32,
    /// Source networks: the first three octets of each; addresses .1 to .N of each are bound.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.1.0,127.3.0,127.2.0,127.4.0,127.5.0"
    )]
    nets: Vec<String>,
    /// Source addresses (sockets) per network.
    #[arg(long, default_value_t = 8)]
    ips_per_net: u8,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Peers asked for in each announce.
    #[arg(long, default_value_t = 30)]
    numwant: u32,
    /// Announces per scrape (the aquatic bencher's mix is 100 announces to 1 scrape; 0 = no
    /// scrapes).
    #[arg(long, default_value_t = 100)]
    announces_per_scrape: u32,
    /// Info hashes per scrape request, at most.
    #[arg(long, default_value_t = 10)]
    scrape_hashes: u32,
    /// Probability that a peer is a seeder.
    #[arg(long, default_value_t = 0.75)]
    seeder_probability: f64,
    /// Seed of the info hashes and of the peers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Topology file used to classify returned peers by PID (no file: no locality figures).
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Milliseconds between interval reports.
    #[arg(long, default_value_t = 1000)]
    report_ms: u64,
    /// A window with no answer for this long is presumed lost.
    #[arg(long, default_value_t = 20)]
    loss_timeout_ms: u64,
    /// Announce every peer exactly once (no scrapes), then stop: fills a tracker with
    /// `--peers` peers, for memory measurements. `--duration` still bounds the run.
    #[arg(long)]
    one_pass: bool,
    /// Print the info hashes (40 hex digits a line, a whitelist) and exit.
    #[arg(long)]
    print_info_hashes: bool,
}

/// The `i`-th info hash for `seed`: splitmix64 output, 20 bytes.
fn info_hash(seed: u64, i: u32) -> [u8; 20] {
    let mut state = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(i));
    let mut out = [0u8; 20];
    for chunk in out.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_be_bytes()[..chunk.len()]);
    }
    out
}

/// Torrent popularity: the aquatic tester's shape (a few huge swarms, a long tail), as a
/// cumulative table sampled by binary search.
struct Popularity {
    cumulative: Vec<f64>,
}

impl Popularity {
    fn new(torrents: u32, peers: u32) -> Self {
        let n = f64::from(torrents);
        let floor = n / f64::from(peers.max(1));
        let mut total = 0.0;
        let cumulative = (0..torrents)
            .map(|i| {
                total += floor + (6.5 - 500.0 * f64::from(i) / n).exp();
                total
            })
            .collect();
        Self { cumulative }
    }

    fn sample(&self, rng: &mut SmallRng) -> u32 {
        let total = *self.cumulative.last().unwrap_or(&1.0);
        let x = rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|&c| c < x);
        i.min(self.cumulative.len().saturating_sub(1)) as u32
    }
}

/// One simulated peer.
#[derive(Clone, Copy)]
struct Peer {
    torrent: u32,
    port: u16,
    socket: u16,
    seeder: bool,
}

/// One source address and its connection id.
struct Source {
    socket: UdpSocket,
    pid: Option<u16>,
    connection_id: Option<u64>,
}

/// Counts over one interval.
#[derive(Default, Clone, Copy)]
struct Counts {
    sent: u64,
    announce: u64,
    scrape: u64,
    connect: u64,
    error: u64,
    peers: u64,
    same_pid: u64,
    same_isp: u64,
    classified: u64,
    cost: f64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.announce += o.announce;
        self.scrape += o.scrape;
        self.connect += o.connect;
        self.error += o.error;
        self.peers += o.peers;
        self.same_pid += o.same_pid;
        self.same_isp += o.same_isp;
        self.classified += o.classified;
        self.cost += o.cost;
    }

    fn json(&self, kind: &str, t: f64, secs: f64) -> String {
        let responses = self.announce + self.scrape + self.connect + self.error;
        let share = |x: u64| {
            if self.classified == 0 {
                "null".to_string()
            } else {
                format!("{:.4}", x as f64 / self.classified as f64)
            }
        };
        let mean_cost = if self.classified == 0 {
            "null".to_string()
        } else {
            format!("{:.3}", self.cost / self.classified as f64)
        };
        format!(
            "{{\"kind\":\"{kind}\",\"t\":{t:.3},\"secs\":{secs:.3},\"sent\":{},\"responses\":{responses},\
             \"responses_per_s\":{:.1},\"announce\":{},\"scrape\":{},\"connect\":{},\"error\":{},\
             \"peers_per_announce\":{:.2},\"same_pid_share\":{},\"same_isp_share\":{},\"mean_cost\":{}}}",
            self.sent,
            responses as f64 / secs.max(1e-9),
            self.announce,
            self.scrape,
            self.connect,
            self.error,
            self.peers as f64 / self.announce.max(1) as f64,
            share(self.same_pid),
            share(self.same_isp),
            mean_cost,
        )
    }
}

/// Classifies returned IPv4 peers by PID, caching the PID of every address seen.
struct Classifier {
    snapshot: Snapshot,
    cache: HashMap<u32, u16>,
}

impl Classifier {
    fn pid(&mut self, ip: Ipv4Addr) -> u16 {
        let key = u32::from(ip);
        if let Some(&p) = self.cache.get(&key) {
            return p;
        }
        let p = self.snapshot.locate(IpAddr::V4(ip));
        self.cache.insert(key, p);
        p
    }
}

struct Generator {
    args: Args,
    sources: Vec<Source>,
    peers: Vec<Peer>,
    hashes: Vec<[u8; 20]>,
    popularity: Popularity,
    classifier: Option<Classifier>,
    rng: SmallRng,
    next_peer: usize,
    announced: usize,
    in_flight: usize,
    counts: Counts,
    buf: Vec<u8>,
    /// The request being sent, reused.
    packet: Vec<u8>,
}

fn main() -> Result {
    let args = Args::parse();
    if args.print_info_hashes {
        return print_info_hashes(&args);
    }
    if !args.server.ip().is_loopback() {
        return Err("udp_load only targets loopback addresses".into());
    }
    let mut g = Generator::new(args)?;
    g.run()
}

fn print_info_hashes(args: &Args) -> Result {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    for i in 0..args.torrents {
        let h = info_hash(args.seed, i);
        for b in h {
            write!(out, "{b:02x}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn bind_source(ip: Ipv4Addr) -> io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())?;
    Ok(UdpSocket::from_std(s.into()))
}

fn source_ips(args: &Args) -> Result<Vec<Ipv4Addr>> {
    let mut ips = Vec::new();
    for net in &args.nets {
        let octets: Vec<u8> = net
            .split('.')
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("--nets {net}: {e}"))?;
        let [a, b, c] = octets[..] else {
            return Err(format!("--nets {net}: want three octets, like 127.1.0").into());
        };
        if a != 127 {
            return Err(format!("--nets {net}: loopback (127.x.y) only").into());
        }
        for d in 1..=args.ips_per_net {
            ips.push(Ipv4Addr::new(a, b, c, d));
        }
    }
    Ok(ips)
}

impl Generator {
    fn new(args: Args) -> Result<Self> {
        let snapshot = match &args.topology {
            Some(path) => Some(Topology::from_file(path)?.snapshot()),
            None => None,
        };
        let mut sources = Vec::new();
        for ip in source_ips(&args)? {
            let socket = bind_source(ip).map_err(|e| format!("bind {ip}: {e}"))?;
            let pid = snapshot.as_ref().map(|s| s.locate(IpAddr::V4(ip)));
            sources.push(Source {
                socket,
                pid,
                connection_id: None,
            });
        }
        if sources.is_empty() || sources.len() > usize::from(u16::MAX) {
            return Err("need 1 to 65535 source addresses".into());
        }
        let popularity = Popularity::new(args.torrents.max(1), args.peers);
        let mut rng = SmallRng::seed_from_u64(args.seed ^ 0x5EED);
        let peers = (0..args.peers.max(1))
            .map(|_| Peer {
                torrent: popularity.sample(&mut rng),
                port: rng.random_range(1024..=u16::MAX),
                socket: rng.random_range(0..sources.len()) as u16,
                seeder: rng.random_bool(args.seeder_probability.clamp(0.0, 1.0)),
            })
            .collect();
        let hashes = (0..args.torrents.max(1))
            .map(|i| info_hash(args.seed, i))
            .collect();
        Ok(Self {
            classifier: snapshot.map(|snapshot| Classifier {
                snapshot,
                cache: HashMap::new(),
            }),
            args,
            sources,
            peers,
            hashes,
            popularity,
            rng,
            next_peer: 0,
            announced: 0,
            in_flight: 0,
            counts: Counts::default(),
            buf: vec![0u8; 8192],
            packet: Vec::with_capacity(16 + 20 * 74),
        })
    }

    fn run(&mut self) -> Result {
        let mut poll = Poll::new()?;
        for (i, s) in self.sources.iter_mut().enumerate() {
            poll.registry()
                .register(&mut s.socket, Token(i), Interest::READABLE)?;
        }
        self.connect_all(&mut poll)?;
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(self.args.duration);
        let warmup_end = start + Duration::from_secs_f64(self.args.warmup.min(self.args.duration));
        let report = Duration::from_millis(self.args.report_ms.max(10));
        let loss = Duration::from_millis(self.args.loss_timeout_ms.max(1));
        let mut events = Events::with_capacity(1024);
        let mut next_report = start + report;
        let mut last_report = start;
        let mut last_answer = Instant::now();
        let mut total = Counts::default();
        let mut counted_secs = 0.0;
        let mut out = io::stdout().lock();
        loop {
            let now = Instant::now();
            let done = self.args.one_pass
                && self.announced >= self.peers.len()
                && (self.in_flight == 0 || now.duration_since(last_answer) >= loss);
            if now >= next_report || now >= end || done {
                let secs = (now - last_report).as_secs_f64();
                let t = (now - start).as_secs_f64();
                writeln!(out, "{}", self.counts.json("interval", t, secs))?;
                out.flush()?;
                if last_report >= warmup_end {
                    total.add(&self.counts);
                    counted_secs += secs;
                }
                self.counts = Counts::default();
                last_report = now;
                next_report = now + report;
                if now >= end || done {
                    break;
                }
            }
            self.fill_window()?;
            poll.poll(&mut events, Some(loss))?;
            if events.is_empty() {
                if now.duration_since(last_answer) >= loss {
                    self.in_flight = 0;
                }
                continue;
            }
            last_answer = Instant::now();
            for ev in events.iter() {
                self.drain(ev.token().0)?;
            }
        }
        writeln!(
            out,
            "{}",
            total.json(
                "summary",
                (Instant::now() - start).as_secs_f64(),
                counted_secs
            )
        )?;
        Ok(())
    }

    /// Gets a connection id for every source (a few tries each, then gives up).
    fn connect_all(&mut self, poll: &mut Poll) -> Result {
        let mut events = Events::with_capacity(1024);
        for _attempt in 0..50 {
            let missing: Vec<usize> = (0..self.sources.len())
                .filter(|&i| self.sources[i].connection_id.is_none())
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            for &i in &missing {
                self.send_connect(i)?;
            }
            poll.poll(&mut events, Some(Duration::from_millis(100)))?;
            let tokens: Vec<usize> = events.iter().map(|e| e.token().0).collect();
            for t in tokens {
                self.drain(t)?;
            }
        }
        Err("the tracker did not answer connect requests".into())
    }

    fn send_connect(&mut self, i: usize) -> io::Result<()> {
        let mut p = std::mem::take(&mut self.packet);
        p.clear();
        ConnectRequest {
            transaction_id: TransactionId(u32::MAX),
        }
        .write(&mut p);
        let sent = self.send(i, &p);
        self.packet = p;
        sent
    }

    fn send(&mut self, i: usize, packet: &[u8]) -> io::Result<()> {
        match self.sources[i].socket.send_to(packet, self.args.server) {
            Ok(_) => {
                self.counts.sent += 1;
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends requests until the window is full.
    fn fill_window(&mut self) -> io::Result<()> {
        while self.in_flight < self.args.window {
            if self.args.one_pass && self.announced >= self.peers.len() {
                return Ok(());
            }
            let index = self.next_peer;
            self.next_peer = (self.next_peer + 1) % self.peers.len();
            let peer = self.peers[index];
            let socket = usize::from(peer.socket);
            let Some(cid) = self.sources[socket].connection_id else {
                self.send_connect(socket)?;
                self.in_flight += 1;
                continue;
            };
            let scrape = !self.args.one_pass
                && self.args.announces_per_scrape > 0
                && self.rng.random_ratio(1, self.args.announces_per_scrape + 1);
            let mut packet = std::mem::take(&mut self.packet);
            packet.clear();
            let cid = ConnectionId(cid);
            let tid = TransactionId(index as u32);
            if scrape {
                self.write_scrape(&mut packet, cid, tid);
            } else {
                announce(
                    cid,
                    tid,
                    self.hashes[peer.torrent as usize],
                    &peer,
                    self.args.numwant,
                )
                .write(&mut packet);
            }
            let sent = self.send(socket, &packet);
            self.packet = packet;
            sent?;
            self.in_flight += 1;
            self.announced += usize::from(!scrape);
        }
        Ok(())
    }

    fn write_scrape(&mut self, p: &mut Vec<u8>, cid: ConnectionId, tid: TransactionId) {
        let n = self
            .rng
            .random_range(1..=self.args.scrape_hashes.clamp(1, 74));
        let mut hashes = [InfoHash([0; 20]); 74];
        for h in &mut hashes[..n as usize] {
            *h = InfoHash(self.hashes[self.popularity.sample(&mut self.rng) as usize]);
        }
        ScrapeRequest {
            connection_id: cid,
            transaction_id: tid,
            info_hashes: InfoHashes::from_slice(&hashes[..n as usize]),
        }
        .write(p);
    }

    /// Reads every datagram waiting on source `i`.
    fn drain(&mut self, i: usize) -> io::Result<()> {
        loop {
            let mut buf = std::mem::take(&mut self.buf);
            let r = self.sources[i].socket.recv_from(&mut buf);
            let result = match r {
                Ok((len, _)) => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    self.on_response(i, &buf[..len]);
                    Ok(true)
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(true),
                Err(e) => Err(e),
            };
            self.buf = buf;
            if !result? {
                return Ok(());
            }
        }
    }

    fn on_response(&mut self, i: usize, p: &[u8]) {
        let Ok(response) = parse_response(p, AddressFamily::V4) else {
            return;
        };
        match response {
            ResponseView::Connect(c) => {
                self.counts.connect += 1;
                self.sources[i].connection_id = Some(c.connection_id.0);
            }
            ResponseView::Announce(a) => {
                self.counts.announce += 1;
                self.counts.peers += a.peers.len() as u64;
                self.classify(i, a.peers.iter());
            }
            ResponseView::Scrape(_) => self.counts.scrape += 1,
            ResponseView::Error(_) => {
                self.counts.error += 1;
                // An expired connection id: connect again before the next announce.
                self.sources[i].connection_id = None;
            }
        }
    }

    fn classify(&mut self, i: usize, peers: impl Iterator<Item = SocketAddr>) {
        let (Some(c), Some(own)) = (self.classifier.as_mut(), self.sources[i].pid) else {
            return;
        };
        for peer in peers {
            let IpAddr::V4(ip) = peer.ip() else { continue };
            let pid = c.pid(ip);
            self.counts.classified += 1;
            self.counts.same_pid += u64::from(pid == own);
            self.counts.same_isp += u64::from(c.snapshot.same_isp(own, pid));
            self.counts.cost += f64::from(c.snapshot.cost(own, pid));
        }
    }
}

/// A re-announce of simulated `peer` (its peer id and key from the transaction id).
fn announce(
    cid: ConnectionId,
    tid: TransactionId,
    hash: [u8; 20],
    peer: &Peer,
    numwant: u32,
) -> Request<'static> {
    let mut peer_id = [0u8; 20];
    peer_id[..4].copy_from_slice(&tid.0.to_be_bytes());
    Request::Announce(AnnounceRequest {
        connection_id: cid,
        transaction_id: tid,
        info_hash: InfoHash(hash),
        peer_id: PeerId(peer_id),
        downloaded: 50,
        left: if peer.seeder { 0 } else { 50 },
        uploaded: 50,
        event: Event::None,
        ip: 0,
        key: tid.0,
        numwant: numwant as i32,
        port: peer.port,
    })
}
