//! Egress: how viewers receive streams. Each protocol reads the session's frame log through its
//! own cursor; work that depends only on the frame (the message encoding) is done once per
//! frame and shared by every viewer of that protocol.

pub(crate) mod io;
pub(crate) mod mailbox;
pub(crate) mod rtsp;
pub mod ws;
pub mod ws_format;
pub mod ws_wire;
