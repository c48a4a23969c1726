//! Secrets kept out of logs and answers: the one redaction every URL and every line a source's
//! program prints goes through.
//!
//! - [`text`] (shared with the hub) replaces the credentials of every URL in a text (`rtsp://admin:***@cam/x`). A
//!   URL's credentials run from `://` to the *last* `@` before the URL ends (whitespace or a
//!   quote), so a password written with an unescaped `/`, `@` or `:` is still covered whole.
//! - [`Secrets`] are the passwords a stream's configuration holds (in URLs, in `password`
//!   keys), replaced wherever they appear, percent-encoded or not: a program that echoes a
//!   password outside a URL, or mangles the URL around it, still does not show it.

pub use mediamesh_tunnel::redact::{MASK, percent_decode, text};

use crate::config::{FfmpegConfig, SourceConfig, StreamConfig};

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
        match &cfg.source {
            SourceConfig::Rtsp(r) => {
                found.extend(r.password.clone());
                found.extend(url_password(&r.url));
            }
            SourceConfig::Ffmpeg(ff) => found.extend(Self::in_args(ff)),
            SourceConfig::TestPattern(_) | SourceConfig::File(_) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RtspConfig;

    #[test]
    fn known_passwords_are_masked_anywhere() {
        let ffmpeg = FfmpegConfig {
            input: vec!["-i".into(), "rtsp://admin:p%40ss/w:rd@cam:554/x".into()],
            encode: vec![],
            binary: "ffmpeg".into(),
            codec: Default::default(),
        };
        let s = Secrets::of(&StreamConfig::new(SourceConfig::Ffmpeg(ffmpeg)));
        assert_eq!(s.scrub("auth failed for password p@ss/w:rd"), "auth failed for password ***");
        assert_eq!(s.scrub("rtsp://admin:p%40ss/w:rd@cam:554/x"), "rtsp://admin:***@cam:554/x");
        let camera = RtspConfig { password: Some("hunter2!".into()), ..RtspConfig::new("rtsp://u:pw9@cam/x") };
        let s = Secrets::of(&StreamConfig::new(SourceConfig::Rtsp(camera)));
        assert_eq!(s.scrub("sent hunter2! to cam"), "sent *** to cam");
        assert_eq!(s.scrub("rtsp://u:pw9@cam/x"), "rtsp://u:***@cam/x");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
