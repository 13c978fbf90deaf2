#!/usr/bin/env python3
"""What an idle subscriber costs the broker: opens N connections to an
`aioq serve` (started here, release build), each subscribed to its own
/topic channel and then silent, and reads the broker's resident memory
(VmRSS) before and with them. Prints KiB per connection.

    benches/idle.py [N]            # default 10,000
"""
import os, resource, socket, struct, subprocess, sys, time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
binary = os.path.join(root, "target", "release", "aioq")
subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=root, check=True)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
broker = subprocess.Popen([binary, "serve", "--port", "0", "-q", "--max-connections", str(n + 100)],
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
        name = f"/topic/idle-{i}".encode()
        s.sendall(struct.pack(">I", len(name)) + name)
        socks.append(s)
    # Every subscription in place: one round trip through the last channel.
    probe = socket.create_connection(("127.0.0.1", port))
    probe.sendall(struct.pack(">I", 5) + b"/null" + struct.pack(">I", len(name)) + name + struct.pack(">I", 2) + b"ok")
    socks[-1].settimeout(10)
    got = b""
    while len(got) < 6:
        got += socks[-1].recv(64)
    time.sleep(0.5)  # let allocator caches settle before reading
    after = rss_kib()
    print(f"{n} idle subscribers: broker RSS {before} KiB -> {after} KiB, "
          f"{(after - before) / n:.1f} KiB per connection")
finally:
    broker.kill()
