//! The lock-free return stack of a buffer pool: any thread pushes the id of a buffer whose last
//! `Bytes` it dropped; the owning core takes the whole stack at once and gives the buffers back to
//! its ring. A `Drop` can neither block nor fail, so the push is a CAS loop with no allocation.
//!
//! Each id is in the stack at most once (a buffer is pushed when its last reference goes, and only
//! republished, hence referenced again, after the owner took it off), and the only pop is "take
//! everything" (a swap), so the classic ABA problem of Treiber stacks cannot occur.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU32, Ordering};

const EMPTY: u32 = u32::MAX;

/// A multi-producer, single-consumer stack of buffer ids `0..capacity`.
pub struct ReturnStack {
    head: AtomicU32,
    next: Box<[AtomicU32]>,
}

impl ReturnStack {
    /// A stack for ids below `capacity`.
    pub fn new(capacity: usize) -> ReturnStack {
        ReturnStack { head: AtomicU32::new(EMPTY), next: (0..capacity).map(|_| AtomicU32::new(EMPTY)).collect() }
    }

    /// Pushes `id`, from any thread.
    pub fn push(&self, id: u32) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            self.next[id as usize].store(head, Ordering::Relaxed);
            // Release publishes the `next` link (and everything the dropper did with the buffer)
            // to the consumer's acquiring swap.
            match self.head.compare_exchange_weak(head, id, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Whether the stack looks empty (a cheap check before [`ReturnStack::take_all`]).
    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed) == EMPTY
    }

    /// Takes every id pushed so far (the owner only), calling `f` for each.
    pub fn take_all(&self, mut f: impl FnMut(u32)) {
        let mut id = self.head.swap(EMPTY, Ordering::Acquire);
        while id != EMPTY {
            let next = self.next[id as usize].load(Ordering::Relaxed);
            f(id);
            id = next;
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn concurrent_pushes_are_all_taken_exactly_once() {
        loom::model(|| {
            let s = Arc::new(ReturnStack::new(4));
            let s1 = s.clone();
            let s2 = s.clone();
            let t1 = loom::thread::spawn(move || {
                s1.push(0);
                s1.push(1);
            });
            let t2 = loom::thread::spawn(move || s2.push(2));
            let mut seen = Vec::new();
            s.take_all(|id| seen.push(id));
            t1.join().unwrap();
            t2.join().unwrap();
            s.take_all(|id| seen.push(id));
            seen.sort();
            assert_eq!(seen, vec![0, 1, 2]);
        });
    }

    #[test]
    fn an_id_taken_can_be_pushed_again() {
        loom::model(|| {
            let s = Arc::new(ReturnStack::new(2));
            s.push(0);
            let s1 = s.clone();
            let t = loom::thread::spawn(move || s1.push(1));
            let mut seen = Vec::new();
            s.take_all(|id| seen.push(id));
            // The owner republished 0; another drop returns it again.
            for id in seen.drain(..) {
                s.push(id);
            }
            t.join().unwrap();
            s.take_all(|id| seen.push(id));
            seen.sort();
            assert_eq!(seen, vec![0, 1]);
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pushes_from_many_threads_are_all_taken() {
        let s = std::sync::Arc::new(ReturnStack::new(4000));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || (0..1000).for_each(|i| s.push(t * 1000 + i)))
            })
            .collect();
        let mut seen = Vec::new();
        for t in threads {
            t.join().unwrap();
        }
        s.take_all(|id| seen.push(id));
        seen.sort();
        assert_eq!(seen, (0..4000).collect::<Vec<_>>());
        assert!(s.is_empty());
    }
}
