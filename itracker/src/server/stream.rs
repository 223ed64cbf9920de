//! The update stream service (RFC 8895): `POST /updates/stream` answers `text/event-stream`,
//! first a control event naming the stream's control URI, then a full message per substream,
//! then, on every topology change, a merge patch (or the full message when the patch is not
//! smaller) per changed substream; `POST` on the control URI adds and removes substreams.
//!
//! Each change is diffed once, when it is published ([`Hub::publish`], from the writer that
//! swaps the new version in), and every stream sends the same bytes. A stream that missed a
//! version (it was slow, or versions came faster than it was scheduled) gets full messages:
//! the patches only lead from one version to the next. A client resuming a broken stream names
//! the versions it holds (`tag`): none is sent again when current, and the patch is when the
//! client is one version behind (patches are kept for every version once a stream has been
//! opened). What a client controls is bounded:
//! request size, substreams per stream, concurrent streams, and its reading speed (a stream
//! whose bounded buffer fills is closed; the client reconnects and gets full messages).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use super::http::{authorize, check_accept, check_content_type, error_body, ApiError};
use super::state::{ranks, Rendered, Served};
use super::AppState;
use crate::alto::sse::{self, ControlMessage, UpdateStreamParams};
use crate::alto::{media, resource, Cost, ErrorCode, ErrorMeta, FieldError, ResourceEntry};

/// Where the update stream lives.
pub const URI: &str = "/updates/stream";
/// Prefix of the control URIs (one per stream).
const CONTROL_PREFIX: &str = "/updates/control/";
/// Largest update stream or control request body.
pub const MAX_PARAMS_BYTES: usize = 16 * 1024;
/// Substreams one stream may carry.
pub const MAX_SUBSTREAMS: usize = 16;
/// Streams open at once (further ones are refused with 503).
pub const MAX_STREAMS: usize = 256;
/// Chunks buffered per stream before it counts as too slow and is closed (a full message is
/// three chunks; its body is shared, not copied).
const BUFFER_CHUNKS: usize = 64;
/// Bytes queued per stream (not yet taken by the connection) beyond which a further message
/// closes it. Queued chunks pin the versions they come from; this bounds what a slow reader
/// can pin to about this much plus one message (a lone full message always fits).
const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Interval of the keep-alive comments (they also detect a client gone away).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The resources a stream can carry: id and media type.
const RESOURCES: [(&str, &str); 4] = [
    (resource::NETWORK_MAP, media::NETWORK_MAP),
    (resource::COST_MAP_NUM, media::COST_MAP),
    (resource::COST_MAP_ORD, media::COST_MAP),
    (resource::PID_PROPERTIES, media::PROPMAP),
];

fn rendered<'a>(served: &'a Served, id: &str) -> &'a Rendered {
    match id {
        resource::NETWORK_MAP => &served.network.network_map_body,
        resource::COST_MAP_NUM => &served.cost_num,
        resource::COST_MAP_ORD => served.cost_ord(),
        _ => &served.network.propmap,
    }
}

fn media_type(id: &str) -> Option<&'static str> {
    RESOURCES.iter().find(|(r, _)| *r == id).map(|(_, m)| *m)
}

/// The IRD entry of the update stream.
pub fn ird_entry() -> ResourceEntry {
    let merge: serde_json::Map<String, Value> = RESOURCES
        .iter()
        .map(|(id, _)| (id.to_string(), Value::from(media::MERGE_PATCH)))
        .collect();
    ResourceEntry {
        uri: URI.to_string(),
        media_type: media::EVENT_STREAM.to_string(),
        accepts: Some(media::UPDATE_STREAM_PARAMS.to_string()),
        capabilities: Some(json!({
            "incremental-change-media-types": merge,
            "support-stream-control": true,
        })),
        uses: RESOURCES.iter().map(|(id, _)| id.to_string()).collect(),
    }
}

/// One published version and how each resource changed from the version before.
#[derive(Debug)]
struct Update {
    seq: u64,
    served: Arc<Served>,
    /// Merge patches from version `seq - 1`, by resource id. A changed resource without one
    /// is sent in full.
    patches: HashMap<&'static str, Patch>,
}

/// A merge patch and the version (ETag) it leads from: a substream that holds that version,
/// live or resumed with its tag, gets the patch instead of the full message.
#[derive(Debug)]
struct Patch {
    base: String,
    body: Bytes,
}

