//! Reusable working memory, so that a forward pass allocates nothing once
//! its buffers have grown to the sizes it needs.

use std::cell::RefCell;

/// Splits the front of `buf` into consecutive slices of the given lengths:
/// several named buffers out of one growable arena.
///
/// Panics if `buf` is shorter than the lengths' sum.
pub fn carve<T, const N: usize>(mut buf: &mut [T], lens: [usize; N]) -> [&mut [T]; N] {
    lens.map(|n| {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(n);
        buf = tail;
        head
    })
}

thread_local! {
    /// The calling thread's scratch for [`with_zeroed`]: each pool thread
    /// keeps its own, grown to the largest size asked of it.
    static ZEROED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `len` zeros of this thread's scratch: a fresh buffer's
/// contents without the allocation, for per-thread kernel state (attention's
/// scores and accumulators). Not re-entrant: `f` must not call it again.
pub(crate) fn with_zeroed<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    ZEROED.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        let buf = &mut s[..len];
        buf.fill(0.0);
        f(buf)
    })
}

/// A raw pointer to the elements of a slice that the threads of one pool
/// call write in disjoint parts: the pointer may be shared because every
/// element is reached by at most one thread, and the call does not return
/// until all of them are done.
pub(crate) struct SyncPtr<T>(*mut T);

impl<T> Clone for SyncPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SyncPtr<T> {}

// SAFETY: see the type's documentation; the elements themselves move
// between threads, hence `T: Send`.
unsafe impl<T: Send> Send for SyncPtr<T> {}
unsafe impl<T: Send> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    pub(crate) fn new(s: &mut [T]) -> Self {
        SyncPtr(s.as_mut_ptr())
    }

    /// The raw pointer, offset by `i` elements.
    ///
    /// # Safety
    /// `i` is within the slice the pointer was made from (or one past it).
    pub(crate) unsafe fn add(self, i: usize) -> *mut T {
        unsafe { self.0.add(i) }
    }

    /// Elements `start .. start + len` of the slice.
    ///
    /// # Safety
    /// The range is within the slice the pointer was made from, the slice
    /// outlives the result, and no other thread touches the range meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carve_splits_in_order() {
        let mut v: Vec<u32> = (0..10).collect();
        let [a, b, c] = carve(&mut v, [2, 0, 5]);
        assert_eq!((&*a, &*b, &*c), (&[0, 1][..], &[][..], &[2, 3, 4, 5, 6][..]));
    }

    #[test]
    fn scratch_is_zeroed_each_time() {
        with_zeroed(8, |b| b.fill(3.0));
        with_zeroed(4, |b| assert_eq!(b, [0.0; 4]));
        with_zeroed(16, |b| assert!(b.iter().all(|&x| x == 0.0)));
    }
}
