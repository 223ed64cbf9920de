//! The client's HTTP: one conditional GET with redirects followed by hand (only within the
//! allowed origins), the media type checked, and every body read through a size limit.
//!
//! Every GET asks for gzip (`Accept-Encoding: gzip`, unless
//! [`AltoClient::accept_gzip`] says not to): a 2,000-PID cost map is 93 MB of JSON
//! but 23 MB gzipped. A gzip body is inflated here (flate2), not by the agent, so both its
//! compressed and its inflated bytes are bounded by the body's limit: a gzip bomb stops at the
//! limit ([`ClientError::Inflated`]), and so does an endless stream of empty deflate blocks
//! (the compressed side's limit). Should the agent inflate after all (ureq's own `gzip`
//! feature enabled elsewhere in a build), it drops `Content-Encoding` and the body is read as
//! it comes, still through the limit.

use std::io::Read;

use ureq::http::Response;
use ureq::Body;

use super::{AltoClient, ClientError};
use crate::alto::media;

/// What a GET found.
pub(super) enum Got {
    /// A 200: the response (body unread) and the URL it finally came from.
    Fresh(Response<Body>, String),
    /// A 304 to our `If-None-Match` (never returned for a request without one).
    NotModified,
}

impl AltoClient {
    /// GETs `url` asking for `accept` (and ALTO errors). Redirects are followed by hand, at
    /// most [`super::ClientLimits::max_redirects`] times and only to an allowed origin; the
    /// agent never follows one itself (per-request `max_redirects(0)`, whatever agent was
    /// given). A 406 is turned into an error naming what the URL serves.
    pub(super) fn get(
        &self,
        url: &str,
        accept: &str,
        etag: Option<&str>,
    ) -> Result<Got, ClientError> {
        let mut current = url.to_string();
        for _ in 0..=self.limits.max_redirects {
            let res = self.send(&current, &format!("{accept},{}", media::ERROR), etag)?;
            let status = res.status().as_u16();
            match status {
                200 => {
                    check_media_type(&current, &res, accept)?;
                    return Ok(Got::Fresh(res, current));
                }
                // Only an answer to our If-None-Match; an unasked 304 is an error below.
                304 if etag.is_some() => return Ok(Got::NotModified),
                301 | 302 | 303 | 307 | 308 => {
                    let location = header(&res, "location").ok_or(ClientError::Status {
                        url: current.clone(),
                        status,
                    })?;
                    let next = super::resolve(&current, &location)?;
                    if !self.origin_allowed(&next) {
                        return Err(ClientError::Redirect {
                            from: current,
                            to: next,
                        });
                    }
                    current = next;
                }
                406 => return Err(self.not_acceptable(&current, accept)),
                status => {
                    return Err(ClientError::Status {
                        url: current,
                        status,
                    })
                }
            }
        }
        Err(ClientError::TooManyRedirects {
            url: url.to_string(),
            max: self.limits.max_redirects,
        })
    }

    fn send(
        &self,
        url: &str,
        accept: &str,
        etag: Option<&str>,
    ) -> Result<Response<Body>, ClientError> {
        let mut req = self
            .agent
            .get(url)
            .config()
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .header("Accept", accept)
            .header(
                "Accept-Encoding",
                if self.gzip { "gzip" } else { "identity" },
            );
        if let Some(tag) = etag {
            req = req.header("If-None-Match", tag);
        }
        // The token goes to the IRD's origin only, never to another (even an allowed) one.
        if let Some(token) = &self.token {
            if self.same_origin_as_ird(url) {
                req = req.header("Authorization", &format!("Bearer {token}"));
            }
        }
        req.call().map_err(|source| ClientError::Http {
            url: url.to_string(),
            source,
        })
    }

    /// After a 406: asks again for anything, to name what the URL serves.
    fn not_acceptable(&self, url: &str, expected: &str) -> ClientError {
        let status = ClientError::Status {
            url: url.to_string(),
            status: 406,
        };
        match self.send(url, "*/*", None) {
            Ok(res) if res.status().as_u16() == 200 => match header(&res, "content-type") {
                Some(found) if essence(&found) != expected => ClientError::WrongMediaType {
                    url: url.to_string(),
                    found: essence(&found).to_string(),
                    expected: expected.to_string(),
                },
                _ => status,
            },
            _ => status,
        }
    }
}

