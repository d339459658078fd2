//! Pending service starts, ordered by due time: an indexed binary min-heap.
//!
//! Scheduling, rescheduling and cancelling a start cost O(log n); the next
//! deadline is O(1). The heap and its position index are sized when
//! services are created (configuration time), so the event loop never
//! allocates here.

use crate::clock::Mono;

const NONE: usize = usize::MAX;

/// The heap of (due time, service slot).
#[derive(Default)]
pub struct Timers {
    heap: Vec<(Mono, usize)>,
    /// `pos[slot]`: index of the slot's entry in `heap`, or `NONE`.
    pos: Vec<usize>,
}

impl Timers {
    /// Make room for service slots `0..slots` (called when slots are added).
    pub fn reserve_slots(&mut self, slots: usize) {
        if self.pos.len() < slots {
            self.pos.resize(slots, NONE);
        }
        self.heap.reserve(slots.saturating_sub(self.heap.len()));
    }

    /// Number of pending starts.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest entry.
    pub fn first(&self) -> Option<(Mono, usize)> {
        self.heap.first().copied()
    }

    /// Schedule `slot` at `at`, replacing any earlier entry for it.
    pub fn set(&mut self, slot: usize, at: Mono) {
        self.reserve_slots(slot + 1);
        match self.pos[slot] {
            NONE => {
                self.heap.push((at, slot));
                let i = self.heap.len() - 1;
                self.pos[slot] = i;
                self.up(i);
            }
            i => {
                let old = self.heap[i].0;
                self.heap[i].0 = at;
                if at < old { self.up(i) } else { self.down(i) }
            }
        }
    }

    /// Remove `slot`'s entry, if any.
    pub fn remove(&mut self, slot: usize) {
        let Some(&i) = self.pos.get(slot) else { return };
        if i == NONE {
            return;
        }
        self.pos[slot] = NONE;
        let last = self.heap.len() - 1;
        if i != last {
            self.heap.swap(i, last);
            self.pos[self.heap[i].1] = i;
        }
        self.heap.pop();
        if i < self.heap.len() {
            self.down(i);
            self.up(i);
        }
    }

    /// Take the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Mono) -> Option<usize> {
        let (t, slot) = self.first()?;
        if t > now {
            return None;
        }
        self.remove(slot);
        Some(slot)
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].1] = a;
        self.pos[self.heap[b].1] = b;
    }

    fn up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if self.heap[i] >= self.heap[p] {
                break;
            }
            self.swap(i, p);
            i = p;
        }
    }

    fn down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < self.heap.len() && self.heap[l] < self.heap[m] {
                m = l;
            }
            if r < self.heap.len() && self.heap[r] < self.heap[m] {
                m = r;
            }
            if m == i {
                break;
            }
            self.swap(i, m);
            i = m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_with_updates_and_removals() {
        let mut t = Timers::default();
        // A deterministic shuffle of times.
        let times: Vec<i64> = (0..200).map(|k| (k * 7919) % 200).collect();
        for (slot, &tm) in times.iter().enumerate() {
            t.set(slot, Mono(tm));
        }
        t.set(5, Mono(-1)); // move earlier
        t.set(6, Mono(1000)); // move later
        t.remove(7);
        t.remove(7);
        assert_eq!(t.len(), 199);
        assert_eq!(t.pop_due(Mono(-1)), Some(5));
        let mut last = Mono(-1);
        let mut n = 0;
        while let Some(s) = t.pop_due(Mono(2000)) {
            let tm = if s == 6 { Mono(1000) } else { Mono(times[s]) };
            assert!(tm >= last, "out of order");
            assert_ne!(s, 7);
            last = tm;
            n += 1;
        }
        assert_eq!(n, 198);
        assert!(t.is_empty());
    }
}
