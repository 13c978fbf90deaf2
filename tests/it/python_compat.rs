//! A client written in another language, straight from PROTOCOL.md (Python
//! asyncio with `readexactly`), works unchanged against `aioq serve`.

use std::process::Command;

use crate::util::Broker;

const CLIENT: &str = r#"
import asyncio, struct, sys

async def frame(w, data):
    w.write(struct.pack(">I", len(data)) + data)
    await w.drain()

async def read(r):
    (n,) = struct.unpack(">I", await r.readexactly(4))
    return await r.readexactly(n)

async def main(port):
    sr, sw = await asyncio.open_connection("127.0.0.1", port)
    await frame(sw, b"/topic/py")
    qr, qw = await asyncio.open_connection("127.0.0.1", port)
    await frame(qw, b"/queue/py")
    pr, pw = await asyncio.open_connection("127.0.0.1", port)
    await frame(pw, b"/null")
    # Publish until the subscription is in place (subscribe is asynchronous).
    while True:
        await frame(pw, b"/topic/py"); await frame(pw, b"ping")
        try:
            got = await asyncio.wait_for(read(sr), 0.2)
            break
        except asyncio.TimeoutError:
            pass
    assert got == b"ping", got
    for i in range(3):
        await frame(pw, b"/queue/py"); await frame(pw, b"job %d" % i)
    jobs = [await read(qr) for _ in range(3)]
    assert jobs == [b"job 0", b"job 1", b"job 2"], jobs
    await frame(qw, b"")                      # goodbye
    assert await read(qr) == b""              # end of stream
    assert await qr.read() == b""             # then EOF
    print("ok")

asyncio.run(asyncio.wait_for(main(int(sys.argv[1])), 20))
"#;