/// A control request on its way to its stream, with the channel for the answer.
type Control = (UpdateStreamParams, oneshot::Sender<Result<(), FieldError>>);

/// The streams' shared state: the current version, the open streams and their control
/// channels.
#[derive(Debug)]
pub struct Hub {
    tx: watch::Sender<Arc<Update>>,
    open: Arc<AtomicUsize>,
    /// `open`, as the `update_streams` gauge in /metrics.
    open_gauge: Gauge,
    /// Whether a stream was ever opened: from then on every version gets its patches, so a
    /// client that lost its stream while the version changed resumes with a patch.
    subscribed: AtomicBool,
    controls: Mutex<HashMap<String, mpsc::Sender<Control>>>,
    ids: RandomState,
    /// Turns true when the server stops: every stream ends (a graceful stop would otherwise
    /// wait for them until its timeout) and new ones are refused.
    closing: watch::Sender<bool>,
}

impl Hub {
    /// A hub serving `served` until the next [`Hub::publish`]; `open_gauge` follows the
    /// number of open streams.
    pub fn new(served: Arc<Served>, open_gauge: Gauge) -> Hub {
        let (tx, _) = watch::channel(Arc::new(Update {
            seq: 0,
            served,
            patches: HashMap::new(),
        }));
        Hub {
            tx,
            open: Arc::new(AtomicUsize::new(0)),
            open_gauge,
            subscribed: AtomicBool::new(false),
            controls: Mutex::new(HashMap::new()),
            ids: RandomState::new(),
            closing: watch::channel(false).0,
        }
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Publishes a new version (called by the writer right after the swap). The patches are
    /// computed here, once, and only once some stream was opened (one that broke may resume).
    pub fn publish(&self, old: &Served, new: Arc<Served>) {
        let patches = if self.subscribed.load(Ordering::Relaxed) {
            patches(old, &new)
        } else {
            HashMap::new()
        };
        let seq = self.tx.borrow().seq + 1;
        self.tx.send_replace(Arc::new(Update {
            seq,
            served: new,
            patches,
        }));
    }

    /// Ends every stream and refuses new ones (the server is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn controls(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Control>>> {
        self.controls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An unguessable control id (128 random bits): a control URI is the only credential for
    /// changing a stream.
    fn new_control_id(&self) -> String {
        let a = self
            .ids
            .hash_one((self.open_streams(), std::time::SystemTime::now()));
        let b = RandomState::new().hash_one(a);
        format!("{a:016x}{b:016x}")
    }
}

/// Merge patches for the resources that changed from `old` to `new`, where one is smaller
/// than the full message.
fn patches(old: &Served, new: &Served) -> HashMap<&'static str, Patch> {
    let mut out = HashMap::new();
    for (id, _) in RESOURCES {
        let (before, after) = (rendered(old, id), rendered(new, id));
        if before.etag == after.etag {
            continue;
        }
        let patch = match id {
            resource::COST_MAP_NUM => cost_patch(old, new, false),
            resource::COST_MAP_ORD => cost_patch(old, new, true),
            _ => json_patch_of(&before.body, &after.body),
        };
        if let Some(p) = patch.and_then(|p| serde_json::to_vec(&p).ok()) {
            if p.len() < after.body.len() {
                let base = before.etag.clone();
                out.insert(
                    id,
                    Patch {
                        base,
                        body: Bytes::from(p),
                    },
                );
            }
        }
    }
    out
}

/// The merge patch between two rendered messages (small ones: the network map and the
/// property map).
fn json_patch_of(before: &[u8], after: &[u8]) -> Option<Value> {
    let before: Value = serde_json::from_slice(before).ok()?;
    let after: Value = serde_json::from_slice(after).ok()?;
    sse::merge_diff(&before, &after)
}

/// A cost map's merge patch straight from the two cost matrices (no JSON tree of the full
/// map is built): only when the network map is the same (same vtag, so same PIDs in the same
/// order); otherwise the full message goes out.
fn cost_patch(old: &Served, new: &Served, ordinal: bool) -> Option<Value> {
    if old.network.vtag != new.network.vtag {
        return None;
    }
    let pids = new.topology.pids();
    let (a, b) = (old.costs(), new.costs());
    let mut changed: BTreeMap<&str, BTreeMap<&str, Cost>> = BTreeMap::new();
    for (s, src) in pids.iter().enumerate() {
        let row = |m: &crate::model::CostMatrix| -> Vec<f64> {
            let r: Vec<f64> = (0..pids.len()).map(|t| m.get(s, t)).collect();
            if ordinal {
                ranks(&r)
            } else {
                r
            }
        };
        let (ra, rb) = (row(a), row(b));
        for (t, dst) in pids.iter().enumerate() {
            if ra[t].to_bits() != rb[t].to_bits() {
                changed
                    .entry(src.name.as_str())
                    .or_default()
                    .insert(dst.name.as_str(), Cost(rb[t]));
            }
        }
    }
    Some(json!({ "cost-map": changed }))
}

