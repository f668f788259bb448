//! Admission control for concurrent generations: a fixed number of slots that
//! run at once and a bounded queue in front of them.
//!
//! A front end asks [`Scheduler::try_enqueue`] without blocking; a full queue is a
//! refusal it can turn into "503, retry later" instead of holding unbounded work in
//! memory. The ticket then waits (on a blocking thread) for a [`Slot`], which frees
//! itself when dropped, also when the work is abandoned. Today each slot runs its
//! own session; continuous batching will run the admitted slots in one forward pass
//! behind the same interface.

use std::sync::{Arc, Condvar, Mutex};

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is busy: {running} generations running and {waiting} waiting (queue limit {max_queue})")]
pub struct Busy {
    pub running: usize,
    pub waiting: usize,
    pub max_queue: usize,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    waiting: usize,
}

/// Slots and queue; share it as `Arc<Scheduler>`.
#[derive(Debug)]
pub struct Scheduler {
    n_slots: usize,
    max_queue: usize,
    state: Mutex<State>,
    freed: Condvar,
}

impl Scheduler {
    /// `n_slots` generations at once (at least 1), at most `max_queue` waiting.
    pub fn new(n_slots: usize, max_queue: usize) -> Arc<Self> {
        Arc::new(Scheduler {
            n_slots: n_slots.max(1),
            max_queue,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        })
    }

    pub fn n_slots(&self) -> usize {
        self.n_slots
    }

    /// (running, waiting) right now.
    pub fn load(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.running, s.waiting)
    }

    /// Takes a place in the queue, or refuses when the queue is full.
    pub fn try_enqueue(self: &Arc<Self>) -> Result<Ticket, Busy> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let free_now = s.running + s.waiting < self.n_slots;
        if !free_now && s.waiting >= self.max_queue {
            return Err(Busy {
                running: s.running,
                waiting: s.waiting,
                max_queue: self.max_queue,
            });
        }
        s.waiting += 1;
        Ok(Ticket {
            sched: Some(self.clone()),
        })
    }
}

/// A place in the queue. Dropping it leaves the queue.
#[derive(Debug)]
pub struct Ticket {
    sched: Option<Arc<Scheduler>>,
}

impl Ticket {
    /// Blocks until a slot is free and takes it.
    pub fn wait(mut self) -> Slot {
        let sched = self.sched.take().expect("a ticket is used once");
        {
            let mut s = sched.state.lock().unwrap_or_else(|e| e.into_inner());
            while s.running >= sched.n_slots {
                s = sched.freed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            s.waiting -= 1;
            s.running += 1;
        }
        Slot { sched }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(sched) = self.sched.take() {
            let mut s = sched.state.lock().unwrap_or_else(|e| e.into_inner());
            s.waiting -= 1;
        }
    }
}

/// A running generation's slot; dropping it frees the slot for the next in line.
#[derive(Debug)]
pub struct Slot {
    sched: Arc<Scheduler>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.sched.state.lock().unwrap_or_else(|e| e.into_inner());
        s.running -= 1;
        drop(s);
        self.sched.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_slots_then_queue_then_refuses() {
        let s = Scheduler::new(2, 1);
        let a = s.try_enqueue().unwrap().wait();
        let b = s.try_enqueue().unwrap().wait();
        let queued = s.try_enqueue().unwrap();
        assert_eq!(s.load(), (2, 1));
        let busy = s.try_enqueue().unwrap_err();
        assert_eq!((busy.running, busy.waiting, busy.max_queue), (2, 1, 1));
        // A queued ticket gets the slot another frees.
        let handle = std::thread::spawn(move || queued.wait());
        drop(a);
        let c = handle.join().unwrap();
        assert_eq!(s.load(), (2, 0));
        drop((b, c));
        assert_eq!(s.load(), (0, 0));
        // An abandoned ticket leaves the queue.
        let t = s.try_enqueue().unwrap();
        drop(t);
        assert_eq!(s.load(), (0, 0));
    }
}
