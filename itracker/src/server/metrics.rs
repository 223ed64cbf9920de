//! Prometheus metrics (`GET /metrics`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route and HTTP status.
    pub requests: Family<Labels, Counter>,
    /// Topology updates by kind and outcome.
    pub updates: Family<Labels, Counter>,
    /// PIDs in the served map.
    pub pids: Gauge,
    /// Links in the served topology.
    pub links: Gauge,
    /// Update streams (RFC 8895) open now.
    pub update_streams: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("p4p_itracker");
        let requests = Family::<Labels, Counter>::default();
        let updates = Family::<Labels, Counter>::default();
        let (pids, links) = (Gauge::default(), Gauge::default());
        let update_streams = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "topology_updates",
            "Topology updates by kind and outcome",
            updates.clone(),
        );
        registry.register("pids", "PIDs in the served network map", pids.clone());
        registry.register("links", "Links in the served topology", links.clone());
        registry.register(
            "update_streams",
            "Update streams (RFC 8895) open now",
            update_streams.clone(),
        );
        Self {
            registry,
            requests,
            updates,
            pids,
            links,
            update_streams,
        }
    }
}

impl Metrics {
    /// Counts one request.
    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("route".to_string(), route.to_string()),
                ("status".to_string(), status.to_string()),
            ])
            .inc();
    }

    /// Counts one update attempt.
    pub fn update(&self, kind: &str, ok: bool) {
        let outcome = if ok { "applied" } else { "rejected" };
        self.updates
            .get_or_create(&vec![
                ("kind".to_string(), kind.to_string()),
                ("outcome".to_string(), outcome.to_string()),
            ])
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
