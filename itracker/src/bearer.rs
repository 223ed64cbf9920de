//! Bearer tokens for admin APIs (the iTracker's and the tracker's ops listener): kept only as
//! their SHA-256, so comparing is constant-time whatever the presented token's length.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// An expected bearer token.
#[derive(Clone)]
pub struct BearerToken([u8; 32]);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl BearerToken {
    /// Wraps a secret (surrounding whitespace, e.g. a file's final newline, is ignored);
    /// `None` when nothing is left, so an empty token file can never open an API.
    pub fn new(secret: &str) -> Option<BearerToken> {
        let secret = secret.trim();
        (!secret.is_empty()).then(|| BearerToken(Sha256::digest(secret.as_bytes()).into()))
    }

    /// Whether an `Authorization` header value carries this token. Authentication schemes are
    /// case-insensitive (RFC 9110 section 11.1): `bearer x` is accepted too.
    pub fn authorizes(&self, authorization: Option<&str>) -> bool {
        let presented = authorization
            .and_then(|v| v.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        presented.is_some_and(|p| {
            let digest: [u8; 32] = Sha256::digest(p.as_bytes()).into();
            bool::from(self.0.ct_eq(&digest))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_under_a_bearer_scheme_authorizes() {
        let t = BearerToken::new(" secret\n").expect("token");
        assert!(t.authorizes(Some("Bearer secret")));
        assert!(t.authorizes(Some("bearer secret")));
        assert!(!t.authorizes(Some("Bearer secret2")));
        assert!(!t.authorizes(Some("Basic secret")));
        assert!(!t.authorizes(Some("secret")));
        assert!(!t.authorizes(None));
        assert!(BearerToken::new(" \n\t").is_none());
    }
}
