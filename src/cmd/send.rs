//! `aioq send`: publish generated messages, one fixed message, or stdin lines,
//! buffering (boundedly) and reconnecting while the broker is away.

use std::process::ExitCode;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::client::{publisher, Target};
use crate::exit;
use crate::units::parse_duration;

const AFTER_HELP: &str = "\
Examples:
  aioq send --channel /queue/jobs --interval 0.5
  aioq send --channel /topic/news --message 'hello' 
  aioq send --channel /topic/bench --interval 0 --count 100000 --size 64
  tail -f app.log | aioq send --channel /topic/logs --stdin

Exit codes: 0 all sent and confirmed by the broker (or flushed, with --no-confirm),
1 failure (messages not confirmed), 3 broker unreachable (with --no-reconnect),
4 messages dropped because the buffer overflowed while disconnected, 5 turned away
by the broker (with --no-reconnect), 130 interrupted before --count or --message
was sent. SIGINT/SIGTERM: what was read is sent and confirmed first; endless input
(no --count, or --stdin) then exits 0.";

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
    /// Exit when the connection breaks instead of reconnecting (3 when the
    /// broker cannot be reached, 5 when it turns the connection away).
    #[arg(long)]
    pub no_reconnect: bool,
    /// At the end, do not wait for the broker to confirm (with end-of-stream)
    /// that it routed everything: flush, close and exit 0. For brokers that do
    /// not answer the goodbye.
    #[arg(long)]
    pub no_confirm: bool,
}

pub async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let connector = args.target.connector()?;
    crate::ensure_usage!(!args.channel.is_empty(), "--channel cannot be empty");
    crate::ensure_usage!(
        args.message.as_deref() != Some(""),
        "--message cannot be empty: an empty payload means end-of-stream, and the broker \
         discards it"
    );
    let (tx, rx) = mpsc::channel::<Bytes>(args.buffer as usize);
    let (drop_tx, mut drop_rx) = mpsc::unbounded_channel::<u64>();
    let producer = if args.stdin {
        tokio::spawn(read_stdin(tx))
    } else {
        tokio::spawn(generate(generator(&args), tx, drop_tx))
    };
    let options = publisher::Options {
        no_reconnect: args.no_reconnect,
        no_confirm: args.no_confirm,
        ..Default::default()
    };
    let report = |sent: publisher::Sent| {
        let confirmed = if sent.confirmed {
            "the broker confirmed them"
        } else {
            "not confirmed (--no-confirm)"
        };
        tracing::info!(
            "sent {} message(s) to {}; {confirmed}",
            sent.messages,
            args.channel
        );
    };
    // Endless input (generated without --count, or standard input) ends by a
    // signal: that is success once what was read is confirmed. A --count or
    // --message cut short is not.
    let endless = args.stdin || generator(&args).count.is_none();
    let publishing = publisher::run(connector, &args.channel, rx, options);
    tokio::pin!(publishing);
    let interrupted = crate::runtime::shutdown::signal();
    let result = tokio::select! {
        r = &mut publishing => r.map(|sent| {
            report(sent);
            ExitCode::SUCCESS
        }),
        _ = interrupted => {
            // Stop producing; what was produced is sent and confirmed, within
            // a bound, unless a second signal says not to wait.
            producer.abort();
            tracing::info!("interrupted: sending what was read, then saying goodbye");
            let within = publisher::CONFIRM_WITHIN + Duration::from_secs(1);
            tokio::select! {
                r = tokio::time::timeout(within, &mut publishing) => match r {
                    Ok(Ok(sent)) => {
                        report(sent);
                        Ok(ExitCode::from(if endless { exit::OK } else { exit::INTERRUPTED }))
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
