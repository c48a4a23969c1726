//! RTSP/1.0 requests (RFC 2326) in, responses out, without I/O.
//!
//! The parser enforces limits before buffering more: the request head (request line and
//! headers) is at most [`MAX_HEAD`] bytes, at most [`MAX_HEADERS`] headers, a body at most
//! [`MAX_BODY`] bytes, an interleaved frame from the client at most [`MAX_INTERLEAVED`] bytes.
//! Each refusal carries the status to answer with.

use bytes::{Buf, Bytes, BytesMut};

/// Largest request head (request line plus headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 64;
/// Largest request body (SET_PARAMETER, GET_PARAMETER).
pub const MAX_BODY: usize = 4 * 1024;
/// Largest interleaved (`$`) frame a client may send (RTCP receiver reports are far smaller).
pub const MAX_INTERLEAVED: usize = 4 * 1024;

/// An RTSP method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// OPTIONS.
    Options,
    /// DESCRIBE.
    Describe,
    /// SETUP.
    Setup,
    /// PLAY.
    Play,
    /// PAUSE.
    Pause,
    /// TEARDOWN.
    Teardown,
    /// GET_PARAMETER.
    GetParameter,
    /// SET_PARAMETER.
    SetParameter,
    /// Anything else (ANNOUNCE, RECORD, REDIRECT, …).
    Other(String),
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Options => "OPTIONS",
            Method::Describe => "DESCRIBE",
            Method::Setup => "SETUP",
            Method::Play => "PLAY",
            Method::Pause => "PAUSE",
            Method::Teardown => "TEARDOWN",
            Method::GetParameter => "GET_PARAMETER",
            Method::SetParameter => "SET_PARAMETER",
            Method::Other(m) => m,
        })
    }
}

