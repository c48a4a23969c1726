//! Packagers: the work a viewer format does per frame, done once per frame for all of its
//! viewers.
//!
//! A format's packager is attached to a stream's log while the format has viewers
//! ([`FrameLog::attach`]); each viewer holds an [`Attached`] handle, and the last handle to drop
//! detaches it, so a format nobody watches costs nothing per frame. The log feeds an attached
//! packager every appended frame once, in order, under the log's write lock (keep it short: no
//! I/O, no waiting), and tells it which frames it evicted.
//!
//! Most formats turn each frame into one item that viewers read by cursor, with the log's
//! overflow policy: those implement [`FrameFormat`] and are attached as a [`PerFrame`], whose
//! items live exactly as long as the log's frames (so its bound is the log's). A format with
//! another shape of output (a playlist of segments) implements [`Packager`] itself.

use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use super::{FrameLog, LogEntry};

/// A format's packaging of one stream.
pub trait Packager: Any + Send + Sync {
    /// Packages an appended frame. Called once per frame, in log order.
    fn push(&mut self, entry: &Arc<LogEntry>);

    /// The log no longer holds frames before index `base`.
    fn evicted(&mut self, base: u64);
}

/// A format that makes one item per frame.
pub trait FrameFormat: Send + Sync + 'static {
    /// What a frame becomes.
    type Out: Send + Sync + 'static;

    /// Packages one frame; called once per frame, in log order.
    fn package(&mut self, entry: &LogEntry) -> Self::Out;
}

/// A frame and its packaging in one format: what a viewer of the format reads. One reference
/// count per frame, as with plain log entries.
#[derive(Debug)]
pub struct Packaged<O> {
    /// The frame.
    pub entry: Arc<LogEntry>,
    /// Its packaging.
    pub out: O,
}

/// The packager of a [`FrameFormat`]: the format's state and its items for the frames the log
/// holds.
#[derive(Debug)]
pub struct PerFrame<F: FrameFormat> {
    /// The format's state.
    pub format: F,
    items: VecDeque<Arc<Packaged<F::Out>>>,
    /// The log index of `items[0]` (kept here: every viewer's read needs it, and reading it
    /// through the item would cost two more dependent loads per viewer).
    base: u64,
}

impl<F: FrameFormat> PerFrame<F> {
    /// A packager with no frames yet.
    pub fn new(format: F) -> Self {
        Self { format, items: VecDeque::new(), base: 0 }
    }

    /// The index of the oldest frame packaged.
    pub fn first(&self) -> Option<u64> {
        (!self.items.is_empty()).then_some(self.base)
    }

    /// The packaged frame at log index `index`.
    pub fn get(&self, index: u64) -> Option<&Arc<Packaged<F::Out>>> {
        let i = index.checked_sub(self.base)?;
        self.items.get(usize::try_from(i).ok()?)
    }

    /// The packaged frames from log index `from` on.
    pub fn since(&self, from: u64) -> impl Iterator<Item = &Arc<Packaged<F::Out>>> {
        let skip = from.saturating_sub(self.base);
        self.items.iter().skip(usize::try_from(skip).unwrap_or(usize::MAX))
    }
}

impl<F: FrameFormat> Packager for PerFrame<F> {
    fn push(&mut self, entry: &Arc<LogEntry>) {
        let out = self.format.package(entry);
        if self.items.is_empty() {
            self.base = entry.index;
        }
        self.items.push_back(Arc::new(Packaged { entry: entry.clone(), out }));
    }

    fn evicted(&mut self, base: u64) {
        while self.base < base && self.items.pop_front().is_some() {
            self.base += 1;
        }
    }
}

/// An attached packager in the log, and how many handles keep it there.
pub(super) struct Slot {
    pub(super) kind: TypeId,
    pub(super) name: &'static str,
    pub(super) handles: usize,
    pub(super) packager: Box<dyn Packager>,
}

impl Slot {
    pub(super) fn new<P: Packager>(packager: P) -> Self {
        Self { kind: TypeId::of::<P>(), name: std::any::type_name::<P>(), handles: 1, packager: Box::new(packager) }
    }

    pub(super) fn get<P: Packager>(&self) -> Option<&P> {
        let any: &dyn Any = &*self.packager;
        any.downcast_ref::<P>()
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("packager", &self.name).field("handles", &self.handles).finish()
    }
}

/// Keeps packager `P` attached to a log; the last handle to drop detaches it.
pub struct Attached<P: Packager> {
    log: Arc<FrameLog>,
    _packager: PhantomData<fn() -> P>,
}

impl<P: Packager> Attached<P> {
    pub(super) fn new(log: Arc<FrameLog>) -> Self {
        Self { log, _packager: PhantomData }
    }

    /// The log it is attached to.
    pub fn log(&self) -> &Arc<FrameLog> {
        &self.log
    }
}

impl<P: Packager> Clone for Attached<P> {
    fn clone(&self) -> Self {
        self.log.retain(TypeId::of::<P>());
        Self::new(self.log.clone())
    }
}

impl<P: Packager> Drop for Attached<P> {
    fn drop(&mut self) {
        self.log.release(TypeId::of::<P>());
    }
}

impl<P: Packager> fmt::Debug for Attached<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Attached").field(&std::any::type_name::<P>()).finish()
    }
}