/// One substream of a stream.
struct Sub {
    resource: &'static str,
    incremental: bool,
    /// ETag of the version last sent (or that the client said it holds).
    sent: Option<String>,
}

/// Decrements the open-stream count when the stream's task ends, and forgets its control id.
struct OpenGuard {
    state: web::Data<AppState>,
    control_id: String,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let hub = &self.state.updates;
        hub.controls().remove(&self.control_id);
        hub.open.fetch_sub(1, Ordering::Relaxed);
        hub.open_gauge.dec();
    }
}

/// Registers the update stream and its control service.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::routes::only(
        URI,
        "POST",
        web::post().to(open_stream),
    ))
    .service(super::routes::only(
        "/updates/control/{id}",
        "POST",
        web::post().to(control),
    ));
}

async fn params(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
    produces: Option<&'static str>,
) -> Result<UpdateStreamParams, ApiError> {
    authorize(req, state.read_token.as_ref(), false)?;
    if let Some(produces) = produces {
        check_accept(req, produces)?;
    }
    check_content_type(req, media::UPDATE_STREAM_PARAMS)?;
    let body = match payload.to_bytes_limited(MAX_PARAMS_BYTES).await {
        Ok(body) => body.map_err(|e| ApiError::Payload(e.to_string()))?,
        Err(_) => return Err(ApiError::TooLarge(MAX_PARAMS_BYTES)),
    };
    let p = UpdateStreamParams::parse(&body)?;
    if let Some((id, r)) = p
        .add
        .iter()
        .find(|(_, r)| media_type(&r.resource_id).is_none())
    {
        return Err(
            FieldError::value(&format!("add/{id}/resource-id"), r.resource_id.clone()).into(),
        );
    }
    Ok(p)
}

/// An `application/alto-error+json` answer with `E_OTHER`.
fn refuse(status: StatusCode, message: &str) -> HttpResponse {
    error_body(
        &mut HttpResponse::build(status),
        ErrorMeta {
            code: ErrorCode::Other,
            field: None,
            value: None,
            message: Some(message.to_string()),
        },
    )
}

async fn open_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let p = params(&req, &state, payload, Some(media::EVENT_STREAM)).await?;
    if p.add.is_empty() {
        return Err(FieldError::Missing("add".into()).into());
    }
    if p.add.len() > MAX_SUBSTREAMS {
        return Err(
            FieldError::value("add", format!("more than {MAX_SUBSTREAMS} substreams")).into(),
        );
    }
    let hub = &state.updates;
    if *hub.closing.borrow() {
        return Ok(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is stopping",
        ));
    }
    if hub.open.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        hub.open.fetch_sub(1, Ordering::Relaxed);
        return Ok(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many update streams open; retry later",
        ));
    }
    hub.subscribed.store(true, Ordering::Relaxed);
    hub.open_gauge.inc();
    let control_id = hub.new_control_id();
    let guard = OpenGuard {
        state: state.clone(),
        control_id: control_id.clone(),
    };
    let (ctl_tx, ctl_rx) = mpsc::channel(4);
    hub.controls().insert(control_id.clone(), ctl_tx);
    let (tx, body_rx) = mpsc::channel::<Bytes>(BUFFER_CHUNKS);
    let queued = Arc::new(AtomicUsize::new(0));
    let out = Out {
        tx,
        queued: queued.clone(),
    };
    let updates = hub.tx.subscribe();
    let control_uri = format!("{CONTROL_PREFIX}{control_id}");
    let closing = hub.closing.subscribe();
    actix_web::rt::spawn(run(guard, updates, closing, ctl_rx, out, p, control_uri));
    let body = futures_util::stream::unfold((body_rx, queued), |(mut rx, queued)| async move {
        let chunk = rx.recv().await?;
        queued.fetch_sub(chunk.len(), Ordering::Relaxed);
        Some((Ok::<_, std::convert::Infallible>(chunk), (rx, queued)))
    });
    Ok(HttpResponse::Ok()
        .content_type(media::EVENT_STREAM)
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(body))
}

