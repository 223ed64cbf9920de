//! ALTO incremental updates over server-sent events (RFC 8895): the update stream request,
//! the control event, SSE framing and parsing, and merge-patch (RFC 7396) diffs. No I/O
//! besides reading events from a caller's reader; the server (`server::stream`) and the
//! client (`client::stream`) share these.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::FieldError;

/// An update stream request (`application/alto-updatestreamparams+json`): substreams to
/// start (by the client's substream id) and to stop.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateStreamParams {
    /// Substreams to start: substream id -> what it carries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, AddUpdateReq>,
    /// Substream ids to stop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// One substream asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddUpdateReq {
    /// The resource (an IRD resource id the update stream `uses`).
    #[serde(rename = "resource-id")]
    pub resource_id: String,
    /// The version the client holds: when it is current, no full message is sent first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Whether increments are welcome (default); `false` asks for full messages only.
    #[serde(rename = "incremental-changes", default = "yes")]
    pub incremental_changes: bool,
    /// The input of a POST resource (not offered by this server; refused when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

fn yes() -> bool {
    true
}

/// A control event (`application/alto-updatestreamcontrol+json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlMessage {
    /// The stream control service of this stream (first event only).
    #[serde(
        rename = "control-uri",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub control_uri: Option<String>,
    /// Substreams started by a control request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub started: Vec<String>,
    /// Substreams the server stopped (asked, or it could not go on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped: Vec<String>,
    /// Why, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Longest substream id (the RFC 7285 resource id rule: 64 characters of `[A-Za-z0-9-:@_.]`).
pub const MAX_SUBSTREAM_ID: usize = 64;

/// Whether `id` is a valid substream id (RFC 7285 resource id characters, 1 to 64 of them).
pub fn valid_substream_id(id: &str) -> bool {
    (1..=MAX_SUBSTREAM_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-:@_.".contains(&b))
}

impl UpdateStreamParams {
    /// Parses a request body and checks its ids (not yet against the resources offered).
    pub fn parse(body: &[u8]) -> Result<UpdateStreamParams, FieldError> {
        let params: UpdateStreamParams =
            serde_json::from_slice(body).map_err(|e| FieldError::Syntax(e.to_string()))?;
        if let Some(bad) = params
            .add
            .keys()
            .chain(params.remove.iter())
            .find(|id| !valid_substream_id(id))
        {
            return Err(FieldError::value("add", bad.clone()));
        }
        if let Some((id, _)) = params.add.iter().find(|(_, r)| r.input.is_some()) {
            return Err(FieldError::value(
                &format!("add/{id}/input"),
                "not accepted",
            ));
        }
        Ok(params)
    }
}

/// The name of an event carrying `media_type` for `substream` (`<media-type>,<substream-id>`),
/// or the control media type alone.
pub fn event_name(media_type: &str, substream: Option<&str>) -> String {
    match substream {
        Some(id) => format!("{media_type},{id}"),
        None => media_type.to_string(),
    }
}

/// The prefix of an event frame; the data (one line: compact JSON never holds a newline)
/// follows, then [`FRAME_END`].
pub fn frame_start(name: &str) -> Vec<u8> {
    format!("event: {name}\ndata: ").into_bytes()
}

/// The prefix of a substream's data event that names, in the SSE `id` field, the tag of the
/// resource version the client holds once it applied the event (the ETag the server gives the
/// resource, without quotes). An extension: RFC 8895 leaves `id` unused and lets a client
/// name its version only for resources with a vtag; with the `id`, a reconnecting client can
/// name its version of any resource ([`AddUpdateReq::tag`]) and skip what it already holds.
/// Clients that ignore `id` lose nothing.
pub fn frame_start_tagged(name: &str, tag: &str) -> Vec<u8> {
    format!("event: {name}\nid: {tag}\ndata: ").into_bytes()
}

/// What ends an event frame.
pub const FRAME_END: &[u8] = b"\n\n";

/// A whole event frame.
pub fn frame(name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = frame_start(name);
    out.extend_from_slice(data);
    out.extend_from_slice(FRAME_END);
    out
}

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The `event` field (`message` when absent).
    pub name: String,
    /// The `data` lines, joined by `\n`.
    pub data: String,
    /// The `id` field of this event, if it has one (this server: the tag of the version the
    /// event leads to, see [`frame_start_tagged`]).
    pub id: Option<String>,
}

impl Event {
    /// Splits the name into media type and substream id (none for a control event).
    pub fn kind(&self) -> (&str, Option<&str>) {
        match self.name.split_once(',') {
            Some((media, id)) => (media, Some(id)),
            None => (self.name.as_str(), None),
        }
    }
}

/// Why an event could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Reading the stream failed.
    #[error("reading the event stream: {0}")]
    Io(#[from] std::io::Error),
    /// An event (or a line) is longer than allowed.
    #[error("an event is larger than {0} bytes")]
    TooLarge(u64),
    /// A line is not UTF-8.
    #[error("an event line is not UTF-8")]
    NotUtf8,
}

