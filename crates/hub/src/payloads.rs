//! Frame payloads copied out of the tunnel's message buffers into chunks that the stream reuses,
//! and, the same way, the log's shared interleaved copies of frames for RTSP viewers.
//!
//! A frame stays in the stream's log for seconds, while viewers come and go. When each frame
//! payload is its own allocation (the WebSocket message it arrived in), the holes that evicted
//! frames leave in the allocator's arena are split by viewers' small long-lived allocations,
//! and the next frames take fresh memory at the arena's top: the hub's resident memory grew by
//! ~20 KiB per viewer at 100 viewers against 6.7 KB of live heap (docs/benchmarks.md, "Why the
//! RSS per viewer is higher"). Here a data tunnel copies each payload, in order, into chunks of
//! [`CHUNK`] bytes (a larger frame gets a chunk of its own size). The log evicts frames in the
//! order they came, so the oldest chunk is the first to be wholly free again, and it is reused
//! as it is, never handed back to the allocator while the tunnel lives. The message buffer the
//! payload came in is freed at once, so the allocator reuses it for the next message.
//!
//! Bounds: the chunks in use hold the frames the log keeps (its byte bound) plus at most one
//! partly filled and one spare; a tunnel never keeps more than [`MAX_RETIRED`] filled chunks
//! of its own (beyond that the oldest is let go: its memory returns to the allocator when its
//! last frame is evicted). The copy costs one `memcpy` of the payload per frame, once per
//! stream, whatever the number of viewers.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Bytes per chunk: 128 KiB holds about a dozen P-frames of a 2 Mbit/s 25 fps stream.
pub(crate) const CHUNK: usize = 128 * 1024;
/// Most filled chunks a tunnel keeps for reuse. The log's default byte bound (64 MiB) is 512
/// chunks; twice that leaves room for the newest group of pictures the log may keep beyond it.
pub(crate) const MAX_RETIRED: usize = 1024;

/// One writer's chunks: a data tunnel's payloads, or a log's shared frame copies.
#[derive(Debug, Default)]
pub(crate) struct PayloadChunks {
    /// The chunk being filled: its length is always 0 (each copy is split off at once), its
    /// capacity the room left.
    current: BytesMut,
    /// Filled chunks, oldest first, each with its whole size.
    retired: VecDeque<(BytesMut, usize)>,
    /// The whole size of `current`.
    current_size: usize,
}

impl PayloadChunks {
    /// No chunk yet: the first payload allocates one.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// `payload`'s bytes in these chunks.
    pub(crate) fn copy(&mut self, payload: &[u8]) -> Bytes {
        self.build(payload.len(), |b| b.extend_from_slice(payload))
    }

    /// What `fill` writes, in these chunks; `fill` writes at most `n` bytes.
    pub(crate) fn build(&mut self, n: usize, fill: impl FnOnce(&mut BytesMut)) -> Bytes {
        if n == 0 {
            return Bytes::new();
        }
        if self.current.capacity() < n {
            let (chunk, size) = self.free_chunk(n);
            let full = std::mem::replace(&mut self.current, chunk);
            if self.current_size > 0 {
                self.retired.push_back((full, self.current_size));
                if self.retired.len() > MAX_RETIRED {
                    self.retired.pop_front();
                }
            }
            self.current_size = size;
        }
        // Empty already, unless an earlier `fill` panicked part way: its bytes are not handed
        // out with this copy.
        self.current.clear();
        fill(&mut self.current);
        self.current.split().freeze()
    }

    /// The oldest retired chunk if no frame uses it any more and it holds `n` bytes, else a
    /// new one. Wholly free chunks behind the one taken are let go: the stream needs fewer now.
    fn free_chunk(&mut self, n: usize) -> (BytesMut, usize) {
        let mut reused = None;
        while let Some((chunk, size)) = self.retired.front_mut() {
            // Succeeds only when this handle is the chunk's last one: it then covers it whole.
            if !chunk.try_reclaim(*size) {
                break;
            }
            let free = self.retired.pop_front();
            if reused.is_none() {
                reused = free.filter(|(_, size)| *size >= n);
            }
        }
        reused.unwrap_or_else(|| {
            let size = n.max(CHUNK);
            (BytesMut::with_capacity(size), size)
        })
    }

