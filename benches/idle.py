#!/usr/bin/env python3
"""What an idle subscriber costs a broker: starts the broker (aioq serve,
release build; or nats-server, redis-server), opens N connections subscribed
to one channel (or, with --own-channels, each to its own) that then stay
silent, and reads the broker's resident memory (VmRSS) before and with them.
Prints KiB per connection for each broker, measured one after the other.

    benches/idle.py [N] [--own-channels] [--brokers aioq,nats,redis]
    AIOQ=/path/to/aioq benches/idle.py      # that binary, not a fresh build
"""
import json, os, resource, socket, struct, subprocess, sys, time, urllib.request

args = [a for a in sys.argv[1:] if not a.startswith("--")]
own = "--own-channels" in sys.argv
brokers = "aioq"
for i, a in enumerate(sys.argv):
    if a == "--brokers":
        brokers = sys.argv[i + 1]
        args = [x for x in args if x != brokers]
n = int(args[0]) if args else 10_000
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def wait_port(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def channel(i):
    return f"idle-{i}" if own else "idle"


def measure(kind):
    port = free_port()
    if kind == "aioq":
        binary = os.environ.get("AIOQ")
        if not binary:
            binary = os.path.join(root, "target", "release", "aioq")
            subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=root, check=True)
        http = free_port()
        cmd = [binary, "serve", "--port", str(port), "-q", "--max-connections", str(n + 100),
               "--http", f"127.0.0.1:{http}"]
    elif kind == "nats":
        cmd = ["nats-server", "-a", "127.0.0.1", "-p", str(port)]
    else:
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--maxclients", str(n + 100)]
    broker = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        time.sleep(0.3)
        before = rss_kib(broker.pid)
        socks = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            if kind == "aioq":
                name = f"/topic/{channel(i)}".encode()
                s.sendall(struct.pack(">I", len(name)) + name)
            elif kind == "nats":
                s.recv(4096)  # INFO
                s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB ' + channel(i).encode() + b" 1\r\n")
            else:
                c = channel(i).encode()
                s.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(c), c))
            socks.append(s)
        # Every subscription confirmed by a round trip on the last
        # connection (aioq: the monitoring endpoint's connection count, so
        # that no message gives every writer a buffer).
        last = socks[-1]
        last.settimeout(10)
        if kind == "aioq":
            deadline = time.time() + 60
            while json.load(urllib.request.urlopen(f"http://127.0.0.1:{http}/api/server"))["open_connections"] < n:
                assert time.time() < deadline
                time.sleep(0.1)
        elif kind == "nats":
            last.sendall(b"PING\r\n")
            got = b""
            while b"PONG" not in got:
                got += last.recv(4096)
        else:
            got = b""
            while b":1\r\n" not in got:
                got += last.recv(4096)
        time.sleep(1.0)
        after = rss_kib(broker.pid)
        print(f"{kind:5} {n} idle subscribers {'each on its own channel' if own else 'on one channel'}: "
              f"RSS {before} KiB -> {after} KiB, {(after - before) / n:.1f} KiB per connection", flush=True)
        for s in socks:
            s.close()
    finally:
        broker.kill()
        broker.wait()


for kind in brokers.split(","):
    measure(kind)