/// Reads the next event (comments and keep-alives skipped), or `None` at the end of the
/// stream. At most `limit` bytes per event, counted as read.
pub fn read_event(r: &mut impl BufRead, limit: u64) -> Result<Option<Event>, EventError> {
    let mut name: Option<String> = None;
    let mut data: Option<String> = None;
    let mut id: Option<String> = None;
    let mut used: u64 = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        let budget = limit.saturating_sub(used);
        let n = std::io::Read::take(&mut *r, budget + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        used += n as u64;
        if used > limit {
            return Err(EventError::TooLarge(limit));
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        if line.is_empty() {
            if let Some(data) = data.take() {
                let name = name.take().unwrap_or_else(|| "message".into());
                return Ok(Some(Event {
                    name,
                    data,
                    id: id.take(),
                }));
            }
            name = None;
            id = None;
            used = 0;
            continue;
        }
        let text = std::str::from_utf8(&line).map_err(|_| EventError::NotUtf8)?;
        if text.starts_with(':') {
            continue;
        }
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text, ""),
        };
        match field {
            "event" => name = Some(value.to_string()),
            // SSE ignores an id holding NUL; so do we.
            "id" if !value.contains('\0') => id = Some(value.to_string()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            _ => {}
        }
    }
}

/// The merge patch (RFC 7396) that turns `old` into `new`, or `None` when they are equal.
/// Objects are diffed member by member (a removed member becomes `null`); anything else is
/// replaced whole. `new` must hold no `null` (ALTO messages do not).
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for key in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            for (key, nv) in n {
                match o.get(key) {
                    Some(ov) => {
                        if let Some(sub) = merge_diff(ov, nv) {
                            patch.insert(key.clone(), sub);
                        }
                    }
                    None => {
                        patch.insert(key.clone(), nv.clone());
                    }
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ if old == new => None,
        _ => Some(new.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_diff_applied_gives_the_new_value() {
        let old = json!({"meta": {"v": "1"}, "map": {"a": {"x": 1, "y": 2}, "b": {"x": 3}}});
        let new = json!({"meta": {"v": "2"}, "map": {"a": {"x": 1, "y": 5}, "c": {"x": 4}}});
        let patch = merge_diff(&old, &new).expect("they differ");
        assert_eq!(
            patch,
            json!({"meta": {"v": "2"}, "map": {"a": {"y": 5}, "b": null, "c": {"x": 4}}})
        );
        let mut target = old.clone();
        json_patch::merge(&mut target, &patch);
        assert_eq!(target, new);
        assert_eq!(merge_diff(&new, &new), None);
    }

    #[test]
    fn events_are_read_back_as_framed_and_comments_skipped() {
        let mut wire = b": keep-alive\n\n".to_vec();
        wire.extend(frame(
            &event_name("application/merge-patch+json", Some("cm")),
            b"{\"a\":1}",
        ));
        wire.extend(b"event: x\r\ndata: one\r\ndata: two\r\n\r\n");
        wire.extend(sse_tagged("application/alto-costmap+json,cm", "abc", b"{}"));
        let mut r = &wire[..];
        let e = read_event(&mut r, 1024).expect("read").expect("an event");
        assert_eq!(e.kind(), ("application/merge-patch+json", Some("cm")));
        assert_eq!(e.data, "{\"a\":1}");
        assert_eq!(e.id, None);
        let e = read_event(&mut r, 1024).expect("read").expect("an event");
        assert_eq!((e.name.as_str(), e.data.as_str()), ("x", "one\ntwo"));
        let e = read_event(&mut r, 1024).expect("read").expect("an event");
        assert_eq!((e.id.as_deref(), e.data.as_str()), (Some("abc"), "{}"));
        assert!(read_event(&mut r, 1024).expect("read").is_none());
    }

    fn sse_tagged(name: &str, tag: &str, data: &[u8]) -> Vec<u8> {
        let mut out = frame_start_tagged(name, tag);
        out.extend_from_slice(data);
        out.extend_from_slice(FRAME_END);
        out
    }

    #[test]
    fn an_event_over_the_limit_is_refused() {
        let wire = frame("big", &[b'x'; 200]);
        assert!(matches!(
            read_event(&mut &wire[..], 100),
            Err(EventError::TooLarge(100))
        ));
    }

    #[test]
    fn params_check_their_ids_and_default_to_incremental() {
        let p =
            UpdateStreamParams::parse(br#"{"add": {"nm": {"resource-id": "m"}}}"#).expect("valid");
        assert!(p.add["nm"].incremental_changes);
        assert!(UpdateStreamParams::parse(br#"{"add": {"a b": {"resource-id": "m"}}}"#).is_err());
        assert!(UpdateStreamParams::parse(br#"{"add": {"x": {}}}"#).is_err());
        assert!(UpdateStreamParams::parse(b"[1]").is_err());
    }
}
