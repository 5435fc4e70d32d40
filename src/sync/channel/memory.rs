//! Two channel ends joined in memory, for reactors in one process.

use std::time::Duration;

use super::{Channel, ChannelClosed};

/// One end of an in-process pair. Dropping it closes the pair: the other
/// end's next `recv` (once drained) and `send` fail.
pub struct InProcessChannel {
    tx: flume::Sender<Vec<u8>>,
    rx: flume::Receiver<Vec<u8>>,
}

/// Two joined ends: what one sends the other receives, in order.
///
/// Unbounded: a session bounds what it has in flight (its window), so a
/// channel never holds more than a few windows of frames.
pub fn in_process_pair() -> (InProcessChannel, InProcessChannel) {
    let (a_tx, b_rx) = flume::unbounded();
    let (b_tx, a_rx) = flume::unbounded();
    (
        InProcessChannel { tx: a_tx, rx: a_rx },
        InProcessChannel { tx: b_tx, rx: b_rx },
    )
}

impl Channel for InProcessChannel {
    fn send(&mut self, frame: Vec<u8>) -> Result<(), ChannelClosed> {
        self.tx.send(frame).map_err(|_| ChannelClosed)
    }

    fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>, ChannelClosed> {
        match self.rx.recv_timeout(timeout) {
            Ok(frame) => Ok(Some(frame)),
            Err(flume::RecvTimeoutError::Timeout) => Ok(None),
            Err(flume::RecvTimeoutError::Disconnected) => Err(ChannelClosed),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_in_order_and_a_dropped_end_closes_the_other() {
        let (mut a, mut b) = in_process_pair();
        a.send(vec![1]).unwrap();
        a.send(vec![2]).unwrap();
        assert_eq!(b.recv(Duration::from_millis(10)), Ok(Some(vec![1])));
        assert_eq!(b.recv(Duration::from_millis(10)), Ok(Some(vec![2])));
        assert_eq!(b.recv(Duration::from_millis(1)), Ok(None));
        drop(a);
        assert_eq!(b.recv(Duration::from_millis(1)), Err(ChannelClosed));
        assert_eq!(b.send(vec![3]), Err(ChannelClosed));
    }
}
