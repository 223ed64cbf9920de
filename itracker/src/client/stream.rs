//! The client side of ALTO update streams (RFC 8895): subscribe to the network map, the
//! numerical routingcost map and (when offered) the PID property map, keep the last message of
//! each as JSON, apply merge-patch increments, and deliver an [`IspMap`] each time the three
//! are consistent again (the cost map and property map depend on the network map's current
//! vtag). A map is built with the same code as a polled one ([`IspMap::from_messages`]) and
//! delivered whole or not at all.
//!
//! Anything unexpected (an event that is not JSON, names a substream not asked for, a patch
//! before any full message, a map that fails validation, the server stopping a substream)
//! ends the stream with an error: the caller reconnects and starts again from full messages.
//! A stream that only broke (the connection dropped, the server went silent) is resumed
//! instead ([`AltoClient::reopen_stream`]): the client names the version it holds of each
//! resource (`tag`, learnt from each event's SSE `id`), and the server sends only what
//! changed since. A server that sends nothing, not even its keep-alives, for
//! [`StreamOptions::idle_timeout`] counts as gone ([`StreamError::Idle`]).
//! Blocking (ureq): run it on its own thread.

use std::io::BufRead;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::http::read_json;
use super::{cost_map_entry, host_of, network_map_entry, AltoClient, ClientError, IspMap};
use crate::alto::sse::{self, AddUpdateReq, ControlMessage, EventError, UpdateStreamParams};
use crate::alto::{media, CostMapMessage, DirectoryMessage, NetworkMapMessage, PropMapMessage};

/// Substream ids this client uses.
const NM: &str = "nm";
const CM: &str = "cm";
const PM: &str = "pm";