impl Method {
    fn parse(s: &str) -> Self {
        match s {
            "OPTIONS" => Method::Options,
            "DESCRIBE" => Method::Describe,
            "SETUP" => Method::Setup,
            "PLAY" => Method::Play,
            "PAUSE" => Method::Pause,
            "TEARDOWN" => Method::Teardown,
            "GET_PARAMETER" => Method::GetParameter,
            "SET_PARAMETER" => Method::SetParameter,
            other => Method::Other(other.to_owned()),
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request URI as sent.
    pub uri: String,
    /// The CSeq.
    pub cseq: u32,
    headers: Vec<(String, String)>,
    /// The body (usually empty).
    pub body: Bytes,
}

impl Request {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What a client sent.
#[derive(Debug)]
pub enum Incoming {
    /// A request.
    Request(Request),
    /// Interleaved data on a channel (RTCP receiver reports on TCP).
    Interleaved {
        /// The channel.
        channel: u8,
        /// The data.
        data: Bytes,
    },
}

/// A request that cannot be served; answer with `status` (and close the connection when the
/// stream of bytes cannot be trusted any more).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {reason}: {detail}")]
pub struct Refusal {
    /// RTSP status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: &'static str,
    /// What was wrong, for logs and the response body.
    pub detail: String,
    /// The CSeq, if it could be read.
    pub cseq: Option<u32>,
}

fn refuse(status: u16, reason: &'static str, detail: impl Into<String>, cseq: Option<u32>) -> Refusal {
    Refusal { status, reason, detail: detail.into(), cseq }
}

/// Takes the next request or interleaved frame from `buf`; `Ok(None)` if more bytes are needed.
/// A refusal means the connection should answer and close.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Incoming>, Refusal> {
    if buf.first() == Some(&b'$') {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if len > MAX_INTERLEAVED {
            return Err(refuse(
                400,
                "Bad Request",
                format!("interleaved frame of {len} bytes exceeds {MAX_INTERLEAVED}"),
                None,
            ));
        }
        if buf.len() < 4 + len {
            return Ok(None);
        }
        let channel = buf[1];
        buf.advance(4);
        return Ok(Some(Incoming::Interleaved { channel, data: buf.split_to(len).freeze() }));
    }
    // Tolerate blank lines between requests (some clients send a CRLF keepalive).
    while buf.starts_with(b"\r\n") {
        buf.advance(2);
    }
    let Some(head_end) = find(&buf[..buf.len().min(MAX_HEAD + 4)], b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(if find(&buf[..MAX_HEAD], b"\r\n").is_none() {
                refuse(414, "Request-URI Too Long", format!("request line longer than {MAX_HEAD} bytes"), None)
            } else {
                refuse(400, "Bad Request", format!("request head longer than {MAX_HEAD} bytes"), None)
            });
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| refuse(400, "Bad Request", "request head is not UTF-8", None))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(uri), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse(400, "Bad Request", format!("malformed request line {:?}", truncate(request_line)), None));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        return Err(refuse(400, "Bad Request", format!("bad method {:?}", truncate(method)), None));
    }
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() == MAX_HEADERS {
            return Err(refuse(400, "Bad Request", format!("more than {MAX_HEADERS} headers"), None));
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(refuse(400, "Bad Request", format!("malformed header line {:?}", truncate(line)), None));
        };
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let cseq_raw = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("cseq")).map(|(_, v)| v.as_str());
    let cseq = match cseq_raw.map(str::parse::<u32>) {
        Some(Ok(c)) => c,
        Some(Err(_)) => {
            return Err(refuse(
                400,
                "Bad Request",
                format!("CSeq {:?} is not a number", truncate(cseq_raw.unwrap_or_default())),
                None,
            ));
        }
        None => return Err(refuse(400, "Bad Request", "missing CSeq", None)),
    };
    if version != "RTSP/1.0" {
        return Err(refuse(
            505,
            "RTSP Version Not Supported",
            format!("{version:?}; this server speaks RTSP/1.0"),
            Some(cseq),
        ));
    }
    let content_length = match headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        None => 0,
        Some((_, v)) => v.parse::<usize>().map_err(|_| refuse(400, "Bad Request", "bad Content-Length", Some(cseq)))?,
    };
    if content_length > MAX_BODY {
        return Err(refuse(
            413,
            "Request Entity Too Large",
            format!("body of {content_length} bytes exceeds {MAX_BODY}"),
            Some(cseq),
        ));
    }
    let total = head_end + 4 + content_length;
    if buf.len() < total {
        return Ok(None);
    }
    let method = Method::parse(method);
    let uri = uri.to_owned();
    buf.advance(head_end + 4);
    let body = buf.split_to(content_length).freeze();
    Ok(Some(Incoming::Request(Request { method, uri, cseq, headers, body })))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A response being built.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    reason: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Response {
    /// A response with this status.
    pub fn new(status: u16, reason: &'static str) -> Self {
        Self { status, reason, headers: Vec::new(), body: Bytes::new() }
    }

    /// 200 OK.
    pub fn ok() -> Self {
        Self::new(200, "OK")
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body and its type.
    pub fn body(mut self, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self.header("Content-Type", content_type)
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The wire bytes, with `CSeq` (if known) and `Server` first.
    pub fn encode(&self, cseq: Option<u32>) -> Bytes {
        let mut s = format!("RTSP/1.0 {} {}\r\n", self.status, self.reason);
        if let Some(c) = cseq {
            s.push_str(&format!("CSeq: {c}\r\n"));
        }
        s.push_str(concat!("Server: mediamesh/", env!("CARGO_PKG_VERSION"), "\r\n"));
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self.body.is_empty() {
            s.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        s.push_str("\r\n");
        let mut b = BytesMut::from(s.as_bytes());
        b.extend_from_slice(&self.body);
        b.freeze()
    }
}

impl From<&Refusal> for Response {
    fn from(r: &Refusal) -> Self {
        Response::new(r.status, r.reason).body("text/plain", format!("{}\n", r.detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> Result<Option<Incoming>, Refusal> {
        parse(&mut BytesMut::from(input))
    }

    fn request(input: &[u8]) -> Request {
        match one(input) {
            Ok(Some(Incoming::Request(r))) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_a_request_split_anywhere() {
        let raw = b"SETUP rtsp://h/n/s/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n$\x01\x00\x02ab";
        for cut in 0..raw.len() {
            let mut buf = BytesMut::from(&raw[..cut]);
            let mut got = Vec::new();
            while let Some(i) = parse(&mut buf).unwrap() {
                got.push(i);
            }
            buf.extend_from_slice(&raw[cut..]);
            while let Some(i) = parse(&mut buf).unwrap() {
                got.push(i);
            }
            assert_eq!(got.len(), 2, "cut {cut}");
            let Incoming::Request(r) = &got[0] else { panic!() };
            assert_eq!((r.method.clone(), r.cseq), (Method::Setup, 3));
            assert_eq!(r.header("transport"), Some("RTP/AVP/TCP;unicast;interleaved=0-1"));
            assert!(matches!(&got[1], Incoming::Interleaved { channel: 1, data } if &data[..] == b"ab"));
        }
    }

    #[test]
    fn bodies_are_read() {
        let r = request(b"SET_PARAMETER rtsp://h/x RTSP/1.0\r\nCSeq: 9\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(&r.body[..], b"hello");
    }

    #[test]
    fn limits_are_refused_with_the_right_status() {
        let long_line = format!("DESCRIBE rtsp://h/{} RTSP/1.0\r\n", "a".repeat(100_000));
        assert_eq!(one(long_line.as_bytes()).unwrap_err().status, 414);
        let mut many = String::from("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n");
        for i in 0..1000 {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        let e = one(many.as_bytes()).unwrap_err();
        assert_eq!(e.status, 400, "{e}");
        assert_eq!(one(b"OPTIONS * RTSP/1.0\r\nCSeq: one\r\n\r\n").unwrap_err().status, 400);
        assert_eq!(one(b"OPTIONS * RTSP/1.0\r\n\r\n").unwrap_err().detail, "missing CSeq");
        assert_eq!(one(b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n").unwrap_err().status, 505);
        assert_eq!(
            one(b"SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 99999\r\n\r\n").unwrap_err().status,
            413
        );
        assert_eq!(one(b"$\x00\xff\xff").unwrap_err().status, 400);
        assert_eq!(one(b"GET / HTTP/1.1 extra\r\nCSeq: 1\r\n\r\n").unwrap_err().status, 400);
    }

    #[test]
    fn incomplete_input_waits_without_buffering_past_the_cap() {
        assert!(one(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n").unwrap().is_none());
        assert!(one(b"$\x00\x00\x10abc").unwrap().is_none());
    }

    #[test]
    fn responses_carry_cseq_and_length() {
        let r = Response::ok().header("Session", "abc").body("application/sdp", "v=0\r\n").encode(Some(4));
        let s = std::str::from_utf8(&r).unwrap();
        assert!(s.starts_with("RTSP/1.0 200 OK\r\nCSeq: 4\r\n"));
        assert!(s.contains("Content-Length: 5\r\n") && s.ends_with("\r\n\r\nv=0\r\n"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)) {
            let mut buf = BytesMut::from(&data[..]);
            for _ in 0..10 {
                match parse(&mut buf) {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        }
    }
}
