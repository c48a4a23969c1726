//! Encoding messages to bytes.

use bytes::{BufMut, Bytes, BytesMut};
use mediamesh_media::Frame;

use super::primitives::WriteExt;
use super::{Channel, MAGIC, MAX_TEXT_LEN, Message, codec_id, msg_type};

/// Appends `msg`, with its length prefix, to `out`.
///
/// Free-text fields longer than [`MAX_TEXT_LEN`] are cut at a character boundary so the result
/// always decodes.
pub fn encode(msg: &Message, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(msg.type_byte());
    match msg {
        Message::Hello(h) => {
            out.put_slice(&MAGIC);
            out.put_u16(h.min_version);
            out.put_u16(h.max_version);
            out.put_string(&h.node);
            out.put_string(text(&h.agent));
            match &h.channel {
                Channel::Control { instance, catalog, running } => {
                    out.put_u8(1);
                    out.put_u64(*instance);
                    put_catalog(catalog, out);
                    out.put_count(running.len());
                    for r in running {
                        out.put_u64(r.session);
                        out.put_string(&r.stream);
                    }
                }
                Channel::Data { session, stream } => {
                    out.put_u8(2);
                    out.put_u64(*session);
                    out.put_string(stream);
                }
                Channel::Relay { node, stream } => {
                    out.put_u8(3);
                    out.put_string(node);
                    out.put_string(stream);
                }
            }
        }
        Message::Welcome(w) => {
            out.put_u16(w.version);
            out.put_string(text(&w.hub));
            out.put_u32(w.heartbeat_ms);
            out.put_u32(w.max_frame_bytes);
            out.put_u32(w.grace_ms);
        }
        Message::AddVideo { session, stream } | Message::RemoveVideo { session, stream } => {
            out.put_u64(*session);
            out.put_string(stream);
        }
        Message::Ping { id } | Message::Pong { id } => out.put_u64(*id),
        Message::GoAway { reason } | Message::EndOfStream { reason } => out.put_string(text(reason)),
        Message::Catalog { catalog } => put_catalog(catalog, out),
        Message::Redirect { target } => out.put_string(text(target)),
        Message::KeyframeRequest => {}
        Message::Error(e) => {
            out.put_u16(e.code.to_u16());
            out.put_u64(e.session);
            out.put_string(text(&e.message));
        }
        Message::StreamHeader(h) => {
            out.put_count(h.tracks.len());
            for t in &h.tracks {
                out.put_u8(t.id);
                out.put_u8(codec_id::of(t.codec));
                out.put_u32(t.clock_rate);
                out.put_u16(t.channels);
                out.put_count(t.parameter_sets.len());
                for p in &t.parameter_sets {
                    out.put_bytes16(p);
                }
            }
        }
        Message::Frame(f) => {
            put_frame_fields(f, out);
            out.put_slice(&f.payload);
        }
        Message::UplinkReport(r) => {
            out.put_u32(r.queue_frames);
            out.put_u64(r.queue_bytes);
            out.put_u32(r.queue_delay_ms);
            out.put_u32(r.path_delay_ms);
            out.put_u32(r.rtt_us);
            out.put_u8(r.level.to_u8());
            out.put_u32(r.connects);
            out.put_count(r.drops.len());
            for (reason, n) in &r.drops {
                out.put_u8(reason.to_u8());
                out.put_u64(*n);
            }
        }
        Message::Feedback(fb) => {
            out.put_u64(fb.last_seq);
            out.put_u64(fb.frames);
            out.put_u64(fb.bytes);
        }
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// `msg` encoded into a new buffer.
pub fn encoded(msg: &Message) -> Bytes {
    let mut out = BytesMut::new();
    encode(msg, &mut out);
    out.freeze()
}

/// Appends the length prefix, type byte and fixed fields of a Frame message, leaving the payload
/// for the caller to write next (for vectored writes that do not copy the payload).
pub fn encode_frame_header(frame: &Frame, out: &mut BytesMut) {
    let len = 1 + super::FRAME_HEADER_LEN + frame.payload.len();
    out.put_u32(len as u32);
    out.put_u8(msg_type::FRAME);
    put_frame_fields(frame, out);
}

fn put_frame_fields(f: &Frame, out: &mut BytesMut) {
    out.put_u8(f.track);
    out.put_u8(f.flags.bits());
    out.put_u64(f.seq);
    out.put_i64(f.pts);
    out.put_i64(f.dts);
    out.put_u64(f.capture_us);
}

fn put_catalog(catalog: &[super::CatalogEntry], out: &mut BytesMut) {
    out.put_count(catalog.len());
    for e in catalog {
        out.put_string(&e.name);
        out.put_string(text(&e.description));
    }
}

fn text(s: &str) -> &str {
    if s.len() <= MAX_TEXT_LEN {
        return s;
    }
    let mut end = MAX_TEXT_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
