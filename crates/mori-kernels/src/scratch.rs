//! Reusable working memory, so that a forward pass allocates nothing once
//! its buffers have grown to the sizes it needs.

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
        assert_eq!(
            (&*a, &*b, &*c),
            (&[0, 1][..], &[][..], &[2, 3, 4, 5, 6][..])
        );
    }
}
