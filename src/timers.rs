//! The timer heap: scheduled `TimerHandle`s ordered by deadline, then by insertion.
//!
//! Cancelled timers stay in the heap until they reach the top or until they are more
//! than half of a large heap, when the heap is rebuilt without them (amortised O(1) per
//! cancellation, like the stock loop). Removed handles are returned to the caller to be
//! dropped outside any borrow, since dropping Python objects can run arbitrary code.
//! The loop wakes for the earliest timer together with those due within `TIMER_SLACK`
//! after it (`wake_time`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use pyo3::prelude::*;

use crate::handles::TimerHandle;

const MIN_COMPACT_SIZE: usize = 100;

/// How long a wake-up may wait for timers due just after the earliest one, so that they
/// run together: Linux's default timer slack for a sleeping thread. Each wake-up for a
/// near deadline costs a timer reprogramming and an interrupt (measured on a VM: about
/// 36 µs of CPU per wake-up); timers due every few microseconds would otherwise each
/// take one.
pub const TIMER_SLACK: f64 = 50e-6;

/// A scheduled timer. Entries compare by one pair of integers, the deadline's order key
/// then the insertion number, not by `f64::total_cmp` then the number (the heap compares
/// on every level of every push and pop).
struct Entry {
    key: u64,
    seq: u64,
    handle: Py<TimerHandle>,
}

/// `when` as an integer in `f64::total_cmp`'s order: flip a negative number's bits, set a
/// positive number's sign bit.
fn order_key(when: f64) -> u64 {
    let bits = when.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

/// The inverse of `order_key`.
fn when_of(key: u64) -> f64 {
    if key >> 63 == 1 {
        f64::from_bits(key & !(1 << 63))
    } else {
        f64::from_bits(!key)
    }
}

impl Entry {
    fn when(&self) -> f64 {
        when_of(self.key)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl Entry {
    /// The pair as one integer: one comparison, without a branch (the heap's sift picks
    /// a child per level by comparing two entries, and whichever wins is unpredictable).
    #[inline(always)]
    fn rank(&self) -> u128 {
        (self.key as u128) << 64 | self.seq as u128
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
    // Reversed (see `cmp`), each as a single integer comparison.
    #[inline(always)]
    fn lt(&self, other: &Self) -> bool {
        other.rank() < self.rank()
    }
    #[inline(always)]
    fn le(&self, other: &Self) -> bool {
        other.rank() <= self.rank()
    }
    #[inline(always)]
    fn gt(&self, other: &Self) -> bool {
        other.rank() > self.rank()
    }
    #[inline(always)]
    fn ge(&self, other: &Self) -> bool {
        other.rank() >= self.rank()
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and we want the earliest deadline on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank().cmp(&self.rank())
    }
}

#[derive(Default)]
pub struct TimerHeap {
    heap: BinaryHeap<Entry>,
    seq: u64,
    cancelled: usize,
    /// `wake_time`'s walk of the heap, kept to reuse its allocation.
    scratch: Vec<usize>,
}

fn is_cancelled(py: Python<'_>, h: &Py<TimerHandle>) -> bool {
    h.bind(py).as_super().get().is_cancelled()
}

impl TimerHeap {
    pub fn push(&mut self, handle: Py<TimerHandle>) {
        let when = handle.get().when_value();
        handle.get().set_scheduled(true);
        self.seq += 1;
        self.heap.push(Entry {
            key: order_key(when),
            seq: self.seq,
            handle,
        });
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn note_cancelled(&mut self) {
        self.cancelled += 1;
    }

    /// Drop cancelled timers: all of them when they are too many, else those on top. The
    /// dropped handles, for the caller to release (None when nothing was dropped).
    pub fn prune(&mut self, py: Python<'_>) -> Option<Vec<Py<TimerHandle>>> {
        let n = self.heap.len();
        if n > MIN_COMPACT_SIZE && self.cancelled * 2 > n {
            let mut garbage = Vec::with_capacity(self.cancelled.min(n));
            let entries = std::mem::take(&mut self.heap).into_vec();
            let mut keep = Vec::with_capacity(n - self.cancelled.min(n));
            for e in entries {
                if is_cancelled(py, &e.handle) {
                    e.handle.get().set_scheduled(false);
                    garbage.push(e.handle);
                } else {
                    keep.push(e);
                }
            }
            self.heap = BinaryHeap::from(keep);
            self.cancelled = 0;
            Some(garbage)
        } else {
            let mut garbage = None;
            while let Some(top) = self.heap.peek() {
                if !is_cancelled(py, &top.handle) {
                    break;
                }
                let e = self.heap.pop().expect("peeked");
                e.handle.get().set_scheduled(false);
                self.cancelled = self.cancelled.saturating_sub(1);
                garbage.get_or_insert_with(Vec::new).push(e.handle);
            }
            garbage
        }
    }

    /// When to wake for the earliest timer: the latest deadline among the live timers
    /// due within `TIMER_SLACK` of it, so that bunched timers share one wake-up. A lone
    /// timer wakes at its own deadline; no timer ever runs before its deadline.
    pub fn wake_time(&mut self, py: Python<'_>) -> Option<f64> {
        let entries = self.heap.as_slice();
        let first = entries.first()?;
        let end = first.when() + TIMER_SLACK;
        if !end.is_finite() {
            return Some(first.when());
        }
        let limit = order_key(end);
        let mut latest = first.key;
        // A node's children are due no earlier than it: walk only the subtrees whose
        // root is inside the window.
        let stack = &mut self.scratch;
        stack.clear();
        stack.push(0);
        while let Some(i) = stack.pop() {
            let e = &entries[i];
            if e.key > limit {
                continue;
            }
            if e.key > latest && !is_cancelled(py, &e.handle) {
                latest = e.key;
            }
            stack.extend((2 * i + 1..=2 * i + 2).filter(|&c| c < entries.len()));
        }
        Some(when_of(latest))
    }

    /// Pop the earliest timer if it is due before `end_time`.
    pub fn pop_due(&mut self, end_time: f64) -> Option<Py<TimerHandle>> {
        if self.heap.peek()?.when() >= end_time {
            return None;
        }
        let e = self.heap.pop()?;
        e.handle.get().set_scheduled(false);
        Some(e.handle)
    }

    /// Remove everything (loop close); handles go to `garbage`.
    pub fn clear(&mut self, garbage: &mut Vec<Py<TimerHandle>>) {
        for e in std::mem::take(&mut self.heap).into_vec() {
            e.handle.get().set_scheduled(false);
            garbage.push(e.handle);
        }
        self.cancelled = 0;
    }

    pub fn handles(&self) -> impl Iterator<Item = &Py<TimerHandle>> {
        self.heap.iter().map(|e| &e.handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_keys_sort_as_total_cmp_and_invert() {
        let values = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            1e-9,
            2.5,
            1e300,
            f64::INFINITY,
        ];
        for a in values {
            assert_eq!(when_of(order_key(a)).to_bits(), a.to_bits());
            for b in values {
                assert_eq!(order_key(a).cmp(&order_key(b)), a.total_cmp(&b), "{a} {b}");
            }
        }
    }
}
