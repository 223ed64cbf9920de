//! Prometheus metrics (text format on `GET /metrics`).
//!
//! Counters are plain atomics behind `prometheus-client`. Front ends count into a per-worker
//! [`Tally`] of plain integers and add it to the shared counters with [`Metrics::add`] (UDP once
//! per batch of datagrams, HTTP once per request): an atomic add is a locked instruction that
//! also stalls the misses around it, and an announce would otherwise take seven of them.
//! Store totals (torrents, peers) are read from the store when `/metrics` is scraped, not
//! updated per announce.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::selection::SelectionStats;
use crate::swarm::StoreTotals;

/// Which front end served a request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Udp,
}

impl Protocol {
    /// The label value (Prometheus convention: snake_case).
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Udp => "udp",
        }
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Malformed request (failure reason / UDP error).
    BadRequest,
    /// Refused by a cap, or the store was unavailable.
    Refused,
    /// UDP: bad connection id.
    BadConnection,
    /// The access list does not allow the torrent.
    NotAllowed,
}

impl Outcome {
    /// The label value (Prometheus convention: snake_case).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BadRequest => "bad_request",
            Outcome::Refused => "refused",
            Outcome::BadConnection => "bad_connection",
            Outcome::NotAllowed => "not_allowed",
        }
    }
}

impl Outcome {
    /// How a request the store (or the access list) refused is counted.
    pub fn of_refusal(e: &crate::swarm::StoreError) -> Outcome {
        match e {
            crate::swarm::StoreError::NotAllowed => Outcome::NotAllowed,
            _ => Outcome::Refused,
        }
    }
}

impl EncodeLabelValue for Protocol {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.label())
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.label())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: Protocol,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: Protocol,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LocalityLabels {
    locality: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    kind: &'static str,
}

const PROTOCOLS: [Protocol; 2] = [Protocol::Http, Protocol::Udp];
const OUTCOMES: [Outcome; 5] = [
    Outcome::Ok,
    Outcome::BadRequest,
    Outcome::Refused,
    Outcome::BadConnection,
    Outcome::NotAllowed,
];
const LOCALITIES: [&str; 3] = ["same_pid", "same_isp", "remote"];

/// Counts kept by one worker between two [`Metrics::add`] calls: the same figures as the
/// shared counters, in plain integers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    announces: [[u64; OUTCOMES.len()]; PROTOCOLS.len()],
    scrapes: [[u64; OUTCOMES.len()]; PROTOCOLS.len()],
    connects: u64,
    /// UDP datagrams that were no valid connect (or named no known action).
    malformed: u64,
    returned: [u64; LOCALITIES.len()],
    /// Answers with at least one peer, whose costs are summed below.
    answers: u64,
    answer_cost: f64,
    random_cost: f64,
}

impl Tally {
    /// Counts an announce.
    pub fn announce(&mut self, protocol: Protocol, outcome: Outcome) {
        self.announces[protocol as usize][outcome as usize] += 1;
    }

    /// Counts a scrape.
    pub fn scrape(&mut self, protocol: Protocol, outcome: Outcome) {
        self.scrapes[protocol as usize][outcome as usize] += 1;
    }

    /// Counts a UDP connect.
    pub fn connect(&mut self) {
        self.connects += 1;
    }

    /// Counts a UDP datagram that was neither an announce nor a scrape and could not be read
    /// (a bad connect, an unknown action, too short to answer).
    pub fn malformed(&mut self) {
        self.malformed += 1;
    }

    /// Adds one answer's locality figures.
    pub fn selection(&mut self, s: &SelectionStats) {
        if s.same_pid + s.same_isp + s.remote == 0 {
            return;
        }
        for (sum, n) in self
            .returned
            .iter_mut()
            .zip([s.same_pid, s.same_isp, s.remote])
        {
            *sum += u64::from(n);
        }
        self.answers += 1;
        self.answer_cost += s.cost;
        self.random_cost += s.random_cost;
    }
}

/// Counter handles resolved once per label set, so the announce path increments an atomic
/// instead of hashing labels and locking the family's map on every request.
#[derive(Debug)]
struct RequestCounters([[Counter; OUTCOMES.len()]; PROTOCOLS.len()]);

impl RequestCounters {
    fn resolve(family: &Family<RequestLabels, Counter>) -> Self {
        Self(PROTOCOLS.map(|protocol| {
            OUTCOMES.map(|outcome| {
                family
                    .get_or_create(&RequestLabels { protocol, outcome })
                    .clone()
            })
        }))
    }

