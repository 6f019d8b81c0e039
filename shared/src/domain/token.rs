//! One-time approval tokens: 256 bits from the operating system's CSPRNG, URL-safe. Only the
//! SHA-256 of a token is ever stored, so a leaked table does not leak working links.

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

const TOKEN_BYTES: usize = 32;
/// Length of the base64url (no padding) encoding of 32 bytes.
const TOKEN_CHARS: usize = 43;

/// A token as it appears in a link. Deliberately not `Debug`-printable: it is a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApprovalToken(String);

/// The stored form of a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl ApprovalToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts exactly the shape `generate` produces; anything else is an unknown token.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == TOKEN_CHARS && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        (ok && base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).is_ok_and(|b| b.len() == TOKEN_BYTES))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(hex(&Sha256::digest(self.0.as_bytes())))
    }
}

impl fmt::Debug for ApprovalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApprovalToken(<redacted>)")
    }
}

impl TokenHash {
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_256_bit_url_safe_and_distinct() {
        let a = ApprovalToken::generate();
        let b = ApprovalToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 43);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(ApprovalToken::parse(a.as_str()), Some(a.clone()));
        assert_eq!(a.hash().as_str().len(), 64);
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = ApprovalToken::generate();
        let mut tampered = good.as_str().to_owned();
        tampered.pop();
        for bad in ["", "short", tampered.as_str(), &format!("{}x", good.as_str()), &"!".repeat(43)] {
            assert!(ApprovalToken::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let t = ApprovalToken::generate();
        assert!(!format!("{t:?}").contains(t.as_str()));
    }
}
