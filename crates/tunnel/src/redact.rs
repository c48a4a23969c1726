//! URL credentials kept out of logs: the one redaction every URL the hub and the edge log or
//! show goes through. A URL's credentials run from `://` to the *last* `@` before the URL ends
//! (whitespace or a quote), so a password written with an unescaped `/`, `@` or `:` is still
//! covered whole. The edge adds the passwords its configuration holds (`mediamesh_edge::redact`).

use std::borrow::Cow;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Query parameters whose value is a credential (`?token=` is how browsers and RTSP clients
/// that cannot set a header or a long password carry a viewer token).
pub const SECRET_PARAMS: [&str; 3] = ["token", "jwt", "access_token"];

/// `text` with the credentials of every URL in it masked: `user:password@` becomes
/// `user:***@`, a lone `token@` becomes `***@`, and `?token=…` (any of [`SECRET_PARAMS`],
/// also in a bare path such as a request line) becomes `?token=***`.
pub fn text(text: &str) -> Cow<'_, str> {
    let masked = userinfo(text);
    if !SECRET_PARAMS.iter().any(|p| masked.contains(&format!("{p}="))) {
        return masked;
    }
    Cow::Owned(params(&masked))
}

/// Masks the value of every `?name=` or `&name=` whose name is in [`SECRET_PARAMS`].
fn params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['?', '&']) {
        let (head, tail) = rest.split_at(i + 1);
        out.push_str(head);
        let name_end = tail.find('=').filter(|&e| SECRET_PARAMS.contains(&&tail[..e]));
        match name_end {
            Some(e) => {
                out.push_str(&tail[..=e]);
                out.push_str(MASK);
                let value = &tail[e + 1..];
                let end = value
                    .find(|c: char| c.is_whitespace() || matches!(c, '&' | '#' | '"' | '\'' | '<' | '>'))
                    .unwrap_or(value.len());
                rest = &value[end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

fn userinfo(text: &str) -> Cow<'_, str> {
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

/// `%XX` escapes decoded (invalid ones kept as written).
pub fn percent_decode(s: &str) -> String {
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

    #[test]
    fn token_parameters_are_masked_in_urls_and_request_lines() {
        assert_eq!(text("rtsp://hub:8554/edge-1/cam1?token=eyJ.a.b&x=1"), "rtsp://hub:8554/edge-1/cam1?token=***&x=1");
        assert_eq!(
            text("GET /api/v1/nodes/e/streams/c/ws?a=1&jwt=abc HTTP/1.1"),
            "GET /api/v1/nodes/e/streams/c/ws?a=1&jwt=*** HTTP/1.1"
        );
        assert_eq!(text("uri=\"/x?access_token=s3\""), "uri=\"/x?access_token=***\"");
        // Names that only end like a secret one, and text that is no query, stay.
        assert_eq!(text("/x?mytoken=1&tokens=2"), "/x?mytoken=1&tokens=2");
        assert_eq!(text("token=abc"), "token=abc");
    }

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
}
