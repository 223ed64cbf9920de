//! HTTP plumbing shared by the routes: errors, bearer tokens, content negotiation, ETags.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::error::BlockingError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use super::state::Rendered;
use crate::alto::{media, ErrorCode, ErrorMessage, ErrorMeta, FieldError};
use crate::model::pricing::LinkLoadError;
use crate::model::TopologyError;
use crate::snapshot::SnapshotError;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An RFC 7285 error (always HTTP 400, `application/alto-error+json`).
    #[error("{0}")]
    Alto(#[from] FieldError),
    /// The request body's media type is not the one the resource accepts.
    #[error("expected Content-Type {0}")]
    UnsupportedMediaType(&'static str),
    /// The client's Accept header excludes what the resource produces.
    #[error("this resource produces {0}")]
    NotAcceptable(&'static str),
    /// Missing or wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// An admin update's topology is invalid (the old map keeps serving).
    #[error("{0}")]
    Topology(#[from] TopologyError),
    /// An admin update's link loads are invalid (the old map keeps serving).
    #[error("{0}")]
    LinkLoad(#[from] LinkLoadError),
    /// An admin update's topology does not build a lookup snapshot (the old map keeps serving).
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    /// An admin update's topology body is not UTF-8.
    #[error("topology is not UTF-8: {0}")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// An admin update's link-load body is not the expected JSON.
    #[error("invalid link-load body: {0}")]
    LinkLoadBody(#[source] serde_json::Error),
    /// The accepted topology could not be written to the topology file (nothing changed).
    #[error("internal error: cannot write {}: {source}", path.display())]
    WriteTopology {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The blocking task running an update failed.
    #[error("internal error: {0}")]
    Blocking(#[from] BlockingError),
    /// A response message could not be serialized.
    #[error("internal error: {0}")]
    Render(#[source] serde_json::Error),
    /// A request body is larger than the resource accepts (the limit, in bytes).
    #[error("request body too large: at most {0} bytes")]
    TooLarge(usize),
    /// The request body could not be read.
    #[error("cannot read the request body: {0}")]
    Payload(String),
    /// The resource exists but does not answer this method (the one it answers).
    #[error("method not allowed: this resource answers {0}")]
    MethodNotAllowed(&'static str),
    /// A handler panicked (a bug); the request got this answer, the worker lives on.
    #[error("internal error: the request handler failed")]
    Panic,
    /// The connection has no peer address (needed for an empty `srcs` list).
    #[error("internal error: no peer address for an empty srcs list")]
    NoPeerAddress,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Alto(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Payload(_) => StatusCode::BAD_REQUEST,
            ApiError::Topology(_)
            | ApiError::LinkLoad(_)
            | ApiError::Snapshot(_)
            | ApiError::NotUtf8(_)
            | ApiError::LinkLoadBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::WriteTopology { .. }
            | ApiError::Blocking(_)
            | ApiError::Render(_)
            | ApiError::Panic
            | ApiError::NoPeerAddress => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Every error answers `application/alto-error+json`: RFC 7285 errors with their code,
    /// field and value; the others (401, 405, 406, 413, 415, 422, 500) with code `E_OTHER`, the
    /// HTTP status saying what happened and `message` why.
    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::MethodNotAllowed(allow) => {
                res.insert_header((header::ALLOW, *allow));
            }
            _ => {}
        }
        let meta = match self {
            ApiError::Alto(e) => e.to_meta(),
            other => ErrorMeta {
                code: ErrorCode::Other,
                field: None,
                value: None,
                message: Some(other.to_string()),
            },
        };
        error_body(&mut res, meta)
    }
}

/// An `application/alto-error+json` answer.
pub fn error_body(res: &mut actix_web::HttpResponseBuilder, meta: ErrorMeta) -> HttpResponse {
    let body = serde_json::to_vec(&ErrorMessage { meta }).unwrap_or_default();
    res.content_type(media::ERROR).body(body)
}

/// The admin and read APIs' bearer token (see [`crate::bearer`]).
pub type Token = crate::bearer::BearerToken;

/// Checks `Authorization: Bearer <token>`. `None` as expected token means "never authorised"
/// when `required`, and "open" otherwise.
pub fn authorize(req: &HttpRequest, token: Option<&Token>, required: bool) -> Result<(), ApiError> {
    let Some(token) = token else {
        return if required {
            Err(ApiError::Unauthorized)
        } else {
            Ok(())
        };
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if token.authorizes(authorization) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Checks the Accept header (absent = anything; ALTO errors are always acceptable per RFC 7285
/// section 8.3.5, so a client asking for them alone is fine too).
pub fn check_accept(req: &HttpRequest, produces: &'static str) -> Result<(), ApiError> {
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let ok = accept.split(',').any(|item| {
        let essence = item.split(';').next().unwrap_or("").trim();
        essence == produces || essence == "*/*" || essence == "application/*"
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::NotAcceptable(produces))
    }
}

/// Checks that a POST body is of the media type the resource accepts.
pub fn check_content_type(req: &HttpRequest, accepts: &'static str) -> Result<(), ApiError> {
    let essence = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence {
        Some(e) if e == accepts => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType(accepts)),
    }
}

fn none_match(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// A GET response for a rendered message: 304 when `If-None-Match` names its ETag, the gzip
/// body when the client accepts gzip and it is ready (see [`respond_encoded`]), else the body.
pub fn respond(req: &HttpRequest, media_type: &'static str, r: &Rendered) -> HttpResponse {
    let gzip = accepts_gzip(req) && r.gzip_ready();
    respond_encoded(req, media_type, r, gzip)
}

/// Like [`respond`], with the encoding decided by the caller (`gzip`: the compressed body,
/// which the caller made ready in a blocking section). Both encodings carry the same strong
/// ETag (the content's; a cache keys the encodings apart by `Vary: Accept-Encoding`), so a
/// client's `If-None-Match` works whichever it last received.
pub fn respond_encoded(
    req: &HttpRequest,
    media_type: &'static str,
    r: &Rendered,
    gzip: bool,
) -> HttpResponse {
    let etag = HeaderValue::from_str(&r.etag).unwrap_or(HeaderValue::from_static("\"\""));
    if none_match(req, &r.etag) {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header((header::VARY, "Accept-Encoding"))
            .finish();
    }
    let mut res = HttpResponse::Ok();
    res.content_type(media_type)
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::VARY, "Accept-Encoding"));
    match r.gzip().filter(|_| gzip) {
        Some(body) => res
            .insert_header((header::CONTENT_ENCODING, "gzip"))
            .body(Slices::new(body.clone())),
        None => res.body(Slices::new(r.body.clone())),
    }
}

/// A rendered body handed to the connection in slices of [`SLICE`] bytes (zero-copy views of
/// the shared bytes). Handed whole, a 90 MB cost map would be copied into the connection's
/// write buffer before its first byte left: a copy per request, and a first byte after
/// 100+ ms. The length is known, so the answer keeps its `Content-Length`.
pub struct Slices {
    bytes: web::Bytes,
}

/// Size of one slice of a [`Slices`] body.
pub const SLICE: usize = 256 * 1024;

impl Slices {
    /// The body `bytes`, to be sent slice by slice.
    pub fn new(bytes: web::Bytes) -> Slices {
        Slices { bytes }
    }
}

impl MessageBody for Slices {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.bytes.len() as u64)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        let this = self.get_mut();
        if this.bytes.is_empty() {
            return Poll::Ready(None);
        }
        let n = this.bytes.len().min(SLICE);
        Poll::Ready(Some(Ok(this.bytes.split_to(n))))
    }
}

/// Whether `Accept-Encoding` admits gzip (`gzip`, `x-gzip` or `*`, with a non-zero `q`).
pub fn accepts_gzip(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            q > 0.0
                && ["gzip", "x-gzip", "*"]
                    .iter()
                    .any(|c| coding.eq_ignore_ascii_case(c))
        })
}

/// A POST response body.
pub fn json(
    media_type: &'static str,
    msg: &impl serde::Serialize,
) -> Result<HttpResponse, ApiError> {
    let body = serde_json::to_vec(msg).map_err(ApiError::Render)?;
    Ok(HttpResponse::Ok()
        .content_type(media_type)
        .body(web::Bytes::from(body)))
}
