//! Secrets kept out of logs and answers: the one redaction every URL and every line a source's
//! program prints goes through.
//!
//! - [`text`] replaces the credentials of every URL in a text (`rtsp://admin:***@cam/x`). A
//!   URL's credentials run from `://` to the *last* `@` before the URL ends (whitespace or a
//!   quote), so a password written with an unescaped `/`, `@` or `:` is still covered whole.
//! - [`Secrets`] are the passwords a stream's configuration holds (in URLs, in `password`
//!   keys), replaced wherever they appear, percent-encoded or not: a program that echoes a
//!   password outside a URL, or mangles the URL around it, still does not show it.

use std::borrow::Cow;

use crate::config::{FfmpegConfig, StreamConfig};

/// What replaces a secret.
pub const MASK: &str = "***";

/// `text` with the credentials of every URL in it masked: `user:password@` becomes
/// `user:***@`, a lone `token@` becomes `***@`.
pub fn text(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>')).unwrap_or(tail.len());
        let (url, after) = tail.split_at(end);
        match url.rfind('@') {
            Some(at) if at > 0 => {
                let userinfo = &url[..at];
                if let Some((user, _)) = userinfo.split_once(':') {
                    out.push_str(user);
                    out.push(':');
                }
                out.push_str(MASK);
                out.push_str(&url[at..]);
            }
            _ => out.push_str(url),
        }
        rest = after;
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The passwords a stream's configuration holds.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} hidden)", self.0.len())
    }
}

impl Secrets {
    /// The passwords of `cfg`: an RTSP camera's `password` and its URL's, and those in URLs
    /// among ffmpeg's arguments; each also percent-decoded.
    pub fn of(cfg: &StreamConfig) -> Self {
        let mut found = Vec::new();
        if let Some(r) = &cfg.rtsp {
            found.extend(r.password.clone());
            found.extend(url_password(&r.url));
        }
        if let Some(ff) = &cfg.ffmpeg {
            found.extend(Self::in_args(ff));
        }
        Self::from_found(found)
    }

    /// The passwords in URLs among ffmpeg's arguments.
    pub fn of_ffmpeg(cfg: &FfmpegConfig) -> Self {
        Self::from_found(Self::in_args(cfg))
    }

    fn in_args(cfg: &FfmpegConfig) -> Vec<String> {
        let mut found = Vec::new();
        for arg in cfg.input.iter().chain(&cfg.encode) {
            let mut rest = arg.as_str();
            while let Some(i) = rest.find("://") {
                found.extend(url_password(&rest[i..]));
                rest = &rest[i + 3..];
            }
        }
        found
    }

    fn from_found(mut found: Vec<String>) -> Self {
        let decoded: Vec<String> = found.iter().map(|p| percent_decode(p)).collect();
        found.extend(decoded);
        // Too short to tell from ordinary text: masking it would mangle every line.
        found.retain(|p| p.len() >= 3);
        found.sort_by_key(|p| std::cmp::Reverse(p.len()));
        found.dedup();
        Self(found)
    }

    /// `line` with URL credentials ([`text`]) and every known password masked.
    pub fn scrub(&self, line: &str) -> String {
        let mut out = text(line).into_owned();
        for secret in &self.0 {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }
}

/// The password in a URL's credentials (`scheme://user:password@…`, to the last `@` before the
/// URL ends), as written.
fn url_password(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let end = rest.find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'')).unwrap_or(rest.len());
    let userinfo = &rest[..rest[..end].rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

/// `%XX` escapes decoded (invalid ones kept as written).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RtspConfig;

    #[test]
    fn every_url_in_a_text_loses_its_credentials() {
        assert_eq!(text("rtsp://admin:s3cr3t@cam.local:554/live"), "rtsp://admin:***@cam.local:554/live");
        assert_eq!(text("rtsp://cam.local/live"), "rtsp://cam.local/live");
        assert_eq!(text("no url here"), "no url here");
        assert_eq!(
            text("[rtsp @ 0x55] rtsp://u:p@a:1/x: Connection refused; also http://k@b/y."),
            "[rtsp @ 0x55] rtsp://u:***@a:1/x: Connection refused; also http://***@b/y."
        );
        // Passwords with the characters that end a URL's parts.
        for pw in ["pa/ss", "p@ss", "p:ss", "a/b@c:d"] {
            let line = format!("open 'rtsp://admin:{pw}@10.0.0.1:554/stream1' failed");
            let shown = text(&line);
            assert_eq!(shown, "open 'rtsp://admin:***@10.0.0.1:554/stream1' failed", "{pw}");
        }
    }

    #[test]
    fn known_passwords_are_masked_anywhere() {
        let ffmpeg = FfmpegConfig {
            input: vec!["-i".into(), "rtsp://admin:p%40ss/w:rd@cam:554/x".into()],
            encode: vec![],
            binary: "ffmpeg".into(),
            codec: Default::default(),
        };
        let cfg = StreamConfig {
            description: None,
            test_pattern: None,
            ffmpeg: Some(ffmpeg),
            rtsp: Some(RtspConfig { password: Some("hunter2!".into()), ..RtspConfig::new("rtsp://cam/x") }),
            file: None,
        };
        let s = Secrets::of(&cfg);
        assert_eq!(s.scrub("auth failed for password p@ss/w:rd"), "auth failed for password ***");
        assert_eq!(s.scrub("sent hunter2! to cam"), "sent *** to cam");
        assert_eq!(s.scrub("rtsp://admin:p%40ss/w:rd@cam:554/x"), "rtsp://admin:***@cam:554/x");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
