//! Egress: how viewers receive streams, one module per format with the same shape: the
//! format's packager (attached to a stream's frame log while the format has viewers, it does
//! the work that depends only on the frame once, for all of them), and the serving of one
//! viewer, who reads the packager's output through its own cursor.

pub mod hls;
pub(crate) mod io;
pub(crate) mod mailbox;
pub mod mse;
pub mod relay;
pub(crate) mod rtsp;
pub mod webrtc;
pub mod ws;
