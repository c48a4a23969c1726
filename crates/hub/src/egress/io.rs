//! Writing to viewers: vectored writes with a stall timeout.

use std::io::IoSlice;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Slices per `writev` call (Linux accepts 1024; more gains nothing).
pub(crate) const MAX_SLICES: usize = 64;

/// Writes every slice, in order, with as few `writev` calls as the socket allows; then flushes.
/// Fails with `TimedOut` if any single call makes no progress for `stall`.
pub(crate) async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut slices: &mut [IoSlice<'_>],
    stall: Duration,
) -> std::io::Result<()> {
    let timed_out =
        || std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no progress for {:.1} s", stall.as_secs_f64()));
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let take = slices.len().min(MAX_SLICES);
        let n = tokio::time::timeout(stall, w.write_vectored(&slices[..take])).await.map_err(|_| timed_out())??;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    tokio::time::timeout(stall, w.flush()).await.map_err(|_| timed_out())?
}

/// Explains a write error in a viewer's goodbye line.
pub(crate) fn describe_write_error(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::TimedOut {
        format!("stalled: the viewer stopped reading ({e})")
    } else {
        format!("write failed: {e}")
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// A writer that accepts at most `step` bytes per call, to exercise partial writes.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            self.calls += 1;
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.step - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.step {
                    break;
                }
            }
            self.calls += 1;
            std::task::Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn vectored_writes_survive_partial_writes() {
        let chunks: Vec<Bytes> = (0..200u32).map(|i| Bytes::from(vec![i as u8; (i % 7) as usize + 1])).collect();
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        for step in [1, 3, 64, 100_000] {
            let mut w = Trickle { out: Vec::new(), step, calls: 0 };
            let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
            write_all_vectored(&mut w, &mut slices, Duration::from_secs(5)).await.unwrap();
            assert_eq!(w.out, expected, "step {step}");
            if step == 100_000 {
                assert_eq!(w.calls, 200usize.div_ceil(MAX_SLICES), "one call per {MAX_SLICES} slices");
            }
        }
    }
}
