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
