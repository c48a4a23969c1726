//! RTSP Digest authentication (RFC 2617, as RTSP clients use it): the challenge, nonces the hub
//! can check without keeping them, and the response check.
//!
//! A Digest response proves knowledge of `HA1 = MD5(user:realm:password)`, so the hub needs
//! that value, not an argon2id hash: an internal user who should be able to use Digest has a
//! `digest` entry (printed by `mediamesh auth hash-password`), which is as sensitive as a
//! password for this realm. The challenge offers no `qop`, as MediaMTX and most cameras do;
//! responses with `qop=auth` are accepted too.

use std::fmt::Write as _;

use md5::{Digest as _, Md5};

use crate::credentials::DigestResponse;

/// The realm in challenges and in HA1.
pub const REALM: &str = "mediamesh";

/// How long a nonce is accepted. Long enough for a session's keep-alives; the nonce only binds
/// the response to this hub process.
pub const NONCE_LIFETIME_SECS: u64 = 3600;

/// The hex MD5 of `text`.
fn md5_hex(text: &str) -> String {
    let digest = Md5::digest(text.as_bytes());
    let mut out = String::with_capacity(32);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `HA1 = MD5(user:realm:password)`, what a user's `digest` entry holds.
pub fn ha1(user: &str, password: &str) -> String {
    md5_hex(&format!("{user}:{REALM}:{password}"))
}

/// Issues and checks nonces: a time and a MAC of it with a key made at start.
pub struct Nonces {
    key: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonces")
    }
}

/// What a nonce turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by this process and still fresh.
    Valid,
    /// Issued by this process, but too old: challenge again with `stale=true`.
    Stale,
    /// Not one of ours.
    Invalid,
}

impl Nonces {
    /// With a random key (`None` if the system has no random bytes).
    pub fn new() -> Option<Self> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let key = aws_lc_rs::hmac::Key::generate(aws_lc_rs::hmac::HMAC_SHA256, &rng).ok()?;
        Some(Self { key })
    }

    fn mac(&self, stamp: &str) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.key, stamp.as_bytes());
        let mut out = String::with_capacity(32);
        for b in &tag.as_ref()[..16] {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// A nonce for `now` (seconds since the Unix epoch).
    pub fn issue(&self, now: u64) -> String {
        let stamp = format!("{now:x}");
        let mac = self.mac(&stamp);
        format!("{stamp}{mac}")
    }

    /// Checks a nonce the client returned.
    pub fn check(&self, nonce: &str, now: u64) -> NonceCheck {
        if nonce.len() < 33 || nonce.len() > 48 || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let (stamp, mac) = nonce.split_at(nonce.len() - 32);
        let Ok(issued) = u64::from_str_radix(stamp, 16) else { return NonceCheck::Invalid };
        if !constant_time_eq(self.mac(stamp).as_bytes(), mac.as_bytes()) {
            return NonceCheck::Invalid;
        }
        if issued > now.saturating_add(60) || now.saturating_sub(issued) > NONCE_LIFETIME_SECS {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }
}

/// The `WWW-Authenticate` value of a Digest challenge.
pub fn challenge(nonce: &str, stale: bool) -> String {
    let stale = if stale { ", stale=true" } else { "" };
    format!("Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5{stale}")
}

/// Whether `r` proves the password behind `ha1` for a request with `method`.
pub fn verify(r: &DigestResponse, method: &str, ha1: &str) -> bool {
    if r.algorithm.as_deref().is_some_and(|a| !a.eq_ignore_ascii_case("md5")) || r.realm != REALM {
        return false;
    }
    let ha2 = md5_hex(&format!("{method}:{}", r.uri));
    let expected = match (&r.qop, &r.nc, &r.cnonce) {
        (Some(qop), Some(nc), Some(cnonce)) if qop == "auth" => {
            md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:{qop}:{ha2}", r.nonce))
        }
        (None, _, _) => md5_hex(&format!("{ha1}:{}:{ha2}", r.nonce)),
        _ => return false,
    };
    constant_time_eq(expected.as_bytes(), r.response.to_ascii_lowercase().as_bytes())
}

/// Compares without an early exit, so the time taken does not say how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_example_response_verifies() {
        // RFC 2617 §3.5, with this module's realm substituted by computing HA1 from it.
        let mut r = DigestResponse {
            username: "Mufasa".into(),
            realm: REALM.into(),
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
            uri: "/dir/index.html".into(),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some("0a4f113b".into()),
            ..Default::default()
        };
        let ha1 = ha1("Mufasa", "Circle Of Life");
        let ha2 = md5_hex("GET:/dir/index.html");
        r.response = md5_hex(&format!("{ha1}:{}:00000001:0a4f113b:auth:{ha2}", r.nonce));
        assert!(verify(&r, "GET", &ha1));
        assert!(!verify(&r, "POST", &ha1), "the method is covered");
        assert!(!verify(&r, "GET", &super::ha1("Mufasa", "circle of life")));
        // Without qop (RFC 2069), as GStreamer and most cameras answer.
        r.qop = None;
        r.response = md5_hex(&format!("{ha1}:{}:{ha2}", r.nonce));
        assert!(verify(&r, "GET", &ha1));
    }

    #[test]
    fn nonces_are_checked_and_age() {
        let n = Nonces::new().unwrap();
        let nonce = n.issue(1_000_000);
        assert_eq!(n.check(&nonce, 1_000_010), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, 1_000_000 + NONCE_LIFETIME_SECS + 1), NonceCheck::Stale);
        let mut forged = nonce.clone().into_bytes();
        forged[0] = if forged[0] == b'f' { b'e' } else { b'f' };
        assert_eq!(n.check(std::str::from_utf8(&forged).unwrap(), 1_000_010), NonceCheck::Invalid);
        assert_eq!(Nonces::new().unwrap().check(&nonce, 1_000_010), NonceCheck::Invalid, "another process's");
        assert_eq!(n.check("short", 0), NonceCheck::Invalid);
    }
}
