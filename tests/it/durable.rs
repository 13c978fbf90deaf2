//! Durable `/queue` channels (`serve --durable`): what was confirmed comes
//! back after the broker is killed with SIGKILL (never asked to stop), in
//! order, nothing that was never published, duplicates only among what
//! workers held at the kill, counted; damage on disk is set aside, a torn
//! end cut, a second broker or another format refused.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::util::v2::{self, Frame};
use crate::util::{metric, metric_reaches, poll_until, proc_status, within, Broker, Proc, Raw};

fn durable(dir: &std::path::Path, extra: &[&str]) -> Broker {
    let mut args = vec![
        "--durable",
        "/queue/",
        "--data-dir",
        dir.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Broker::spawn(&args)
}

/// A config file holding `text`, for as long as it is kept.
fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    file
}

/// [`durable`] reading a config file that holds `config` (kept with it).
fn durable_with(
    dir: &std::path::Path,
    config: &str,
    extra: &[&str],
) -> (Broker, tempfile::NamedTempFile) {
    let file = config_file(config);
    let mut args = vec!["--config", file.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    (durable(dir, &args), file)
}

/// Waits until an [`acking_worker`] has got `n` messages.
async fn wait_taken(got: &Arc<Mutex<Vec<(u64, u32)>>>, n: usize, secs: f64) {
    poll_until(secs, "the worker to have every message", || {
        let have = got.lock().unwrap().len();
        async move {
            if have >= n {
                Ok(())
            } else {
                Err(format!("{have} of {n}"))
            }
        }
    })
    .await;
}

/// SIGKILL, and the process gone.
/// Publishes `ids` to `channel` over `p` (a v2 connection granted
/// confirms), each with its id as confirm id and `payload(id)` as payload,
/// in one write; waits for the confirm of the last.
async fn publish_confirmed_run(
    p: &mut Raw,
    channel: &str,
    ids: std::ops::RangeInclusive<u64>,
    payload: impl Fn(u64) -> Vec<u8>,
) {
    let last = *ids.end();
    let mut wire = Vec::new();
    for id in ids {
        v2::put(&mut wire, &v2::publish(Some(id), channel, &payload(id)));
    }
    p.stream.write_all(&wire).await.unwrap();
    within(20.0, "the publisher's confirms", async {
        loop {
            match p.read().await.map(|f| v2::decode(&f)) {
                Some(Frame::Confirm(n)) if n == last => break,
                Some(Frame::Confirm(_)) => {}
                other => panic!("publisher: {other:?}"),
            }
        }
    })
    .await;
}

fn kill(b: &mut Broker) {
    b.child.kill().unwrap();
    b.child.wait().unwrap();
}

fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// The number in a payload `m{n}`.
fn num(payload: &[u8]) -> u64 {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.strip_prefix('m'))
        .and_then(|n| n.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("not a test payload: {payload:?}"))
}

/// An acknowledging worker that acks everything it gets until the
/// connection ends; what it got: (number, attempt), in order.
async fn acking_worker(port: u16, channel: &str, got: Arc<Mutex<Vec<(u64, u32)>>>) {
    let (mut c, _) = Raw::hello(port, &["acks"]).await;
    c.send_frame(&v2::sub_acked(1, 32, channel)).await;
    while let Some(f) = c.read().await {
        match v2::decode(&f) {
            Frame::Msg {
                delivery,
                attempt,
                payload,
                ..
            } => {
                got.lock().unwrap().push((num(&payload), attempt));
                let mut wire = Vec::new();
                v2::put(&mut wire, &v2::ack(&[delivery]));
                if c.stream.write_all(&wire).await.is_err() {
                    return;
                }
            }
            Frame::Subscribed(_) => {}
            other => panic!("worker: {other:?}"),
        }
    }
}

/// Publishes `m1`, `m2`... in confirmed batches of 50 until the connection
/// ends; the highest number published and the highest confirmed.
async fn flood(port: u16, channel: &str, confirmed: Arc<Mutex<u64>>) -> u64 {
    let (mut p, _) = Raw::hello(port, &["confirms"]).await;
    let mut next = 1u64;
    loop {
        let mut wire = Vec::new();
        for id in next..next + 50 {
            v2::put(
                &mut wire,
                &v2::publish(Some(id), channel, format!("m{id}").as_bytes()),
            );
        }
        let last = next + 49;
        if p.stream.write_all(&wire).await.is_err() {
            return last;
        }
        next = last + 1;
        loop {
            match p.read().await.map(|f| v2::decode(&f)) {
                None => return last,
                Some(Frame::Confirm(n)) => {
                    *confirmed.lock().unwrap() = n;
                    if n == last {
                        break;
                    }
                }
                Some(other) => panic!("publisher: {other:?}"),
            }
        }
    }
}