#[test]
fn python_asyncio_client_works_unchanged() {
    let broker = Broker::spawn(&[]);
    let out = Command::new("python3")
        .args(["-c", CLIENT, &broker.port.to_string()])
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

/// A protocol v2 client in Python asyncio, written from PROTOCOL.md's
/// version 2 section alone: three subscriptions on one connection, publishes
/// with confirms, a refusal with its reason, and a loss notice whose count is
/// the broker's own drop counter for the connection.
const CLIENT_V2: &str = r#"
import asyncio, json, socket, struct, sys, urllib.request

async def frame(w, data):
    w.write(struct.pack(">I", len(data)) + data)
    await w.drain()

async def read(r):
    (n,) = struct.unpack(">I", await r.readexactly(4))
    return await r.readexactly(n)

def sub(sid, channel):
    return b"\x02" + struct.pack(">IB", sid, 0) + channel

def pub(channel, payload, confirm=None):
    head = b"\x04" + (bytes([1]) + struct.pack(">Q", confirm) if confirm else bytes([0]))
    return head + struct.pack(">H", len(channel)) + channel + payload

def decode(f):
    t, b = f[0], f[1:]
    if t == 0x10:
        sid, delivery, attempt, flags = struct.unpack(">IQIB", b[:17])
        return ("MSG", sid, b[17:])
    if t == 0x11: return ("SUBSCRIBED", struct.unpack(">I", b)[0])
    if t == 0x12: return ("ENDED", struct.unpack(">I", b[:4])[0], b[4], b[5:].decode())
    if t == 0x13: return ("CONFIRM", struct.unpack(">Q", b)[0])
    if t == 0x14: return ("REFUSED", struct.unpack(">Q", b[:8])[0], b[8], b[9:].decode())
    if t == 0x15:
        sid, count, reason, since = struct.unpack(">IQBQ", b)
        return ("LOST", sid, count, reason)
    if t == 0x06: return ("PONG", struct.unpack(">Q", b)[0])
    raise AssertionError("unexpected frame %r" % f)

async def hello(r, w, features):
    name = b"/$aioq/hello/py1"
    await frame(w, name); await frame(w, name)
    await frame(w, json.dumps({"protocol": 2, "client": "py", "features": features}).encode())
    h = await read(r)
    assert h[0] == 0x01, h
    return json.loads(h[1:])

async def main(port, http):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port)); s.setblocking(False)
    r, w = await asyncio.open_connection(sock=s)
    h = await hello(r, w, ["confirms", "loss"])
    assert h["protocol"] == 2 and "confirms" in h["features"] and "loss" in h["features"], h
    for sid, ch in [(1, b"/topic/py-a"), (2, b"/queue/py-b"), (3, b"/topic/py-flood")]:
        await frame(w, sub(sid, ch))
    assert [decode(await read(r)) for _ in range(3)] == [("SUBSCRIBED", 1), ("SUBSCRIBED", 2), ("SUBSCRIBED", 3)]
    await frame(w, pub(b"/topic/py-a", b"a", 1))
    await frame(w, pub(b"/queue/py-b", b"b", 2))
    await frame(w, pub(b"/topic/py-a", b"", 3))
    await frame(w, b"\x05" + struct.pack(">Q", 7))
    seen = []
    while ("PONG", 7) not in seen:
        seen.append(decode(await read(r)))
    assert ("MSG", 1, b"a") in seen and ("MSG", 2, b"b") in seen, seen
    refused = [f for f in seen if f[0] == "REFUSED"]
    assert len(refused) == 1 and refused[0][1:3] == (3, 10), seen
    confirms = [f[1] for f in seen if f[0] == "CONFIRM"]
    assert confirms and max(confirms) >= 2, seen
    assert seen.index(refused[0]) < max(i for i, f in enumerate(seen) if f[0] == "CONFIRM" and f[1] >= 3) if any(f[0] == "CONFIRM" and f[1] >= 3 for f in seen) else True
    # A flood from a protocol 1 publisher while this connection reads nothing.
    pr, pw = await asyncio.open_connection("127.0.0.1", port)
    await frame(pw, b"/null")
    for i in range(3000):
        pw.write(struct.pack(">I", 15) + b"/topic/py-flood" + struct.pack(">I", 1000) + b"x" * 1000)
    await pw.drain()
    await frame(pw, b"")
    assert await read(pr) == b""
    conns = json.load(urllib.request.urlopen("http://127.0.0.1:%d/api/connections" % http))
    mine = [c for c in conns["connections"] if c["protocol"] == 2]
    assert len(mine) == 1, conns
    # Its own refused publish (the empty payload) is counted too, as
    # empty_payload: what LOST reports is what it lost as a subscriber.
    dropped = mine[0]["dropped_by_reason"]["queue_full"]
    assert dropped > 0, mine
    delivered = lost = 0
    while delivered + lost < 3000:
        f = decode(await read(r))
        if f[0] == "MSG":
            assert f[1] == 3, f
            delivered += 1
        elif f[0] == "LOST":
            assert f[1] == 3 and f[3] == 11, f
            lost += f[2]
    assert lost == dropped, (lost, dropped)
    await frame(w, b"")
    assert await read(r) == b""
    print("ok", lost)

asyncio.run(asyncio.wait_for(main(int(sys.argv[1]), int(sys.argv[2])), 30))
"#;

#[test]
fn a_python_v2_client_from_protocol_md_subscribes_publishes_and_hears_refusals_and_losses() {
    let broker = Broker::spawn(&["--send-queue", "16", "--http", "127.0.0.1:0"]);
    let http: u16 = broker.monitor_port();
    let out = Command::new("python3")
        .args(["-c", CLIENT_V2, &broker.port.to_string(), &http.to_string()])
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "python v2 client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok "));
}

/// A protocol v2 worker in Python asyncio, written from PROTOCOL.md's
/// "Acknowledgements" alone: it acknowledges one job, naks one (seen again,
/// attempt 2), ends one with TERM (read back from the dead-letter channel,
/// with its reason), and hears NOT_HELD for an id it never held.
const WORKER_V2: &str = r#"
import asyncio, json, struct, sys

async def frame(w, data):
    w.write(struct.pack(">I", len(data)) + data)
    await w.drain()

async def read(r):
    (n,) = struct.unpack(">I", await r.readexactly(4))
    return await r.readexactly(n)

def ids(*xs):
    return b"".join(struct.pack(">Q", x) for x in xs)

