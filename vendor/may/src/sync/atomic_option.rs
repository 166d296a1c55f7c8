use crossbeam::atomic::AtomicCell;

use super::Blocker;
use crate::coroutine_impl::CoroutineImpl;

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

pub struct AtomicOption<T> {
    inner: AtomicCell<Option<T>>,
}

const _: () = assert!(AtomicCell::<Option<CoroutineImpl>>::is_lock_free());
const _: () = assert!(AtomicCell::<Option<Arc<Blocker>>>::is_lock_free());

impl<T> AtomicOption<T> {
    pub const fn none() -> AtomicOption<T> {
        AtomicOption {
            inner: AtomicCell::new(None),
        }
    }

    pub const fn some(t: T) -> AtomicOption<T> {
        AtomicOption {
            inner: AtomicCell::new(Some(t)),
        }
    }

    // leviathan patch: every waiter in may parks the same way: it stores its coroutine
    // here, then looks at a flag or a queue; its waker writes the flag or the queue,
    // then takes the coroutine from here. Without a full fence on both sides, each
    // side may miss the other's write (a store followed by a load of another location
    // may be reordered, even on x86), and the coroutine sleeps with its wake lost.
    #[inline]
    pub fn store(&self, t: T) {
        self.inner.store(Some(t));
        fence(Ordering::SeqCst);
    }

    #[inline]
    pub fn take(&self) -> Option<T> {
        fence(Ordering::SeqCst);
        self.inner.take()
    }

    #[inline]
    pub fn clear(&self) {
        self.inner.store(None)
    }
}
