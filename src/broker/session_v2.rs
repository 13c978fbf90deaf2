//! What a protocol v2 connection's reader does with each frame after the
//! hello (`PROTOCOL.md`, "Version 2"): subscriptions under the client's ids,
//! publishes with their confirms and refusals, pings. A frame that breaks the
//! protocol ends the connection with an `ERROR` saying why.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;

use super::conn::Conn;
use super::publish::Publisher;
use super::router::Kind;
use super::stats::V2Frame;
use super::subscription::{Ids, Subscription};
use super::Shared;
use crate::proto::v2::{
    self, encode, error, reason, Answer, ClientFrame, DecodeError, HeaderLimits,
};

/// Why a frame ends the connection: an `ERROR` code and its text.
pub(super) struct Broken {
    pub code: u8,
    pub text: String,
}

impl From<DecodeError> for Broken {
    fn from(e: DecodeError) -> Self {
        Broken {
            code: e.code(),
            text: e.to_string(),
        }
    }
}

/// What a client was granted in the hello.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Granted {
    pub confirms: bool,
    pub loss: bool,
    pub headers: bool,
    pub acks: bool,
}

pub(super) struct SessionV2 {
    granted: Granted,
    limits: HeaderLimits,
    max_subscriptions: usize,
    /// Its subscriptions by the client's ids.
    subs: HashMap<u32, Arc<Subscription>>,
    /// The connection's number for its last subscription.
    last_local: u32,
    /// The highest confirm id read.
    last_id: u64,
    /// The highest confirm id routed (or refused) and not yet confirmed.
    due: u64,
    /// The highest confirm id a `CONFIRM` or `REFUSED` was queued for.
    answered: u64,
    /// Confirm ids read, and answered, since the connection began.
    ids_read: u64,
    ids_answered: u64,
    /// Confirms routed to the durable store and waiting for it, oldest
    /// first, while the reader reads on: a publisher's next publishes join
    /// the store's next write while the one before is synced, where a
    /// reader that waited gave the store one read buffer per fsync.
    stored: VecDeque<Waiting>,
}

/// A confirm waiting for the durable store.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    /// The highest confirm id it answers.
    id: u64,
    /// [`SessionV2::ids_read`] when it was routed.
    ids: u64,
    /// The log position and whether it must be synced (see `Disk::confirmed`).
    upto: u64,
    sync: bool,
}

/// Confirms a connection keeps waiting for the store, at most; past it the
/// newest one covers the next publishes too (each one is a read buffer's
/// worth, and a client's window of unconfirmed publishes is far fewer).
const MAX_WAITING: usize = 64;

/// A frame's outcome for the read loop.
pub(super) enum Next {
    Go,
    /// The client said goodbye.
    Goodbye,
    /// A publish to route, then to answer with
    /// [`published`](SessionV2::published).
    Publish {
        confirm: Option<u64>,
        channel: Bytes,
        /// The header block (when there is one), then the payload.
        payload: Bytes,
        /// Bytes of header block in front of the payload.
        head: u16,
    },
    /// A publish refused before routing (its channel name is too long).
    Refuse {
        confirm: Option<u64>,
        code: u8,
        channel: Bytes,
    },
    /// A `PING`: answered after every publish before it, by
    /// [`pong`](SessionV2::pong).
    Ping(u64),
}

impl SessionV2 {
    pub fn new(granted: Granted, max_subscriptions: usize) -> Self {
        Self {
            granted,
            limits: HeaderLimits::default(),
            max_subscriptions,
            subs: HashMap::new(),
            last_local: 0,
            last_id: 0,
            due: 0,
            answered: 0,
            ids_read: 0,
            ids_answered: 0,
            stored: VecDeque::new(),
        }
    }

