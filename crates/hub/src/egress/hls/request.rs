//! What an HLS request names: the file (from the last path segment) and the query's LL-HLS
//! parameters, parsed with their limits before anything else looks at them.

use super::packager::Rendition;
use super::playlist::Block;

/// The longest query string read.
pub const MAX_QUERY: usize = 4096;

/// A file of a stream's HLS packaging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `index.m3u8`.
    Multivariant,
    /// `video.m3u8`, `audio.m3u8`.
    Media(Rendition),
    /// `video-init-{n}.mp4`.
    Init(Rendition, u32),
    /// `video-part-{msn}.{i}.mp4`.
    Part(Rendition, u64, u32),
    /// `video-seg-{msn}.mp4`.
    Segment(Rendition, u64),
}

/// A file name that names nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no such file: {0:?}")]
pub struct UnknownFile(pub String);

/// The LL-HLS query parameters (and the token to carry into the playlist's URIs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HlsQuery {
    /// `_HLS_msn` and `_HLS_part`.
    pub block: Option<Block>,
    /// `token` as it came (still percent-encoded), to append to the URIs a playlist names so a
    /// client that cannot set headers (Safari, a bare `<video>`) keeps sending it.
    pub token: Option<String>,
}

/// Why a query was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Over [`MAX_QUERY`] bytes.
    #[error("the query is over {MAX_QUERY} bytes")]
    TooLong,
    /// Not a non-negative integer in range.
    #[error("{name}={value:?} is not a whole number from 0 to {max}")]
    NotANumber {
        /// The parameter.
        name: &'static str,
        /// What it was (cut to 32 bytes).
        value: String,
        /// Its largest value.
        max: u64,
    },
    /// Given twice.
    #[error("{0} is given twice")]
    Repeated(&'static str),
    /// `_HLS_part` without `_HLS_msn`.
    #[error("_HLS_part needs _HLS_msn")]
    PartWithoutMsn,
    /// A token with characters that do not belong in a URL.
    #[error("the token has characters a URL cannot carry")]
    BadToken,
}

impl Resource {
    /// Parses the last segment of the path.
    pub fn parse(name: &str) -> Result<Resource, UnknownFile> {
        let unknown = || UnknownFile(name.chars().take(64).collect());
        if name == "index.m3u8" {
            return Ok(Resource::Multivariant);
        }
        let (rendition, rest) = if let Some(r) = name.strip_prefix("video") {
            (Rendition::Video, r)
        } else if let Some(r) = name.strip_prefix("audio") {
            (Rendition::Audio, r)
        } else {
            return Err(unknown());
        };
        if rest == ".m3u8" {
            return Ok(Resource::Media(rendition));
        }
        let body = rest.strip_prefix('-').and_then(|r| r.strip_suffix(".mp4")).ok_or_else(unknown)?;
        if let Some(n) = body.strip_prefix("init-") {
            return number(n, u64::from(u32::MAX)).map(|n| Resource::Init(rendition, n as u32)).ok_or_else(unknown);
        }
        if let Some(n) = body.strip_prefix("seg-") {
            return number(n, u64::MAX).map(|n| Resource::Segment(rendition, n)).ok_or_else(unknown);
        }
        if let Some((msn, part)) = body.strip_prefix("part-").and_then(|p| p.split_once('.')) {
            let msn = number(msn, u64::MAX).ok_or_else(unknown)?;
            let part = number(part, u64::from(u32::MAX)).ok_or_else(unknown)?;
            return Ok(Resource::Part(rendition, msn, part as u32));
        }
        Err(unknown())
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Multivariant => f.write_str("index.m3u8"),
            Resource::Media(r) => write!(f, "{}.m3u8", r.name()),
            Resource::Init(r, n) => write!(f, "{}-init-{n}.mp4", r.name()),
            Resource::Part(r, msn, i) => write!(f, "{}-part-{msn}.{i}.mp4", r.name()),
            Resource::Segment(r, msn) => write!(f, "{}-seg-{msn}.mp4", r.name()),
        }
    }
}

/// A decimal number of at most 20 digits, no sign, no leading `+`, at most `max`.
fn number(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|n| *n <= max)
}