/// A stream's outgoing side: the chunk channel to the response body and the bytes in it.
struct Out {
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// Sends one message's chunks without waiting: `false` when the reader is too slow (the
/// channel is full, or more than [`MAX_QUEUED_BYTES`] would be queued) or gone; the stream
/// then ends.
fn emit<const N: usize>(out: &Out, chunks: [Bytes; N]) -> bool {
    let size: usize = chunks.iter().map(Bytes::len).sum();
    let queued = out.queued.load(Ordering::Relaxed);
    if queued > 0 && queued + size > MAX_QUEUED_BYTES {
        return false;
    }
    out.queued.fetch_add(size, Ordering::Relaxed);
    chunks.into_iter().all(|c| out.tx.try_send(c).is_ok())
}

fn emit_control(out: &Out, msg: &ControlMessage) -> bool {
    let data = serde_json::to_vec(msg).unwrap_or_default();
    emit(
        out,
        [Bytes::from(sse::frame(media::UPDATE_STREAM_CONTROL, &data))],
    )
}

/// Sends `id`'s message for `update` (a patch when allowed and it leads from what was sent).
fn emit_sub(out: &Out, id: &str, sub: &mut Sub, update: &Update) -> bool {
    let now = rendered(&update.served, sub.resource);
    if sub.sent.as_deref() == Some(now.etag.as_str()) {
        return true;
    }
    let patch = update
        .patches
        .get(sub.resource)
        .filter(|p| sub.incremental && sub.sent.as_deref() == Some(p.base.as_str()));
    let (kind, data) = match patch {
        Some(p) => (media::MERGE_PATCH, p.body.clone()),
        None => (
            media_type(sub.resource).unwrap_or(media::COST_MAP),
            now.body.clone(),
        ),
    };
    sub.sent = Some(now.etag.clone());
    let name = sse::event_name(kind, Some(id));
    emit(
        out,
        [
            Bytes::from(sse::frame_start_tagged(&name, now.etag.trim_matches('"'))),
            data,
            Bytes::from_static(sse::FRAME_END),
        ],
    )
}

fn add_subs(subs: &mut BTreeMap<String, Sub>, p: &UpdateStreamParams, update: &Update) {
    for (id, r) in &p.add {
        let Some((resource, _)) = RESOURCES.iter().find(|(res, _)| *res == r.resource_id) else {
            continue;
        };
        let now = rendered(&update.served, resource);
        let tag = r.tag.as_deref();
        // Current: nothing to send. One version behind (a stream that broke while the
        // version changed): the patch from it, when the substream takes patches.
        let sent = if tag == Some(now.etag.trim_matches('"')) {
            Some(now.etag.clone())
        } else {
            update
                .patches
                .get(resource)
                .filter(|p| tag == Some(p.base.trim_matches('"')))
                .map(|p| p.base.clone())
        };
        subs.insert(
            id.clone(),
            Sub {
                resource,
                incremental: r.incremental_changes,
                sent,
            },
        );
    }
}

/// Checks a control request against the stream's substreams.
fn check_control(subs: &BTreeMap<String, Sub>, p: &UpdateStreamParams) -> Result<(), FieldError> {
    if let Some(id) = p
        .add
        .keys()
        .find(|id| subs.contains_key(*id) && !p.remove.contains(id))
    {
        return Err(FieldError::value("add", id.clone()));
    }
    if let Some(id) = p.remove.iter().find(|id| !subs.contains_key(*id)) {
        return Err(FieldError::value("remove", id.clone()));
    }
    let removed: std::collections::BTreeSet<&String> = p.remove.iter().collect();
    let after = subs.len().saturating_sub(removed.len()) + p.add.len();
    if after > MAX_SUBSTREAMS {
        return Err(FieldError::value(
            "add",
            format!("more than {MAX_SUBSTREAMS} substreams"),
        ));
    }
    Ok(())
}

/// One stream's task: initial messages, then one round of messages per published version,
/// control requests and keep-alives, until the client goes, reads too slowly, or removes
/// every substream.
async fn run(
    _guard: OpenGuard,
    mut updates: watch::Receiver<Arc<Update>>,
    mut closing: watch::Receiver<bool>,
    mut controls: mpsc::Receiver<Control>,
    out: Out,
    first: UpdateStreamParams,
    control_uri: String,
) {
    let mut subs: BTreeMap<String, Sub> = BTreeMap::new();
    let mut update = updates.borrow_and_update().clone();
    add_subs(&mut subs, &first, &update);
    let hello = ControlMessage {
        control_uri: Some(control_uri),
        ..ControlMessage::default()
    };
    if !emit_control(&out, &hello) {
        return;
    }
    for (id, sub) in &mut subs {
        if !emit_sub(&out, id, sub, &update) {
            return;
        }
    }
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                update = updates.borrow_and_update().clone();
                for (id, sub) in &mut subs {
                    if !emit_sub(&out, id, sub, &update) {
                        return;
                    }
                }
            }
            ctl = controls.recv() => {
                let Some((p, reply)) = ctl else { return };
                let checked = check_control(&subs, &p);
                let ok = checked.is_ok();
                let _ = reply.send(checked);
                if !ok {
                    continue;
                }
                for id in &p.remove {
                    subs.remove(id);
                }
                add_subs(&mut subs, &p, &update);
                let msg = ControlMessage {
                    started: p.add.keys().cloned().collect(),
                    stopped: p.remove.clone(),
                    ..ControlMessage::default()
                };
                if !emit_control(&out, &msg) || subs.is_empty() {
                    return;
                }
                for id in p.add.keys() {
                    if let Some(sub) = subs.get_mut(id) {
                        if !emit_sub(&out, id, sub, &update) {
                            return;
                        }
                    }
                }
            }
            _ = keepalive.tick() => {
                if !emit(&out, [Bytes::from_static(b": keep-alive\n\n")]) {
                    return;
                }
            }
            _ = out.tx.closed() => return,
            _ = closing.wait_for(|c| *c) => return,
        }
    }
}

