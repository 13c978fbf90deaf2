//! `aioq send`: publish generated messages, one fixed message, or stdin lines,
//! buffering (boundedly) and reconnecting while the broker is away.

use std::process::ExitCode;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::client::{publisher, Protocol, Target};
use crate::exit;
use crate::units::parse_duration;

const AFTER_HELP: &str = "\
Examples:
  aioq send --channel /queue/jobs --interval 0.5
  aioq send --channel /topic/news --message 'hello' 
  aioq send --channel /topic/bench --interval 0 --count 100000 --size 64
  tail -f app.log | aioq send --channel /topic/logs --stdin

Over protocol 2 (a broker that speaks it) every publish is confirmed or refused
with a reason, and the last line says how many were routed and how many refused
and why. Over protocol 1 the broker's end-of-stream says only that it read
everything and refused none.

Exit codes: 0 all sent and confirmed by the broker (or flushed, with --no-confirm),
1 failure (messages not confirmed), 2 bad flags, 3 broker unreachable (with
--no-reconnect), 4 messages dropped because the buffer overflowed while
disconnected, 5 turned away by the broker (with --no-reconnect), 6 the broker
refused some of the messages (protocol 2: the last line says why), 130
interrupted before --count or --message was sent. SIGINT/SIGTERM: what was read
is sent and confirmed first; endless input (no --count, or --stdin) then exits 0.";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct SendArgs {
    #[command(flatten)]
    pub target: Target,
    /// Channel to publish to.
    #[arg(long, default_value = "/topic/foo")]
    pub channel: String,
    /// Time between generated messages (seconds, or 500ms); 0 sends as fast as
    /// the broker's back-pressure allows.
    #[arg(long, default_value = "1.0", value_parser = parse_duration)]
    pub interval: Duration,
    /// Payload size in bytes: the generated text padded with dots, or cut, to
    /// it; default: the text alone.
    #[arg(long, value_parser = crate::units::parse_size)]
    pub size: Option<usize>,
    /// Number of messages to send, then exit (default: forever; 1 with --message).
    #[arg(long)]
    pub count: Option<u64>,
    /// Send this text instead of generated `Msg {i} from {pid}` messages (the process id).
    #[arg(long, conflicts_with = "stdin")]
    pub message: Option<String>,
    /// Send one message per line of standard input; exit when it ends, after
    /// everything was written and the broker acknowledged the goodbye.
    #[arg(long, conflicts_with_all = ["interval", "count", "size"])]
    pub stdin: bool,
    /// Messages held while the broker is unreachable. Generated messages beyond
    /// it are dropped and counted; with --stdin, reading input pauses instead.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub buffer: u32,
    /// Exit when the connection breaks instead of reconnecting (3 when the
    /// broker cannot be reached, 5 when it turns the connection away).
    #[arg(long)]
    pub no_reconnect: bool,
    /// At the end, do not wait for the broker to confirm (with end-of-stream)
    /// that it routed everything: flush, close and exit 0. For brokers that do
    /// not answer the goodbye.
    #[arg(long, conflicts_with = "confirm")]
    pub no_confirm: bool,
    /// Wait for each message's confirm before sending the next (protocol 2;
    /// slower, and a refusal is known before the next message leaves).
    #[arg(long)]
    pub confirm: bool,
    /// Protocol to speak: auto (2 when the broker does, else 1), 1 or 2.
    #[arg(long, value_enum, default_value_t = Protocol::Auto)]
    pub protocol: Protocol,
}