    /// Handles one frame, as far as it can without waiting; what needs the
    /// publisher's routing it returns for the read loop to do. (Not async:
    /// the read loop's future, which every connection's task holds, stays
    /// as small as protocol v1 makes it.)
    pub fn step(
        &mut self,
        shared: &Shared,
        conn: &Arc<Conn>,
        publisher: &mut Publisher<'_>,
        frame: Bytes,
    ) -> Result<Next, Broken> {
        if frame.is_empty() {
            return Ok(Next::Goodbye);
        }
        let frame = v2::decode_client(frame, self.limits)?;
        if !matches!(frame, ClientFrame::Pub { .. }) {
            // A subscription, an answer, a goodbye: after the messages before it.
            publisher.route_held();
        }
        let stats = &shared.stats;
        match frame {
            ClientFrame::Sub { sid, acks, channel } => {
                stats.v2_frame(V2Frame::Sub);
                if acks.is_some() && !self.granted.acks {
                    return Err(Broken {
                        code: error::MALFORMED,
                        text: "a SUB with acknowledgements, and acks were not granted".into(),
                    });
                }
                self.subscribe(shared, conn, publisher, sid, acks, channel);
            }
            ClientFrame::Answer { answer, up_to, ids } => {
                stats.v2_frame(match answer {
                    Answer::Ack => V2Frame::Ack,
                    Answer::Nak(_) => V2Frame::Nak,
                    Answer::Working => V2Frame::Working,
                    Answer::Term => V2Frame::Term,
                });
                let missing = super::held::answer(shared, conn, answer, up_to, &ids);
                if missing.count > 0 {
                    conn.control(encode::not_held(missing.count, missing.first));
                }
            }
            ClientFrame::Credit { sid, credit } => {
                stats.v2_frame(V2Frame::Credit);
                match self.subs.get(&sid) {
                    Some(sub) => {
                        let max = shared.config.max_credit as usize;
                        if sub.set_credit((credit as usize).min(max)) {
                            if let Kind::Queue(q) = &sub.channel.kind {
                                q.refill();
                            }
                        }
                    }
                    None => {
                        shared.stats.v2_refusal(reason::UNKNOWN_SID);
                        conn.control(encode::ended(
                            sid,
                            reason::UNKNOWN_SID,
                            &format!("no subscription has id {sid}"),
                        ));
                    }
                }
            }
            ClientFrame::Unsub { sid } => {
                stats.v2_frame(V2Frame::Unsub);
                self.unsubscribe(shared, conn, sid);
            }
            ClientFrame::Pub {
                confirm,
                headers,
                channel,
                payload,
            } => {
                stats.v2_frame(V2Frame::Pub);
                if headers.is_some() && !self.granted.headers {
                    return Err(Broken {
                        code: error::HEADERS,
                        text: "headers were not granted".into(),
                    });
                }
                if let Some(id) = confirm {
                    if !self.granted.confirms {
                        return Err(Broken {
                            code: error::MALFORMED,
                            text: "a confirm id, and confirms were not granted".into(),
                        });
                    }
                    if id <= self.last_id {
                        return Err(Broken {
                            code: error::CONFIRM_ORDER,
                            text: format!(
                                "confirm id {id} is not larger than the one before ({})",
                                self.last_id
                            ),
                        });
                    }
                    self.last_id = id;
                    self.ids_read += 1;
                }
                if channel.is_empty() {
                    return Err(Broken {
                        code: error::MALFORMED,
                        text: "a publish with no channel".into(),
                    });
                }
                if channel.len() > shared.config.max_channel {
                    publisher.count_refused(super::stats::DropReason::TooLarge);
                    return Ok(Next::Refuse {
                        confirm,
                        code: reason::TOO_LARGE,
                        channel,
                    });
                }
                // A message with headers travels as its block then its
                // payload, the block's length beside it (one copy: in the
                // frame, the channel lies between them).
                let (payload, head) = match headers {
                    None => (payload, 0),
                    Some(block) => {
                        let mut joined =
                            bytes::BytesMut::with_capacity(block.len() + payload.len());
                        joined.extend_from_slice(&block);
                        joined.extend_from_slice(&payload);
                        // Within max_header_bytes (4096): it fits a u16.
                        (joined.freeze(), block.len() as u16)
                    }
                };
                return Ok(Next::Publish {
                    confirm,
                    channel,
                    payload,
                    head,
                });
            }
            ClientFrame::Ping(token) => {
                stats.v2_frame(V2Frame::Ping);
                return Ok(Next::Ping(token));
            }
            ClientFrame::Pong(_) => stats.v2_frame(V2Frame::Pong),
        }
        Ok(Next::Go)
    }