async fn control(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let p = params(&req, &state, payload, None).await?;
    let gone = || refuse(StatusCode::NOT_FOUND, "no such update stream (it ended)");
    let Some(tx) = state.updates.controls().get(path.as_str()).cloned() else {
        return Ok(gone());
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    match tx.try_send((p, reply_tx)) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            return Ok(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "control requests pending on this stream; retry",
            ))
        }
        Err(mpsc::error::TrySendError::Closed(_)) => return Ok(gone()),
    }
    match reply_rx.await {
        Ok(Ok(())) => Ok(HttpResponse::NoContent().finish()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Ok(gone()),
    }
}

impl AppState {
    /// Ends every update stream and refuses new ones (before a graceful stop, which would
    /// otherwise wait for them until its timeout).
    pub fn close_update_streams(&self) {
        self.updates.close();
    }
}

/// Closes the update streams on SIGTERM or SIGINT, beside the server's own stop on them.
#[cfg(unix)]
pub(super) async fn close_on_signal(state: Arc<AppState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    state.close_update_streams();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_out() -> (Out, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(BUFFER_CHUNKS);
        let queued = Arc::new(AtomicUsize::new(0));
        (Out { tx, queued }, rx)
    }

    /// A reader that takes nothing: once its buffer holds [`BUFFER_CHUNKS`] chunks, the next
    /// message is refused (the stream then ends), and a reader that catches up is served again.
    #[test]
    fn a_reader_that_takes_nothing_is_closed_once_its_buffer_is_full() {
        let (out, mut rx) = new_out();
        let chunk = || [Bytes::from_static(b": keep-alive\n\n")];
        for i in 0..BUFFER_CHUNKS {
            assert!(emit(&out, chunk()), "chunk {i} fits");
        }
        assert!(!emit(&out, chunk()), "one chunk too many");
        let (a, b) = new_out();
        drop(b);
        assert!(!emit(&a, chunk()), "a reader gone is refused too");
        while rx.try_recv().is_ok() {}
        out.queued.store(0, Ordering::Relaxed);
        assert!(emit(&out, chunk()), "room again");
    }

    /// The byte bound: a message that would take the queue past [`MAX_QUEUED_BYTES`] is
    /// refused, but a lone one of any size always goes (a full map must reach a new stream).
    #[test]
    fn queued_bytes_are_bounded_but_a_lone_message_always_fits() {
        let big = Bytes::from(vec![b'x'; MAX_QUEUED_BYTES]);
        let (out, _rx) = new_out();
        assert!(emit(&out, [big.clone()]), "alone, it fits");
        let (out, _rx) = new_out();
        assert!(emit(&out, [Bytes::from_static(b"x")]));
        assert!(!emit(&out, [big]), "behind another, it is too much");
    }
}
