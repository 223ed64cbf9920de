//! The endpoint cost answer (RFC 7285 section 11.5.1), streamed.
//!
//! An answer grows with sources x destinations, so it is never built whole: the pairs of one
//! request are bounded (`max_endpoint_pairs`, checked before any cost is computed), every
//! address is looked up once, and the JSON is written one source row at a time into chunks of
//! about [`CHUNK`] bytes as the connection takes them. Memory per request is the parsed
//! request, one row and one chunk, whatever the answer's size.

use std::collections::HashSet;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;

use super::state::{ranks, Served};
use crate::alto::{Constraint, Cost, CostType, EndpointCostMeta};
use crate::snapshot::Endpoint;

/// Size a chunk reaches before it is handed to the connection.
pub const CHUNK: usize = 64 * 1024;

/// The answer's body, written lazily (see the module docs).
pub struct EndpointCostBody {
    served: Arc<Served>,
    /// Sources still to write, deduplicated, in the order they are written.
    srcs: std::vec::IntoIter<(String, IpAddr)>,
    /// Destinations, deduplicated, each looked up once.
    dsts: Vec<(String, Endpoint)>,
    ordinal: bool,
    constraints: Vec<Constraint>,
    /// What goes before the first row (`{"meta":...,"endpoint-cost-map":{`).
    head: Option<Vec<u8>>,
    first_row: bool,
    done: bool,
}

impl std::fmt::Debug for EndpointCostBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointCostBody")
            .field("dsts", &self.dsts.len())
            .field("done", &self.done)
            .finish()
    }
}

/// Keeps the first of each typed address text (a JSON object has no duplicate keys).
fn dedup(list: Vec<(String, IpAddr)>) -> Vec<(String, IpAddr)> {
    let mut seen = HashSet::with_capacity(list.len());
    let mut out: Vec<(String, IpAddr)> = list
        .into_iter()
        .filter(|(text, _)| seen.insert(text.clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

impl EndpointCostBody {
    /// Prepares the answer for one request (its pairs already checked against the limit).
    pub fn new(
        served: Arc<Served>,
        cost_mode: &str,
        ordinal: bool,
        constraints: Vec<Constraint>,
        srcs: Vec<(String, IpAddr)>,
        dsts: Vec<(String, IpAddr)>,
    ) -> EndpointCostBody {
        let dsts = dedup(dsts)
            .into_iter()
            .map(|(text, ip)| {
                let e = served.snapshot.endpoint(ip);
                (text, e)
            })
            .collect();
        let meta = EndpointCostMeta {
            cost_type: CostType::routingcost(cost_mode),
        };
        let mut head = b"{\"meta\":".to_vec();
        write_json(&mut head, &meta);
        head.extend_from_slice(b",\"endpoint-cost-map\":{");
        EndpointCostBody {
            served,
            srcs: dedup(srcs).into_iter(),
            dsts,
            ordinal,
            constraints,
            head: Some(head),
            first_row: true,
            done: false,
        }
    }

    /// Writes one source's row.
    fn write_row(&mut self, out: &mut Vec<u8>, text: &str, ip: IpAddr) {
        let snap = &self.served.snapshot;
        let src = snap.endpoint(ip);
        let raw: Vec<f64> = self
            .dsts
            .iter()
            .map(|(_, dst)| f64::from(snap.cost_between(src, *dst)))
            .collect();
        let values = if self.ordinal { ranks(&raw) } else { raw };
        if !self.first_row {
            out.push(b',');
        }
        self.first_row = false;
        write_json(out, text);
        out.extend_from_slice(b":{");
        let mut first = true;
        for ((dst, _), v) in self.dsts.iter().zip(values) {
            if !self.constraints.iter().all(|c| c.accepts(v)) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_json(out, dst.as_str());
            out.push(b':');
            Cost(v).write_json(out);
        }
        out.push(b'}');
    }

    /// The next chunk, or `None` once everything was written.
    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut out = self.head.take().unwrap_or_default();
        while out.len() < CHUNK {
            match self.srcs.next() {
                Some((text, ip)) => self.write_row(&mut out, &text, ip),
                None => {
                    out.extend_from_slice(b"}}");
                    self.done = true;
                    break;
                }
            }
        }
        Some(Bytes::from(out))
    }
}

/// Serializes a value into a buffer (strings and costs: cannot fail; a failure would only
/// truncate the value, never panic).
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    if let Err(e) = serde_json::to_writer(&mut *out, value) {
        tracing::error!(error = %e, "cannot serialize an endpoint cost answer value");
    }
}

impl MessageBody for EndpointCostBody {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    /// A panic while writing (a bug) ends this answer's connection, not the worker.
    fn poll_next(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| this.next_chunk())) {
            Ok(chunk) => Poll::Ready(chunk.map(Ok)),
            Err(_) => {
                this.done = true;
                tracing::error!("writing an endpoint cost answer panicked; connection closed");
                Poll::Ready(Some(Err(std::io::Error::other(
                    "endpoint cost answer failed",
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alto::parse_constraints;

    fn drain(mut body: EndpointCostBody) -> (Vec<usize>, serde_json::Value) {
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        while let Some(chunk) = body.next_chunk() {
            sizes.push(chunk.len());
            all.extend_from_slice(&chunk);
        }
        (sizes, serde_json::from_slice(&all).expect("valid JSON"))
    }

    fn served() -> Arc<Served> {
        Arc::new(Served::new(crate::embedded_default(), None).expect("embedded default"))
    }

    fn addrs(n: u32) -> Vec<(String, IpAddr)> {
        (0..n)
            .map(|i| {
                let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
                (format!("ipv4:{ip}"), ip)
            })
            .collect()
    }

    #[test]
    fn the_answer_is_valid_json_in_bounded_chunks_with_duplicates_merged() {
        let mut srcs = addrs(300);
        srcs.push(srcs[0].clone());
        let body =
            EndpointCostBody::new(served(), "numerical", false, Vec::new(), srcs, addrs(300));
        let (sizes, json) = drain(body);
        assert!(sizes.len() > 1, "streamed in several chunks: {sizes:?}");
        // A chunk stops growing at the first row past CHUNK: at most one row more.
        assert!(sizes.iter().all(|&s| s < CHUNK + 300 * 40), "{sizes:?}");
        let map = json["endpoint-cost-map"].as_object().expect("map");
        assert_eq!(map.len(), 300);
        assert_eq!(map["ipv4:10.0.0.0"].as_object().expect("row").len(), 300);
        assert_eq!(json["meta"]["cost-type"]["cost-mode"], "numerical");
    }

    #[test]
    fn constraints_filter_and_ordinal_ranks_per_row() {
        let c = parse_constraints(&["le 1".to_string()]).expect("valid");
        let body = EndpointCostBody::new(served(), "ordinal", true, c, addrs(2), addrs(3));
        let (_, json) = drain(body);
        for row in json["endpoint-cost-map"].as_object().expect("map").values() {
            assert!(row.as_object().expect("row").values().all(|v| v == 1));
        }
        let empty = EndpointCostBody::new(served(), "numerical", false, vec![], vec![], vec![]);
        let (_, json) = drain(empty);
        assert_eq!(json["endpoint-cost-map"], serde_json::json!({}));
    }
}