    /// A publish was routed: its confirm is due.
    pub fn routed(&mut self, confirm: Option<u64>) {
        if let Some(id) = confirm {
            self.due = id;
        }
    }

    /// Says a publish was refused, for `code` (a reason code).
    pub async fn refuse(
        &mut self,
        shared: &Shared,
        conn: &Conn,
        publisher: &mut Publisher<'_>,
        confirm: Option<u64>,
        code: u8,
        channel: &[u8],
    ) {
        shared.stats.v2_refusal(code);
        let Some(id) = confirm else {
            return;
        };
        // What was routed before it is confirmed first: a later CONFIRM can
        // only cover ids past this one.
        self.answer(conn, publisher, shared).await;
        let text = refusal_text(code, channel, shared);
        self.answered = id;
        self.due = id;
        self.ids_answered = self.ids_read;
        conn.control(encode::refused(id, code, &text));
    }

    /// Answers a `PING`: in order, what was published before it first.
    pub async fn pong(
        &mut self,
        shared: &Shared,
        conn: &Conn,
        publisher: &mut Publisher<'_>,
        token: u64,
    ) {
        self.answer(conn, publisher, shared).await;
        conn.control(encode::token(v2::kind::PONG, token));
    }

    /// Queues the `CONFIRM` for everything routed so far, once JetStream
    /// or the durable store has it: a refusal, a `PONG` and the end of the
    /// connection are said after it.
    pub async fn answer(&mut self, conn: &Conn, publisher: &mut Publisher<'_>, shared: &Shared) {
        if self.answer_now(conn, publisher) && self.stored.is_empty() {
            return;
        }
        // Boxed: JetStream's futures are large.
        Box::pin(publisher.settle(&shared.phases.abort)).await;
        if let (Some(last), Some(disk)) = (self.stored.back(), publisher.disk()) {
            let sync = self.stored.iter().any(|w| w.sync);
            let stored = tokio::select! {
                _ = disk.wait_confirmed(last.upto, sync) => true,
                _ = shared.phases.abort.cancelled() => false,
            };
            if !stored {
                // The broker is closing every connection: what the store
                // does not have yet goes unanswered, never confirmed.
                return;
            }
        }
        self.stored.clear();
        if self.due > self.answered {
            self.confirm(conn, self.due, self.ids_read);
        }
    }

    /// Queues the `CONFIRM`s that need no wait: for what was routed since
    /// the last one, and for what the durable store has taken of what waits
    /// for it. Called before the reader waits for more input, so that one
    /// confirm answers a whole read buffer of publishes. False when what is
    /// due waits for JetStream: then [`answer`](Self::answer) is the one
    /// to call.
    pub fn answer_now(&mut self, conn: &Conn, publisher: &mut Publisher<'_>) -> bool {
        if self.due <= self.answered {
            // Nothing owed (and so nothing waits for the store).
            publish_unanswered(conn, self.ids_read - self.ids_answered, self.answered);
            return true;
        }
        if publisher.in_jetstream() {
            return false;
        }
        let newest = self.stored.back().map_or(self.answered, |w| w.id);
        if self.due > newest {
            match publisher.take_stored() {
                Some((upto, sync)) if self.stored.len() < MAX_WAITING => {
                    self.stored.push_back(Waiting {
                        id: self.due,
                        ids: self.ids_read,
                        upto,
                        sync,
                    });
                }
                stored => match self.stored.back_mut() {
                    // In order: nothing is confirmed before what waits
                    // ahead of it.
                    Some(w) => {
                        w.id = self.due;
                        w.ids = self.ids_read;
                        if let Some((upto, sync)) = stored {
                            w.upto = w.upto.max(upto);
                            w.sync |= sync;
                        }
                    }
                    None => self.confirm(conn, self.due, self.ids_read),
                },
            }
        }
        if let Some(disk) = publisher.disk() {
            let mut done = None;
            while let Some(w) = self
                .stored
                .front()
                .filter(|w| disk.confirmed(w.sync) >= w.upto)
            {
                done = Some(*w);
                self.stored.pop_front();
            }
            if let Some(w) = done {
                self.confirm(conn, w.id, w.ids);
            }
        }
        publish_unanswered(conn, self.ids_read - self.ids_answered, self.answered);
        true
    }

