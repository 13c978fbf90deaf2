//! `aioq listen`: subscribe and print, reconnecting when the broker goes away.

use std::io::Write;
use std::process::ExitCode;
use std::time::SystemTime;

use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};

use crate::client::reconnect::{Link, Reconnector};
use crate::client::{Connection, Protocol, Target};
use crate::exit;

const AFTER_HELP: &str = "\
Examples:
  aioq listen --channel /topic/news
  aioq listen --channel /queue/jobs --count 10 --format json
  aioq listen --channel /topic/files --format raw > dump.bin
  aioq listen --channel /topic/a --channel /queue/b     # one connection (protocol 2)
  aioq listen --channel /queue/jobs --ack --count 1     # acknowledged once printed

With several --channel, text lines are CHANNEL<TAB>PAYLOAD and JSON lines name
their channel. Over protocol 2, messages a slow listener lost are reported on
stderr (how many, why, since when).";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per message, UTF-8 shown lossily.
    Text,
    /// The payload bytes only, nothing between messages.
    Raw,
    /// One JSON object per line: channel, size, payload (UTF-8 or base64), time.
    Json,
}

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ListenArgs {
    #[command(flatten)]
    pub target: Target,
    /// Channel to subscribe to; repeat it for several on one connection
    /// (a broker that speaks protocol 2).
    #[arg(long, visible_alias = "listen", default_value = "/topic/foo")]
    pub channel: Vec<String>,
    /// Protocol to speak: auto (2 when the broker does, else 1), 1 or 2.
    #[arg(long, value_enum, default_value_t = Protocol::Auto)]
    pub protocol: Protocol,
    /// Exit 0 after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// How each message is printed.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Exit when the connection ends instead of reconnecting (0 on end-of-stream,
    /// 1 on a broken connection, 3 when the broker cannot be reached, 5 when it
    /// turns the connection away at once).
    #[arg(long)]
    pub no_reconnect: bool,
    /// Acknowledge each /queue message once it is printed (protocol 2): a
    /// message the listener did not print (it was stopped first) goes to
    /// another worker instead of being lost.
    #[arg(long)]
    pub ack: bool,
}

enum Session {
    /// `--count` reached or interrupted: done.
    Done(ExitCode),
    /// The broker sent end-of-stream.
    EndOfStream,
    /// The connection broke.
    Broken(String),
}

pub async fn run(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let connector = args.target.connector()?;
    crate::ensure_usage!(
        args.channel.iter().all(|c| !c.is_empty()),
        "--channel cannot be empty"
    );
    let several = args.channel.len() > 1;
    crate::ensure_usage!(
        !(several && args.protocol == Protocol::V1),
        "several --channel need protocol 2 (--protocol 1 was given)"
    );
    crate::ensure_usage!(
        !(args.ack && args.protocol == Protocol::V1),
        "--ack needs protocol 2 (--protocol 1 was given)"
    );
    crate::ensure_usage!(
        !args.ack
            || args
                .channel
                .iter()
                .all(|c| crate::proto::is_queue(c.as_bytes())),
        "--ack is for /queue channels: a /topic message is not shared among workers"
    );
    if args.count == Some(0) {
        // As `head -n 0`: nothing asked for, nothing to wait for.
        return Ok(ExitCode::SUCCESS);
    }
    let target = connector.to_string();
    let role = format!("subscribed to {}", args.channel.join(", "));
    let mut link = Reconnector::new(connector, &args.channel[0], role).once(args.no_reconnect);
    if args.protocol != Protocol::V1 {
        let v1_will_do = !several && !args.ack && args.protocol == Protocol::Auto;
        let features: &[&'static str] = if args.ack {
            &[
                crate::proto::v2::feature::LOSS,
                crate::proto::v2::feature::ACKS,
            ]
        } else {
            &[crate::proto::v2::feature::LOSS]
        };
        link = link.speak_v2(features, v1_will_do);
    }
    let mut received = 0u64;
    let interrupted = crate::runtime::shutdown::signal();
    tokio::pin!(interrupted);
    loop {
        let (mut conn, v2) = tokio::select! {
            r = link.connect_link() => match r? {
                Link::V1(conn) => (conn, false),
                Link::V2(conn, _) => (conn, true),
            },
            _ = &mut interrupted => return Ok(stopped(&args, received)),
        };
        let listening = session(&args, &target, &mut conn, &mut received, v2);
        let session = tokio::select! {
            s = listening => s?,
            _ = &mut interrupted => {
                let _ = conn.send(Bytes::new()).await;
                Session::Done(stopped(&args, received))
            }
        };
        match session {
            Session::Done(code) => return Ok(code),
            Session::EndOfStream if args.no_reconnect => return Ok(ExitCode::SUCCESS),
            Session::Broken(why) if args.no_reconnect => {
                anyhow::bail!("connection to {target} broke: {why}")
            }
            Session::EndOfStream => link.lost("the broker closed the stream (end of stream)"),
            Session::Broken(why) => link.lost(&why),
        }
    }
}

/// The exit code of a listener stopped by SIGINT or SIGTERM: a signal is
/// how an endless listener ends (0); it cuts a `--count` short (130).
fn stopped(args: &ListenArgs, received: u64) -> ExitCode {
    match args.count {
        Some(n) if received < n => ExitCode::from(exit::INTERRUPTED),
        _ => ExitCode::SUCCESS,
    }
}

