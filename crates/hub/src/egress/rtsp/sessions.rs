//! A connection's RTSP sessions (RFC 2326 §3.4): what each has set up, and whether it plays.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use super::media::{RtpOut, TrackOut};
use crate::session::{StreamKey, Viewer};

/// Whether a session plays, and how its media goes.
pub(super) enum Playing {
    No,
    Tcp,
    Udp { cancel: CancellationToken, rtcp: Vec<SocketAddr> },
}

/// One session: the stream, the viewer it joined as (until PLAY hands it to the sender), and
/// the tracks set up.
pub(super) struct RtspSession {
    pub key: StreamKey,
    pub viewer: Option<Viewer>,
    pub tracks: Vec<TrackOut>,
    /// The stream's RTP packager, attached at the first SETUP.
    pub rtp: Option<RtpOut>,
    pub playing: Playing,
}

/// Sessions one connection may hold (players open one; a multi-view NVR rarely more).
pub(super) const MAX_SESSIONS: usize = 4;

/// A connection's sessions by id: at most [`MAX_SESSIONS`], nearly always one. A list, not a
/// hash map: a map's smallest table has room for 4 (900 bytes), held by every viewer for as
/// long as it watches; the list has room for what it holds.
#[derive(Default)]
pub(super) struct RtspSessions(Vec<(String, RtspSession)>);

impl RtspSessions {
    /// Removes every session.
    pub(super) fn take_all(&mut self) -> Vec<(String, RtspSession)> {
        std::mem::take(&mut self.0)
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &RtspSession)> {
        self.0.iter().map(|(id, s)| (id, s))
    }

    pub(super) fn contains_key(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    pub(super) fn get(&self, id: &str) -> Option<&RtspSession> {
        self.0.iter().find(|(k, _)| k == id).map(|(_, s)| s)
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut RtspSession> {
        self.0.iter_mut().find(|(k, _)| k == id).map(|(_, s)| s)
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<RtspSession> {
        let i = self.0.iter().position(|(k, _)| k == id)?;
        Some(self.0.swap_remove(i).1)
    }

    pub(super) fn get_or_insert_with(&mut self, id: &str, new: impl FnOnce() -> RtspSession) -> &mut RtspSession {
        let i = match self.0.iter().position(|(k, _)| k == id) {
            Some(i) => i,
            None => {
                // Room for exactly one more (a vector's first growth would make room for 4).
                self.0.reserve_exact(1);
                self.0.push((id.to_owned(), new()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_list_holds_room_for_what_it_holds() {
        let new = |stream: &str| {
            let key = StreamKey::new("edge", stream);
            move || RtspSession { key, viewer: None, tracks: Vec::new(), rtp: None, playing: Playing::No }
        };
        let mut list = RtspSessions::default();
        list.get_or_insert_with("A", new("one"));
        assert_eq!((list.len(), list.0.capacity()), (1, 1));
        // The same id again is the same session, not a second one.
        assert_eq!(list.get_or_insert_with("A", new("other")).key.stream, "one");
        list.get_or_insert_with("B", new("two"));
        assert_eq!((list.len(), list.0.capacity()), (2, 2));
        assert!(list.contains_key("B") && !list.contains_key("C"));
        if let Some(s) = list.get_mut("B") {
            s.playing = Playing::Tcp;
        }
        assert!(matches!(list.get("B").map(|s| &s.playing), Some(Playing::Tcp)));
        assert_eq!(list.remove("A").map(|s| s.key.stream), Some("one".to_owned()));
        assert!(list.remove("A").is_none());
        assert_eq!(list.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["B"]);
    }
}