    /// What the oldest confirm waiting for the durable store waits for:
    /// the reader waits for it beside its input.
    pub fn stored_wait(&self) -> Option<(u64, bool)> {
        self.stored.front().map(|w| (w.upto, w.sync))
    }

    fn confirm(&mut self, conn: &Conn, id: u64, ids: u64) {
        conn.control(encode::token(v2::kind::CONFIRM, id));
        self.answered = id;
        self.ids_answered = ids;
        publish_unanswered(conn, self.ids_read - self.ids_answered, self.answered);
    }

    fn subscribe(
        &mut self,
        shared: &Shared,
        conn: &Arc<Conn>,
        publisher: &mut Publisher<'_>,
        sid: u32,
        acks: Option<u32>,
        channel: Bytes,
    ) {
        let refuse = |code: u8, text: String| {
            shared.stats.v2_refusal(code);
            conn.control(encode::ended(sid, code, &text));
        };
        let shown = crate::proto::shown(&channel);
        if shared.phases.stop_reading.is_cancelled() {
            return refuse(reason::SHUTTING_DOWN, "the broker is shutting down".into());
        }
        if self.subs.contains_key(&sid) {
            return refuse(
                reason::SID_IN_USE,
                format!("subscription id {sid} is in use"),
            );
        }
        // (A connection's numbers are not reused; one that subscribed four
        // billion times has used them all.)
        if self.subs.len() >= self.max_subscriptions
            || self.last_local + 1 == super::delivery::CONTROL
        {
            return refuse(
                reason::MAX_SUBSCRIPTIONS,
                format!(
                    "this connection holds {} subscriptions, the most it may",
                    self.max_subscriptions
                ),
            );
        }
        if channel.is_empty() || crate::proto::is_null(&channel) {
            return refuse(
                reason::NO_SUCH_CHANNEL,
                format!("{shown} is not a channel one can subscribe to"),
            );
        }
        if channel.len() > shared.config.max_channel {
            return refuse(
                reason::TOO_LARGE,
                format!(
                    "a channel name of {} bytes, the limit is {}",
                    channel.len(),
                    shared.config.max_channel
                ),
            );
        }
        if v2::is_reserved(&channel) {
            return refuse(
                reason::RESERVED,
                format!("{shown}: names under /$aioq/ are reserved"),
            );
        }
        if acks.is_some() && !crate::proto::is_queue(&channel) {
            return refuse(
                reason::NOT_A_QUEUE,
                format!("{shown}: only a /queue channel's workers acknowledge deliveries"),
            );
        }
        if !publisher.may_subscribe(&channel) {
            shared.stats.denied.fetch_add(1, Relaxed);
            if let Some(n) = shared.denied_log.due(conn.peer.ip()) {
                tracing::warn!(
                    "Remote {} ({}) refused: may not subscribe to {shown} ({n} from this \
                     address since the last line)",
                    conn.peer,
                    publisher.who()
                );
            }
            return refuse(reason::DENIED, format!("may not subscribe to {shown}"));
        }
        // What it holds is counted in the memory budget like messages.
        let cost = super::subscription::cost(&channel);
        if !conn.take_budget(cost) {
            return refuse(
                reason::OVER_BUDGET,
                "the broker's memory budget (--max-memory) is spent".into(),
            );
        }
        let ids = Ids {
            local: self.last_local + 1,
            sid,
            report_loss: self.granted.loss,
        };
        // An acknowledging worker is told its ack wait (it says WORKING
        // within it for what takes longer).
        let ack_wait = acks.map(|_| shared.router.policy().acks_for(&channel).ack_wait);
        let subscribed = shared.router.subscribe_as(channel, conn, ids, acks, || {
            conn.control(encode::subscribed(sid, ack_wait));
        });
        if subscribed.is_err() {
            conn.give_back_budget(cost);
        }
        match subscribed {
            Ok(sub) => {
                self.last_local = ids.local;
                match sub.credit().filter(|_| sub.acks().is_some()) {
                    Some((credit, _)) => tracing::info!(
                        "Remote {} (protocol 2, id {sid}) subscribed to {shown}, acknowledging, \
                         credit {credit}",
                        conn.peer
                    ),
                    None => tracing::info!(
                        "Remote {} (protocol 2, id {sid}) subscribed to {shown}",
                        conn.peer
                    ),
                }
                self.subs.insert(sid, sub);
            }
            Err(_) => {
                shared.router.channel_limit_reached();
                refuse(
                    reason::MAX_CHANNELS,
                    "the broker holds --max-channels channels".into(),
                );
            }
        }
    }

