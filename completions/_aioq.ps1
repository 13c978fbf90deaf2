
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'aioq' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'aioq'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'aioq' {
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the message broker')
            [CompletionResult]::new('listen', 'listen', [CompletionResultType]::ParameterValue, 'Subscribe to a channel and print what arrives')
            [CompletionResult]::new('send', 'send', [CompletionResultType]::ParameterValue, 'Publish messages to a channel')
            [CompletionResult]::new('work', 'work', [CompletionResultType]::ParameterValue, 'Run a command for each job of a /queue channel, acknowledging it by its exit status')
            [CompletionResult]::new('requeue', 'requeue', [CompletionResultType]::ParameterValue, 'Move messages (dead letters) from one /queue channel back to another')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Measure isolation, throughput, latency and fan-out of a broker')
            [CompletionResult]::new('watch-db', 'watch-db', [CompletionResultType]::ParameterValue, 'PostgreSQL change feed with a coherent cache, an HTTP API and forwarding')
            [CompletionResult]::new('metrics', 'metrics', [CompletionResultType]::ParameterValue, 'Application metrics through the broker: report, collect, chart')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print shell completions (bash, zsh, fish, elvish, powershell)')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Write man pages for aioq and each subcommand')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'aioq;serve' {
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Settings from this TOML file (flags and environment override it): every flag by its name without dashes, [[channel]] policies by prefix, [access] rules by TLS identity. SIGHUP reloads it')
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to listen on. Loopback by default: the protocol has no authentication, so exposing it is a decision to make on purpose. (AIOQ_HOST points clients at a broker; it does not move this one.)')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'TCP port; 0 picks a free one')
            [CompletionResult]::new('--threads', '--threads', [CompletionResultType]::ParameterName, 'Threads that serve connections (default: half the cores, at least one). A message''s path from a publisher''s reader to its subscribers'' writers crosses threads whenever they run on different ones, and the kernel''s network work for those sockets needs cores too (see the README''s "Threads" for what was measured)')
            [CompletionResult]::new('--send-queue', '--send-queue', [CompletionResultType]::ParameterName, 'Messages each /topic subscriber''s send queue holds')
            [CompletionResult]::new('--send-queue-bytes', '--send-queue-bytes', [CompletionResultType]::ParameterName, 'Payload bytes each subscriber''s send queue holds; the queue is full at whichever bound comes first, so memory stays bounded for large messages')
            [CompletionResult]::new('--worker-queue', '--worker-queue', [CompletionResultType]::ParameterName, 'Messages each /queue worker''s send queue holds (its prefetch): what a stalled worker can hold back from the others')
            [CompletionResult]::new('--backlog', '--backlog', [CompletionResultType]::ParameterName, 'Messages a /queue channel holds when no worker has room; beyond it the publisher is back-pressured')
            [CompletionResult]::new('--backlog-bytes', '--backlog-bytes', [CompletionResultType]::ParameterName, 'Payload bytes a /queue channel''s backlog holds; beyond it the publisher is back-pressured. All backlogs together hold at most half of --max-memory, so the other half stays for live subscribers')
            [CompletionResult]::new('--backlog-ttl', '--backlog-ttl', [CompletionResultType]::ParameterName, 'Discard the backlog of a /queue channel that has had no worker for this long (counted as expired). Default: keep it until a worker comes')
            [CompletionResult]::new('--topic-overflow', '--topic-overflow', [CompletionResultType]::ParameterName, 'What happens to a /topic subscriber whose send queue is full')
            [CompletionResult]::new('--max-frame', '--max-frame', [CompletionResultType]::ParameterName, 'Largest frame accepted (e.g. 16MiB); a client announcing more is disconnected')
            [CompletionResult]::new('--max-channel', '--max-channel', [CompletionResultType]::ParameterName, 'Longest channel name accepted, in bytes')
            [CompletionResult]::new('--max-channels', '--max-channels', [CompletionResultType]::ParameterName, 'Channels held at once. One source address (an IPv6 /64) may create a tenth of them as worker-less /queue channels by publishing; a publish past that, or past the limit, is dropped and counted as channel_limit. A subscription to a new channel when the registry is full evicts the oldest /queue channel that has no worker (its backlog counted as evicted); only when every channel has subscribers is it refused with end-of-stream')
            [CompletionResult]::new('--max-subscriptions', '--max-subscriptions', [CompletionResultType]::ParameterName, 'Subscriptions one protocol v2 connection may hold at once (a v1 connection holds one)')
            [CompletionResult]::new('--ack-wait', '--ack-wait', [CompletionResultType]::ParameterName, 'How long a protocol v2 worker that acknowledges its deliveries may hold one unanswered before it goes to another worker (attempt raised)')
            [CompletionResult]::new('--max-deliveries', '--max-deliveries', [CompletionResultType]::ParameterName, 'Failed deliveries (a nak, an ack wait run out) after which a message goes to its channel''s dead-letter channel (CHANNEL/dead)')
            [CompletionResult]::new('--max-credit', '--max-credit', [CompletionResultType]::ParameterName, 'Unacknowledged deliveries a protocol v2 worker may ask to hold at once (its credit)')
            [CompletionResult]::new('--durable', '--durable', [CompletionResultType]::ParameterName, 'Keep the messages of /queue channels whose names start with PREFIX on disk (repeatable; `durable = true` in a [[channel]] entry too): they survive a restart or a crash of the broker, a publish is confirmed once it is stored (as --fsync says), and a message is gone from disk only once acknowledged (or written to a worker that does not acknowledge). Not with --cluster, whose /queue channels JetStream keeps')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Where durable channels are kept. One broker per directory (a second is refused while the first runs)')
            [CompletionResult]::new('--fsync', '--fsync', [CompletionResultType]::ParameterName, 'When a durable publish counts as stored: `always` (on disk: every write is fsynced, one fsync shared by every publisher waiting on it), `interval:D` (written to the file, fsynced every D and every 32 MiB written: a power loss can take the last D, a crash of the broker alone nothing), `never` (written; synced at every new segment and every 32 MiB written, otherwise when the system pleases). Per channel: `fsync = "always"` or `"never"` in a [[channel]] entry')
            [CompletionResult]::new('--segment-size', '--segment-size', [CompletionResultType]::ParameterName, 'Size at which the durable store starts a new segment file; a segment is deleted once every message in it (and in every older one) is done')
            [CompletionResult]::new('--max-disk', '--max-disk', [CompletionResultType]::ParameterName, 'Bytes the durable store''s segment files may hold. At the bound a protocol 1 publisher to a durable channel waits (TCP back-pressure) and a protocol 2 publish is refused with `disk_full`, until workers settle enough for a segment to be deleted. Default: the file system''s room (a full disk holds publishers back the same way). Per channel: `max-disk` in a [[channel]] entry (its stored payload bytes)')
            [CompletionResult]::new('--max-connections', '--max-connections', [CompletionResultType]::ParameterName, 'Connections served at once; more are refused with an end-of-stream frame')
            [CompletionResult]::new('--subscribe-timeout', '--subscribe-timeout', [CompletionResultType]::ParameterName, 'How long a new connection has to send its subscribe frame')
            [CompletionResult]::new('--keepalive', '--keepalive', [CompletionResultType]::ParameterName, 'Idle time before TCP keepalive probes; 0 turns keepalive off')
            [CompletionResult]::new('--drain-timeout', '--drain-timeout', [CompletionResultType]::ParameterName, 'How long shutdown may spend flushing send queues')
            [CompletionResult]::new('--max-memory', '--max-memory', [CompletionResultType]::ParameterName, 'Memory all send queues and backlogs may hold together: their payload bytes, the 48 bytes of each place they have room for, and each channel''s state; past it, /topic subscribers miss messages (counted) and /queue publishers wait')
            [CompletionResult]::new('--max-connections-per-ip', '--max-connections-per-ip', [CompletionResultType]::ParameterName, 'Connections one source address (an IPv6 /64) may hold; 0: no limit. Default: a quarter of --max-connections for every address but loopback (local clients all share one address); given, it applies to loopback too')
            [CompletionResult]::new('--write-timeout', '--write-timeout', [CompletionResultType]::ParameterName, 'Disconnect a subscriber whose socket accepts nothing for this long while messages wait for it (a vanished host, or one stalled for good)')
            [CompletionResult]::new('--frame-timeout', '--frame-timeout', [CompletionResultType]::ParameterName, 'Close a connection that leaves a frame half-sent for this long')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Serve TLS with this certificate chain (PEM); needs --tls-key')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key for --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)')
            [CompletionResult]::new('--tls-client-ca', '--tls-client-ca', [CompletionResultType]::ParameterName, 'Require client certificates signed by this CA (mutual TLS): only admitted clients connect')
            [CompletionResult]::new('--cluster', '--cluster', [CompletionResultType]::ParameterName, 'Join a cluster of brokers through this NATS server (e.g. nats://10.0.0.9:4222; several, comma-separated). /topic messages reach subscribers on every broker; /queue channels become JetStream work-queue streams shared by every broker''s workers')
            [CompletionResult]::new('--cluster-ack-wait', '--cluster-ack-wait', [CompletionResultType]::ParameterName, 'How long JetStream waits for a broker to acknowledge a /queue message before giving it to another broker (a broker that died holding it)')
            [CompletionResult]::new('--cluster-queue-bytes', '--cluster-queue-bytes', [CompletionResultType]::ParameterName, 'Bytes each /queue stream may hold in JetStream; past it publishers wait [default: no byte limit, only --cluster-queue-messages]. JetStream sets this much of its storage aside for every stream when it is created, so a limit also caps the number of /queue channels at the server''s storage divided by it')
            [CompletionResult]::new('--cluster-queue-messages', '--cluster-queue-messages', [CompletionResultType]::ParameterName, 'JetStream messages each /queue stream holds; past it publishers wait. A publisher''s messages to one channel that arrive together are stored as one JetStream message (up to 256 of them, 64 KiB), so this bounds stored batches; --cluster-queue-bytes bounds the bytes exactly')
            [CompletionResult]::new('--cluster-replicas', '--cluster-replicas', [CompletionResultType]::ParameterName, 'Copies JetStream keeps of each /queue stream (1 to 5; more than 1 needs a clustered NATS)')
            [CompletionResult]::new('--http', '--http', [CompletionResultType]::ParameterName, 'Serve monitoring over HTTP here: /healthz, /api/server, /api/connections, /api/channels and /metrics (Prometheus). Read-only; keep it on loopback or a private network')
            [CompletionResult]::new('--http-allow-host', '--http-allow-host', [CompletionResultType]::ParameterName, 'A host name browsers may reach the HTTP face by (repeatable), beside localhost and IP literals: any other Host header gets 403, so that a web page cannot rebind its own name to this address and read it')
            [CompletionResult]::new('--http-channel-series', '--http-channel-series', [CompletionResultType]::ParameterName, 'Channels /metrics gives series of their own (`aioq_channel_*`, labelled by channel): the N with the most messages published, so that a dashboard needs no /api/channels and Prometheus no unbounded labels. 0 for none')
            [CompletionResult]::new('--metrics-channel', '--metrics-channel', [CompletionResultType]::ParameterName, 'Channel for --metrics')
            [CompletionResult]::new('--metrics-interval', '--metrics-interval', [CompletionResultType]::ParameterName, 'Time between --metrics samples')
            [CompletionResult]::new('--check-config', '--check-config', [CompletionResultType]::ParameterName, 'Check --config and the flags, say what is in force, and exit (0 when valid, 2 when not)')
            [CompletionResult]::new('--cluster-memory', '--cluster-memory', [CompletionResultType]::ParameterName, 'Keep /queue streams in NATS memory instead of on disk (faster; lost when nats-server restarts)')
            [CompletionResult]::new('--metrics', '--metrics', [CompletionResultType]::ParameterName, 'Publish the broker''s own CPU, memory and counters, like `aioq metrics report`')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'aioq;listen' {
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Broker host name or address')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Broker TCP port')
            [CompletionResult]::new('--tls-ca', '--tls-ca', [CompletionResultType]::ParameterName, 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Client certificate chain (PEM), for brokers that require one; needs --tls-key')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key for --tls-cert (PEM)')
            [CompletionResult]::new('--tls-server-name', '--tls-server-name', [CompletionResultType]::ParameterName, 'Name to expect in the broker''s certificate [default: the host the client connects to]')
            [CompletionResult]::new('--channel', '--channel', [CompletionResultType]::ParameterName, 'Channel to subscribe to; repeat it for several on one connection (a broker that speaks protocol 2)')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Channel to subscribe to; repeat it for several on one connection (a broker that speaks protocol 2)')
            [CompletionResult]::new('--protocol', '--protocol', [CompletionResultType]::ParameterName, 'Protocol to speak: auto (2 when the broker does, else 1), 1 or 2')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'Exit 0 after this many messages')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'How each message is printed')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Connect with TLS (implied by any other --tls-* flag)')
            [CompletionResult]::new('--no-reconnect', '--no-reconnect', [CompletionResultType]::ParameterName, 'Exit when the connection ends instead of reconnecting (0 on end-of-stream, 1 on a broken connection, 3 when the broker cannot be reached, 5 when it turns the connection away at once)')
            [CompletionResult]::new('--ack', '--ack', [CompletionResultType]::ParameterName, 'Acknowledge each /queue message once it is printed (protocol 2): a message the listener did not print (it was stopped first) goes to another worker instead of being lost')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'aioq;send' {
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Broker host name or address')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Broker TCP port')
            [CompletionResult]::new('--tls-ca', '--tls-ca', [CompletionResultType]::ParameterName, 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Client certificate chain (PEM), for brokers that require one; needs --tls-key')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key for --tls-cert (PEM)')
            [CompletionResult]::new('--tls-server-name', '--tls-server-name', [CompletionResultType]::ParameterName, 'Name to expect in the broker''s certificate [default: the host the client connects to]')
            [CompletionResult]::new('--channel', '--channel', [CompletionResultType]::ParameterName, 'Channel to publish to')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'Time between generated messages (seconds, or 500ms); 0 sends as fast as the broker''s back-pressure allows')
            [CompletionResult]::new('--size', '--size', [CompletionResultType]::ParameterName, 'Payload size in bytes: the generated text padded with dots, or cut, to it; default: the text alone')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'Number of messages to send, then exit (default: forever; 1 with --message)')
            [CompletionResult]::new('--message', '--message', [CompletionResultType]::ParameterName, 'Send this text instead of generated `Msg {i} from {pid}` messages (the process id)')
            [CompletionResult]::new('--buffer', '--buffer', [CompletionResultType]::ParameterName, 'Messages held while the broker is unreachable. Generated messages beyond it are dropped and counted; with --stdin, reading input pauses instead')
            [CompletionResult]::new('--protocol', '--protocol', [CompletionResultType]::ParameterName, 'Protocol to speak: auto (2 when the broker does, else 1), 1 or 2')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Connect with TLS (implied by any other --tls-* flag)')
            [CompletionResult]::new('--stdin', '--stdin', [CompletionResultType]::ParameterName, 'Send one message per line of standard input; exit when it ends, after everything was written and the broker acknowledged the goodbye')
            [CompletionResult]::new('--no-reconnect', '--no-reconnect', [CompletionResultType]::ParameterName, 'Exit when the connection breaks instead of reconnecting (3 when the broker cannot be reached, 5 when it turns the connection away)')
            [CompletionResult]::new('--no-confirm', '--no-confirm', [CompletionResultType]::ParameterName, 'At the end, do not wait for the broker to confirm (with end-of-stream) that it routed everything: flush, close and exit 0. For brokers that do not answer the goodbye')
            [CompletionResult]::new('--confirm', '--confirm', [CompletionResultType]::ParameterName, 'Wait for each message''s confirm before sending the next (protocol 2; slower, and a refusal is known before the next message leaves)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'aioq;work' {
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Broker host name or address')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Broker TCP port')
            [CompletionResult]::new('--tls-ca', '--tls-ca', [CompletionResultType]::ParameterName, 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Client certificate chain (PEM), for brokers that require one; needs --tls-key')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key for --tls-cert (PEM)')
            [CompletionResult]::new('--tls-server-name', '--tls-server-name', [CompletionResultType]::ParameterName, 'Name to expect in the broker''s certificate [default: the host the client connects to]')
            [CompletionResult]::new('--channel', '--channel', [CompletionResultType]::ParameterName, 'The /queue channel to take jobs from')
            [CompletionResult]::new('--concurrency', '--concurrency', [CompletionResultType]::ParameterName, 'Commands run at once; also the jobs held from the broker at once')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Kill a command that runs longer than this (the job is tried again)')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'Exit 0 after this many jobs (done or not)')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Connect with TLS (implied by any other --tls-* flag)')
            [CompletionResult]::new('--no-reconnect', '--no-reconnect', [CompletionResultType]::ParameterName, 'Exit when the connection ends instead of reconnecting')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'aioq;requeue' {
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Broker host name or address')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Broker TCP port')
            [CompletionResult]::new('--tls-ca', '--tls-ca', [CompletionResultType]::ParameterName, 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Client certificate chain (PEM), for brokers that require one; needs --tls-key')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key for --tls-cert (PEM)')
            [CompletionResult]::new('--tls-server-name', '--tls-server-name', [CompletionResultType]::ParameterName, 'Name to expect in the broker''s certificate [default: the host the client connects to]')
            [CompletionResult]::new('--from', '--from', [CompletionResultType]::ParameterName, 'The /queue channel to take messages from (a dead-letter channel)')
            [CompletionResult]::new('--to', '--to', [CompletionResultType]::ParameterName, 'The channel to put them on')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'Move at most this many')
            [CompletionResult]::new('--idle', '--idle', [CompletionResultType]::ParameterName, 'Without --count: stop once nothing has come for this long')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Connect with TLS (implied by any other --tls-* flag)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'aioq;bench' {
            [CompletionResult]::new('--target', '--target', [CompletionResultType]::ParameterName, 'Broker to measure: HOST:PORT (aioq), nats://HOST:PORT or redis://HOST:PORT; default: an embedded aioq broker on a free port')
            [CompletionResult]::new('--subscribe-target', '--subscribe-target', [CompletionResultType]::ParameterName, 'Subscribers and workers connect here (HOST:PORT) while publishers use --target: two brokers of one cluster, to measure across it')
            [CompletionResult]::new('--target-metrics', '--target-metrics', [CompletionResultType]::ParameterName, 'The --target broker''s Prometheus page (`aioq serve --http`), read before and after each throughput run for its physics: messages and bytes per socket write, CPU time per delivery')
            [CompletionResult]::new('--tls-ca', '--tls-ca', [CompletionResultType]::ParameterName, 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Client certificate chain (PEM), for brokers that require one; needs --tls-key')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key for --tls-cert (PEM)')
            [CompletionResult]::new('--tls-server-name', '--tls-server-name', [CompletionResultType]::ParameterName, 'Name to expect in the broker''s certificate [default: the host the client connects to]')
            [CompletionResult]::new('--scenario', '--scenario', [CompletionResultType]::ParameterName, 'Which scenario to run')
            [CompletionResult]::new('--kinds', '--kinds', [CompletionResultType]::ParameterName, 'Channel kinds the isolation and throughput scenarios measure')
            [CompletionResult]::new('--subscribers', '--subscribers', [CompletionResultType]::ParameterName, 'Fast subscribers (isolation), subscribers or workers (throughput)')
            [CompletionResult]::new('--slow', '--slow', [CompletionResultType]::ParameterName, 'Slow subscribers added in the second isolation run')
            [CompletionResult]::new('--slow-mode', '--slow-mode', [CompletionResultType]::ParameterName, 'How the slow subscribers misbehave')
            [CompletionResult]::new('--trickle-rate', '--trickle-rate', [CompletionResultType]::ParameterName, 'Messages per second a trickling subscriber reads')
            [CompletionResult]::new('--rate', '--rate', [CompletionResultType]::ParameterName, 'Publish rate of the isolation runs, messages per second')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'Length of each isolation run')
            [CompletionResult]::new('--messages', '--messages', [CompletionResultType]::ParameterName, 'Messages published in the throughput runs')
            [CompletionResult]::new('--stall-timeout', '--stall-timeout', [CompletionResultType]::ParameterName, 'Give up a throughput run (exit 1) when nothing is sent or delivered for this long: the broker stopped reading, or holds the publisher back with nowhere to deliver')
            [CompletionResult]::new('--size', '--size', [CompletionResultType]::ParameterName, 'Payload size (at least 24 bytes: sequence number, due and send times)')
            [CompletionResult]::new('--latency-rate', '--latency-rate', [CompletionResultType]::ParameterName, 'Publish rate of the latency run, messages per second')
            [CompletionResult]::new('--latency-duration', '--latency-duration', [CompletionResultType]::ParameterName, 'Length of the latency run')
            [CompletionResult]::new('--connections', '--connections', [CompletionResultType]::ParameterName, 'Subscriber connections in the fan-out run')
            [CompletionResult]::new('--protocol', '--protocol', [CompletionResultType]::ParameterName, 'Protocol an aioq target is spoken to in: v1, or v2 (publishers and measuring subscribers; the isolation runs'' slow subscribers stay on v1)')
            [CompletionResult]::new('--min-isolation', '--min-isolation', [CompletionResultType]::ParameterName, 'Exit 1 when an isolation ratio falls below this, or when isolation is inconclusive')
            [CompletionResult]::new('--compare', '--compare', [CompletionResultType]::ParameterName, 'Print every figure beside this earlier run''s (`--json` output), with the change, changes within --noise marked as such')
            [CompletionResult]::new('--max-regression', '--max-regression', [CompletionResultType]::ParameterName, 'With --compare: exit 1 when a figure got worse by more than this many percent')
            [CompletionResult]::new('--noise', '--noise', [CompletionResultType]::ParameterName, 'With --compare: changes within this many percent are noise')
            [CompletionResult]::new('--workers', '--workers', [CompletionResultType]::ParameterName, 'Job scenarios: workers that take and acknowledge jobs')
            [CompletionResult]::new('--jobs', '--jobs', [CompletionResultType]::ParameterName, 'Job scenarios: jobs per run')
            [CompletionResult]::new('--prefetch', '--prefetch', [CompletionResultType]::ParameterName, 'Job scenarios: deliveries a worker may hold unacknowledged (aioq credit, RabbitMQ basic.qos, JetStream''s pull batch, Redis COUNT)')
            [CompletionResult]::new('--confirm-window', '--confirm-window', [CompletionResultType]::ParameterName, 'Job scenarios: publishes each producer keeps unconfirmed at most')
            [CompletionResult]::new('--publishers', '--publishers', [CompletionResultType]::ParameterName, 'durable: the publisher counts of its runs')
            [CompletionResult]::new('--broker-cmd', '--broker-cmd', [CompletionResultType]::ParameterName, 'Job scenarios: the broker to start (and kill, and start again) for crash-broker and recovery, run by `sh -c`; `{port}` (and `{http_port}`, `{dist_port}`) are replaced by free ports, `{port}` in --target too. Its data directory is the command''s business: give one that outlives it')
            [CompletionResult]::new('--recovery-jobs', '--recovery-jobs', [CompletionResultType]::ParameterName, 'recovery: the stored jobs of its runs')
            [CompletionResult]::new('--fsync', '--fsync', [CompletionResultType]::ParameterName, 'Job scenarios without --target: the started broker''s --fsync')
            [CompletionResult]::new('--nats-sync', '--nats-sync', [CompletionResultType]::ParameterName, 'Job scenarios on nats://: the JetStream file store''s sync_interval as the server was started (no client can read it): printed with the figures; only `always` counts as synced before the publish ack')
            [CompletionResult]::new('--ack-wait', '--ack-wait', [CompletionResultType]::ParameterName, 'Job scenarios: how long a delivery may go unanswered before another worker gets it, where the client sets it (JetStream''s ack_wait, the idle time of Redis''s XAUTOCLAIM); aioq''s is the broker''s --ack-wait, and aioq and RabbitMQ give a dead worker''s jobs back at once')
            [CompletionResult]::new('--job-worker', '--job-worker', [CompletionResultType]::ParameterName, 'A worker process of crash-worker (started by the bench itself)')
            [CompletionResult]::new('--job-time', '--job-time', [CompletionResultType]::ParameterName, 'crash-worker: how long each job takes a worker (every worker, the killed one too, so that it dies with jobs in hand)')
            [CompletionResult]::new('--send-queue', '--send-queue', [CompletionResultType]::ParameterName, 'Embedded broker: messages per subscriber send queue')
            [CompletionResult]::new('--send-queue-bytes', '--send-queue-bytes', [CompletionResultType]::ParameterName, 'Embedded broker: payload bytes per subscriber send queue')
            [CompletionResult]::new('--topic-overflow', '--topic-overflow', [CompletionResultType]::ParameterName, 'Embedded broker: what happens to a /topic subscriber whose queue is full')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Connect with TLS (implied by any other --tls-* flag)')
            [CompletionResult]::new('--confirms', '--confirms', [CompletionResultType]::ParameterName, 'With --protocol v2: every publish asks a confirm, and each publisher''s goodbye waits for the last (cumulative confirms, one per read buffer)')
            [CompletionResult]::new('--acks', '--acks', [CompletionResultType]::ParameterName, 'With --protocol v2: /queue workers acknowledge their deliveries (one ACK up to the last per read; credit --worker-queue of the broker)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print one JSON document on stdout instead of tables')
            [CompletionResult]::new('--csv', '--csv', [CompletionResultType]::ParameterName, 'Print the figures as CSV (figure,value,unit) instead of tables')
            [CompletionResult]::new('--no-prime', '--no-prime', [CompletionResultType]::ParameterName, 'Skip the priming burst that fills the stalled subscribers'' kernel buffers before an isolation run is measured (the verdict is then inconclusive unless the run itself owes them enough)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'aioq;watch-db' {
            [CompletionResult]::new('--dsn', '--dsn', [CompletionResultType]::ParameterName, 'PostgreSQL connection string (a direct connection: LISTEN does not work through a pooler in transaction mode). Keep the password out of it: PGPASSWORD is read as libpq does')
            [CompletionResult]::new('--payload', '--payload', [CompletionResultType]::ParameterName, 'What events carry (with --install: what the trigger sends; otherwise: what this watcher trusts). In keys mode a notification only says which row changed, and the row is read with this watcher''s privileges')
            [CompletionResult]::new('--table', '--table', [CompletionResultType]::ParameterName, 'Table to watch, optionally schema-qualified; repeat for more. Each needs a single-column primary key')
            [CompletionResult]::new('--channel', '--channel', [CompletionResultType]::ParameterName, 'NOTIFY channel for every table (default: chan_<table> for each)')
            [CompletionResult]::new('--http', '--http', [CompletionResultType]::ParameterName, 'Serve the JSON API on this address (port 0 picks one; the log says which)')
            [CompletionResult]::new('--http-allow-host', '--http-allow-host', [CompletionResultType]::ParameterName, 'A host name browsers may reach the HTTP face by (repeatable), beside localhost and IP literals: any other Host header gets 403, so that a web page cannot rebind its own name to this address and read it')
            [CompletionResult]::new('--http-max-connections', '--http-max-connections', [CompletionResultType]::ParameterName, 'HTTP connections served at once; more wait until one closes')
            [CompletionResult]::new('--http-header-timeout', '--http-header-timeout', [CompletionResultType]::ParameterName, 'Time a client has to send a request''s headers once it has begun')
            [CompletionResult]::new('--http-token-file', '--http-token-file', [CompletionResultType]::ParameterName, 'A file holding a token every HTTP request must bear (`Authorization: Bearer TOKEN`)')
            [CompletionResult]::new('--publish', '--publish', [CompletionResultType]::ParameterName, 'Forward every event into this broker channel')
            [CompletionResult]::new('--tls-ca', '--tls-ca', [CompletionResultType]::ParameterName, 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Client certificate chain (PEM), for brokers that require one; needs --tls-key')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key for --tls-cert (PEM)')
            [CompletionResult]::new('--tls-server-name', '--tls-server-name', [CompletionResultType]::ParameterName, 'Name to expect in the broker''s certificate [default: the host the client connects to]')
            [CompletionResult]::new('--broker-host', '--broker-host', [CompletionResultType]::ParameterName, 'Broker host for --publish')
            [CompletionResult]::new('--broker-port', '--broker-port', [CompletionResultType]::ParameterName, 'Broker port for --publish')
            [CompletionResult]::new('--event-queue', '--event-queue', [CompletionResultType]::ParameterName, 'Notifications held between PostgreSQL and the cache; past it they are dropped, counted, and the cache starts over (a RESYNC event)')
            [CompletionResult]::new('--cache-size', '--cache-size', [CompletionResultType]::ParameterName, 'Rows the cache holds (least recently used go first)')
            [CompletionResult]::new('--check', '--check', [CompletionResultType]::ParameterName, 'Check that the database is ready to be watched (connection, TLS, a NOTIFY round trip, the notification queue, each table''s trigger and privileges), print a line per check, exit 0 only when all pass')
            [CompletionResult]::new('--install', '--install', [CompletionResultType]::ParameterName, 'Create (or update) the trigger function and triggers, then exit')
            [CompletionResult]::new('--uninstall', '--uninstall', [CompletionResultType]::ParameterName, 'Remove the triggers (and the function when unused), then exit')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Connect with TLS (implied by any other --tls-* flag)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'One JSON object per line on stdout instead of pretty JSON')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'aioq;metrics' {
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('report', 'report', [CompletionResultType]::ParameterValue, 'Sample a process''s CPU and memory and publish them')
            [CompletionResult]::new('collect', 'collect', [CompletionResultType]::ParameterValue, 'Gather samples: a live terminal table, JSON lines, or a web page')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'aioq;metrics;report' {
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Broker host name or address')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Broker TCP port')
            [CompletionResult]::new('--tls-ca', '--tls-ca', [CompletionResultType]::ParameterName, 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Client certificate chain (PEM), for brokers that require one; needs --tls-key')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key for --tls-cert (PEM)')
            [CompletionResult]::new('--tls-server-name', '--tls-server-name', [CompletionResultType]::ParameterName, 'Name to expect in the broker''s certificate [default: the host the client connects to]')
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'Name shown by the collector')
            [CompletionResult]::new('--pid', '--pid', [CompletionResultType]::ParameterName, 'Process to watch (default: this one, running a small demo workload)')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'Time between samples')
            [CompletionResult]::new('--channel', '--channel', [CompletionResultType]::ParameterName, 'Channel to publish on')
            [CompletionResult]::new('--leak', '--leak', [CompletionResultType]::ParameterName, 'Demo workload: grow memory by this many 100-byte items per sample, up to --leak-limit')
            [CompletionResult]::new('--leak-limit', '--leak-limit', [CompletionResultType]::ParameterName, 'Where the --leak demo stops growing (it then holds steady)')
            [CompletionResult]::new('--idle-interval', '--idle-interval', [CompletionResultType]::ParameterName, 'Time between samples while the collectors say nobody watches (no terminal table, no browser on the page). A reporter that hears from no collector keeps --interval')
            [CompletionResult]::new('--control-channel', '--control-channel', [CompletionResultType]::ParameterName, 'Channel on which collectors say whether anyone watches')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Connect with TLS (implied by any other --tls-* flag)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'aioq;metrics;collect' {
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Broker host name or address')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Broker TCP port')
            [CompletionResult]::new('--tls-ca', '--tls-ca', [CompletionResultType]::ParameterName, 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Client certificate chain (PEM), for brokers that require one; needs --tls-key')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Private key for --tls-cert (PEM)')
            [CompletionResult]::new('--tls-server-name', '--tls-server-name', [CompletionResultType]::ParameterName, 'Name to expect in the broker''s certificate [default: the host the client connects to]')
            [CompletionResult]::new('--channel', '--channel', [CompletionResultType]::ParameterName, 'Channel the reporters publish on')
            [CompletionResult]::new('--http', '--http', [CompletionResultType]::ParameterName, 'Serve the live page, `/feed` (server-sent events) and `/api/reporters` here')
            [CompletionResult]::new('--http-allow-host', '--http-allow-host', [CompletionResultType]::ParameterName, 'A host name browsers may reach the HTTP face by (repeatable), beside localhost and IP literals: any other Host header gets 403, so that a web page cannot rebind its own name to this address and read it')
            [CompletionResult]::new('--stale-after', '--stale-after', [CompletionResultType]::ParameterName, 'A reporter not heard from for this long is marked stale')
            [CompletionResult]::new('--forget-after', '--forget-after', [CompletionResultType]::ParameterName, 'A reporter not heard from for this long is forgotten')
            [CompletionResult]::new('--max-reporters', '--max-reporters', [CompletionResultType]::ParameterName, 'Reporters followed at once; samples from more are refused and counted')
            [CompletionResult]::new('--http-max-connections', '--http-max-connections', [CompletionResultType]::ParameterName, 'Browsers (and other HTTP clients) served at once')
            [CompletionResult]::new('--control-channel', '--control-channel', [CompletionResultType]::ParameterName, 'Channel on which the collector tells reporters whether anyone watches (the table on a terminal, the JSON lines in a pipe or a file, or a browser on the page; not stdout sent to /dev/null): they sample at their --interval while someone does, at their --idle-interval while nobody does')
            [CompletionResult]::new('--tls', '--tls', [CompletionResultType]::ParameterName, 'Connect with TLS (implied by any other --tls-* flag)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'aioq;metrics;help' {
            [CompletionResult]::new('report', 'report', [CompletionResultType]::ParameterValue, 'Sample a process''s CPU and memory and publish them')
            [CompletionResult]::new('collect', 'collect', [CompletionResultType]::ParameterValue, 'Gather samples: a live terminal table, JSON lines, or a web page')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'aioq;metrics;help;report' {
            break
        }
        'aioq;metrics;help;collect' {
            break
        }
        'aioq;metrics;help;help' {
            break
        }
        'aioq;completions' {
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Write the scripts for every supported shell into this directory instead')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'aioq;man' {
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Directory to write aioq.1 and aioq-<subcommand>.1 into')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v debug, -vv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Less log output on stderr (-q warnings only, -qq errors only)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'aioq;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the message broker')
            [CompletionResult]::new('listen', 'listen', [CompletionResultType]::ParameterValue, 'Subscribe to a channel and print what arrives')
            [CompletionResult]::new('send', 'send', [CompletionResultType]::ParameterValue, 'Publish messages to a channel')
            [CompletionResult]::new('work', 'work', [CompletionResultType]::ParameterValue, 'Run a command for each job of a /queue channel, acknowledging it by its exit status')
            [CompletionResult]::new('requeue', 'requeue', [CompletionResultType]::ParameterValue, 'Move messages (dead letters) from one /queue channel back to another')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Measure isolation, throughput, latency and fan-out of a broker')
            [CompletionResult]::new('watch-db', 'watch-db', [CompletionResultType]::ParameterValue, 'PostgreSQL change feed with a coherent cache, an HTTP API and forwarding')
            [CompletionResult]::new('metrics', 'metrics', [CompletionResultType]::ParameterValue, 'Application metrics through the broker: report, collect, chart')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print shell completions (bash, zsh, fish, elvish, powershell)')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Write man pages for aioq and each subcommand')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'aioq;help;serve' {
            break
        }
        'aioq;help;listen' {
            break
        }
        'aioq;help;send' {
            break
        }
        'aioq;help;work' {
            break
        }
        'aioq;help;requeue' {
            break
        }
        'aioq;help;bench' {
            break
        }
        'aioq;help;watch-db' {
            break
        }
        'aioq;help;metrics' {
            [CompletionResult]::new('report', 'report', [CompletionResultType]::ParameterValue, 'Sample a process''s CPU and memory and publish them')
            [CompletionResult]::new('collect', 'collect', [CompletionResultType]::ParameterValue, 'Gather samples: a live terminal table, JSON lines, or a web page')
            break
        }
        'aioq;help;metrics;report' {
            break
        }
        'aioq;help;metrics;collect' {
            break
        }
        'aioq;help;completions' {
            break
        }
        'aioq;help;man' {
            break
        }
        'aioq;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
