//! The client's HTTP: one conditional GET with redirects followed by hand (only within the
//! allowed origins), the media type checked, and every body read through a size limit.

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
            .header("Accept", accept);
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

/// Reads a JSON body through `limit` bytes at most: `parse` gets the (buffered) stream.
pub(super) fn read_json<T>(
    url: &str,
    res: &mut Response<Body>,
    limit: u64,
    parse: impl FnOnce(&mut dyn Read) -> Result<T, serde_json::Error>,
) -> Result<T, ClientError> {
    let body = std::io::BufReader::with_capacity(64 * 1024, res.body_mut().as_reader());
    let mut reader = Limited {
        inner: body,
        remaining: limit,
        exceeded: false,
    };
    parse(&mut reader).map_err(|source| {
        if reader.exceeded {
            ClientError::TooLarge {
                url: url.to_string(),
                limit,
            }
        } else {
            ClientError::Json {
                url: url.to_string(),
                source,
            }
        }
    })
}

/// A reader that fails once more than `remaining` bytes come, and remembers it.
struct Limited<R> {
    inner: R,
    remaining: u64,
    exceeded: bool,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
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
        let n = self.inner.read(&mut buf[..max])?;
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
        let mut ok = Limited {
            inner: &b"12345"[..],
            remaining: 5,
            exceeded: false,
        };
        let mut s = String::new();
        ok.read_to_string(&mut s).expect("fits");
        assert_eq!(s, "12345");
        let mut over = Limited {
            inner: &b"123456"[..],
            remaining: 5,
            exceeded: false,
        };
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