/// A small deterministic generator: the moment of each kill comes from a
/// seed, printed, so that a failure replays.
fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

async fn kill_during_a_confirmed_flood(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut b = durable(dir.path(), &[]);
    let port = b.port;
    let before = Arc::new(Mutex::new(Vec::new()));
    let worker = tokio::spawn(acking_worker(port, "/queue/jobs", before.clone()));
    let confirmed = Arc::new(Mutex::new(0));
    let publisher = tokio::spawn(flood(port, "/queue/jobs", confirmed.clone()));
    let after_ms = 150 + xorshift(seed) % 500;
    eprintln!("seed {seed}: SIGKILL {after_ms} ms into the flood");
    // Waits for a moment, not for an event: the moment is what the seed picks.
    tokio::time::sleep(Duration::from_millis(after_ms)).await;
    kill(&mut b);
    let sent = within(10.0, "the publisher to see the kill", publisher)
        .await
        .unwrap();
    within(10.0, "the worker to see the kill", worker)
        .await
        .unwrap();
    let confirmed = *confirmed.lock().unwrap();
    let before: Vec<(u64, u32)> = before.lock().unwrap().clone();
    assert!(
        confirmed > 0,
        "seed {seed}: nothing was confirmed before the kill"
    );

    let b = durable(dir.path(), &[]);
    let http = b.monitor_port();
    let after = Arc::new(Mutex::new(Vec::new()));
    let worker = tokio::spawn(acking_worker(b.port, "/queue/jobs", after.clone()));
    metric_reaches(http, "aioq_store_messages ", 20.0, |v| v == 0).await;
    let redelivered = metric(http, "aioq_store_redelivered_after_restart_total ").await;
    drop(b);
    let _ = within(10.0, "the worker to end", worker).await;
    let after: Vec<(u64, u32)> = after.lock().unwrap().clone();

    let got_before: BTreeSet<u64> = before.iter().map(|m| m.0).collect();
    let mut seen_after: BTreeMap<u64, u32> = BTreeMap::new();
    for &(n, _) in &after {
        *seen_after.entry(n).or_default() += 1;
    }
    let lost: Vec<u64> = (1..=confirmed)
        .filter(|n| !got_before.contains(n) && !seen_after.contains_key(n))
        .collect();
    assert!(
        lost.is_empty(),
        "seed {seed}: {} confirmed message(s) lost, first {:?} (confirmed up to {confirmed})",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        after.iter().all(|m| m.0 <= sent),
        "seed {seed}: a message that was never published"
    );
    assert!(
        seen_after.values().all(|&k| k == 1),
        "seed {seed}: delivered twice after the restart"
    );
    // Order: what comes back comes oldest first.
    let firsts: Vec<u64> = after.iter().filter(|m| m.1 == 1).map(|m| m.0).collect();
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "seed {seed}: out of order"
    );
    let duplicates: Vec<&(u64, u32)> = after.iter().filter(|m| got_before.contains(&m.0)).collect();
    // Duplicates only among what the worker held at the kill (its credit)
    // and acks the store had not yet written.
    assert!(
        duplicates.len() <= 200,
        "seed {seed}: {} duplicates",
        duplicates.len()
    );
    let again = after.iter().filter(|m| m.1 > 1).count() as u64;
    assert_eq!(
        redelivered, again,
        "seed {seed}: deliveries as a later attempt after the restart are counted"
    );
    // A later attempt of a message the worker never read: only one the
    // broker had written to it when killed, which the kill's reset took
    // from the worker's socket before it read it (at most its credit, 32).
    let unread_again = after
        .iter()
        .filter(|m| m.1 > 1 && !got_before.contains(&m.0))
        .count();
    assert!(
        unread_again <= 32,
        "seed {seed}: {unread_again} later attempts of messages no worker had, more than its \
         credit could have had in flight"
    );
    eprintln!(
        "seed {seed}: published {sent}, confirmed {confirmed}, acked before the kill {}, \
         after the restart {} ({} duplicate(s), {again} as a later attempt)",
        before.len(),
        after.len(),
        duplicates.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmed_publish_survives_sigkill_at_moments_picked_from_seeds() {
    let seeds: Vec<u64> = match std::env::var("AIOQ_TEST_SEED") {
        Ok(s) => vec![s.parse().expect("AIOQ_TEST_SEED is a number")],
        Err(_) => vec![0x9e37_79b9, 0x1234_5678, 0xdead_beef],
    };
    for seed in seeds {
        kill_during_a_confirmed_flood(seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_exits_0_only_once_its_messages_are_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = durable(dir.path(), &[]);
    let port = b.port.to_string();
    let mut send = Proc::spawn(
        &["send", "--stdin", "--port", &port, "--channel", "/queue/v1"],
        true,
    );
    let lines: String = (1..=2000).map(|i| format!("m{i}\n")).collect();
    {
        use std::io::Write;
        let mut stdin = send.child.stdin.take().unwrap();
        stdin.write_all(lines.as_bytes()).unwrap();
    }
    assert_eq!(send.exit_code(20.0), Some(0));
    // At once: nothing is given time to reach the disk after send's exit.
    kill(&mut b);
    let b = durable(dir.path(), &[]);
    let got = drain_from(&b, "/queue/v1", 2000).await;
    assert_eq!(
        got,
        (1..=2000).collect::<Vec<_>>(),
        "all of them, in order, once"
    );
}

/// Publishes `m1..=mN` with confirms and kills the broker: a data directory
/// holding one segment with N unsettled messages.
async fn stored(dir: &std::path::Path, n: u64) {
    let mut b = durable(dir, &[]);
    let payloads: Vec<Vec<u8>> = (1..=n).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
    v2::publish_confirmed(b.port, "/queue/a", &refs).await;
    kill(&mut b);
}

/// `n` messages of `channel` taken by `aioq listen --ack --count N`: their numbers.
async fn drain_from(b: &Broker, channel: &str, n: usize) -> Vec<u64> {
    let port = b.port.to_string();
    let count = n.to_string();
    let mut listen = Proc::spawn(
        &[
            "listen",
            "--ack",
            "--port",
            &port,
            "--channel",
            channel,
            "--count",
            &count,
        ],
        false,
    );
    assert_eq!(listen.exit_code(20.0), Some(0));
    listen
        .out
        .snapshot()
        .iter()
        .map(|l| num(l.as_bytes()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_sets_its_segment_aside_and_what_came_before_it_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    stored(dir.path(), 3).await;
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    // One bit of m2's payload: the record in the middle.
    let at = bytes.windows(2).position(|w| w == b"m2").unwrap();
    bytes[at + 1] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();

    let mut b = durable(dir.path(), &[]);
    b.log.wait_for(10.0, "is damaged at byte");
    let aside = seg.with_extension("log.damaged");
    assert!(aside.exists(), "kept for inspection at {}", aside.display());
    let http = b.monitor_port();
    assert_eq!(
        metric(http, "aioq_store_quarantined_segments_total ").await,
        1
    );
    assert_eq!(metric(http, "aioq_store_messages ").await, 1);
    kill(&mut b);
    // What was kept was written again: a third start still has it.
    let b = durable(dir.path(), &[]);
    assert_eq!(drain_from(&b, "/queue/a", 1).await, [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_cut_short_at_the_end_is_truncated_and_the_rest_served() {
    let dir = tempfile::tempdir().unwrap();
    stored(dir.path(), 3).await;
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    // Inside m3's record: a write the crash cut.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let b = durable(dir.path(), &[]);
    b.log.wait_for(10.0, "cut short by a crash were truncated");
    assert_eq!(
        metric(b.monitor_port(), "aioq_store_torn_records_total ").await,
        1
    );
    assert_eq!(drain_from(&b, "/queue/a", 2).await, [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_and_another_format_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let b = durable(dir.path(), &[]);
    let mut second = Proc::spawn(
        &[
            "serve",
            "--port",
            "0",
            "--durable",
            "/queue/",
            "--data-dir",
            d,
        ],
        false,
    );
    assert_eq!(second.exit_code(10.0), Some(1));
    let err = second.err.text();
    assert!(
        err.contains("in use by another aioq serve")
            && err.contains(&format!("pid {}", b.child.id())),
        "{err}"
    );
    drop(b);

    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("FORMAT"), "aioq store 2\n").unwrap();
    let mut newer = Proc::spawn(
        &[
            "serve",
            "--port",
            "0",
            "--durable",
            "/queue/",
            "--data-dir",
            other.path().to_str().unwrap(),
        ],
        false,
    );
    assert_eq!(newer.exit_code(10.0), Some(1));
    let err = newer.err.text();
    assert!(
        err.contains("holds store format 2; this aioq reads format 1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_message_is_in_the_dead_letter_channel_after_a_sigkill_not_in_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = durable(dir.path(), &[]);
    v2::publish_confirmed(b.port, "/queue/a", &[b"m1", b"m2"]).await;
    let (mut w, _) = Raw::hello(b.port, &["acks"]).await;
    w.send_frame(&v2::sub_acked(1, 1, "/queue/a")).await;
    assert_eq!(w.next().await, Frame::Subscribed(1));
    let Frame::Msg { delivery, .. } = w.next().await else {
        panic!("a delivery")
    };
    w.send_frame(&v2::term(&[delivery])).await;
    let http = b.monitor_port();
    metric_reaches(
        http,
        "aioq_dead_lettered_total{reason=\"term\"}",
        10.0,
        |v| v == 1,
    )
    .await;
    // The store has m2 (held by the worker now) and the dead letter.
    metric_reaches(http, "aioq_store_messages ", 10.0, |v| v == 2).await;
    // The log is one sequence: a publish confirmed after m1's settlement
    // was recorded means that settlement is on disk too. (Killed before
    // it, m1 would come back in /queue/a as well: at least once.)
    v2::publish_confirmed(b.port, "/queue/barrier", &[b"m9"]).await;
    kill(&mut b);
    let b = durable(dir.path(), &[]);
    assert_eq!(drain_from(&b, "/queue/a", 1).await, [2], "m1 left /queue/a");
    assert_eq!(drain_from(&b, "/queue/a/dead", 1).await, [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_are_deleted_once_everything_in_them_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let b = durable(dir.path(), &["--segment-size", "4KiB"]);
    let http = b.monitor_port();
    let payloads: Vec<Vec<u8>> = (1..=400).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
    v2::publish_confirmed(b.port, "/queue/a", &refs).await;
    let full = segments(dir.path()).len();
    assert!(
        full >= 3,
        "{full} segment(s) for 400 messages of 4 KiB segments"
    );
    assert_eq!(drain_from(&b, "/queue/a", 400).await.len(), 400);
    poll_until(10.0, "settled segments deleted", || async {
        {
            let v = segments(dir.path()).len();
            if v <= 2 {
                Ok(())
            } else {
                Err(format!("{v:?}"))
            }
        }
    })
    .await;
    assert!(metric(http, "aioq_store_segments_deleted_total ").await >= (full - 2) as u64);
    assert_eq!(metric(http, "aioq_store_messages ").await, 0);
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop; `None`
/// when not root (mounting needs it; CI runs as root).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if !root {
            eprintln!("not root: no tmpfs to fill, test skipped");
            return None;
        }
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs as root");
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_confirms_back_and_loses_nothing_and_room_made_lets_them_through() {
    full_disk("always").await;
}

/// The same with `--fsync interval`, where a confirm waits for a write
/// only and the connection waiting makes the write itself: a write that
/// fails there is handed back to the store's thread, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_either_when_confirms_wait_for_a_write_only() {
    full_disk("interval:1s").await;
}

async fn full_disk(fsync: &str) {
    let Some(fs) = Tmpfs::mount("192k") else {
        return;
    };
    // A memory window smaller than the backlog: most of it is read back
    // from disk, while the records after it still wait for room there.
    let flags = [
        "--segment-size",
        "32KiB",
        "--fsync",
        fsync,
        "--backlog-bytes",
        "64KiB",
    ];
    let b = durable(fs.0.path(), &flags);
    let http = b.monitor_port();
    // 400 KiB of confirmed publishes into 192 KiB of disk, no worker yet.
    let (mut p, _) = Raw::hello(b.port, &["confirms"]).await;
    let mut wire = Vec::new();
    for id in 1..=400u64 {
        v2::put(
            &mut wire,
            &v2::publish(Some(id), "/queue/full", format!("m{id:<1023}").as_bytes()),
        );
    }
    p.stream.write_all(&wire).await.unwrap();
    metric_reaches(http, "aioq_store_errors_total ", 20.0, |v| v > 0).await;
    b.log.wait_for(10.0, "cannot write segment");
    // Nothing past what is on disk is confirmed.
    let mut confirmed = 0;
    while let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(300), p.read()).await {
        match v2::decode(&f) {
            Frame::Confirm(n) => confirmed = n,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        confirmed < 400,
        "confirmed {confirmed} of 400 with the disk full"
    );
    // A confirm that waits for the disk does not stop the connection being
    // read: a later publish to a topic is delivered now, and is confirmed
    // only after every publish before it (confirms are cumulative).
    let (mut sub, _) = Raw::hello(b.port, &[]).await;
    sub.send_frame(&v2::sub(1, "/topic/beside")).await;
    assert!(matches!(sub.next().await, Frame::Subscribed(1)));
    p.send_frame(&v2::publish(Some(401), "/topic/beside", b"meanwhile"))
        .await;
    within(
        10.0,
        "the topic publish delivered while the disk is full",
        async {
            match sub.next().await {
                Frame::Msg { payload, .. } => assert_eq!(payload, b"meanwhile"),
                other => panic!("subscriber: {other:?}"),
            }
        },
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), p.read())
            .await
            .is_err(),
        "nothing is confirmed while the publishes before it wait for the disk"
    );
    // A worker takes and acknowledges them: settled segments are deleted,
    // the store writes again, and every publish is confirmed.
    let got = Arc::new(Mutex::new(Vec::new()));
    let worker = tokio::spawn(acking_worker(b.port, "/queue/full", got.clone()));
    within(30.0, "every publish confirmed once room was made", async {
        while confirmed < 401 {
            match v2::decode(&p.read().await.expect("the publisher's connection")) {
                Frame::Confirm(n) => confirmed = n,
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    b.log.wait_for(10.0, "writing again after");
    metric_reaches(http, "aioq_store_messages ", 20.0, |v| v == 0).await;
    let got: Vec<u64> = got.lock().unwrap().iter().map(|m| m.0).collect();
    assert_eq!(
        got,
        (1..=400).collect::<Vec<_>>(),
        "every one, once, in order"
    );
    drop(b);
    worker.abort();
}

/// `m{n}` padded with spaces to `size` bytes.
fn padded(n: u64, size: usize) -> Vec<u8> {
    let mut p = format!("m{n}").into_bytes();
    p.resize(size, b' ');
    p
}

/// A durable backlog ten times the broker's memory budget: publishing it
/// completes (past the window in memory it stays on disk only), the
/// broker's memory stays bounded, and after a SIGKILL and a restart it
/// drains to a worker whole and in order, read back as the worker goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_ten_times_the_memory_budget_stays_on_disk_and_drains_in_order() {
    const SIZE: usize = 16 << 10;
    const N: u64 = 5_000; // 80 MiB against --max-memory 8MiB
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--max-memory", "8MiB", "--backlog-bytes", "2MiB"];
    let mut b = durable(dir.path(), &flags);
    let (mut p, _) = Raw::hello(b.port, &["confirms"]).await;
    for first in (1..=N).step_by(100) {
        publish_confirmed_run(&mut p, "/queue/big", first..=first + 99, |id| {
            padded(id, SIZE)
        })
        .await;
    }
    let http = b.monitor_port();
    metric_reaches(http, "aioq_store_messages ", 10.0, |v| v == N).await;
    // The payloads alone are 80 MiB; the broker idles near 25 MiB.
    let bound_kib = 64 << 10;
    let hwm = proc_status(b.child.id(), "VmHWM");
    assert!(
        hwm < bound_kib,
        "publishing {N} x {SIZE} B took the broker to {hwm} KiB"
    );
    kill(&mut b);
    let b = durable(dir.path(), &flags);
    let got = drain_from(&b, "/queue/big", N as usize).await;
    assert_eq!(
        got,
        (1..=N).collect::<Vec<_>>(),
        "every message once, in order"
    );
    let hwm = proc_status(b.child.id(), "VmHWM");
    assert!(
        hwm < bound_kib,
        "recovering and draining {N} x {SIZE} B took the broker to {hwm} KiB"
    );
    metric_reaches(b.monitor_port(), "aioq_store_messages ", 10.0, |v| v == 0).await;
}

/// `--max-disk`: at the bound a protocol 2 publish to a durable channel is
/// refused with `disk_full` (counted, logged once), a protocol 1 publisher
/// is held back; a worker that takes the backlog makes room, and then both
/// go on. Nothing confirmed is lost, nothing refused arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_disk_v2_publishes_are_refused_and_v1_held_back_until_workers_make_room() {
    let dir = tempfile::tempdir().unwrap();
    let b = durable(
        dir.path(),
        &["--segment-size", "4KiB", "--max-disk", "32KiB"],
    );
    let http = b.monitor_port();
    let (mut p, _) = Raw::hello(b.port, &["confirms"]).await;
    let mut wire = Vec::new();
    for id in 1..=100u64 {
        v2::put(
            &mut wire,
            &v2::publish(Some(id), "/queue/bounded", &padded(id, 1024)),
        );
    }
    p.stream.write_all(&wire).await.unwrap();
    let (mut confirmed, mut refused) = (0, Vec::new());
    within(10.0, "every publish answered", async {
        while confirmed.max(refused.last().copied().unwrap_or(0)) < 100 {
            match v2::decode(&p.read().await.expect("the publisher's connection")) {
                Frame::Confirm(n) => confirmed = n,
                Frame::Refused { id, reason, text } => {
                    assert_eq!(reason, 14, "{text}");
                    assert!(text.contains("--max-disk"), "{text}");
                    refused.push(id);
                }
                other => panic!("publisher: {other:?}"),
            }
        }
    })
    .await;
    let accepted = 100 - refused.len() as u64;
    assert!(
        (20..=40).contains(&accepted),
        "32 KiB hold about 30 messages of 1 KiB: {accepted} accepted"
    );
    assert_eq!(
        metric(http, "aioq_messages_dropped_total{reason=\"disk_full\"}").await,
        refused.len() as u64
    );
    b.log.wait_for(10.0, "--max-disk 32768");
    let port = b.port.to_string();
    let lines = |from: u64| -> String { (from..from + 10).map(|i| format!("m{i}\n")).collect() };
    let send = |protocol: &str, from: u64| {
        let mut p = Proc::spawn(
            &[
                "send",
                "--stdin",
                "--protocol",
                protocol,
                "--port",
                &port,
                "--channel",
                "/queue/bounded",
            ],
            true,
        );
        use std::io::Write;
        let mut stdin = p.child.stdin.take().unwrap();
        stdin.write_all(lines(from).as_bytes()).unwrap();
        p
    };
    // `send` over protocol 2 says why, and exits 6.
    let mut refused_send = send("2", 2001);
    assert_eq!(refused_send.exit_code(10.0), Some(6));
    assert!(
        refused_send.err.contains("--max-disk"),
        "{}",
        refused_send.err.text()
    );
    // Protocol 1 has no words for a refusal: its publisher waits. (A
    // bounded look for something that must not happen.)
    let mut held = send("1", 1001);
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        assert!(
            held.child.try_wait().unwrap().is_none(),
            "send finished while the store was full"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let worker = tokio::spawn(acking_worker(b.port, "/queue/bounded", got.clone()));
    assert_eq!(held.exit_code(20.0), Some(0), "room made, send goes on");
    b.log.wait_for(10.0, "under --max-disk again");
    let accepted_ids: Vec<u64> = (1..=100).filter(|i| !refused.contains(i)).collect();
    let want: Vec<u64> = accepted_ids.iter().copied().chain(1001..=1010).collect();
    wait_taken(&got, want.len(), 20.0).await;
    let got: Vec<u64> = got.lock().unwrap().iter().map(|m| m.0).collect();
    assert_eq!(got, want, "what was taken, once, in order; nothing refused");
    worker.abort();
}

/// A small window (`--backlog 50`) while a publisher floods and a worker
/// takes: most messages pass through the disk-only part of the backlog and
/// are read back while newer ones are still being spilled behind them;
/// the worker gets each once, in order, with no restart involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_spilled_past_a_small_window_are_read_back_in_order_while_publishing_goes_on() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let b = durable(
        dir.path(),
        &[
            "--backlog",
            "50",
            "--fsync",
            "never",
            "--segment-size",
            "64KiB",
        ],
    );
    let got = Arc::new(Mutex::new(Vec::new()));
    let publisher = {
        let port = b.port;
        tokio::spawn(async move {
            let (mut p, _) = Raw::hello(port, &["confirms"]).await;
            for first in (1..=N).step_by(500) {
                publish_confirmed_run(&mut p, "/queue/window", first..=first + 499, |id| {
                    format!("m{id}").into_bytes()
                })
                .await;
            }
        })
    };
    // The worker joins once the backlog is well past its window.
    let http = b.monitor_port();
    metric_reaches(http, "aioq_store_messages ", 20.0, |v| v >= 2_000).await;
    let worker = tokio::spawn(acking_worker(b.port, "/queue/window", got.clone()));
    within(30.0, "the publisher confirmed", publisher)
        .await
        .unwrap();
    wait_taken(&got, N as usize, 30.0).await;
    metric_reaches(http, "aioq_store_messages ", 20.0, |v| v == 0).await;
    let got: Vec<u64> = got.lock().unwrap().iter().map(|m| m.0).collect();
    assert_eq!(got, (1..=N).collect::<Vec<_>>(), "each once, in order");
    worker.abort();
}

/// `fsync` in a `[[channel]]`: under `--fsync never`, a channel whose entry
/// says `always` is confirmed only after an fsync (its writes are synced),
/// while the others are confirmed once written and cost no fsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_entry_asks_for_fsync_always_under_a_store_that_never_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, config) = durable_with(
        dir.path(),
        "[[channel]]\nprefix = \"/queue/safe/\"\nfsync = \"always\"\n",
        &["--fsync", "never"],
    );
    let http = b.monitor_port();
    let payloads: Vec<Vec<u8>> = (1..=50).map(|i| format!("m{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
    for _ in 0..5 {
        v2::publish_confirmed(b.port, "/queue/fast/a", &refs).await;
    }
    metric_reaches(http, "aioq_store_messages ", 10.0, |v| v == 250).await;
    assert_eq!(
        metric(http, "aioq_store_fsyncs_total ").await,
        0,
        "written is confirmed: no fsync"
    );
    for _ in 0..5 {
        v2::publish_confirmed(b.port, "/queue/safe/a", &refs).await;
    }
    let fsyncs = metric(http, "aioq_store_fsyncs_total ").await;
    assert!(
        fsyncs >= 5,
        "five confirmed batches to /queue/safe/, {fsyncs} fsync(s)"
    );
    // Confirmed once written is a promise against a crash of the broker
    // (not a power loss): every one of both channels comes back, once.
    kill(&mut b);
    let conf = config.path().to_str().unwrap();
    let b = durable(dir.path(), &["--fsync", "never", "--config", conf]);
    let want: Vec<u64> = (0..5).flat_map(|_| 1..=50).collect();
    assert_eq!(drain_from(&b, "/queue/fast/a", 250).await, want);
    assert_eq!(drain_from(&b, "/queue/safe/a", 250).await, want);
    // Nothing left over: no message came back twice.
    metric_reaches(b.monitor_port(), "aioq_store_messages ", 10.0, |v| v == 0).await;
    // A bad value is refused with the entry's prefix.
    let bad = config_file("[[channel]]\nprefix = \"/queue/x/\"\nfsync = \"sometimes\"\n");
    let mut check = Proc::spawn(
        &[
            "serve",
            "--check-config",
            "--config",
            bad.path().to_str().unwrap(),
        ],
        false,
    );
    assert_eq!(check.exit_code(10.0), Some(2));
    assert!(
        check.err.text().contains("prefix \"/queue/x/\": fsync"),
        "{}",
        check.err.text()
    );
}

/// A confirm for a channel whose fsync is `always` waits for a sync that
/// covers the log up to where it looked, and records appended meanwhile for
/// other channels ask for none: under a flood to a channel confirmed once
/// written, one-at-a-time confirmed publishes to the `always` channel must
/// still each be answered (they once waited for a sync nothing asked for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_behind_records_that_ask_no_fsync_still_comes() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _config) = durable_with(
        dir.path(),
        "[[channel]]\nprefix = \"/queue/safe/\"\nfsync = \"always\"\n",
        &["--fsync", "never"],
    );
    let confirmed = Arc::new(Mutex::new(0));
    let flood = tokio::spawn(flood(b.port, "/queue/fast", confirmed));
    let (mut p, _) = Raw::hello(b.port, &["confirms"]).await;
    within(20.0, "200 publishes confirmed one by one", async {
        for id in 1..=200u64 {
            let mut wire = Vec::new();
            v2::put(
                &mut wire,
                &v2::publish(Some(id), "/queue/safe/a", format!("m{id}").as_bytes()),
            );
            p.stream.write_all(&wire).await.unwrap();
            match p.read().await.map(|f| v2::decode(&f)) {
                Some(Frame::Confirm(n)) => assert_eq!(n, id),
                other => panic!("publisher: {other:?}"),
            }
        }
    })
    .await;
    flood.abort();
}

/// `max-disk` in a `[[channel]]` bounds what one durable channel keeps
/// stored: past it its protocol 2 publishes are refused with `disk_full`
/// while another channel takes everything; a worker that takes the backlog
/// lets it take publishes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_entrys_max_disk_bounds_that_channel_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _config) = durable_with(
        dir.path(),
        "[[channel]]\nprefix = \"/queue/small/\"\nmax-disk = \"4KiB\"\n",
        &[],
    );
    let publish = |channel: &'static str, from: u64| {
        let port = b.port;
        async move {
            let (mut p, _) = Raw::hello(port, &["confirms"]).await;
            let mut wire = Vec::new();
            for id in from..from + 20 {
                v2::put(
                    &mut wire,
                    &v2::publish(Some(id), channel, &padded(id, 1024)),
                );
            }
            p.stream.write_all(&wire).await.unwrap();
            let (mut confirmed, mut refused) = (0, 0u64);
            within(10.0, "every publish answered", async {
                while confirmed.max(refused) < from + 19 {
                    match v2::decode(&p.read().await.expect("the publisher's connection")) {
                        Frame::Confirm(n) => confirmed = n,
                        Frame::Refused { id, reason, .. } => {
                            assert_eq!(reason, 14);
                            refused = id;
                        }
                        other => panic!("publisher: {other:?}"),
                    }
                }
            })
            .await;
            (from..from + 20).filter(|i| *i <= confirmed).count()
        }
    };
    let small = publish("/queue/small/a", 1).await;
    assert!(
        (3..20).contains(&small),
        "4 KiB hold about 4: {small} taken"
    );
    assert_eq!(
        publish("/queue/other", 1).await,
        20,
        "another channel is not bound"
    );
    let got = Arc::new(Mutex::new(Vec::new()));
    let worker = tokio::spawn(acking_worker(b.port, "/queue/small/a", got.clone()));
    metric_reaches(b.monitor_port(), "aioq_store_messages ", 10.0, |v| v == 20).await;
    assert!(
        publish("/queue/small/a", 101).await >= 3,
        "room again once taken"
    );
    worker.abort();
}

/// Store sizes that cannot work are refused before the broker starts, with
/// the flag named: exit 2.
#[test]
fn store_sizes_that_cannot_work_are_refused_with_the_flag_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for (flags, says) in [
        (
            &["--segment-size", "2GiB"][..],
            "--segment-size must be at most 1GiB",
        ),
        (
            &["--segment-size", "64KiB", "--max-disk", "100KiB"][..],
            "--max-disk must hold at least two segments",
        ),
    ] {
        let mut args = vec![
            "serve",
            "--port",
            "0",
            "--durable",
            "/queue/",
            "--data-dir",
            data,
        ];
        args.extend_from_slice(flags);
        let mut serve = Proc::spawn(&args, false);
        assert_eq!(serve.exit_code(10.0), Some(2), "{flags:?}");
        assert!(serve.err.contains(says), "{flags:?}: {}", serve.err.text());
    }
}

/// A backlog on disk longer than the index a channel keeps in memory (65,536
/// places): the rest of the index goes to a scratch file in the data
/// directory and comes back in order as workers drain, and likewise for a
/// backlog recovered after a SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_longer_than_the_index_in_memory_drains_whole_and_in_order() {
    const N: u64 = 150_000;
    const FIRST: u64 = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let mut b = durable(dir.path(), &[]);
    let (mut p, _) = Raw::hello(b.port, &["confirms"]).await;
    for first in (1..=N).step_by(10_000) {
        publish_confirmed_run(&mut p, "/queue/long", first..=first + 9_999, |id| {
            format!("m{id}").into_bytes()
        })
        .await;
    }
    let got = drain_from(&b, "/queue/long", FIRST as usize).await;
    assert_eq!(got, (1..=FIRST).collect::<Vec<_>>(), "the first, in order");
    kill(&mut b);
    let b = durable(dir.path(), &[]);
    let got = drain_from(&b, "/queue/long", (N - FIRST) as usize).await;
    assert!(
        got == (FIRST + 1..=N).collect::<Vec<_>>(),
        "the rest once and in order after the restart: {} messages, first {:?}, last {:?}",
        got.len(),
        got.first(),
        got.last()
    );
}