impl HlsQuery {
    /// Parses a query string (without the `?`). Unknown parameters are ignored (`_HLS_skip`,
    /// a cache-buster).
    pub fn parse(query: &str) -> Result<HlsQuery, QueryError> {
        if query.len() > MAX_QUERY {
            return Err(QueryError::TooLong);
        }
        let (mut msn, mut part, mut token) = (None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "_HLS_msn" => set(&mut msn, "_HLS_msn", v, u64::MAX)?,
                "_HLS_part" => set(&mut part, "_HLS_part", v, u64::from(u32::MAX))?,
                "token" | "jwt" => {
                    if token.is_some() {
                        return Err(QueryError::Repeated("token"));
                    }
                    // Carried into URIs as it came: only URL-safe characters and escapes.
                    if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%+".contains(&b)) {
                        return Err(QueryError::BadToken);
                    }
                    token = Some(v.to_owned());
                }
                _ => {}
            }
        }
        let block = match (msn, part) {
            (None, Some(_)) => return Err(QueryError::PartWithoutMsn),
            (None, None) => None,
            (Some(msn), part) => Some(Block { msn, part: part.map(|p| p as u32) }),
        };
        Ok(HlsQuery { block, token })
    }
}

fn set(slot: &mut Option<u64>, name: &'static str, v: &str, max: u64) -> Result<(), QueryError> {
    if slot.is_some() {
        return Err(QueryError::Repeated(name));
    }
    let n = number(v, max).ok_or_else(|| QueryError::NotANumber { name, value: v.chars().take(32).collect(), max })?;
    *slot = Some(n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_parse_and_others_do_not() {
        assert_eq!(Resource::parse("index.m3u8"), Ok(Resource::Multivariant));
        assert_eq!(Resource::parse("audio.m3u8"), Ok(Resource::Media(Rendition::Audio)));
        assert_eq!(Resource::parse("video-init-2.mp4"), Ok(Resource::Init(Rendition::Video, 2)));
        assert_eq!(Resource::parse("video-part-17.3.mp4"), Ok(Resource::Part(Rendition::Video, 17, 3)));
        assert_eq!(Resource::parse("audio-seg-9.mp4"), Ok(Resource::Segment(Rendition::Audio, 9)));
        for bad in [
            "",
            "index.m3u",
            "video",
            "video.mp4",
            "video-part-1.mp4",
            "video-part-.1.mp4",
            "video-part-1.-1.mp4",
            "video-seg--1.mp4",
            "video-seg-+1.mp4",
            "video-seg-1.2.mp4",
            "video-init-4294967296.mp4",
            "video-seg-99999999999999999999999.mp4",
            "../video.m3u8",
            "subtitles.m3u8",
            "video-seg-1.mp4.mp4",
        ] {
            assert!(Resource::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn blocking_parameters_are_checked() {
        let q = HlsQuery::parse("_HLS_msn=12&_HLS_part=3").unwrap();
        assert_eq!(q.block, Some(Block { msn: 12, part: Some(3) }));
        assert_eq!(HlsQuery::parse("_HLS_msn=4").unwrap().block, Some(Block { msn: 4, part: None }));
        assert_eq!(HlsQuery::parse("_HLS_skip=YES&x=1").unwrap(), HlsQuery::default());
        let q = HlsQuery::parse("token=ey.J-x_y%2B&_HLS_msn=1").unwrap();
        assert_eq!(q.token.as_deref(), Some("ey.J-x_y%2B"));
        for (bad, want) in [
            ("_HLS_msn=-1", "not a whole number"),
            ("_HLS_msn=abc", "not a whole number"),
            ("_HLS_msn=", "not a whole number"),
            ("_HLS_msn=1e3", "not a whole number"),
            ("_HLS_msn=99999999999999999999", "not a whole number"),
            ("_HLS_msn=1&_HLS_part=4294967296", "not a whole number"),
            ("_HLS_part=1", "needs _HLS_msn"),
            ("_HLS_msn=1&_HLS_msn=2", "twice"),
            ("token=a\"b", "characters"),
            ("token=a&jwt=b", "twice"),
        ] {
            let e = HlsQuery::parse(bad).unwrap_err();
            assert!(e.to_string().contains(want), "{bad}: {e}");
        }
        assert_eq!(HlsQuery::parse(&"a".repeat(MAX_QUERY + 1)), Err(QueryError::TooLong));
    }
}
