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
///
/// Packed in one word, so that a send queue's item is a payload and a word
/// (40 bytes; with two words, the /topic fan-out paid for the third in CPU
/// per delivery): the number in the low 48 bits (it starts again at 1 after
/// 2^48 - 1, years of deliveries at any rate a broker reaches, and only the
/// few in flight at once are compared), the attempt in the high 16 (at most
/// 65,535 counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryId(NonZeroU64);

const SEQ_BITS: u32 = 48;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

impl DeliveryId {
    pub fn new(seq: NonZeroU64, attempt: NonZeroU32) -> Self {
        let attempt = u64::from(attempt.get().min(u32::from(u16::MAX)));
        let seq = seq.get() & SEQ_MASK;
        // A number from Numbering is never 0 in its 48 bits.
        Self(NonZeroU64::new(attempt << SEQ_BITS | seq).unwrap_or(NonZeroU64::MIN))
    }

    pub fn seq(self) -> u64 {
        self.0.get() & SEQ_MASK
    }

    pub fn attempt(self) -> NonZeroU32 {
        NonZeroU32::new((self.0.get() >> SEQ_BITS) as u32).unwrap_or(NonZeroU32::MIN)
    }
}

/// What [`Out::sub`] holds for a protocol v2 frame the connection's reader
/// queued for its writer (a confirm, a refusal, a subscription's end): no
/// subscription has this number.
pub const CONTROL: u32 = u32::MAX;

/// A message on its way to one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub payload: Bytes,
    /// `None` for a `/topic` message: nothing is settled when it is written.
    pub delivery: Option<DeliveryId>,
    /// The connection's number for the subscription it was routed to (one
    /// connection may hold several under protocol v2), or [`CONTROL`]: then
    /// `payload` is a whole frame body, written as it is.
    pub sub: u32,
    /// Bytes at the front of `payload` that are the message's header block
    /// (protocol v2 headers; 0 for none): a v2 delivery carries them as its
    /// header block, a v1 one the payload after them. (In the padding:
    /// the item stays 48 bytes.)
    pub head: u16,
}

impl Out {
    /// A `/topic` message for subscription `sub`.
    #[cfg(test)]
    pub fn plain(payload: Bytes, sub: u32) -> Self {
        Self {
            payload,
            delivery: None,
            sub,
            head: 0,
        }
    }

    /// A `/topic` message with a header block of `head` bytes in front.
    pub fn with_head(payload: Bytes, sub: u32, head: u16) -> Self {
        Self {
            payload,
            delivery: None,
            sub,
            head,
        }
    }

    /// A frame of the connection's own (protocol v2), in order with its messages.
    pub fn control(frame: Bytes) -> Self {
        Self {
            payload: frame,
            delivery: None,
            sub: CONTROL,
            head: 0,
        }
    }

    pub fn is_control(&self) -> bool {
        self.sub == CONTROL
    }

    /// Payload bytes held against the send queue's bound and the memory
    /// budget: none for a control frame, which is bounded by count instead.
    pub fn len(&self) -> usize {
        if self.is_control() {
            0
        } else {
            self.payload.len()
        }
    }

    /// The attempt its next delivery would be, were it not delivered now
    /// (a message handed back unwritten is not counted as attempted).
    pub fn attempt(&self) -> NonZeroU32 {
        self.delivery.map_or(NonZeroU32::MIN, DeliveryId::attempt)
    }
}

/// Numbers a channel's deliveries: 1, 2, 3... (see [`DeliveryId`] for the
/// wrap past 2^48 - 1).
#[derive(Debug, Default)]
pub struct Numbering {
    last: u64,
}

impl Numbering {
    /// The number the next delivery would get; taken by [`taken`](Self::taken).
    pub fn peek(&self) -> NonZeroU64 {
        match self.last {
            SEQ_MASK.. => NonZeroU64::MIN,
            last => NonZeroU64::MIN.saturating_add(last),
        }
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
    fn a_send_queue_item_is_a_payload_and_two_words() {
        assert_eq!(
            std::mem::size_of::<Out>(),
            std::mem::size_of::<Bytes>() + 16
        );
    }

    #[test]
    fn an_id_keeps_its_number_and_attempt_and_numbers_start_again_after_48_bits() {
        let id = DeliveryId::new(
            NonZeroU64::new(SEQ_MASK).unwrap(),
            NonZeroU32::new(3).unwrap(),
        );
        assert_eq!((id.seq(), id.attempt().get()), (SEQ_MASK, 3));
        let many = DeliveryId::new(NonZeroU64::MIN, NonZeroU32::MAX);
        assert_eq!((many.seq(), many.attempt().get()), (1, 65_535));
        let mut n = Numbering::default();
        n.taken(NonZeroU64::new(SEQ_MASK).unwrap());
        assert_eq!(n.peek().get(), 1);
    }
}