fn header(res: &Response<Body>, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The ETag of a response, if any.
pub(super) fn etag(res: &Response<Body>) -> Option<String> {
    header(res, "etag")
}

/// `type/subtype` of a Content-Type, lowercased parameters dropped.
fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// A 200 must carry the media type asked for (RFC 7285 section 8.3.4); no Content-Type at all
/// is tolerated.
fn check_media_type(url: &str, res: &Response<Body>, expected: &str) -> Result<(), ClientError> {
    match header(res, "content-type") {
        Some(found) if !essence(&found).eq_ignore_ascii_case(expected) => {
            Err(ClientError::WrongMediaType {
                url: url.to_string(),
                found: essence(&found).to_string(),
                expected: expected.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// How a body is encoded (`Content-Encoding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

/// The body's encoding: identity or gzip (asked for); anything else is refused, since a
/// server must not send a coding the request did not accept (RFC 9110 section 12.5.3).
fn encoding(url: &str, res: &Response<Body>) -> Result<Encoding, ClientError> {
    let Some(value) = header(res, "content-encoding") else {
        return Ok(Encoding::Identity);
    };
    let mut codings = value
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
    match (codings.next(), codings.next()) {
        (None, _) => Ok(Encoding::Identity),
        (Some(c), None) if c.eq_ignore_ascii_case("gzip") || c.eq_ignore_ascii_case("x-gzip") => {
            Ok(Encoding::Gzip)
        }
        _ => Err(ClientError::UnsupportedEncoding {
            url: url.to_string(),
            encoding: value,
        }),
    }
}

/// Reads a JSON body through `limit` bytes at most: `parse` gets the (buffered) stream. A gzip
/// body is inflated on the way, `limit` bounding its compressed and its inflated bytes alike.
pub(super) fn read_json<T>(
    url: &str,
    res: &mut Response<Body>,
    limit: u64,
    parse: impl FnOnce(&mut dyn Read) -> Result<T, serde_json::Error>,
) -> Result<T, ClientError> {
    let encoding = encoding(url, res)?;
    let body = std::io::BufReader::with_capacity(64 * 1024, res.body_mut().as_reader());
    let mut raw = Limited::new(body, limit);
    let (result, inflated_over, gzip_failed) = match encoding {
        Encoding::Identity => (parse(&mut raw), false, false),
        Encoding::Gzip => {
            let mut inflated = Limited::new(flate2::read::MultiGzDecoder::new(&mut raw), limit);
            let result = parse(&mut std::io::BufReader::with_capacity(
                64 * 1024,
                &mut inflated,
            ));
            (result, inflated.exceeded, inflated.inner_failed)
        }
    };
    result.map_err(|source| {
        if raw.exceeded {
            ClientError::TooLarge {
                url: url.to_string(),
                limit,
            }
        } else if inflated_over {
            ClientError::Inflated {
                url: url.to_string(),
                limit,
            }
        } else if gzip_failed && !raw.inner_failed {
            // The inflater failed on bytes that arrived well: the gzip data is corrupt.
            ClientError::BadGzip {
                url: url.to_string(),
                source: source.into(),
            }
        } else {
            ClientError::Json {
                url: url.to_string(),
                source,
            }
        }
    })
}

/// A reader that fails once more than `remaining` bytes come, and remembers it; it also
/// remembers whether its inner reader failed (to tell where an error came from).
struct Limited<R> {
    inner: R,
    remaining: u64,
    exceeded: bool,
    inner_failed: bool,
}

impl<R: Read> Limited<R> {
    fn new(inner: R, limit: u64) -> Limited<R> {
        Limited {
            inner,
            remaining: limit,
            exceeded: false,
            inner_failed: false,
        }
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner
            .read(buf)
            .inspect_err(|_| self.inner_failed = true)
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.read_inner(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded = true;
                    Err(std::io::Error::other("response body over the size limit"))
                }
            };
        }
        let max = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.read_inner(&mut buf[..max])?;
        self.remaining = self.remaining.saturating_sub(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::{essence, Limited};
    use std::io::Read;

    #[test]
    fn the_limit_allows_exactly_its_bytes() {
        let mut ok = Limited::new(&b"12345"[..], 5);
        let mut s = String::new();
        ok.read_to_string(&mut s).expect("fits");
        assert_eq!(s, "12345");
        let mut over = Limited::new(&b"123456"[..], 5);
        assert!(over.read_to_string(&mut String::new()).is_err());
        assert!(over.exceeded);
    }

    #[test]
    fn media_type_essence_drops_parameters() {
        assert_eq!(
            essence("application/alto-directory+json; charset=utf-8"),
            "application/alto-directory+json"
        );
    }
}
