//! `aioq send`: publish generated messages, one fixed message, or stdin lines,
//! buffering (boundedly) and reconnecting while the broker is away.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::client::reconnect::Backoff;
use crate::client::{self, Connection, Target};
use crate::exit;
use crate::proto::NULL_CHANNEL;
use crate::units::parse_duration;

const AFTER_HELP: &str = "\
Examples:
  aioq send --channel /queue/jobs --interval 0.5
  aioq send --channel /topic/news --message 'hello' 
  aioq send --channel /topic/bench --interval 0 --count 100000 --size 64
  tail -f app.log | aioq send --channel /topic/logs --stdin

Exit codes: 0 all sent, 1 failure, 3 broker unreachable (with --no-reconnect),
4 messages dropped because the buffer overflowed while disconnected, 130 interrupted.";

/// Frames written per flush when messages are waiting.
const BATCH: usize = 128;

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
    /// Payload size in bytes (padding the generated text); default: the text alone.
    #[arg(long, value_parser = crate::units::parse_size)]
    pub size: Option<usize>,
    /// Number of messages to send, then exit (default: forever; 1 with --message).
    #[arg(long)]
    pub count: Option<u64>,
    /// Send this text instead of generated `Msg {i} from {id}` messages.
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
    /// Exit when the connection breaks instead of reconnecting.
    #[arg(long)]
    pub no_reconnect: bool,
}

pub async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!args.channel.is_empty(), "--channel cannot be empty");
    let (tx, rx) = mpsc::channel::<Bytes>(args.buffer as usize);
    let (drop_tx, mut drop_rx) = mpsc::unbounded_channel::<u64>();
    let producer = if args.stdin {
        tokio::spawn(read_stdin(tx))
    } else {
        tokio::spawn(generate(generator(&args), tx, drop_tx))
    };
    let interrupted = crate::runtime::shutdown::signal();
    let result = tokio::select! {
        r = publish(&args, rx) => r,
        _ = interrupted => Ok(ExitCode::from(exit::INTERRUPTED)),
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
async fn generate(g: Generator, tx: mpsc::Sender<Bytes>, drops: mpsc::UnboundedSender<u64>) {
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
        } else {
            ticker.tick().await;
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(msg) {
                dropped += 1;
                let _ = drops.send(dropped);
            }
        }
        i += 1;
    }
}

/// One message per input line, as bytes (input need not be UTF-8), without its
/// line ending. Waits for buffer room rather than dropping.
async fn read_stdin(tx: mpsc::Sender<Bytes>) {
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
    }
}

/// Keeps a connection up and writes what the producer makes, in order. A batch
/// whose write failed is sent again after reconnecting.
async fn publish(args: &SendArgs, mut rx: mpsc::Receiver<Bytes>) -> anyhow::Result<ExitCode> {
    let channel = Bytes::copy_from_slice(args.channel.as_bytes());
    let mut outbox: VecDeque<Bytes> = VecDeque::new();
    let mut backoff = Backoff::default();
    let mut was_connected = false;
    loop {
        let mut conn = match client::connect(&args.target, NULL_CHANNEL).await {
            Ok(c) => c,
            Err(e) if args.no_reconnect => return Err(e),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!("{e:#}; retrying in {delay:.1?}");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        backoff.reset();
        if was_connected {
            tracing::warn!(
                "reconnected to {}; sending {} buffered message(s)",
                args.target,
                outbox.len() + rx.len()
            );
        } else {
            tracing::info!(
                "connected to {}, publishing to {}",
                args.target,
                args.channel
            );
        }
        was_connected = true;
        match session(&mut conn, &channel, &mut rx, &mut outbox).await {
            Ok(()) => {
                finish(&mut conn).await;
                return Ok(ExitCode::SUCCESS);
            }
            Err(why) if args.no_reconnect => {
                anyhow::bail!("connection to {} broke: {why}", args.target)
            }
            Err(why) => tracing::warn!("connection lost ({why}); reconnecting"),
        }
    }
}

/// Runs until the input ends (Ok) or the connection breaks (Err).
async fn session(
    conn: &mut Connection,
    channel: &Bytes,
    rx: &mut mpsc::Receiver<Bytes>,
    outbox: &mut VecDeque<Bytes>,
) -> Result<(), String> {
    loop {
        if outbox.is_empty() {
            tokio::select! {
                // The broker only writes to a publisher to say it is closing.
                frame = conn.next() => return Err(match frame {
                    Some(Ok(f)) if f.is_empty() => "the broker closed the stream".into(),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => e.to_string(),
                    None => "closed by the broker".into(),
                }),
                m = rx.recv() => match m {
                    Some(m) => outbox.push_back(m),
                    None => return Ok(()),
                },
            }
            while outbox.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => outbox.push_back(m),
                    Err(_) => break,
                }
            }
        }
        for m in outbox.iter() {
            conn.feed(channel.clone())
                .await
                .map_err(|e| e.to_string())?;
            conn.feed(m.clone()).await.map_err(|e| e.to_string())?;
        }
        conn.flush().await.map_err(|e| e.to_string())?;
        outbox.clear();
    }
}

/// Says goodbye and waits (briefly) for the broker's end-of-stream, which comes
/// after it has read, and so routed, everything sent before the goodbye.
async fn finish(conn: &mut Connection) {
    let wait = async {
        conn.send(Bytes::new()).await.context("saying goodbye")?;
        while let Some(frame) = conn.next().await {
            if frame?.is_empty() {
                break;
            }
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(5), wait).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("closing: {e:#}"),
        Err(_) => tracing::warn!("closing: no end-of-stream from the broker within 5s"),
    }
}
