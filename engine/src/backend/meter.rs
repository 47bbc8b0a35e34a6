//! Host memory measured, not estimated: a counting global allocator.
//!
//! The CPU backend's buffers are plain `Vec<f32>`s, so the bytes it holds
//! are the bytes the process holds on its heap. Every allocation and free
//! goes through [`Counting`], which keeps the bytes currently allocated and
//! the high-water mark since the last [`reset_peak`]. The memory planner's
//! figures (model/memory.rs) are checked against these numbers
//! (tests/tests/memory_measured_stages.rs, `bench train`).
//!
//! The cost is two relaxed atomic operations per allocation; the training
//! loop allocates a few large buffers per op, so this does not show in the
//! step time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// The system allocator, counting.
pub struct Counting;

static CURRENT: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);
/// What was allocated when the last [`PeakWindow`] opened.
static WINDOW_BASE: AtomicU64 = AtomicU64::new(0);

#[global_allocator]
static GLOBAL: Counting = Counting;

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    CURRENT.fetch_sub(bytes as u64, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments and
// only adds bookkeeping on success.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

/// Heap bytes allocated now.
pub fn current() -> u64 {
    CURRENT.load(Ordering::Relaxed)
}

/// The most heap bytes allocated at once since the last [`reset_peak`] (or
/// the start of the process).
pub fn peak() -> u64 {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new high-water mark at what is allocated now.
pub fn reset_peak() {
    PEAK.store(current(), Ordering::Relaxed);
}

/// The open [`PeakWindow`]'s figure so far, for whoever shows the running
/// stage's memory without holding its window (the progress line, the
/// wall-clock scalars): the same measure as the stage's `memory.json`.
pub fn window_peak() -> u64 {
    peak().saturating_sub(WINDOW_BASE.load(Ordering::Relaxed))
}

/// The heap's high-water mark over a span of work (one stage's run), above
/// what was allocated when the span began. Spans do not nest: opening one
/// restarts the process's mark.
#[derive(Debug)]
pub struct PeakWindow {
    base: u64,
}

impl PeakWindow {
    pub fn open() -> Self {
        reset_peak();
        let base = current();
        WINDOW_BASE.store(base, Ordering::Relaxed);
        PeakWindow { base }
    }

    /// The most bytes held at once since [`PeakWindow::open`], above the
    /// base.
    pub fn bytes(&self) -> u64 {
        peak().saturating_sub(self.base)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_shows_in_current_and_peak_and_leaves_current_when_freed() {
        // Other tests allocate concurrently, so only lower bounds hold.
        let n = 64 << 20;
        reset_peak();
        let buf = vec![1u8; n];
        assert!(peak() >= n as u64);
        let before_free = current();
        drop(std::hint::black_box(buf));
        assert!(before_free >= n as u64);
    }
}