    /// Adds counts laid out as the counters are.
    fn add(&self, counts: &[[u64; OUTCOMES.len()]; PROTOCOLS.len()]) {
        for (counters, row) in self.0.iter().zip(counts) {
            for (counter, &n) in counters.iter().zip(row) {
                if n > 0 {
                    counter.inc_by(n);
                }
            }
        }
    }
}

/// Every metric the tracker exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    announces: RequestCounters,
    scrapes: RequestCounters,
    connects: Counter,
    malformed: Counter,
    returned: [Counter; LOCALITIES.len()],
    answer_cost: Counter<f64, AtomicU64>,
    random_cost: Counter<f64, AtomicU64>,
    torrents: Gauge,
    peers: Family<PeerLabels, Gauge>,
    sweeps: Counter,
    swept_peers: Counter,
    /// Build number of the snapshot in use.
    pub topology_generation: Gauge,
    /// Seconds since the snapshot in use was built or confirmed unchanged.
    pub topology_age_seconds: Gauge,
    /// Failed refreshes from the iTracker (the last good snapshot keeps serving).
    pub topology_refresh_failures: Counter,
    /// Maps received over ALTO update streams (RFC 8895) and swapped in.
    pub topology_stream_updates: Counter,
    /// Update streams that could not be opened or ended in error (each is retried with
    /// backoff, then resynchronised from full maps; polling goes on meanwhile).
    pub topology_stream_failures: Counter,
    /// Update streams open now (one per iTracker at most).
    pub topology_stream_connected: Gauge,
    /// 1 while no topology was ever loaded and selection is random.
    pub topology_missing: Gauge,
    /// Redis store: calls that failed or timed out (brought up to date at render).
    store_failures: Counter,
    /// Redis store: answers that needed a second round trip because a sample ran short.
    store_topups: Counter,
    /// Serialises bringing the two counters above up to date.
    backend_sync: std::sync::Mutex<()>,
    /// Cluster replication: deltas published, applied (other nodes'), dropped (never
    /// published); brought up to date at render like the store counters.
    cluster_deltas: Family<PeerLabels, Counter>,
    /// Cluster: 1 once this node has caught up with the stream (see `crate::cluster`).
    pub cluster_ready: Gauge,
    /// Requests whose handling panicked (each cost one answer, never a worker), by protocol.
    handler_panics: [Counter; PROTOCOLS.len()],
    /// UDP workers restarted after their loop died.
    pub udp_worker_restarts: Counter,
    /// UDP workers serving now (the configured number while all is well).
    pub udp_workers_running: Gauge,
    /// UDP workers started (over every UDP address).
    pub udp_workers_configured: Gauge,
    /// Reloads (SIGHUP): [refused, applied].
    reloads: [Counter; 2],
    /// Seconds between iTracker refreshes (0 without `--alto`), for alerting on a stale map.
    pub topology_refresh_interval: Gauge,
    /// Access-list loads after the first (SIGHUP, file change, admin API): [refused, applied].
    access_list_reloads: [Counter; 2],
    /// Entries in the access list in use.
    pub access_list_entries: Gauge,
    /// Full scrapes rendered (each served from cache until `http.full_scrape_interval` passes).
    pub full_scrape_renders: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let announces = Family::<RequestLabels, Counter>::default();
        let scrapes = Family::<RequestLabels, Counter>::default();
        let returned = Family::<LocalityLabels, Counter>::default();
        let panics = Family::<ProtocolLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let access_reloads = Family::<ReloadLabels, Counter>::default();
        let mut m = Metrics {
            registry: Registry::with_prefix("p4p_tracker"),
            announces: RequestCounters::resolve(&announces),
            scrapes: RequestCounters::resolve(&scrapes),
            connects: Counter::default(),
            malformed: Counter::default(),
            returned: LOCALITIES
                .map(|locality| returned.get_or_create(&LocalityLabels { locality }).clone()),
            answer_cost: Counter::default(),
            random_cost: Counter::default(),
            torrents: Gauge::default(),
            peers: Family::default(),
            sweeps: Counter::default(),
            swept_peers: Counter::default(),
            topology_generation: Gauge::default(),
            topology_age_seconds: Gauge::default(),
            topology_refresh_failures: Counter::default(),
            topology_stream_updates: Counter::default(),
            topology_stream_failures: Counter::default(),
            topology_stream_connected: Gauge::default(),
            topology_missing: Gauge::default(),
            store_failures: Counter::default(),
            store_topups: Counter::default(),
            backend_sync: std::sync::Mutex::new(()),
            cluster_deltas: Family::default(),
            cluster_ready: Gauge::default(),
            handler_panics: PROTOCOLS
                .map(|protocol| panics.get_or_create(&ProtocolLabels { protocol }).clone()),
            udp_worker_restarts: Counter::default(),
            udp_workers_running: Gauge::default(),
            udp_workers_configured: Gauge::default(),
            reloads: ["refused", "applied"]
                .map(|outcome| reloads.get_or_create(&ReloadLabels { outcome }).clone()),
            topology_refresh_interval: Gauge::default(),
            access_list_reloads: ["refused", "applied"].map(|outcome| {
                access_reloads
                    .get_or_create(&ReloadLabels { outcome })
                    .clone()
            }),
            access_list_entries: Gauge::default(),
            full_scrape_renders: Counter::default(),
        };

        let r = &mut m.registry;
        r.register("announces", "Announces by protocol and outcome", announces);
        r.register("scrapes", "Scrapes by protocol and outcome", scrapes);
        r.register(
            "udp_connects",
            "UDP connect requests answered",
            m.connects.clone(),
        );
        r.register(
            "udp_malformed_requests",
            "UDP datagrams that were no valid connect, announce or scrape request (bad announces and scrapes count under their own outcome)",
            m.malformed.clone(),
        );
        r.register(
            "returned_peers",
            "Peers handed out, by locality relative to the requester (same_pid, same_isp, remote)",
            returned,
        );
        r.register(
            "answer_cost",
            "Sum of p-distances from requesters to the peers they were handed",
            m.answer_cost.clone(),
        );
        r.register(
            "random_answer_cost",
            "Expected sum of p-distances had the same answers been drawn at random",
            m.random_cost.clone(),
        );
        r.register("torrents", "Torrents tracked", m.torrents.clone());
        r.register(
            "peers",
            "Peers tracked, by kind (seeders, leechers)",
            m.peers.clone(),
        );
        r.register("sweeps", "Expiry sweeps run", m.sweeps.clone());
        r.register(
            "swept_peers",
            "Peers removed by expiry sweeps",
            m.swept_peers.clone(),
        );
        r.register(
            "topology_generation",
            "Build number of the topology snapshot in use",
            m.topology_generation.clone(),
        );
        r.register(
            "topology_age_seconds",
            "Seconds since the topology snapshot was last built or confirmed",
            m.topology_age_seconds.clone(),
        );
        r.register(
            "topology_refresh_failures",
            "Failed topology refreshes (the last good snapshot keeps serving)",
            m.topology_refresh_failures.clone(),
        );
        r.register(
            "topology_stream_updates",
            "Maps received over ALTO update streams (RFC 8895) and swapped in",
            m.topology_stream_updates.clone(),
        );
        r.register(
            "topology_stream_failures",
            "ALTO update streams that failed to open or ended in error (retried with backoff)",
            m.topology_stream_failures.clone(),
        );
        r.register(
            "topology_stream_connected",
            "ALTO update streams open now",
            m.topology_stream_connected.clone(),
        );
        r.register(
            "topology_missing",
            "1 while no topology was ever loaded (selection is random)",
            m.topology_missing.clone(),
        );
        r.register(
            "cluster_deltas",
            "Cluster replication deltas since start, by kind (published, applied, dropped)",
            m.cluster_deltas.clone(),
        );
        r.register(
            "cluster_ready",
            "1 once this cluster node has caught up with the other nodes' deltas",
            m.cluster_ready.clone(),
        );
        r.register(
            "store_failures",
            "Redis store calls that failed or timed out since start",
            m.store_failures.clone(),
        );
        r.register(
            "handler_panics",
            "Requests whose handling panicked (one answer lost each, the worker kept), by protocol",
            panics,
        );
        r.register(
            "udp_worker_restarts",
            "UDP workers restarted after their loop died",
            m.udp_worker_restarts.clone(),
        );
        r.register(
            "udp_workers_running",
            "UDP workers serving now",
            m.udp_workers_running.clone(),
        );
        r.register(
            "reloads",
            "Reloads of the configured files (SIGHUP), by outcome (applied, refused)",
            reloads,
        );
        r.register(
            "topology_refresh_interval_seconds",
            "Seconds between iTracker refreshes (0: no iTracker configured)",
            m.topology_refresh_interval.clone(),
        );
        r.register(
            "udp_workers_configured",
            "UDP workers started, over every UDP address",
            m.udp_workers_configured.clone(),
        );
        r.register(
            "store_topups",
            "Redis store answers that needed a second round trip (sample ran short)",
            m.store_topups.clone(),
        );
        r.register(
            "access_list_reloads",
            "Access-list reloads (SIGHUP, file change, admin API), by outcome (applied, refused: the list in use kept serving)",
            access_reloads,
        );
        r.register(
            "access_list_entries",
            "Info hashes in the access list in use",
            m.access_list_entries.clone(),
        );
        r.register(
            "full_scrape_renders",
            "Full scrapes rendered (served from cache in between)",
            m.full_scrape_renders.clone(),
        );
        m
    }

    /// Counts an access-list reload that was applied (`true`) or refused.
    pub fn access_list_reloads(&self, applied: bool) {
        self.access_list_reloads[usize::from(applied)].inc();
    }

    /// Counts a reload that was applied (`true`) or refused.
    pub fn reloads(&self, applied: bool) {
        self.reloads[usize::from(applied)].inc();
    }

    /// Counts a request whose handling panicked.
    pub fn handler_panicked(&self, protocol: Protocol) {
        self.handler_panics[protocol as usize].inc();
    }

    /// Brings the store's own counts (failed calls, sample top-ups; totals since start) into
    /// their counters.
    pub fn backend_counts(&self, failures: u64, topups: u64) {
        let _one_at_a_time = self.backend_sync.lock().unwrap_or_else(|e| e.into_inner());
        for (counter, total) in [
            (&self.store_failures, failures),
            (&self.store_topups, topups),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Brings the cluster's delta counts (totals since start, by kind) into their counters.
    pub fn cluster_counts(&self, totals: [(&'static str, u64); 3], ready: bool) {
        let _one_at_a_time = self.backend_sync.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, total) in totals {
            let counter = self.cluster_deltas.get_or_create(&PeerLabels { kind });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.cluster_ready.set(i64::from(ready));
    }

    /// Adds a worker's tally to the shared counters and empties it.
    pub fn add(&self, t: &mut Tally) {
        if *t == Tally::default() {
            return;
        }
        self.announces.add(&t.announces);
        self.scrapes.add(&t.scrapes);
        if t.connects > 0 {
            self.connects.inc_by(t.connects);
        }
        if t.malformed > 0 {
            self.malformed.inc_by(t.malformed);
        }
        for (counter, &n) in self.returned.iter().zip(&t.returned) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
        if t.answers > 0 {
            self.answer_cost.inc_by(t.answer_cost);
            self.random_cost.inc_by(t.random_cost);
        }
        *t = Tally::default();
    }

    /// Records a sweep.
    pub fn sweep(&self, removed: u64) {
        self.sweeps.inc();
        self.swept_peers.inc_by(removed);
    }

    /// Renders the text exposition, with store totals read now.
    pub fn render(&self, totals: StoreTotals) -> String {
        self.torrents.set(totals.torrents as i64);
        self.peers
            .get_or_create(&PeerLabels { kind: "seeders" })
            .set(totals.seeders as i64);
        self.peers
            .get_or_create(&PeerLabels { kind: "leechers" })
            .set(totals.leechers as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn a_tally_adds_to_the_counters_once_and_empties() {
        let m = Metrics::new();
        let mut t = Tally::default();
        t.announce(Protocol::Udp, Outcome::Ok);
        t.announce(Protocol::Udp, Outcome::Ok);
        t.announce(Protocol::Http, Outcome::Refused);
        t.scrape(Protocol::Udp, Outcome::BadConnection);
        t.connect();
        let s = SelectionStats {
            same_pid: 2,
            same_isp: 1,
            remote: 4,
            cost: 3.5,
            random_cost: 7.0,
        };
        t.selection(&s);
        t.selection(&s);
        // An empty answer counts nothing.
        t.selection(&SelectionStats::default());
        m.add(&mut t);
        assert_eq!(t, Tally::default());
        m.add(&mut t);
        let text = m.render(StoreTotals::default());
        for (name, want) in [
            (
                "p4p_tracker_announces_total{protocol=\"udp\",outcome=\"ok\"}",
                2.0,
            ),
            (
                "p4p_tracker_announces_total{protocol=\"http\",outcome=\"refused\"}",
                1.0,
            ),
            (
                "p4p_tracker_scrapes_total{protocol=\"udp\",outcome=\"bad_connection\"}",
                1.0,
            ),
            ("p4p_tracker_udp_connects_total", 1.0),
            (
                "p4p_tracker_returned_peers_total{locality=\"same_pid\"}",
                4.0,
            ),
            (
                "p4p_tracker_returned_peers_total{locality=\"same_isp\"}",
                2.0,
            ),
            ("p4p_tracker_returned_peers_total{locality=\"remote\"}", 8.0),
            ("p4p_tracker_answer_cost_total", 7.0),
            ("p4p_tracker_random_answer_cost_total", 14.0),
        ] {
            assert_eq!(line_value(&text, name), Some(want), "{name} in {text}");
        }
    }
}