    fn unsubscribe(&mut self, shared: &Shared, conn: &Conn, sid: u32) {
        let Some(sub) = self.subs.remove(&sid) else {
            shared.stats.v2_refusal(reason::UNKNOWN_SID);
            conn.control(encode::ended(
                sid,
                reason::UNKNOWN_SID,
                &format!("no subscription has id {sid}"),
            ));
            return;
        };
        conn.unhold(&sub);
        match &sub.channel.kind {
            Kind::Queue(_) => {
                // What waits in the send queue goes back to the channel now,
                // for its other workers; what the writer took is written.
                shared.router.stop_routing(&sub);
                // What it held goes back first: it was delivered before
                // what still waits in the send queue.
                let mut unsent = super::held::take_back(shared, conn, &sub);
                unsent.extend(conn.take_queued(sub.ids.local));
                let unsent = match shared.replies.get() {
                    Some(replies) => {
                        let (local, back) = sub.unwritten(unsent);
                        replies.give_back(back);
                        local
                    }
                    None => unsent,
                };
                shared.router.leave(&sub, unsent, false);
            }
            Kind::Topic(_) => shared.router.leave(&sub, Vec::new(), false),
        }
        sub.give_back_budget();
        conn.control(encode::ended(sid, reason::UNSUBSCRIBED, "unsubscribed"));
    }
}

fn publish_unanswered(conn: &Conn, unanswered: u64, answered: u64) {
    if let Some(v2) = &conn.v2 {
        v2.unanswered.store(unanswered, Relaxed);
        v2.answered.store(answered, Relaxed);
    }
}

/// What a `REFUSED` says, by its reason.
fn refusal_text(code: u8, channel: &[u8], shared: &Shared) -> String {
    let shown = crate::proto::shown(channel);
    match code {
        reason::DENIED => format!("may not publish to {shown}"),
        reason::RESERVED => format!("{shown}: names under /$aioq/ are reserved"),
        reason::EMPTY_PAYLOAD => "an empty payload is never delivered".into(),
        reason::MAX_CHANNELS => format!(
            "{shown} would be a new channel, and the broker holds --max-channels ({})",
            shared.config.max_channels
        ),
        reason::TOO_LARGE => format!(
            "a channel name of {} bytes, the limit is {}",
            channel.len(),
            shared.config.max_channel
        ),
        reason::DISK_FULL => format!(
            "{shown} is durable and its store is full (--max-disk {} bytes, or its [[channel]] \
             max-disk): publish again once workers have taken messages",
            shared.router.disk().map_or(0, |d| d.max_disk())
        ),
        other => reason::name(other).unwrap_or("refused").to_string(),
    }
}
