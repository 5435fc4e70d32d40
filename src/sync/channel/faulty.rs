//! A channel wrapper that loses, repeats, reorders, delays and damages
//! frames, and cuts the connection, from a seed: the same seed and the
//! same calls give the same faults. For users' tests as much as ours.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Channel, ChannelClosed};

/// What goes wrong with each frame sent, as probabilities in `[0, 1]`.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct FaultPlan {
    /// Seed of the fault sequence.
    pub seed: u64,
    /// A frame is lost.
    pub drop: f64,
    /// A frame is sent twice.
    pub duplicate: f64,
    /// A frame is held back and sent after the next one.
    pub reorder: f64,
    /// A frame is held back for up to `max_delay`.
    pub delay: f64,
    /// The longest delay.
    pub max_delay: Duration,
    /// One byte of a frame is flipped.
    pub corrupt: f64,
    /// The connection is cut (both ends see it closed) instead of sending.
    pub disconnect: f64,
}

impl FaultPlan {
    /// No faults, with this seed.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            max_delay: Duration::from_millis(20),
            ..Self::default()
        }
    }

    /// Loses each frame with probability `p`.
    pub fn drop(mut self, p: f64) -> Self {
        self.drop = p;
        self
    }
    /// Sends each frame twice with probability `p`.
    pub fn duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }
    /// Swaps each frame with the next with probability `p`.
    pub fn reorder(mut self, p: f64) -> Self {
        self.reorder = p;
        self
    }
    /// Holds each frame back (up to `max`) with probability `p`.
    pub fn delay(mut self, p: f64, max: Duration) -> Self {
        self.delay = p;
        self.max_delay = max;
        self
    }
    /// Flips a byte of each frame with probability `p`.
    pub fn corrupt(mut self, p: f64) -> Self {
        self.corrupt = p;
        self
    }
    /// Cuts the connection at each frame with probability `p`.
    pub fn disconnect(mut self, p: f64) -> Self {
        self.disconnect = p;
        self
    }
}

/// A channel whose sends suffer a [`FaultPlan`]. Wrap both ends of a pair
/// (with different seeds) for faults in both directions.
pub struct FaultyChannel<C: Channel> {
    inner: Option<C>,
    plan: FaultPlan,
    rng: u64,
    /// Held for reordering: goes out after the next frame.
    swapped: Option<Vec<u8>>,
    /// Held for delay, with when each may go.
    delayed: VecDeque<(Instant, Vec<u8>)>,
}

impl<C: Channel> FaultyChannel<C> {
    /// Wraps `inner`.
    pub fn new(inner: C, plan: FaultPlan) -> Self {
        Self {
            inner: Some(inner),
            rng: plan.seed ^ 0x9e37_79b9_7f4a_7c15,
            plan,
            swapped: None,
            delayed: VecDeque::new(),
        }
    }

    /// splitmix64: small, seeded, good enough to pick faults.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn inner(&mut self) -> Result<&mut C, ChannelClosed> {
        self.inner.as_mut().ok_or(ChannelClosed)
    }

    fn release_due(&mut self) -> Result<(), ChannelClosed> {
        let now = Instant::now();
        while self.delayed.front().is_some_and(|(at, _)| *at <= now) {
            let (_, frame) = self.delayed.pop_front().expect("front exists");
            self.inner()?.send(frame)?;
        }
        Ok(())
    }
}

impl<C: Channel> Channel for FaultyChannel<C> {
    fn send(&mut self, mut frame: Vec<u8>) -> Result<(), ChannelClosed> {
        self.inner()?;
        if self.chance(self.plan.disconnect) {
            self.inner = None; // dropping our end closes the peer's too
            return Err(ChannelClosed);
        }
        self.release_due()?;
        if self.chance(self.plan.drop) {
            return Ok(());
        }
        if !frame.is_empty() && self.chance(self.plan.corrupt) {
            let at = (self.next() % frame.len() as u64) as usize;
            frame[at] ^= 1 << (self.next() % 8);
        }
        if self.chance(self.plan.delay) {
            let max = self.plan.max_delay.as_micros().max(1) as u64;
            let at = Instant::now() + Duration::from_micros(self.next() % max);
            self.delayed.push_back((at, frame));
            return Ok(());
        }
        let repeat = self.chance(self.plan.duplicate);
        if self.swapped.is_none() && self.chance(self.plan.reorder) {
            self.swapped = Some(frame);
            return Ok(());
        }
        if repeat {
            self.inner()?.send(frame.clone())?;
        }
        self.inner()?.send(frame)?;
        if let Some(held) = self.swapped.take() {
            self.inner()?.send(held)?;
        }
        Ok(())
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, ChannelClosed> {
        self.release_due()?;
        // A held frame must not wait for a next send that may never come.
        if let Some(held) = self.swapped.take() {
            self.inner()?.send(held)?;
        }
        self.inner()?.recv(timeout)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::in_process_pair;
    use super::*;

    fn run(plan: FaultPlan) -> Vec<Vec<u8>> {
        let (a, mut b) = in_process_pair();
        let mut a = FaultyChannel::new(a, plan);
        for n in 0..200u8 {
            a.send(vec![n, n, n]).unwrap();
        }
        std::thread::sleep(Duration::from_millis(30));
        a.recv(Duration::from_millis(1)).unwrap();
        let mut got = Vec::new();
        while let Ok(Some(frame)) = b.recv(Duration::from_millis(5)) {
            got.push(frame);
        }
        got
    }

    #[test]
    fn each_fault_happens_and_a_seed_repeats_its_faults() {
        let clean = run(FaultPlan::seeded(1));
        assert_eq!(clean.len(), 200);
        let dropped = run(FaultPlan::seeded(1).drop(0.3));
        assert!(
            dropped.len() < 180 && dropped.len() > 100,
            "{}",
            dropped.len()
        );
        assert_eq!(dropped, run(FaultPlan::seeded(1).drop(0.3)));
        assert_ne!(dropped, run(FaultPlan::seeded(2).drop(0.3)));
        let doubled = run(FaultPlan::seeded(1).duplicate(0.3));
        assert!(doubled.len() > 220);
        let mixed = run(FaultPlan::seeded(1).reorder(0.3));
        assert_eq!(mixed.len(), 200);
        assert!(mixed.windows(2).any(|w| w[0][0] > w[1][0]));
        let damaged = run(FaultPlan::seeded(1).corrupt(0.3));
        assert!(
            damaged
                .iter()
                .filter(|f| f[0] != f[1] || f[1] != f[2])
                .count()
                > 30
        );
        let late = run(FaultPlan::seeded(1).delay(0.3, Duration::from_millis(10)));
        assert_eq!(late.len(), 200);
        assert!(late.windows(2).any(|w| w[0][0] > w[1][0]));
    }

    #[test]
    fn a_disconnect_closes_both_ends() {
        let (a, mut b) = in_process_pair();
        let mut a = FaultyChannel::new(a, FaultPlan::seeded(3).disconnect(1.0));
        assert_eq!(a.send(vec![1]), Err(ChannelClosed));
        assert_eq!(a.recv(Duration::from_millis(1)), Err(ChannelClosed));
        assert_eq!(b.recv(Duration::from_millis(1)), Err(ChannelClosed));
    }
}
