//! The durable store's choice, measured: aioq's hand-written log against an
//! embedded engine (redb) on the work a durable queue does. P publishers
//! each publish a 64-byte message, wait until it is on disk (fsync), then
//! settle the one before (an acknowledgement: a record in the log, a delete
//! in the engine), for D seconds; confirmed messages per second.
//!
//! - `log`: `aioq::broker::Disk`, as `serve --durable --fsync always` runs it
//!   (group commit: every publisher waiting shares one fsync).
//! - `redb`: one write transaction per publish, committed durably (what a
//!   program gets from the engine alone).
//! - `redb-batched`: one thread commits in one transaction everything the
//!   publishers handed it since its last commit (group commit built on top).
//!
//!   cargo run --release --example store_engines [SECONDS]
//!
//! The data directories are made under TMPDIR: what fsync costs there is what
//! the figures say.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;

const PAYLOAD: [u8; 64] = [b'x'; 64];
const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("messages");

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let run = Duration::from_secs(secs);
    println!("confirmed 64-byte publishes per second, each settled after (fsync on every commit), {secs} s each:");
    println!("{:>14} {:>12} {:>12}", "", "1 publisher", "16 publishers");
    for (name, f) in [
        ("log", log as fn(usize, Duration) -> f64),
        ("redb", redb_each),
        ("redb-batched", redb_batched),
    ] {
        let one = f(1, run);
        let many = f(16, run);
        println!("{name:>14} {one:>12.0} {many:>12.0}");
    }
}

fn log(publishers: usize, run: Duration) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let (disk, _) =
        aioq::broker::Disk::open(dir.path(), aioq::broker::Fsync::Always, 64 << 20, None).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let name = Bytes::from_static(b"/queue/bench");
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..publishers)
            .map(|_| {
                let (disk, done, seq, stop, name) = (
                    disk.clone(),
                    done.clone(),
                    seq.clone(),
                    stop.clone(),
                    name.clone(),
                );
                tokio::spawn(async move {
                    let mut prev = None;
                    while !stop.load(Relaxed) {
                        // Numbers are given under the channel's lock in the
                        // broker; one counter stands for it here.
                        let n = seq.fetch_add(1, Relaxed) + 1;
                        let Some((_, end)) = disk.append(&name, n, 0, &PAYLOAD, true, 0) else {
                            unreachable!("no bound of its own")
                        };
                        disk.wait_confirmed(end, true).await;
                        done.fetch_add(1, Relaxed);
                        if let Some(p) = prev.replace(n) {
                            disk.settle(&name, &[(p, PAYLOAD.len())]);
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(run).await;
        stop.store(true, Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    });
    let rate = done.load(Relaxed) as f64 / started.elapsed().as_secs_f64();
    disk.close();
    rate
}

fn redb_each(publishers: usize, run: Duration) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(redb::Database::create(dir.path().join("db")).unwrap());
    let seq = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + run;
    std::thread::scope(|s| {
        for _ in 0..publishers {
            let (db, seq, done) = (db.clone(), seq.clone(), done.clone());
            s.spawn(move || {
                let mut prev = None;
                while Instant::now() < deadline {
                    let n = seq.fetch_add(1, Relaxed) + 1;
                    let tx = db.begin_write().unwrap();
                    {
                        let mut t = tx.open_table(TABLE).unwrap();
                        t.insert(n, &PAYLOAD[..]).unwrap();
                        if let Some(p) = prev.replace(n) {
                            t.remove(p).unwrap();
                        }
                    }
                    tx.commit().unwrap();
                    done.fetch_add(1, Relaxed);
                }
            });
        }
    });
    done.load(Relaxed) as f64 / started.elapsed().as_secs_f64()
}

enum Op {
    Insert(u64, mpsc::SyncSender<()>),
    Remove(u64),
}

fn redb_batched(publishers: usize, run: Duration) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("db")).unwrap();
    let (tx, rx) = mpsc::channel::<Op>();
    let seq = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + run;
    std::thread::scope(|s| {
        s.spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut ops = vec![first];
                ops.extend(rx.try_iter());
                let w = db.begin_write().unwrap();
                {
                    let mut t = w.open_table(TABLE).unwrap();
                    for op in &ops {
                        match op {
                            Op::Insert(n, _) => {
                                t.insert(*n, &PAYLOAD[..]).unwrap();
                            }
                            Op::Remove(n) => {
                                t.remove(*n).unwrap();
                            }
                        }
                    }
                }
                w.commit().unwrap();
                for op in ops {
                    if let Op::Insert(_, ack) = op {
                        let _ = ack.send(());
                    }
                }
            }
        });
        for _ in 0..publishers {
            let (tx, seq, done) = (tx.clone(), seq.clone(), done.clone());
            s.spawn(move || {
                let mut prev = None;
                let (ack_tx, ack_rx) = mpsc::sync_channel(1);
                while Instant::now() < deadline {
                    let n = seq.fetch_add(1, Relaxed) + 1;
                    tx.send(Op::Insert(n, ack_tx.clone())).unwrap();
                    ack_rx.recv().unwrap();
                    done.fetch_add(1, Relaxed);
                    if let Some(p) = prev.replace(n) {
                        tx.send(Op::Remove(p)).unwrap();
                    }
                }
            });
        }
        drop(tx);
    });
    done.load(Relaxed) as f64 / started.elapsed().as_secs_f64()
}
