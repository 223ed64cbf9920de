//! Full scrape: `GET /scrape` without `info_hash` answers every torrent's counts, when
//! `http.full_scrape` is on.
//!
//! The answer is rendered at most once per `http.full_scrape_interval` seconds: the first
//! request after the interval renders it (on the blocking pool, one render at a time; requests
//! arriving meanwhile wait for it), and everyone is served the cached bytes until the next
//! interval. Both forms are kept, plain and gzip (for clients that send
//! `Accept-Encoding: gzip`), so a request costs a reference-count increment. Torrents the
//! access list does not allow are left out. The Redis store does not offer it (it would scan
//! every key): the answer is a failure reason saying so.

use std::time::{Duration, Instant};

use actix_web::http::header::{self, ContentType};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};

use super::http::failure;
use crate::config::HttpConfig;
use crate::metrics::{Outcome, Protocol, Tally};
use crate::protocol::http::encode_scrape;
use crate::service::Tracker;

/// The failure reason on a store that cannot list its torrents.
pub const NOT_OFFERED: &str = "full scrape is not offered on the Redis store";

/// A rendered full scrape.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub at: Instant,
    pub plain: Bytes,
    pub gzip: Bytes,
    /// Torrents listed.
    pub torrents: usize,
}

/// The cached full scrape, shared by every HTTP worker.
#[derive(Debug)]
pub struct FullScrape {
    interval: Duration,
    cached: std::sync::Mutex<Option<Rendered>>,
    /// Held while rendering, so concurrent requests wait for one render.
    rendering: tokio::sync::Mutex<()>,
}

/// Whether a query string names an `info_hash` (otherwise it asks for a full scrape).
pub fn names_info_hash(query: &str) -> bool {
    query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("info_hash"))
}

/// Whether the client accepts a gzip body (`Accept-Encoding: gzip`, not with `q=0`).
fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip")) && !refused
        })
}

/// Renders every allowed torrent's counts as a bencoded scrape answer, plain and gzip. `None`
/// on a store that cannot list its torrents.
pub fn render(tracker: &Tracker) -> Option<Rendered> {
    use std::io::Write as _;
    let stats = tracker.store().all_stats(|h| tracker.allows(h))?;
    let mut plain = Vec::with_capacity(16 + stats.len() * 80);
    encode_scrape(&stats, &mut plain);
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(plain.len() / 2),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&plain);
    let gzip = gz.finish().unwrap_or_default();
    Some(Rendered {
        at: Instant::now(),
        plain: plain.into(),
        gzip: gzip.into(),
        torrents: stats.len(),
    })
}

impl FullScrape {
    pub fn new(config: &HttpConfig) -> Self {
        Self {
            interval: Duration::from_secs(u64::from(config.full_scrape_interval)),
            cached: std::sync::Mutex::new(None),
            rendering: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self) -> Option<Rendered> {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        cached
            .as_ref()
            .filter(|r| r.at.elapsed() < self.interval)
            .cloned()
    }

    /// The cached full scrape, rendered first when older than the interval. `None` on a store
    /// that cannot list its torrents.
    pub async fn current(&self, tracker: &std::sync::Arc<Tracker>) -> Option<Rendered> {
        if let Some(r) = self.fresh() {
            return Some(r);
        }
        let _one_render = self.rendering.lock().await;
        if let Some(r) = self.fresh() {
            return Some(r);
        }
        let t = tracker.clone();
        let started = Instant::now();
        let rendered = actix_web::web::block(move || render(&t)).await.ok()??;
        tracker.metrics.full_scrape_renders.inc();
        tracing::debug!(
            torrents = rendered.torrents,
            bytes = rendered.plain.len(),
            gzip_bytes = rendered.gzip.len(),
            ms = started.elapsed().as_millis() as u64,
            "full scrape rendered"
        );
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(rendered.clone());
        Some(rendered)
    }

    /// Answers a full-scrape request (counted as an HTTP scrape).
    pub async fn serve(
        &self,
        req: &HttpRequest,
        tracker: &std::sync::Arc<Tracker>,
    ) -> HttpResponse {
        let mut tally = Tally::default();
        let response = match self.current(tracker).await {
            None => {
                tally.scrape(Protocol::Http, Outcome::BadRequest);
                failure(NOT_OFFERED)
            }
            Some(r) => {
                tally.scrape(Protocol::Http, Outcome::Ok);
                let mut res = HttpResponse::Ok();
                res.content_type(ContentType::plaintext())
                    .insert_header((header::VARY, "Accept-Encoding"));
                if accepts_gzip(req) {
                    res.insert_header((header::CONTENT_ENCODING, "gzip"))
                        .body(r.gzip)
                } else {
                    res.body(r.plain)
                }
            }
        };
        tracker.metrics.add(&mut tally);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_without_info_hash_asks_for_a_full_scrape() {
        assert!(!names_info_hash(""));
        assert!(!names_info_hash("info_hashes=x&foo"));
        assert!(names_info_hash("a=1&info_hash=%AA"));
        assert!(names_info_hash("info_hash"));
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_accept_it() {
        let req = |v: &str| {
            actix_web::test::TestRequest::default()
                .insert_header((header::ACCEPT_ENCODING, v))
                .to_http_request()
        };
        assert!(accepts_gzip(&req("gzip")));
        assert!(accepts_gzip(&req("deflate, GZIP;q=0.5")));
        assert!(!accepts_gzip(&req("gzip;q=0")));
        assert!(!accepts_gzip(&req("br, deflate")));
        assert!(!accepts_gzip(
            &actix_web::test::TestRequest::default().to_http_request()
        ));
    }
}