/// Why a stream could not be opened or ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Fetching the IRD failed, or it names an unusable URL.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The POST to the update stream failed in transport.
    #[error("POST {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: ureq::Error,
    },
    /// The update stream answered something else than a 200 event stream.
    #[error("POST {url}: HTTP {status} {content_type}")]
    Refused {
        url: String,
        status: u16,
        content_type: String,
    },
    /// An event could not be read (transport, too large, not UTF-8).
    #[error(transparent)]
    Event(#[from] EventError),
    /// An event is not what the protocol allows here.
    #[error("invalid event {name:?}: {reason}")]
    Garbage { name: String, reason: String },
    /// The maps, once consistent, do not make a valid map.
    #[error("the streamed maps are invalid: {0}")]
    Map(#[source] ClientError),
    /// The server ended the stream.
    #[error("the update stream ended")]
    Ended,
    /// Nothing came, not even a keep-alive, for this long: the server or the path to it is
    /// gone without closing the connection.
    #[error("no data on the update stream for {0:?} (keep-alives missing): presumed dead")]
    Idle(Duration),
}

/// How long a stream may stay silent before the client gives it up: three of the iTracker's
/// 15 s keep-alive intervals.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// How an update stream is followed.
#[derive(Clone, Copy, Debug)]
pub struct StreamOptions {
    /// No byte for this long ends the stream with [`StreamError::Idle`] (a socket read
    /// timeout: a server that vanished without closing must not leave the reader waiting
    /// forever). Default [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl StreamError {
    fn garbage(name: &str, reason: impl Into<String>) -> StreamError {
        StreamError::Garbage {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}

/// What the IRD offers: the stream's URL and the resource ids to subscribe to.
#[derive(Clone, Debug)]
struct Offer {
    url: String,
    network_map: String,
    cost_map: String,
    properties: Option<String>,
}

/// Whether a read failed because the socket read timeout ran out (ureq wraps its own
/// timeout error in the `io::Error` its body reader returns).
fn is_read_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

fn offer(ird: &DirectoryMessage) -> Result<Option<(String, Offer)>, ClientError> {
    let (nm_id, _) = network_map_entry(ird)?;
    let cm_uri = cost_map_entry(ird, &nm_id)?;
    let Some(cm_id) = ird
        .resources
        .iter()
        .find(|(_, e)| e.uri == cm_uri && e.media_type == media::COST_MAP && e.accepts.is_none())
        .map(|(id, _)| id.clone())
    else {
        return Ok(None);
    };
    let pm_id = ird
        .resources
        .iter()
        .find(|(_, e)| e.media_type == media::PROPMAP && e.uses.contains(&nm_id))
        .map(|(id, _)| id.clone());
    let stream = ird.resources.values().find(|e| {
        e.media_type == media::EVENT_STREAM
            && e.accepts.as_deref() == Some(media::UPDATE_STREAM_PARAMS)
            && e.uses.contains(&nm_id)
            && e.uses.contains(&cm_id)
    });
    Ok(stream.map(|e| {
        let properties = pm_id.filter(|id| e.uses.contains(id));
        (
            e.uri.clone(),
            Offer {
                url: String::new(),
                network_map: nm_id,
                cost_map: cm_id,
                properties,
            },
        )
    }))
}

impl AltoClient {
    /// Opens the update stream the IRD offers for this client's maps; `None` when it offers
    /// none. Blocks until the stream's headers came (not the first map: see
    /// [`UpdateStream::next_map`]).
    pub fn open_stream(&self) -> Result<Option<UpdateStream>, StreamError> {
        self.open_stream_with(StreamOptions::default(), &mut None)
    }

    /// Opens a stream again after `previous` ended (with its options; as
    /// [`AltoClient::open_stream`] when there is none). When `previous` only broke (its
    /// messages all applied, see [`UpdateStream::resumable`]), its maps are kept and their
    /// tags sent: the server skips the full message of every resource the client still holds,
    /// and the next map is delivered only when something changed. Otherwise from full
    /// messages. `previous` is taken only once the new stream is open: after a failed attempt
    /// (the server still down) the next one can resume it.
    pub fn reopen_stream(
        &self,
        previous: &mut Option<UpdateStream>,
    ) -> Result<Option<UpdateStream>, StreamError> {
        if previous.as_ref().is_some_and(|p| !p.resumable()) {
            *previous = None;
        }
        let options = previous.as_ref().map(|p| p.options).unwrap_or_default();
        self.open_stream_with(options, previous)
    }

    /// [`AltoClient::open_stream`] with options, resuming `previous` when it holds a stream of
    /// the same resources (taken once the new stream is open).
    pub fn open_stream_with(
        &self,
        options: StreamOptions,
        previous: &mut Option<UpdateStream>,
    ) -> Result<Option<UpdateStream>, StreamError> {
        let ird_url = self.ird_url.clone();
        let ird: DirectoryMessage = match self.get(&ird_url, media::DIRECTORY, None)? {
            super::http::Got::Fresh(mut res, url) => {
                read_json(&url, &mut res, self.limits.max_ird_bytes, |r| {
                    serde_json::from_reader(r)
                })?
            }
            super::http::Got::NotModified => {
                return Err(ClientError::InvalidMap("304 for the IRD".into()).into())
            }
        };
        let Some((uri, mut offer)) = offer(&ird)? else {
            return Ok(None);
        };
        offer.url = self.resource_url(&uri)?;
        // What the previous stream holds, if it streamed the same resources from here.
        let same = previous.as_ref().is_some_and(|p| {
            p.offer.url == offer.url
                && p.offer.network_map == offer.network_map
                && p.offer.cost_map == offer.cost_map
                && p.offer.properties == offer.properties
        });
        if !same {
            *previous = None;
        }
        let mut add = std::collections::BTreeMap::new();
        let req = |sub: &str, id: &str| AddUpdateReq {
            resource_id: id.to_string(),
            tag: previous.as_ref().and_then(|p| p.tags.get(sub).cloned()),
            incremental_changes: true,
            input: None,
        };
        add.insert(NM.to_string(), req(NM, &offer.network_map));
        add.insert(CM.to_string(), req(CM, &offer.cost_map));
        if let Some(pm) = &offer.properties {
            add.insert(PM.to_string(), req(PM, pm));
        }
        let body = serde_json::to_vec(&UpdateStreamParams {
            add,
            remove: Vec::new(),
        })
        .map_err(|source| ClientError::Json {
            url: offer.url.clone(),
            source,
        })?;
        let reader = self.post_stream(&offer.url, &body, options.idle_timeout)?;
        let limit = self
            .limits
            .cost_map_bytes()
            .max(self.limits.max_network_map_bytes)
            .max(self.limits.max_property_map_bytes);
        let mut stream = UpdateStream {
            reader,
            limit,
            max_pids: self.limits.max_pids,
            fallback_isp: host_of(&self.ird_url),
            offer,
            options,
            network_map: None,
            cost_map: None,
            properties: None,
            tags: std::collections::BTreeMap::new(),
            dirty: false,
            broken: false,
            delivered: 0,
            control_uri: None,
        };
        if let Some(p) = previous.take() {
            // Its maps as last delivered (or being completed): the server sends what differs.
            stream.network_map = p.network_map;
            stream.cost_map = p.cost_map;
            stream.properties = p.properties;
            stream.tags = p.tags;
            stream.dirty = p.dirty;
            stream.delivered = p.delivered;
        }
        Ok(Some(stream))
    }

    /// POSTs the stream request; the response's body is read as it comes, without the
    /// agent's whole-request timeout (a stream lasts).
    /// `idle`: the socket read timeout (see [`StreamOptions::idle_timeout`]).
    fn post_stream(
        &self,
        url: &str,
        body: &[u8],
        idle: Duration,
    ) -> Result<Box<dyn BufRead + Send>, StreamError> {
        let mut req = self
            .agent
            .post(url)
            .config()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(None)
            .timeout_per_call(None)
            .timeout_recv_body(None)
            .timeout_per_read(Some(idle))
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(10)))
            .build()
            .header("Content-Type", media::UPDATE_STREAM_PARAMS)
            .header(
                "Accept",
                &format!("{},{}", media::EVENT_STREAM, media::ERROR),
            );
        if let Some(token) = &self.token {
            if self.same_origin_as_ird(url) {
                req = req.header("Authorization", &format!("Bearer {token}"));
            }
        }
        let res = req.send(body).map_err(|source| StreamError::Http {
            url: url.to_string(),
            source,
        })?;
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if status != 200 || !essence.eq_ignore_ascii_case(media::EVENT_STREAM) {
            return Err(StreamError::Refused {
                url: url.to_string(),
                status,
                content_type,
            });
        }
        Ok(Box::new(std::io::BufReader::with_capacity(
            64 * 1024,
            res.into_body().into_reader(),
        )))
    }
}

/// An open update stream and the last message of each substream.
pub struct UpdateStream {
    reader: Box<dyn BufRead + Send>,
    limit: u64,
    max_pids: usize,
    fallback_isp: String,
    offer: Offer,
    options: StreamOptions,
    network_map: Option<Value>,
    cost_map: Option<Value>,
    properties: Option<Value>,
    /// Substream id -> the tag of the version held (the SSE `id` of the last event applied).
    tags: std::collections::BTreeMap<&'static str, String>,
    /// Something changed since the last map delivered.
    dirty: bool,
    /// An event or the map it made was refused: what is held may be wrong, never resumed.
    broken: bool,
    delivered: u64,
    control_uri: Option<String>,
}

impl std::fmt::Debug for UpdateStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateStream")
            .field("url", &self.offer.url)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

impl UpdateStream {
    /// The stream control URI the server announced (once its first event came).
    pub fn control_uri(&self) -> Option<&str> {
        self.control_uri.as_deref()
    }

    /// The stream's URL.
    pub fn url(&self) -> &str {
        &self.offer.url
    }

    /// Blocks until the maps are consistent with a change applied, and returns the new map.
    /// Any error ends the stream (reconnect to resynchronise, or resume with
    /// [`AltoClient::reopen_stream`]).
    pub fn next_map(&mut self) -> Result<IspMap, StreamError> {
        loop {
            let event = match sse::read_event(&mut self.reader, self.limit) {
                Ok(Some(event)) => event,
                Ok(None) => return Err(StreamError::Ended),
                Err(EventError::Io(e)) if is_read_timeout(&e) => {
                    return Err(StreamError::Idle(self.options.idle_timeout))
                }
                Err(e) => return Err(e.into()),
            };
            let built = self.apply(&event).and_then(|()| {
                if self.dirty && self.consistent() {
                    self.build().map(Some)
                } else {
                    Ok(None)
                }
            });
            match built {
                Ok(Some(map)) => {
                    self.dirty = false;
                    self.delivered += 1;
                    return Ok(map);
                }
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            }
        }
    }

    /// Whether a new stream may start from what this one holds: every event it received
    /// applied and made a valid map (it ended by a transport failure, silence, or the server
    /// closing it), so its tags name versions it really holds.
    pub fn resumable(&self) -> bool {
        !self.broken
    }

    fn apply(&mut self, event: &sse::Event) -> Result<(), StreamError> {
        let name = event.name.as_str();
        let (kind, sub) = event.kind();
        let Some(sub) = sub else {
            if kind != media::UPDATE_STREAM_CONTROL {
                return Err(StreamError::garbage(name, "not a control event"));
            }
            let msg: ControlMessage = serde_json::from_str(&event.data)
                .map_err(|e| StreamError::garbage(name, e.to_string()))?;
            if let Some(id) = msg.stopped.first() {
                return Err(StreamError::garbage(
                    name,
                    format!("the server stopped substream {id}"),
                ));
            }
            if msg.control_uri.is_some() {
                self.control_uri = msg.control_uri;
            }
            return Ok(());
        };
        let (slot, full_type) = match sub {
            NM => (&mut self.network_map, media::NETWORK_MAP),
            CM => (&mut self.cost_map, media::COST_MAP),
            PM if self.offer.properties.is_some() => (&mut self.properties, media::PROPMAP),
            _ => return Err(StreamError::garbage(name, "unknown substream")),
        };
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| StreamError::garbage(name, e.to_string()))?;
        if kind == media::MERGE_PATCH {
            let Some(target) = slot else {
                return Err(StreamError::garbage(
                    name,
                    "a patch before any full message",
                ));
            };
            if !data.is_object() {
                return Err(StreamError::garbage(name, "a patch that is not an object"));
            }
            json_patch::merge(target, &data);
            if !target.is_object() {
                return Err(StreamError::garbage(name, "the patch left no object"));
            }
        } else if kind == full_type {
            if !data.is_object() {
                return Err(StreamError::garbage(name, "not a JSON object"));
            }
            *slot = Some(data);
        } else {
            return Err(StreamError::garbage(name, "unexpected media type"));
        }
        let sub: &'static str = match sub {
            NM => NM,
            CM => CM,
            _ => PM,
        };
        match &event.id {
            Some(tag) => self.tags.insert(sub, tag.clone()),
            None => self.tags.remove(sub),
        };
        self.dirty = true;
        Ok(())
    }

    /// The network map's vtag, and whether the cost map (and the property map, if streamed)
    /// depend on it.
    fn consistent(&self) -> bool {
        let Some(tag) = self
            .network_map
            .as_ref()
            .and_then(|m| m.pointer("/meta/vtag/tag"))
            .and_then(Value::as_str)
        else {
            return false;
        };
        let depends = |m: &Option<Value>| {
            m.as_ref()
                .and_then(|m| m.pointer("/meta/dependent-vtags"))
                .and_then(Value::as_array)
                .is_some_and(|vs| {
                    vs.iter().any(|v| {
                        v.get("resource-id").and_then(Value::as_str)
                            == Some(self.offer.network_map.as_str())
                            && v.get("tag").and_then(Value::as_str) == Some(tag)
                    })
                })
        };
        depends(&self.cost_map) && (self.offer.properties.is_none() || depends(&self.properties))
    }

    fn build(&self) -> Result<IspMap, StreamError> {
        let (Some(nm), Some(cm)) = (&self.network_map, &self.cost_map) else {
            return Err(StreamError::Map(ClientError::InvalidMap(
                "maps missing".into(),
            )));
        };
        let invalid = |m: String| StreamError::Map(ClientError::InvalidMap(m));
        let too_big = |n: usize| n > self.max_pids;
        if nm
            .get("network-map")
            .and_then(Value::as_object)
            .map(|m| m.len())
            .is_some_and(too_big)
            || cm
                .get("cost-map")
                .and_then(Value::as_object)
                .is_some_and(|rows| {
                    too_big(rows.len())
                        || rows
                            .values()
                            .any(|r| r.as_object().is_some_and(|r| too_big(r.len())))
                })
        {
            return Err(invalid(format!("more than {} PIDs", self.max_pids)));
        }
        let json = |e: serde_json::Error| invalid(e.to_string());
        let network_map = NetworkMapMessage::deserialize(nm).map_err(json)?;
        let cost_map = CostMapMessage::deserialize(cm).map_err(json)?;
        let properties = self
            .properties
            .as_ref()
            .map(PropMapMessage::deserialize)
            .transpose()
            .map_err(json)?;
        IspMap::from_messages(
            &network_map,
            &cost_map,
            format!("stream-{}", self.delivered + 1),
            properties.as_ref(),
            &self.fallback_isp,
        )
        .map_err(StreamError::Map)
    }
}
