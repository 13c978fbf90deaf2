//! `aioq requeue --from DEAD --to CHANNEL`: puts dead letters (or any
//! `/queue` channel's messages) back on a channel. Each message is taken as
//! an acknowledging worker would, published to `--to` with a confirm, and
//! acknowledged only once the broker confirmed it: a requeue cut short moves
//! no message twice and loses none.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};

use crate::client::reconnect::{Link, Reconnector};
use crate::client::Target;
use crate::exit;
use crate::proto::v2::{decode_broker, encode, feature, Answer, BrokerFrame};

const AFTER_HELP: &str = "\
Examples:
  aioq requeue --from /queue/jobs/dead --to /queue/jobs
  aioq requeue --from /queue/jobs/dead --to /queue/jobs --count 10

A message's own headers go with it; those the broker added when it
dead-lettered it (aioq-*) do not. Without --count, requeue moves what the
channel holds and stops once nothing has come for --idle. Exit 0 when every
message taken was confirmed where it went; 6 when the broker refused some (they
stay where they were).";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct RequeueArgs {
    #[command(flatten)]
    pub target: Target,
    /// The /queue channel to take messages from (a dead-letter channel).
    #[arg(long)]
    pub from: String,
    /// The channel to put them on.
    #[arg(long)]
    pub to: String,
    /// Move at most this many.
    #[arg(long)]
    pub count: Option<u64>,
    /// Without --count: stop once nothing has come for this long.
    #[arg(long, default_value = "500ms", value_parser = crate::units::parse_duration)]
    pub idle: Duration,
}

/// At most this many messages taken and not yet confirmed where they went.
const CREDIT: u32 = 256;

