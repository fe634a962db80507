//! Loop metrics: iteration and callback counts, time busy vs blocked in the poll, and a
//! sampled histogram of how long callbacks wait in the ready queue.
//!
//! Cheap enough to be always on: two clock reads per iteration, and a timestamp on one
//! callback in `SAMPLE_EVERY` (the ready-queue delay is a distribution, not an audit).

use std::sync::atomic::{AtomicU32, Ordering};

pub const SAMPLE_EVERY: u32 = 16;

/// Log-linear histogram of nanosecond values: exact below 16, then 8 buckets per power
/// of two (about 6% wide), like HDR histograms.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const SUB_BITS: u32 = 3;
const LINEAR: u64 = 16;

fn bucket_of(ns: u64) -> usize {
    if ns < LINEAR {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros(); // >= 4
    let sub = (ns >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    (LINEAR + (exp as u64 - 4) * (1 << SUB_BITS) + sub) as usize
}

/// Midpoint of a bucket, in nanoseconds.
fn value_of(bucket: usize) -> f64 {
    let b = bucket as u64;
    if b < LINEAR {
        return b as f64;
    }
    let exp = (b - LINEAR) / (1 << SUB_BITS) + 4;
    let sub = (b - LINEAR) % (1 << SUB_BITS);
    let width = 1u64 << (exp - SUB_BITS as u64);
    let low = (1u64 << exp) + sub * width;
    low as f64 + width as f64 / 2.0
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; bucket_of(u64::MAX) + 1],
            total: 0,
        }
    }

    pub fn record(&mut self, seconds: f64) {
        let ns = (seconds.max(0.0) * 1e9) as u64;
        self.counts[bucket_of(ns)] += 1;
        self.total += 1;
    }

    /// The value at quantile `q` (0..=1) in seconds, or None with no samples.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(value_of(bucket) * 1e-9);
            }
        }
        None
    }
}

pub struct Stats {
    pub iterations: u64,
    pub callbacks: u64,
    pub busy: f64,
    pub polled: f64,
    /// When the last poll returned (or the loop started): busy time runs from here.
    mark: f64,
    pub ready_delay: Histogram,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            iterations: 0,
            callbacks: 0,
            busy: 0.0,
            polled: 0.0,
            mark: f64::NAN,
            ready_delay: Histogram::new(),
        }
    }

    /// Account one poll that ran from `start` to `end`.
    pub fn polled(&mut self, start: f64, end: f64) {
        self.iterations += 1;
        if !self.mark.is_nan() {
            self.busy += (start - self.mark).max(0.0);
        }
        self.polled += (end - start).max(0.0);
        self.mark = end;
    }

    /// The loop stopped running at `now`: close the busy interval.
    pub fn paused(&mut self, now: f64) {
        if !self.mark.is_nan() {
            self.busy += (now - self.mark).max(0.0);
        }
        self.mark = f64::NAN;
    }
}

/// Picks the callbacks whose wait in the ready queue is timed: one in SAMPLE_EVERY. Kept
/// apart from `Stats` so that scheduling a callback borrows no stats. (Relaxed loads and
/// stores, no read-modify-write: only the loop's thread, holding the GIL, schedules here.)
pub struct Sampler(AtomicU32);

impl Sampler {
    pub fn new() -> Sampler {
        Sampler(AtomicU32::new(0))
    }

    /// True for one call in SAMPLE_EVERY.
    #[inline]
    pub fn sample_now(&self) -> bool {
        let tick = self.0.load(Ordering::Relaxed).wrapping_add(1);
        self.0.store(tick, Ordering::Relaxed);
        tick.is_multiple_of(SAMPLE_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for ns in [0u64, 1, 15, 16, 17, 100, 1_000, 123_456, 10_000_000_000] {
            let b = bucket_of(ns);
            assert!(b >= last);
            last = b;
            let v = value_of(b);
            assert!(
                (v - ns as f64).abs() <= ns as f64 * 0.07 + 1.0,
                "{ns} -> {v}"
            );
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        for i in 1..=100 {
            h.record(i as f64 * 1e-6);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((p50 - 50e-6).abs() < 4e-6, "{p50}");
        assert!((p99 - 99e-6).abs() < 7e-6, "{p99}");
    }
}
