//! What a subscriber's send queue holds: a payload and, for a `/queue`
//! message, which delivery of it this is. A `/queue` channel numbers the
//! messages it hands to workers (one counter per channel, never reused) and
//! counts the attempts of each message; a worker's in-flight table finds a
//! message again by that number once it is written (and, with
//! acknowledgements, once it is acknowledged), never by its payload.

use std::num::{NonZeroU32, NonZeroU64};

use bytes::Bytes;

/// One delivery of a `/queue` message: its number within the channel, and
/// which attempt at delivering the message it is (1 for the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryId {
    pub seq: NonZeroU64,
    pub attempt: NonZeroU32,
}

/// A message on its way to one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub payload: Bytes,
    /// `None` for a `/topic` message: nothing is settled when it is written.
    pub delivery: Option<DeliveryId>,
}

impl Out {
    /// A `/topic` message.
    pub fn plain(payload: Bytes) -> Self {
        Self {
            payload,
            delivery: None,
        }
    }

    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// The attempt its next delivery would be, were it not delivered now
    /// (a message handed back unwritten is not counted as attempted).
    pub fn attempt(&self) -> NonZeroU32 {
        self.delivery.map_or(NonZeroU32::MIN, |d| d.attempt)
    }
}

/// Numbers a channel's deliveries: 1, 2, 3...
#[derive(Debug, Default)]
pub struct Numbering {
    last: u64,
}

impl Numbering {
    /// The number the next delivery would get; taken by [`taken`](Self::taken).
    pub fn peek(&self) -> NonZeroU64 {
        NonZeroU64::MIN.saturating_add(self.last)
    }

    pub fn taken(&mut self, seq: NonZeroU64) {
        self.last = seq.get();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_numbered_from_one_and_only_taken_numbers_move_on() {
        let mut n = Numbering::default();
        assert_eq!(n.peek().get(), 1);
        assert_eq!(n.peek().get(), 1, "a number not taken is offered again");
        n.taken(n.peek());
        assert_eq!(n.peek().get(), 2);
    }

    #[test]
    fn a_topic_message_costs_no_more_than_a_queue_one() {
        // Option<DeliveryId> fits in DeliveryId's place (its numbers are
        // never zero), so the send queue's items stay 48 bytes.
        assert_eq!(
            std::mem::size_of::<Option<DeliveryId>>(),
            std::mem::size_of::<DeliveryId>()
        );
    }
}