pub async fn run(args: RequeueArgs) -> anyhow::Result<ExitCode> {
    crate::ensure_usage!(
        crate::proto::is_queue(args.from.as_bytes()),
        "--from must be a /queue channel (got {:?})",
        args.from
    );
    crate::ensure_usage!(!args.to.is_empty(), "--to cannot be empty");
    crate::ensure_usage!(args.from != args.to, "--from and --to are the same channel");
    let connector = args.target.connector()?;
    let role = format!("moving {} to {}", args.from, args.to);
    let mut link = Reconnector::new(connector, &args.from, role)
        .once(true)
        .speak_v2(&[feature::ACKS, feature::CONFIRMS, feature::HEADERS], false);
    let mut conn = match link.connect_link().await? {
        Link::V2(conn, hello) => {
            if !hello.features.iter().any(|f| f == feature::ACKS) {
                anyhow::bail!("the broker does not grant acknowledgements (it is in a cluster)");
            }
            conn
        }
        Link::V1(_) => anyhow::bail!("the broker speaks protocol 1 only: requeue needs 2"),
    };
    let credit = args
        .count
        .map_or(CREDIT, |n| n.min(u64::from(CREDIT)) as u32);
    conn.send(encode::sub_acked(1, credit.max(1), args.from.as_bytes()))
        .await?;
    // Confirm id -> the delivery it moves.
    let mut moving: std::collections::BTreeMap<u64, u64> = Default::default();
    let (mut taken, mut moved, mut refused) = (0u64, 0u64, 0u64);
    let mut next_id = 0u64;
    let mut refusal = String::new();
    loop {
        let all_taken = args.count.is_some_and(|n| taken >= n);
        if all_taken && moving.is_empty() {
            break;
        }
        // Answers are prompt; the idle wait is for messages to take.
        let wait = if all_taken || !moving.is_empty() {
            Duration::from_secs(30)
        } else {
            args.idle
        };
        let frame = match tokio::time::timeout(wait, conn.next()).await {
            Err(_) if moving.is_empty() => break,
            Err(_) => anyhow::bail!("the broker did not confirm {} publish(es)", moving.len()),
            Ok(Some(Ok(f))) => f,
            Ok(_) => anyhow::bail!(
                "the connection ended with {} message(s) unconfirmed: they stay on {}",
                moving.len(),
                args.from
            ),
        };
        match decode_broker(frame)? {
            BrokerFrame::Msg {
                delivery,
                headers,
                payload,
                ..
            } => {
                if all_taken {
                    // Past --count: left to the broker (given back at the goodbye).
                    continue;
                }
                taken += 1;
                next_id += 1;
                let kept = headers.as_deref().and_then(without_ours);
                conn.send(encode::publish(
                    Some(next_id),
                    kept.as_deref(),
                    args.to.as_bytes(),
                    &payload,
                ))
                .await?;
                moving.insert(next_id, delivery);
            }
            BrokerFrame::Confirm(up_to) => {
                let rest = moving.split_off(&(up_to + 1));
                let done: Vec<u64> = std::mem::replace(&mut moving, rest).into_values().collect();
                moved += done.len() as u64;
                if !done.is_empty() {
                    conn.send(encode::answer(Answer::Ack, false, &done)).await?;
                }
            }
            BrokerFrame::Refused { id, reason, text } => {
                if let Some(delivery) = moving.remove(&id) {
                    refused += 1;
                    refusal = format!("{}: {text}", crate::client::v2::reason_name(reason));
                    // Back where it was, for later.
                    conn.send(encode::answer(Answer::Nak(0), false, &[delivery]))
                        .await?;
                }
            }
            BrokerFrame::Ended { reason, text, .. } => {
                return Err(exit::Refused {
                    addr: link.connector().to_string(),
                    why: format!(
                        "{}: {} ({text})",
                        args.from,
                        crate::client::v2::reason_name(reason)
                    ),
                    lasting: true,
                }
                .into());
            }
            BrokerFrame::EndOfStream => break,
            _ => {}
        }
    }
    let _ = conn.send(Bytes::new()).await;
    while let Ok(Some(Ok(f))) = tokio::time::timeout(Duration::from_secs(5), conn.next()).await {
        if f.is_empty() {
            break;
        }
    }
    if refused > 0 {
        tracing::error!(
            "moved {moved} message(s) from {} to {}; {refused} refused ({refusal}), left on {}",
            args.from,
            args.to,
            args.from
        );
        return Ok(ExitCode::from(exit::REFUSED_PUBLISH));
    }
    tracing::info!("moved {moved} message(s) from {} to {}", args.from, args.to);
    Ok(ExitCode::SUCCESS)
}

/// A header block without the `aioq-*` entries the broker adds to a dead
/// letter; `None` when nothing else is left.
fn without_ours(block: &[u8]) -> Option<Vec<u8>> {
    let (&count, mut rest) = block.split_first()?;
    let mut kept = Vec::new();
    let mut n = 0u8;
    for _ in 0..count {
        let (&klen, r) = rest.split_first()?;
        let klen = usize::from(klen);
        let key = r.get(..klen)?;
        let vlen = usize::from(u16::from_be_bytes([*r.get(klen)?, *r.get(klen + 1)?]));
        let whole = 1 + klen + 2 + vlen;
        let entry = rest.get(..whole)?;
        if !key.starts_with(b"aioq-") {
            kept.extend_from_slice(entry);
            n += 1;
        }
        rest = &rest[whole..];
    }
    (n > 0).then(|| {
        let mut b = vec![n];
        b.extend_from_slice(&kept);
        b
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brokers_own_headers_are_left_out() {
        let block = crate::proto::v2::header_block(&[
            ("aioq-reason", b"term"),
            ("trace", b"abc"),
            ("aioq-attempts", b"3"),
        ])
        .unwrap();
        let kept = without_ours(&block).unwrap();
        assert_eq!(
            Bytes::from(kept),
            crate::proto::v2::header_block(&[("trace", b"abc")]).unwrap()
        );
        let ours = crate::proto::v2::header_block(&[("aioq-reason", b"term")]).unwrap();
        assert_eq!(without_ours(&ours), None);
    }
}
