//! A deliberately non-isolating broker that speaks the protocol: it routes each
//! message by writing it to each subscriber in turn and awaiting every write,
//! as a naive design does. One stalled subscriber stalls everyone. The bench
//! must be able to tell.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

type Sink = Arc<Mutex<OwnedWriteHalf>>;

#[derive(Default)]
struct State {
    subs: HashMap<Vec<u8>, Vec<Sink>>,
    next: HashMap<Vec<u8>, usize>,
}

/// Starts the naive broker on a free port of a runtime of its own; returns the port.
pub fn start() -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            let state = Arc::new(Mutex::new(State::default()));
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                let state = state.clone();
                tokio::spawn(async move {
                    let (mut rd, wr) = stream.into_split();
                    let wr: Sink = Arc::new(Mutex::new(wr));
                    let Some(name) = read_frame(&mut rd).await else {
                        return;
                    };
                    state
                        .lock()
                        .await
                        .subs
                        .entry(name)
                        .or_default()
                        .push(wr.clone());
                    while let Some(channel) = read_frame(&mut rd).await {
                        if channel.is_empty() {
                            let _ = wr.lock().await.write_all(&0u32.to_be_bytes()).await;
                            return;
                        }
                        let Some(payload) = read_frame(&mut rd).await else {
                            return;
                        };
                        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
                        frame.extend_from_slice(&payload);
                        let targets: Vec<Sink> = {
                            let mut st = state.lock().await;
                            let subs = st.subs.get(&channel).cloned().unwrap_or_default();
                            if channel.starts_with(b"/queue") && !subs.is_empty() {
                                let n = st.next.entry(channel.clone()).or_default();
                                *n = (*n + 1) % subs.len();
                                vec![subs[*n].clone()]
                            } else {
                                subs
                            }
                        };
                        // The naive part: await every subscriber's socket in turn.
                        for t in targets {
                            let _ = t.lock().await.write_all(&frame).await;
                        }
                    }
                });
            }
        });
    });
    rx.recv().unwrap()
}

async fn read_frame(rd: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    rd.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    rd.read_exact(&mut buf).await.ok()?;
    Some(buf)
}