    /// Filled chunks held for reuse (some may still hold frames).
    #[cfg(test)]
    fn retired(&self) -> usize {
        self.retired.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    #[test]
    fn payloads_are_copied_intact_and_packed_in_order() {
        let mut p = PayloadChunks::new();
        let a = p.copy(&frame(1, 1000));
        let b = p.copy(&frame(2, 2000));
        assert_eq!(&a[..], &frame(1, 1000)[..]);
        assert_eq!(&b[..], &frame(2, 2000)[..]);
        assert_eq!(b.as_ptr(), a.as_ptr().wrapping_add(1000), "consecutive frames share a chunk");
        assert!(p.copy(&[]).is_empty());
    }

    #[test]
    fn held_frames_are_never_overwritten() {
        let mut p = PayloadChunks::new();
        let mut held = Vec::new();
        for i in 0..200 {
            held.push((i, p.copy(&frame(i, 10_000))));
        }
        for (i, b) in &held {
            assert_eq!(&b[..], &frame(*i, 10_000)[..], "frame {i}");
        }
        assert!(p.retired() >= 200 * 10_000 / CHUNK - 1);
    }

    #[test]
    fn the_oldest_chunk_is_reused_once_its_frames_are_gone() {
        let mut p = PayloadChunks::new();
        let per_chunk = CHUNK / 10_000;
        let first = p.copy(&frame(0, 10_000));
        let start = first.as_ptr();
        let mut log: VecDeque<Bytes> = VecDeque::from([first]);
        // A log of 3 chunks' worth of frames, evicting in order, over many chunks' worth.
        let mut seen_reuse = false;
        for i in 1..(per_chunk * 40) {
            let b = p.copy(&frame(i, 10_000));
            seen_reuse |= b.as_ptr() == start;
            assert_eq!(&b[..], &frame(i, 10_000)[..]);
            log.push_back(b);
            if log.len() > per_chunk * 3 {
                log.pop_front();
            }
        }
        assert!(seen_reuse, "the first chunk came back into use");
        assert!(p.retired() <= 5, "chunks in use stay near the log's size: {}", p.retired());
    }

    #[test]
    fn a_frame_larger_than_a_chunk_gets_a_chunk_of_its_size() {
        let mut p = PayloadChunks::new();
        let small = p.copy(&frame(1, 100));
        let big = p.copy(&frame(2, CHUNK * 3));
        let big_start = big.as_ptr();
        let tiny = p.copy(&frame(3, 1));
        assert_eq!(&big[..], &frame(2, CHUNK * 3)[..]);
        assert_eq!(&small[..], &frame(1, 100)[..]);
        assert_eq!(p.retired(), 2);
        drop((small, big));
        // Both filled chunks are free now: the big one serves the next big frame, the small
        // one is let go.
        let again = p.copy(&frame(4, CHUNK * 2));
        assert_eq!(&again[..], &frame(4, CHUNK * 2)[..]);
        assert_eq!(again.as_ptr(), big_start);
        assert_eq!(&tiny[..], &frame(3, 1)[..]);
        assert_eq!(p.retired(), 1, "only the chunk just filled is kept");
    }

    #[test]
    fn chunks_kept_are_bounded() {
        let mut p = PayloadChunks::new();
        let held: Vec<Bytes> = (0..MAX_RETIRED + 10).map(|i| p.copy(&vec![i as u8; CHUNK])).collect();
        assert_eq!(p.retired(), MAX_RETIRED);
        assert!(held[0].iter().all(|b| *b == 0), "a chunk let go still holds its frame");
    }

    #[test]
    fn a_build_may_write_less_than_it_reserved() {
        let mut p = PayloadChunks::new();
        let a = p.build(100, |b| b.extend_from_slice(b"abc"));
        let b = p.build(10, |b| b.extend_from_slice(b"de"));
        assert_eq!((&a[..], &b[..]), (&b"abc"[..], &b"de"[..]));
        // Both in the same chunk, one after the other.
        assert_eq!(b.as_ptr() as usize - a.as_ptr() as usize, 3);
    }
}
