//! URL credentials kept out of logs: the one redaction every URL the hub and the edge log or
//! show goes through. A URL's credentials run from `://` to the *last* `@` before the URL ends
//! (whitespace or a quote), so a password written with an unescaped `/`, `@` or `:` is still
//! covered whole. The edge adds the passwords its configuration holds (`mediamesh_edge::redact`).

use std::borrow::Cow;

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