def decode(f):
    t, b = f[0], f[1:]
    if t == 0x10:
        sid, delivery, attempt, flags = struct.unpack(">IQIB", b[:17])
        body = b[17:]
        headers = {}
        if flags & 0x02:
            count, at = body[0], 1
            for _ in range(count):
                k = body[at + 1:at + 1 + body[at]]; at += 1 + body[at]
                (vl,) = struct.unpack(">H", body[at:at + 2]); headers[k.decode()] = body[at + 2:at + 2 + vl].decode(); at += 2 + vl
            body = body[at:]
        return ("MSG", sid, delivery, attempt, body, headers)
    if t == 0x11: return ("SUBSCRIBED", struct.unpack(">I", b[:4])[0], len(b) == 8 and struct.unpack(">I", b[4:8])[0])
    if t == 0x13: return ("CONFIRM", struct.unpack(">Q", b)[0])
    if t == 0x17: return ("NOT_HELD",) + struct.unpack(">IQ", b)
    if t == 0x06: return ("PONG", struct.unpack(">Q", b)[0])
    raise AssertionError("unexpected frame %r" % f)

async def connect(port, features):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    name = b"/$aioq/hello/pyw"
    await frame(w, name); await frame(w, name)
    await frame(w, json.dumps({"protocol": 2, "features": features}).encode())
    h = await read(r)
    assert h[0] == 0x01 and set(features) <= set(json.loads(h[1:])["features"]), h
    return r, w

async def main(port):
    r, w = await connect(port, ["acks", "confirms", "headers"])
    # SUB with flag 0x01 and a credit of 3.
    await frame(w, b"\x02" + struct.pack(">IBI", 1, 1, 3) + b"/queue/py-jobs")
    kind, sid, wait = decode(await read(r))
    assert (kind, sid) == ("SUBSCRIBED", 1) and wait == 30000, (kind, sid, wait)
    await frame(w, b"\x02" + struct.pack(">IB", 2, 0) + b"/queue/py-jobs/dead")
    assert decode(await read(r))[:2] == ("SUBSCRIBED", 2)
    for i, job in enumerate([b"good", b"retry", b"poison"]):
        ch = b"/queue/py-jobs"
        await frame(w, b"\x04\x01" + struct.pack(">QH", i + 1, len(ch)) + ch + job)
    got = {}
    while len(got) < 3:
        f = decode(await read(r))
        if f[0] == "MSG": got[f[4]] = f
    assert all(f[3] == 1 for f in got.values()), got
    await frame(w, b"\x07\x00" + ids(got[b"good"][2]))            # ACK
    await frame(w, b"\x08" + struct.pack(">I", 0) + ids(got[b"retry"][2]))  # NAK, no delay
    await frame(w, b"\x0a" + ids(got[b"poison"][2]))               # TERM
    await frame(w, b"\x07\x00" + ids(999999))                      # never held
    seen = []
    while len([f for f in seen if f[0] == "MSG"]) < 2 or not any(f[0] == "NOT_HELD" for f in seen):
        f = decode(await read(r))
        if f[0] != "CONFIRM": seen.append(f)
    again = [f for f in seen if f[0] == "MSG" and f[1] == 1]
    assert len(again) == 1 and again[0][4] == b"retry" and again[0][3] == 2, seen
    dead = [f for f in seen if f[0] == "MSG" and f[1] == 2]
    assert len(dead) == 1 and dead[0][4] == b"poison", seen
    assert dead[0][5]["aioq-reason"] == "term" and dead[0][5]["aioq-channel"] == "/queue/py-jobs", dead
    assert ("NOT_HELD", 1, 999999) in seen, seen
    await frame(w, b"\x07\x01" + ids(again[0][2]))                 # ACK up to
    await frame(w, b"\x05" + struct.pack(">Q", 1))
    while decode(await read(r)) != ("PONG", 1): pass
    await frame(w, b"")
    while await read(r) != b"": pass
    print("ok")

asyncio.run(asyncio.wait_for(main(int(sys.argv[1])), 30))
"#;

#[test]
fn a_python_v2_worker_from_protocol_md_acks_naks_and_terms() {
    let broker = Broker::spawn(&[]);
    let out = Command::new("python3")
        .args(["-c", WORKER_V2, &broker.port.to_string()])
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "python v2 worker failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
