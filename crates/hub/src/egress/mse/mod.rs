//! MSE viewers: `GET /api/v1/nodes/{node}/streams/{stream}/mse`, a WebSocket that carries a
//! stream as fragmented MP4 for a browser's Media Source Extensions (`docs/protocol.md`,
//! "MSE").
//!
//! The hub sends a text `init` event (the MIME type with codecs, the picture size) and the init
//! segment as one binary message, then one fragment (`moof` + `mdat`) per frame as a binary
//! message, with the `skip` and `end` events of the plain WebSocket format. A new init event and
//! segment follow whenever the codec parameters change, and after a viewer's `resync` request
//! ([`client`]). The fragments are built once per frame for every MSE viewer ([`packager`]);
//! the serving loop is the WebSocket one ([`crate::egress::ws::serve`]).

pub mod client;
pub mod packager;

use std::io::IoSlice;
use std::sync::Arc;

use self::packager::{MseFormat, MseFrame};
use crate::egress::ws::wire::ClientFrame;
use crate::egress::ws::{DataAction, Flavor};
use crate::session::StreamKey;
use crate::session::log::{HeaderEntry, Packaged};

impl Flavor for MseFormat {
    const PROTOCOL: crate::auth::Protocol = crate::auth::Protocol::Mse;

    fn for_stream(key: StreamKey) -> Self {
        MseFormat::new(key)
    }

    fn slices<'a>(
        batch: &'a [Arc<Packaged<MseFrame>>],
        header: &mut Option<Arc<HeaderEntry>>,
        slices: &mut Vec<IoSlice<'a>>,
    ) -> u64 {
        let mut bytes = 0u64;
        for p in batch {
            if header.as_ref().is_none_or(|h| !Arc::ptr_eq(h, &p.entry.header)) {
                slices.push(IoSlice::new(&p.out.init));
                *header = Some(p.entry.header.clone());
            }
            if let Some(f) = &p.out.fragment {
                slices.push(IoSlice::new(f.head()));
                slices.push(IoSlice::new(&f.data));
                bytes += f.data.len() as u64;
            }
        }
        bytes
    }

    fn client_data(frame: &ClientFrame) -> DataAction {
        match client::parse(frame.opcode, frame.fin, &frame.payload) {
            Ok(client::ClientMessage::Resync) => DataAction::Resync,
            Err(e) => DataAction::Refuse { code: e.close_code(), reason: e.to_string() },
        }
    }
}