pub async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let connector = args.target.connector()?;
    let target = connector.to_string();
    crate::ensure_usage!(!args.channel.is_empty(), "--channel cannot be empty");
    crate::ensure_usage!(
        args.message.as_deref() != Some(""),
        "--message cannot be empty: an empty payload means end-of-stream, and the broker \
         discards it"
    );
    if args.count == Some(0) && !args.stdin {
        // Nothing to send: a script's computed count of 0 is not a reason to
        // wait for a broker.
        tracing::info!("sent 0 message(s) to {}: --count 0", args.channel);
        return Ok(ExitCode::SUCCESS);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(args.buffer as usize);
    let (drop_tx, mut drop_rx) = mpsc::unbounded_channel::<u64>();
    // Messages handed to the publisher: what a signal before the broker was
    // ever reached leaves unsent.
    let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producer = if args.stdin {
        tokio::spawn(read_stdin(tx, produced.clone()))
    } else {
        tokio::spawn(generate(generator(&args), tx, drop_tx, produced.clone()))
    };
    let connects = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    crate::ensure_usage!(
        !(args.confirm && args.protocol == Protocol::V1),
        "--confirm needs protocol 2 (--protocol 1 was given)"
    );
    let options = publisher::Options {
        no_reconnect: args.no_reconnect,
        no_confirm: args.no_confirm,
        protocol: args.protocol,
        confirm_each: args.confirm,
        connects: Some(connects.clone()),
    };
    // The last line says what the broker said, and no more; refusals make
    // the exit code 6.
    let report = |sent: publisher::Sent| -> ExitCode {
        let channel = &args.channel;
        match &sent.v2 {
            Some(t) if t.refused_total() > 0 => {
                let said: Vec<String> = t
                    .said
                    .iter()
                    .map(|(r, text)| format!("{r}: {text}"))
                    .collect();
                tracing::error!(
                    "sent {} message(s) to {channel}: {} routed, {} (the broker said {})",
                    sent.messages,
                    t.routed,
                    t.refusals(),
                    said.join("; ")
                );
                ExitCode::from(exit::REFUSED_PUBLISH)
            }
            Some(t) => {
                tracing::info!(
                    "sent {} message(s) to {channel}: the broker confirmed all {} routed",
                    sent.messages,
                    t.routed
                );
                ExitCode::SUCCESS
            }
            None if sent.confirmed => {
                tracing::info!(
                    "sent {} message(s) to {channel}; the broker read them all and refused none \
                     (protocol 1 says no more)",
                    sent.messages
                );
                ExitCode::SUCCESS
            }
            None => {
                tracing::info!(
                    "sent {} message(s) to {channel}; not confirmed (--no-confirm)",
                    sent.messages
                );
                ExitCode::SUCCESS
            }
        }
    };
    // Endless input (generated without --count, or standard input) ends by a
    // signal: that is success once what was read is confirmed. A --count or
    // --message cut short is not.
    let endless = args.stdin || generator(&args).count.is_none();
    let publishing = publisher::run(connector, &args.channel, rx, options);
    tokio::pin!(publishing);
    let interrupted = crate::runtime::shutdown::signal();
    let result = tokio::select! {
        r = &mut publishing => r.map(report),
        _ = interrupted => {
            // Stop producing; what was produced is sent and confirmed, within
            // a bound, unless a second signal says not to wait.
            producer.abort();
            use std::sync::atomic::Ordering::Relaxed;
            if connects.load(Relaxed) == 0 {
                // Nothing to wait for: the broker was never reached.
                tracing::error!(
                    "interrupted before the broker at {} was reached: {} message(s) were never sent",
                    target,
                    produced.load(Relaxed)
                );
                return Ok(ExitCode::from(exit::INTERRUPTED));
            }
            tracing::info!("interrupted: sending what was read, then saying goodbye");
            let within = publisher::CONFIRM_WITHIN + Duration::from_secs(1);
            tokio::select! {
                r = tokio::time::timeout(within, &mut publishing) => match r {
                    Ok(Ok(sent)) => {
                        let code = report(sent);
                        if code != ExitCode::SUCCESS {
                            Ok(code)
                        } else {
                            Ok(ExitCode::from(if endless { exit::OK } else { exit::INTERRUPTED }))
                        }
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => {
                        tracing::warn!("interrupted: the broker did not confirm within {within:?}");
                        Ok(ExitCode::from(exit::INTERRUPTED))
                    }
                },
                _ = crate::runtime::shutdown::signal() => Ok(ExitCode::from(exit::INTERRUPTED)),
            }
        }
    };
    producer.abort();
    let mut dropped = 0;
    while let Ok(n) = drop_rx.try_recv() {
        dropped = dropped.max(n);
    }
    if dropped > 0 {
        tracing::error!(
            "{dropped} message(s) dropped: the buffer of {} was full while the broker was unreachable",
            args.buffer
        );
        if matches!(result, Ok(ref c) if *c == ExitCode::SUCCESS) {
            return Ok(ExitCode::from(exit::LOST));
        }
    }
    result
}

struct Generator {
    text: Option<String>,
    size: Option<usize>,
    count: Option<u64>,
    interval: Duration,
}

fn generator(args: &SendArgs) -> Generator {
    Generator {
        text: args.message.clone(),
        size: args.size,
        count: args.count.or(args.message.as_ref().map(|_| 1)),
        interval: args.interval,
    }
}

impl Generator {
    fn make(&self, i: u64) -> Bytes {
        let mut body = match &self.text {
            Some(t) => BytesMut::from(t.as_bytes()),
            None => BytesMut::from(format!("Msg {i} from {}", std::process::id()).as_bytes()),
        };
        if let Some(size) = self.size {
            body.resize(size, b'.');
        }
        body.freeze()
    }
}

/// Produces messages on a schedule. With an interval, a message that finds the
/// buffer full is dropped and counted (the schedule goes on); with interval 0 the
/// producer waits for room.
async fn generate(
    g: Generator,
    tx: mpsc::Sender<Bytes>,
    drops: mpsc::UnboundedSender<u64>,
    produced: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut ticker = tokio::time::interval(g.interval.max(Duration::from_nanos(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dropped = 0u64;
    let mut i = 0u64;
    while g.count.is_none_or(|n| i < n) {
        let msg = g.make(i);
        if g.interval.is_zero() {
            if tx.send(msg).await.is_err() {
                return;
            }
            produced.fetch_add(1, Relaxed);
        } else {
            ticker.tick().await;
            match tx.try_send(msg) {
                Ok(()) => {
                    produced.fetch_add(1, Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    let _ = drops.send(dropped);
                }
                Err(_) => return,
            }
        }
        i += 1;
    }
}

/// One message per input line, as bytes (input need not be UTF-8), without its
/// line ending. Waits for buffer room rather than dropping.
async fn read_stdin(
    tx: mpsc::Sender<Bytes>,
    produced: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let mut input = tokio::io::BufReader::new(tokio::io::stdin());
    loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("reading standard input: {e}");
                return;
            }
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if line.is_empty() {
            // An empty payload cannot be delivered (it means end of stream).
            continue;
        }
        if tx.send(Bytes::from(line)).await.is_err() {
            return;
        }
        produced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