/// Prints what comes until the end; under protocol 2 (`v2`), subscribes to
/// every `--channel` first (ids 1, 2, ...) and says on stderr what the broker
/// says was lost.
async fn session(
    args: &ListenArgs,
    target: &str,
    conn: &mut Connection,
    received: &mut u64,
    v2: bool,
) -> anyhow::Result<Session> {
    use crate::client::v2::reason_name;
    use crate::proto::v2::{decode_broker, encode, Answer, BrokerFrame};
    if v2 {
        for (i, channel) in args.channel.iter().enumerate() {
            let sid = i as u32 + 1;
            conn.feed(if args.ack {
                encode::sub_acked(sid, 0, channel.as_bytes())
            } else {
                encode::sub(sid, channel.as_bytes())
            })
            .await?;
        }
        conn.flush().await?;
    }
    let name = |sid: u32| {
        args.channel
            .get((sid as usize).wrapping_sub(1))
            .map_or("?", String::as_str)
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // Printed and not yet acknowledged (--ack): acknowledged once flushed.
    let mut printed: Vec<u64> = Vec::new();
    loop {
        if args.count.is_some_and(|n| *received >= n) {
            out.flush()?;
            if !printed.is_empty() {
                let ids = std::mem::take(&mut printed);
                conn.send(encode::answer(Answer::Ack, false, &ids)).await?;
            }
            let _ = conn.send(Bytes::new()).await;
            return Ok(Session::Done(ExitCode::SUCCESS));
        }
        let frame = match conn.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                out.flush()?;
                return Ok(Session::Broken(e.to_string()));
            }
            None => {
                out.flush()?;
                return Ok(Session::Broken("closed without end-of-stream".into()));
            }
        };
        // Under protocol 1 every frame is a payload of the one channel.
        let frame = if v2 {
            decode_broker(frame)
        } else if frame.is_empty() {
            Ok(BrokerFrame::EndOfStream)
        } else {
            Ok(BrokerFrame::Msg {
                sid: 1,
                delivery: 0,
                attempt: 1,
                headers: None,
                payload: frame,
            })
        };
        match frame {
            Ok(BrokerFrame::Msg {
                sid,
                payload,
                delivery,
                ..
            }) => {
                print_message(&mut out, args, name(sid), &payload)?;
                *received += 1;
                if args.ack {
                    printed.push(delivery);
                }
                // Flush when no further frame is already buffered, so a burst
                // costs one write but a lone message shows up at once.
                if conn.read_buffer().len() < 4 {
                    out.flush()?;
                    if !printed.is_empty() {
                        let ids = std::mem::take(&mut printed);
                        conn.send(encode::answer(Answer::Ack, false, &ids)).await?;
                    }
                }
            }
            Ok(BrokerFrame::EndOfStream) => {
                out.flush()?;
                return Ok(Session::EndOfStream);
            }
            Ok(BrokerFrame::Lost {
                sid,
                count,
                reason,
                since_ms,
            }) => {
                out.flush()?;
                let since = std::time::UNIX_EPOCH + std::time::Duration::from_millis(since_ms);
                tracing::warn!(
                    "lost {count} message(s) on {} ({}) since {}: the broker could not send \
                     them as fast as they came",
                    name(sid),
                    reason_name(reason),
                    humantime::format_rfc3339_millis(since)
                );
            }
            Ok(BrokerFrame::Ended { sid, reason, text }) => {
                out.flush()?;
                // A subscription refused (or ended) for a reason waiting
                // cannot fix: the listener stops, as for a refused connection.
                return Err(crate::exit::Refused {
                    addr: target.to_string(),
                    why: format!("{}: {} ({text})", name(sid), reason_name(reason)),
                    lasting: true,
                }
                .into());
            }
            Ok(BrokerFrame::Ping(token)) => {
                conn.send(encode::token(crate::proto::v2::kind::PONG, token))
                    .await?;
            }
            Ok(BrokerFrame::Error { text, .. }) => {
                out.flush()?;
                return Ok(Session::Broken(format!("the broker said: {text}")));
            }
            Ok(_) => {}
            Err(e) => {
                out.flush()?;
                return Ok(Session::Broken(format!(
                    "a frame this client cannot read: {e}"
                )));
            }
        }
    }
}

/// Asked once: a terminal does not become a pipe.
fn stdout_is_terminal() -> bool {
    static TERMINAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TERMINAL.get_or_init(|| crate::runtime::output::Stream::Stdout.is_terminal())
}

fn print_message(
    out: &mut impl Write,
    args: &ListenArgs,
    channel: &str,
    payload: &[u8],
) -> std::io::Result<()> {
    // With several channels, a text line says which it came from.
    if args.format == Format::Text && args.channel.len() > 1 {
        write!(out, "{channel}\t")?;
    }
    match args.format {
        // On a terminal, a payload's control characters are shown escaped:
        // any client of the broker can publish bytes that would steer it.
        Format::Text if stdout_is_terminal() => {
            writeln!(out, "{}", crate::proto::shown(payload))
        }
        Format::Text => writeln!(out, "{}", String::from_utf8_lossy(payload)),
        Format::Raw => out.write_all(payload),
        Format::Json => {
            let (text, encoding) = match std::str::from_utf8(payload) {
                Ok(s) => (s.to_owned(), "utf8"),
                Err(_) => (
                    base64::engine::general_purpose::STANDARD.encode(payload),
                    "base64",
                ),
            };
            let line = serde_json::json!({
                "channel": channel,
                "size": payload.len(),
                "payload": text,
                "encoding": encoding,
                "received_at": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            });
            writeln!(out, "{line}")
        }
    }
}
