#!/usr/bin/env python3
"""What an idle subscriber costs the broker: opens N connections to an
`aioq serve` (started here, release build), subscribed to one /topic channel
(or, with --own-channels, each to its own) and then silent, and reads the
broker's resident memory (VmRSS) before and with them. Prints KiB per
connection.

    benches/idle.py [N] [--own-channels]     # default 10,000 on one channel
"""
import json, os, resource, socket, struct, subprocess, sys, time, urllib.request

args = [a for a in sys.argv[1:] if not a.startswith("--")]
own = "--own-channels" in sys.argv
n = int(args[0]) if args else 10_000
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
binary = os.path.join(root, "target", "release", "aioq")
subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=root, check=True)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
probe = socket.socket(); probe.bind(("127.0.0.1", 0)); http = probe.getsockname()[1]; probe.close()
broker = subprocess.Popen([binary, "serve", "--port", "0", "-q", "--max-connections", str(n + 100),
                           "--http", f"127.0.0.1:{http}"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    port = int(broker.stdout.readline().rsplit(":", 1)[1])

    def rss_kib():
        for line in open(f"/proc/{broker.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    before = rss_kib()
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        name = (f"/topic/idle-{i}" if own else "/topic/idle").encode()
        s.sendall(struct.pack(">I", len(name)) + name)
        socks.append(s)
    # Every connection in place, from the monitoring endpoint's cheapest
    # figure (no message is sent: writing one would give every writer a
    # buffer), then a second for the last subscribe frames to be read.
    deadline = time.time() + 60
    while True:
        server = json.load(urllib.request.urlopen(f"http://127.0.0.1:{http}/api/server"))
        if server["open_connections"] >= n:
            break
        assert time.time() < deadline, f"only {server['open_connections']} of {n} connected"
        time.sleep(0.1)
    time.sleep(1.0)
    after = rss_kib()
    where = "each on its own channel" if own else "on one channel"
    print(f"{n} idle subscribers {where}: broker RSS {before} KiB -> {after} KiB, "
          f"{(after - before) / n:.1f} KiB per connection")
finally:
    broker.kill()
