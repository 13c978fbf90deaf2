# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_aioq_global_optspecs
    string join \n v/verbose q/quiet h/help V/version
end

function __fish_aioq_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_aioq_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_aioq_using_subcommand
    set -l cmd (__fish_aioq_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c aioq -n "__fish_aioq_needs_command" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c aioq -n "__fish_aioq_needs_command" -s q -l quiet -d 'Less log output on stderr (-q warnings only, -qq errors only)'
complete -c aioq -n "__fish_aioq_needs_command" -s h -l help -d 'Print help'
complete -c aioq -n "__fish_aioq_needs_command" -s V -l version -d 'Print version'
complete -c aioq -n "__fish_aioq_needs_command" -f -a "serve" -d 'Run the message broker'
complete -c aioq -n "__fish_aioq_needs_command" -f -a "listen" -d 'Subscribe to a channel and print what arrives'
complete -c aioq -n "__fish_aioq_needs_command" -f -a "send" -d 'Publish messages to a channel'
complete -c aioq -n "__fish_aioq_needs_command" -f -a "work" -d 'Run a command for each job of a /queue channel, acknowledging it by its exit status'
complete -c aioq -n "__fish_aioq_needs_command" -f -a "requeue" -d 'Move messages (dead letters) from one /queue channel back to another'
complete -c aioq -n "__fish_aioq_needs_command" -f -a "bench" -d 'Measure isolation, throughput, latency and fan-out of a broker'
complete -c aioq -n "__fish_aioq_needs_command" -f -a "watch-db" -d 'PostgreSQL change feed with a coherent cache, an HTTP API and forwarding'
complete -c aioq -n "__fish_aioq_needs_command" -f -a "metrics" -d 'Application metrics through the broker: report, collect, chart'
complete -c aioq -n "__fish_aioq_needs_command" -f -a "completions" -d 'Print shell completions (bash, zsh, fish, elvish, powershell)'
complete -c aioq -n "__fish_aioq_needs_command" -f -a "man" -d 'Write man pages for aioq and each subcommand'
complete -c aioq -n "__fish_aioq_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l config -d 'Settings from this TOML file (flags and environment override it): every flag by its name without dashes, [[channel]] policies by prefix, [access] rules by TLS identity. SIGHUP reloads it' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l host -d 'Address to listen on. Loopback by default: the protocol has no authentication, so exposing it is a decision to make on purpose. (AIOQ_HOST points clients at a broker; it does not move this one.)' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l port -d 'TCP port; 0 picks a free one' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l threads -d 'Threads that serve connections (default: half the cores, at least one). A message\'s path from a publisher\'s reader to its subscribers\' writers crosses threads whenever they run on different ones, and the kernel\'s network work for those sockets needs cores too (see the README\'s "Threads" for what was measured)' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l send-queue -d 'Messages each /topic subscriber\'s send queue holds' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l send-queue-bytes -d 'Payload bytes each subscriber\'s send queue holds; the queue is full at whichever bound comes first, so memory stays bounded for large messages' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l worker-queue -d 'Messages each /queue worker\'s send queue holds (its prefetch): what a stalled worker can hold back from the others' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l backlog -d 'Messages a /queue channel holds when no worker has room; beyond it the publisher is back-pressured' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l backlog-bytes -d 'Payload bytes a /queue channel\'s backlog holds; beyond it the publisher is back-pressured. All backlogs together hold at most half of --max-memory, so the other half stays for live subscribers' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l backlog-ttl -d 'Discard the backlog of a /queue channel that has had no worker for this long (counted as expired). Default: keep it until a worker comes' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l topic-overflow -d 'What happens to a /topic subscriber whose send queue is full' -r -f -a "drop\t'The subscriber misses the message; the loss is counted'
disconnect\t'The subscriber is disconnected as a slow consumer; the loss is counted'"
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l max-frame -d 'Largest frame accepted (e.g. 16MiB); a client announcing more is disconnected' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l max-channel -d 'Longest channel name accepted, in bytes' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l max-channels -d 'Channels held at once. One source address (an IPv6 /64) may create a tenth of them as worker-less /queue channels by publishing; a publish past that, or past the limit, is dropped and counted as channel_limit. A subscription to a new channel when the registry is full evicts the oldest /queue channel that has no worker (its backlog counted as evicted); only when every channel has subscribers is it refused with end-of-stream' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l max-subscriptions -d 'Subscriptions one protocol v2 connection may hold at once (a v1 connection holds one)' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l ack-wait -d 'How long a protocol v2 worker that acknowledges its deliveries may hold one unanswered before it goes to another worker (attempt raised)' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l max-deliveries -d 'Failed deliveries (a nak, an ack wait run out) after which a message goes to its channel\'s dead-letter channel (CHANNEL/dead)' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l max-credit -d 'Unacknowledged deliveries a protocol v2 worker may ask to hold at once (its credit)' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l durable -d 'Keep the messages of /queue channels whose names start with PREFIX on disk (repeatable; `durable = true` in a [[channel]] entry too): they survive a restart or a crash of the broker, a publish is confirmed once it is stored (as --fsync says), and a message is gone from disk only once acknowledged (or written to a worker that does not acknowledge). Not with --cluster, whose /queue channels JetStream keeps' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l data-dir -d 'Where durable channels are kept. One broker per directory (a second is refused while the first runs)' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l fsync -d 'When a durable publish counts as stored: `always` (on disk: every write is fsynced, one fsync shared by every publisher waiting on it), `interval:D` (written to the file, fsynced every D and every 32 MiB written: a power loss can take the last D, a crash of the broker alone nothing), `never` (written; synced at every new segment and every 32 MiB written, otherwise when the system pleases). Per channel: `fsync = "always"` or `"never"` in a [[channel]] entry' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l segment-size -d 'Size at which the durable store starts a new segment file; a segment is deleted once every message in it (and in every older one) is done' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l max-disk -d 'Bytes the durable store\'s segment files may hold. At the bound a protocol 1 publisher to a durable channel waits (TCP back-pressure) and a protocol 2 publish is refused with `disk_full`, until workers settle enough for a segment to be deleted. Default: the file system\'s room (a full disk holds publishers back the same way). Per channel: `max-disk` in a [[channel]] entry (its stored payload bytes)' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l max-connections -d 'Connections served at once; more are refused with an end-of-stream frame' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l subscribe-timeout -d 'How long a new connection has to send its subscribe frame' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l keepalive -d 'Idle time before TCP keepalive probes; 0 turns keepalive off' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l drain-timeout -d 'How long shutdown may spend flushing send queues' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l max-memory -d 'Memory all send queues and backlogs may hold together: their payload bytes, the 48 bytes of each place they have room for, and each channel\'s state; past it, /topic subscribers miss messages (counted) and /queue publishers wait' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l max-connections-per-ip -d 'Connections one source address (an IPv6 /64) may hold; 0: no limit. Default: a quarter of --max-connections for every address but loopback (local clients all share one address); given, it applies to loopback too' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l write-timeout -d 'Disconnect a subscriber whose socket accepts nothing for this long while messages wait for it (a vanished host, or one stalled for good)' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l frame-timeout -d 'Close a connection that leaves a frame half-sent for this long' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l tls-cert -d 'Serve TLS with this certificate chain (PEM); needs --tls-key' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l tls-key -d 'Private key for --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l tls-client-ca -d 'Require client certificates signed by this CA (mutual TLS): only admitted clients connect' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l cluster -d 'Join a cluster of brokers through this NATS server (e.g. nats://10.0.0.9:4222; several, comma-separated). /topic messages reach subscribers on every broker; /queue channels become JetStream work-queue streams shared by every broker\'s workers' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l cluster-ack-wait -d 'How long JetStream waits for a broker to acknowledge a /queue message before giving it to another broker (a broker that died holding it)' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l cluster-queue-bytes -d 'Bytes each /queue stream may hold in JetStream; past it publishers wait [default: no byte limit, only --cluster-queue-messages]. JetStream sets this much of its storage aside for every stream when it is created, so a limit also caps the number of /queue channels at the server\'s storage divided by it' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l cluster-queue-messages -d 'JetStream messages each /queue stream holds; past it publishers wait. A publisher\'s messages to one channel that arrive together are stored as one JetStream message (up to 256 of them, 64 KiB), so this bounds stored batches; --cluster-queue-bytes bounds the bytes exactly' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l cluster-replicas -d 'Copies JetStream keeps of each /queue stream (1 to 5; more than 1 needs a clustered NATS)' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l http -d 'Serve monitoring over HTTP here: /healthz, /api/server, /api/connections, /api/channels and /metrics (Prometheus). Read-only; keep it on loopback or a private network' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l http-allow-host -d 'A host name browsers may reach the HTTP face by (repeatable), beside localhost and IP literals: any other Host header gets 403, so that a web page cannot rebind its own name to this address and read it' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l http-channel-series -d 'Channels /metrics gives series of their own (`aioq_channel_*`, labelled by channel): the N with the most messages published, so that a dashboard needs no /api/channels and Prometheus no unbounded labels. 0 for none' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l metrics-channel -d 'Channel for --metrics' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l metrics-interval -d 'Time between --metrics samples' -r
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l check-config -d 'Check --config and the flags, say what is in force, and exit (0 when valid, 2 when not)'
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l cluster-memory -d 'Keep /queue streams in NATS memory instead of on disk (faster; lost when nats-server restarts)'
complete -c aioq -n "__fish_aioq_using_subcommand serve" -l metrics -d 'Publish the broker\'s own CPU, memory and counters, like `aioq metrics report`'
complete -c aioq -n "__fish_aioq_using_subcommand serve" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c aioq -n "__fish_aioq_using_subcommand serve" -s q -l quiet -d 'Less log output on stderr (-q warnings only, -qq errors only)'
complete -c aioq -n "__fish_aioq_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aioq -n "__fish_aioq_using_subcommand serve" -s V -l version -d 'Print version'
complete -c aioq -n "__fish_aioq_using_subcommand listen" -l host -d 'Broker host name or address' -r
complete -c aioq -n "__fish_aioq_using_subcommand listen" -l port -d 'Broker TCP port' -r
complete -c aioq -n "__fish_aioq_using_subcommand listen" -l tls-ca -d 'CA certificates (PEM) that the broker\'s certificate must chain to [default: the system\'s, /etc/ssl/certs/ca-certificates.crt]' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand listen" -l tls-cert -d 'Client certificate chain (PEM), for brokers that require one; needs --tls-key' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand listen" -l tls-key -d 'Private key for --tls-cert (PEM)' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand listen" -l tls-server-name -d 'Name to expect in the broker\'s certificate [default: the host the client connects to]' -r
complete -c aioq -n "__fish_aioq_using_subcommand listen" -l channel -l listen -d 'Channel to subscribe to; repeat it for several on one connection (a broker that speaks protocol 2)' -r
complete -c aioq -n "__fish_aioq_using_subcommand listen" -l protocol -d 'Protocol to speak: auto (2 when the broker does, else 1), 1 or 2' -r -f -a "auto\t'Version 2 when the broker speaks it, else version 1'
1\t''
2\t''"
complete -c aioq -n "__fish_aioq_using_subcommand listen" -l count -d 'Exit 0 after this many messages' -r
complete -c aioq -n "__fish_aioq_using_subcommand listen" -l format -d 'How each message is printed' -r -f -a "text\t'One line per message, UTF-8 shown lossily'
raw\t'The payload bytes only, nothing between messages'
json\t'One JSON object per line: channel, size, payload (UTF-8 or base64), time'"
complete -c aioq -n "__fish_aioq_using_subcommand listen" -l tls -d 'Connect with TLS (implied by any other --tls-* flag)'
complete -c aioq -n "__fish_aioq_using_subcommand listen" -l no-reconnect -d 'Exit when the connection ends instead of reconnecting (0 on end-of-stream, 1 on a broken connection, 3 when the broker cannot be reached, 5 when it turns the connection away at once)'
complete -c aioq -n "__fish_aioq_using_subcommand listen" -l ack -d 'Acknowledge each /queue message once it is printed (protocol 2): a message the listener did not print (it was stopped first) goes to another worker instead of being lost'
complete -c aioq -n "__fish_aioq_using_subcommand listen" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c aioq -n "__fish_aioq_using_subcommand listen" -s q -l quiet -d 'Less log output on stderr (-q warnings only, -qq errors only)'
complete -c aioq -n "__fish_aioq_using_subcommand listen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aioq -n "__fish_aioq_using_subcommand listen" -s V -l version -d 'Print version'
complete -c aioq -n "__fish_aioq_using_subcommand send" -l host -d 'Broker host name or address' -r
complete -c aioq -n "__fish_aioq_using_subcommand send" -l port -d 'Broker TCP port' -r
complete -c aioq -n "__fish_aioq_using_subcommand send" -l tls-ca -d 'CA certificates (PEM) that the broker\'s certificate must chain to [default: the system\'s, /etc/ssl/certs/ca-certificates.crt]' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand send" -l tls-cert -d 'Client certificate chain (PEM), for brokers that require one; needs --tls-key' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand send" -l tls-key -d 'Private key for --tls-cert (PEM)' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand send" -l tls-server-name -d 'Name to expect in the broker\'s certificate [default: the host the client connects to]' -r
complete -c aioq -n "__fish_aioq_using_subcommand send" -l channel -d 'Channel to publish to' -r
complete -c aioq -n "__fish_aioq_using_subcommand send" -l interval -d 'Time between generated messages (seconds, or 500ms); 0 sends as fast as the broker\'s back-pressure allows' -r
complete -c aioq -n "__fish_aioq_using_subcommand send" -l size -d 'Payload size in bytes: the generated text padded with dots, or cut, to it; default: the text alone' -r
complete -c aioq -n "__fish_aioq_using_subcommand send" -l count -d 'Number of messages to send, then exit (default: forever; 1 with --message)' -r
complete -c aioq -n "__fish_aioq_using_subcommand send" -l message -d 'Send this text instead of generated `Msg {i} from {pid}` messages (the process id)' -r
complete -c aioq -n "__fish_aioq_using_subcommand send" -l buffer -d 'Messages held while the broker is unreachable. Generated messages beyond it are dropped and counted; with --stdin, reading input pauses instead' -r
complete -c aioq -n "__fish_aioq_using_subcommand send" -l protocol -d 'Protocol to speak: auto (2 when the broker does, else 1), 1 or 2' -r -f -a "auto\t'Version 2 when the broker speaks it, else version 1'
1\t''
2\t''"
complete -c aioq -n "__fish_aioq_using_subcommand send" -l tls -d 'Connect with TLS (implied by any other --tls-* flag)'
complete -c aioq -n "__fish_aioq_using_subcommand send" -l stdin -d 'Send one message per line of standard input; exit when it ends, after everything was written and the broker acknowledged the goodbye'
complete -c aioq -n "__fish_aioq_using_subcommand send" -l no-reconnect -d 'Exit when the connection breaks instead of reconnecting (3 when the broker cannot be reached, 5 when it turns the connection away)'
complete -c aioq -n "__fish_aioq_using_subcommand send" -l no-confirm -d 'At the end, do not wait for the broker to confirm (with end-of-stream) that it routed everything: flush, close and exit 0. For brokers that do not answer the goodbye'
complete -c aioq -n "__fish_aioq_using_subcommand send" -l confirm -d 'Wait for each message\'s confirm before sending the next (protocol 2; slower, and a refusal is known before the next message leaves)'
complete -c aioq -n "__fish_aioq_using_subcommand send" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c aioq -n "__fish_aioq_using_subcommand send" -s q -l quiet -d 'Less log output on stderr (-q warnings only, -qq errors only)'
complete -c aioq -n "__fish_aioq_using_subcommand send" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aioq -n "__fish_aioq_using_subcommand send" -s V -l version -d 'Print version'
complete -c aioq -n "__fish_aioq_using_subcommand work" -l host -d 'Broker host name or address' -r
complete -c aioq -n "__fish_aioq_using_subcommand work" -l port -d 'Broker TCP port' -r
complete -c aioq -n "__fish_aioq_using_subcommand work" -l tls-ca -d 'CA certificates (PEM) that the broker\'s certificate must chain to [default: the system\'s, /etc/ssl/certs/ca-certificates.crt]' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand work" -l tls-cert -d 'Client certificate chain (PEM), for brokers that require one; needs --tls-key' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand work" -l tls-key -d 'Private key for --tls-cert (PEM)' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand work" -l tls-server-name -d 'Name to expect in the broker\'s certificate [default: the host the client connects to]' -r
complete -c aioq -n "__fish_aioq_using_subcommand work" -l channel -d 'The /queue channel to take jobs from' -r
complete -c aioq -n "__fish_aioq_using_subcommand work" -l concurrency -d 'Commands run at once; also the jobs held from the broker at once' -r
complete -c aioq -n "__fish_aioq_using_subcommand work" -l timeout -d 'Kill a command that runs longer than this (the job is tried again)' -r
complete -c aioq -n "__fish_aioq_using_subcommand work" -l count -d 'Exit 0 after this many jobs (done or not)' -r
complete -c aioq -n "__fish_aioq_using_subcommand work" -l tls -d 'Connect with TLS (implied by any other --tls-* flag)'
complete -c aioq -n "__fish_aioq_using_subcommand work" -l no-reconnect -d 'Exit when the connection ends instead of reconnecting'
complete -c aioq -n "__fish_aioq_using_subcommand work" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c aioq -n "__fish_aioq_using_subcommand work" -s q -l quiet -d 'Less log output on stderr (-q warnings only, -qq errors only)'
complete -c aioq -n "__fish_aioq_using_subcommand work" -s h -l help -d 'Print help'
complete -c aioq -n "__fish_aioq_using_subcommand work" -s V -l version -d 'Print version'
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -l host -d 'Broker host name or address' -r
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -l port -d 'Broker TCP port' -r
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -l tls-ca -d 'CA certificates (PEM) that the broker\'s certificate must chain to [default: the system\'s, /etc/ssl/certs/ca-certificates.crt]' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -l tls-cert -d 'Client certificate chain (PEM), for brokers that require one; needs --tls-key' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -l tls-key -d 'Private key for --tls-cert (PEM)' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -l tls-server-name -d 'Name to expect in the broker\'s certificate [default: the host the client connects to]' -r
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -l from -d 'The /queue channel to take messages from (a dead-letter channel)' -r
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -l to -d 'The channel to put them on' -r
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -l count -d 'Move at most this many' -r
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -l idle -d 'Without --count: stop once nothing has come for this long' -r
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -l tls -d 'Connect with TLS (implied by any other --tls-* flag)'
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -s q -l quiet -d 'Less log output on stderr (-q warnings only, -qq errors only)'
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -s h -l help -d 'Print help'
complete -c aioq -n "__fish_aioq_using_subcommand requeue" -s V -l version -d 'Print version'
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l target -d 'Broker to measure: HOST:PORT (aioq), nats://HOST:PORT or redis://HOST:PORT; default: an embedded aioq broker on a free port' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l subscribe-target -d 'Subscribers and workers connect here (HOST:PORT) while publishers use --target: two brokers of one cluster, to measure across it' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l target-metrics -d 'The --target broker\'s Prometheus page (`aioq serve --http`), read before and after each throughput run for its physics: messages and bytes per socket write, CPU time per delivery' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l tls-ca -d 'CA certificates (PEM) that the broker\'s certificate must chain to [default: the system\'s, /etc/ssl/certs/ca-certificates.crt]' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l tls-cert -d 'Client certificate chain (PEM), for brokers that require one; needs --tls-key' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l tls-key -d 'Private key for --tls-cert (PEM)' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l tls-server-name -d 'Name to expect in the broker\'s certificate [default: the host the client connects to]' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l scenario -d 'Which scenario to run' -r -f -a "all\t'isolation, throughput, latency and fanout'
isolation\t''
throughput\t''
latency\t''
fanout\t''
work\t'Workers acknowledge every job: jobs/s, shares, publish-to-ack latency'
durable\t'Confirmed publishes to a durable queue, 1 and 16 publishers'
crash-worker\t'A worker process killed (SIGKILL) with jobs in hand: lost and duplicated jobs, time until its jobs reach another worker'
crash-broker\t'A broker the bench started (no --target, or --broker-cmd) SIGKILLed during a confirmed flood, started again, drained: confirmed but lost, duplicates, time to serve again'
recovery\t'A broker the bench started, SIGKILLed with --recovery-jobs stored: time to serve again, to drain'
jobs\t'work, crash-worker, durable, crash-broker and recovery'"
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l kinds -d 'Channel kinds the isolation and throughput scenarios measure' -r -f -a "both\t''
topic\t''
queue\t''"
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l subscribers -d 'Fast subscribers (isolation), subscribers or workers (throughput)' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l slow -d 'Slow subscribers added in the second isolation run' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l slow-mode -d 'How the slow subscribers misbehave' -r -f -a "stall\t'Never reads'
trickle\t'Reads `--trickle-rate` messages per second'"
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l trickle-rate -d 'Messages per second a trickling subscriber reads' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l rate -d 'Publish rate of the isolation runs, messages per second' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l duration -d 'Length of each isolation run' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l messages -d 'Messages published in the throughput runs' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l stall-timeout -d 'Give up a throughput run (exit 1) when nothing is sent or delivered for this long: the broker stopped reading, or holds the publisher back with nowhere to deliver' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l size -d 'Payload size (at least 24 bytes: sequence number, due and send times)' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l latency-rate -d 'Publish rate of the latency run, messages per second' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l latency-duration -d 'Length of the latency run' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l connections -d 'Subscriber connections in the fan-out run' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l protocol -d 'Protocol an aioq target is spoken to in: v1, or v2 (publishers and measuring subscribers; the isolation runs\' slow subscribers stay on v1)' -r -f -a "v1\t'Protocol 1'
v2\t'Protocol 2 (publishers and measuring subscribers; the isolation runs\' slow subscribers stay on protocol 1\'s bare socket)'"
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l min-isolation -d 'Exit 1 when an isolation ratio falls below this, or when isolation is inconclusive' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l compare -d 'Print every figure beside this earlier run\'s (`--json` output), with the change, changes within --noise marked as such' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l max-regression -d 'With --compare: exit 1 when a figure got worse by more than this many percent' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l noise -d 'With --compare: changes within this many percent are noise' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l workers -d 'Job scenarios: workers that take and acknowledge jobs' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l jobs -d 'Job scenarios: jobs per run' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l prefetch -d 'Job scenarios: deliveries a worker may hold unacknowledged (aioq credit, RabbitMQ basic.qos, JetStream\'s pull batch, Redis COUNT)' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l confirm-window -d 'Job scenarios: publishes each producer keeps unconfirmed at most' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l publishers -d 'durable: the publisher counts of its runs' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l broker-cmd -d 'Job scenarios: the broker to start (and kill, and start again) for crash-broker and recovery, run by `sh -c`; `{port}` (and `{http_port}`, `{dist_port}`) are replaced by free ports, `{port}` in --target too. Its data directory is the command\'s business: give one that outlives it' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l recovery-jobs -d 'recovery: the stored jobs of its runs' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l fsync -d 'Job scenarios without --target: the started broker\'s --fsync' -r -f -a "always\t''
never\t''"
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l nats-sync -d 'Job scenarios on nats://: the JetStream file store\'s sync_interval as the server was started (no client can read it): printed with the figures; only `always` counts as synced before the publish ack' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l ack-wait -d 'Job scenarios: how long a delivery may go unanswered before another worker gets it, where the client sets it (JetStream\'s ack_wait, the idle time of Redis\'s XAUTOCLAIM); aioq\'s is the broker\'s --ack-wait, and aioq and RabbitMQ give a dead worker\'s jobs back at once' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l job-worker -d 'A worker process of crash-worker (started by the bench itself)' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l job-time -d 'crash-worker: how long each job takes a worker (every worker, the killed one too, so that it dies with jobs in hand)' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l send-queue -d 'Embedded broker: messages per subscriber send queue' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l send-queue-bytes -d 'Embedded broker: payload bytes per subscriber send queue' -r
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l topic-overflow -d 'Embedded broker: what happens to a /topic subscriber whose queue is full' -r -f -a "drop\t'The subscriber misses the message; the loss is counted'
disconnect\t'The subscriber is disconnected as a slow consumer; the loss is counted'"
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l tls -d 'Connect with TLS (implied by any other --tls-* flag)'
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l confirms -d 'With --protocol v2: every publish asks a confirm, and each publisher\'s goodbye waits for the last (cumulative confirms, one per read buffer)'
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l acks -d 'With --protocol v2: /queue workers acknowledge their deliveries (one ACK up to the last per read; credit --worker-queue of the broker)'
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l json -d 'Print one JSON document on stdout instead of tables'
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l csv -d 'Print the figures as CSV (figure,value,unit) instead of tables'
complete -c aioq -n "__fish_aioq_using_subcommand bench" -l no-prime -d 'Skip the priming burst that fills the stalled subscribers\' kernel buffers before an isolation run is measured (the verdict is then inconclusive unless the run itself owes them enough)'
complete -c aioq -n "__fish_aioq_using_subcommand bench" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c aioq -n "__fish_aioq_using_subcommand bench" -s q -l quiet -d 'Less log output on stderr (-q warnings only, -qq errors only)'
complete -c aioq -n "__fish_aioq_using_subcommand bench" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aioq -n "__fish_aioq_using_subcommand bench" -s V -l version -d 'Print version'
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l dsn -d 'PostgreSQL connection string (a direct connection: LISTEN does not work through a pooler in transaction mode). Keep the password out of it: PGPASSWORD is read as libpq does' -r
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l payload -d 'What events carry (with --install: what the trigger sends; otherwise: what this watcher trusts). In keys mode a notification only says which row changed, and the row is read with this watcher\'s privileges' -r -f -a "keys\t'Table, schema, key and operation only; the watcher reads the row with its own privileges. A forged notification can at worst cause a re-read'
rows\t'Old and new rows and the diff in the event (no read per event; every role that can LISTEN on the channel reads them, and any role can NOTIFY one)'"
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l table -d 'Table to watch, optionally schema-qualified; repeat for more. Each needs a single-column primary key' -r
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l channel -d 'NOTIFY channel for every table (default: chan_<table> for each)' -r
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l http -d 'Serve the JSON API on this address (port 0 picks one; the log says which)' -r
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l http-allow-host -d 'A host name browsers may reach the HTTP face by (repeatable), beside localhost and IP literals: any other Host header gets 403, so that a web page cannot rebind its own name to this address and read it' -r
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l http-max-connections -d 'HTTP connections served at once; more wait until one closes' -r
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l http-header-timeout -d 'Time a client has to send a request\'s headers once it has begun' -r
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l http-token-file -d 'A file holding a token every HTTP request must bear (`Authorization: Bearer TOKEN`)' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l publish -d 'Forward every event into this broker channel' -r
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l tls-ca -d 'CA certificates (PEM) that the broker\'s certificate must chain to [default: the system\'s, /etc/ssl/certs/ca-certificates.crt]' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l tls-cert -d 'Client certificate chain (PEM), for brokers that require one; needs --tls-key' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l tls-key -d 'Private key for --tls-cert (PEM)' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l tls-server-name -d 'Name to expect in the broker\'s certificate [default: the host the client connects to]' -r
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l broker-host -d 'Broker host for --publish' -r
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l broker-port -d 'Broker port for --publish' -r
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l event-queue -d 'Notifications held between PostgreSQL and the cache; past it they are dropped, counted, and the cache starts over (a RESYNC event)' -r
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l cache-size -d 'Rows the cache holds (least recently used go first)' -r
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l check -d 'Check that the database is ready to be watched (connection, TLS, a NOTIFY round trip, the notification queue, each table\'s trigger and privileges), print a line per check, exit 0 only when all pass'
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l install -d 'Create (or update) the trigger function and triggers, then exit'
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l uninstall -d 'Remove the triggers (and the function when unused), then exit'
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l tls -d 'Connect with TLS (implied by any other --tls-* flag)'
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -l json -d 'One JSON object per line on stdout instead of pretty JSON'
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -s q -l quiet -d 'Less log output on stderr (-q warnings only, -qq errors only)'
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aioq -n "__fish_aioq_using_subcommand watch-db" -s V -l version -d 'Print version'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and not __fish_seen_subcommand_from report collect help" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and not __fish_seen_subcommand_from report collect help" -s q -l quiet -d 'Less log output on stderr (-q warnings only, -qq errors only)'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and not __fish_seen_subcommand_from report collect help" -s h -l help -d 'Print help'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and not __fish_seen_subcommand_from report collect help" -s V -l version -d 'Print version'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and not __fish_seen_subcommand_from report collect help" -f -a "report" -d 'Sample a process\'s CPU and memory and publish them'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and not __fish_seen_subcommand_from report collect help" -f -a "collect" -d 'Gather samples: a live terminal table, JSON lines, or a web page'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and not __fish_seen_subcommand_from report collect help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l host -d 'Broker host name or address' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l port -d 'Broker TCP port' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l tls-ca -d 'CA certificates (PEM) that the broker\'s certificate must chain to [default: the system\'s, /etc/ssl/certs/ca-certificates.crt]' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l tls-cert -d 'Client certificate chain (PEM), for brokers that require one; needs --tls-key' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l tls-key -d 'Private key for --tls-cert (PEM)' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l tls-server-name -d 'Name to expect in the broker\'s certificate [default: the host the client connects to]' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l name -d 'Name shown by the collector' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l pid -d 'Process to watch (default: this one, running a small demo workload)' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l interval -d 'Time between samples' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l channel -d 'Channel to publish on' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l leak -d 'Demo workload: grow memory by this many 100-byte items per sample, up to --leak-limit' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l leak-limit -d 'Where the --leak demo stops growing (it then holds steady)' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l idle-interval -d 'Time between samples while the collectors say nobody watches (no terminal table, no browser on the page). A reporter that hears from no collector keeps --interval' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l control-channel -d 'Channel on which collectors say whether anyone watches' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -l tls -d 'Connect with TLS (implied by any other --tls-* flag)'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -s q -l quiet -d 'Less log output on stderr (-q warnings only, -qq errors only)'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -s h -l help -d 'Print help'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from report" -s V -l version -d 'Print version'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l host -d 'Broker host name or address' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l port -d 'Broker TCP port' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l tls-ca -d 'CA certificates (PEM) that the broker\'s certificate must chain to [default: the system\'s, /etc/ssl/certs/ca-certificates.crt]' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l tls-cert -d 'Client certificate chain (PEM), for brokers that require one; needs --tls-key' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l tls-key -d 'Private key for --tls-cert (PEM)' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l tls-server-name -d 'Name to expect in the broker\'s certificate [default: the host the client connects to]' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l channel -d 'Channel the reporters publish on' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l http -d 'Serve the live page, `/feed` (server-sent events) and `/api/reporters` here' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l http-allow-host -d 'A host name browsers may reach the HTTP face by (repeatable), beside localhost and IP literals: any other Host header gets 403, so that a web page cannot rebind its own name to this address and read it' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l stale-after -d 'A reporter not heard from for this long is marked stale' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l forget-after -d 'A reporter not heard from for this long is forgotten' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l max-reporters -d 'Reporters followed at once; samples from more are refused and counted' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l http-max-connections -d 'Browsers (and other HTTP clients) served at once' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l control-channel -d 'Channel on which the collector tells reporters whether anyone watches (the table on a terminal, the JSON lines in a pipe or a file, or a browser on the page; not stdout sent to /dev/null): they sample at their --interval while someone does, at their --idle-interval while nobody does' -r
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -l tls -d 'Connect with TLS (implied by any other --tls-* flag)'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -s q -l quiet -d 'Less log output on stderr (-q warnings only, -qq errors only)'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -s h -l help -d 'Print help'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from collect" -s V -l version -d 'Print version'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from help" -f -a "report" -d 'Sample a process\'s CPU and memory and publish them'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from help" -f -a "collect" -d 'Gather samples: a live terminal table, JSON lines, or a web page'
complete -c aioq -n "__fish_aioq_using_subcommand metrics; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c aioq -n "__fish_aioq_using_subcommand completions" -l out -d 'Write the scripts for every supported shell into this directory instead' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand completions" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c aioq -n "__fish_aioq_using_subcommand completions" -s q -l quiet -d 'Less log output on stderr (-q warnings only, -qq errors only)'
complete -c aioq -n "__fish_aioq_using_subcommand completions" -s h -l help -d 'Print help'
complete -c aioq -n "__fish_aioq_using_subcommand completions" -s V -l version -d 'Print version'
complete -c aioq -n "__fish_aioq_using_subcommand man" -l out -d 'Directory to write aioq.1 and aioq-<subcommand>.1 into' -r -F
complete -c aioq -n "__fish_aioq_using_subcommand man" -s v -l verbose -d 'More log output on stderr (-v debug, -vv trace)'
complete -c aioq -n "__fish_aioq_using_subcommand man" -s q -l quiet -d 'Less log output on stderr (-q warnings only, -qq errors only)'
complete -c aioq -n "__fish_aioq_using_subcommand man" -s h -l help -d 'Print help'
complete -c aioq -n "__fish_aioq_using_subcommand man" -s V -l version -d 'Print version'
complete -c aioq -n "__fish_aioq_using_subcommand help; and not __fish_seen_subcommand_from serve listen send work requeue bench watch-db metrics completions man help" -f -a "serve" -d 'Run the message broker'
complete -c aioq -n "__fish_aioq_using_subcommand help; and not __fish_seen_subcommand_from serve listen send work requeue bench watch-db metrics completions man help" -f -a "listen" -d 'Subscribe to a channel and print what arrives'
complete -c aioq -n "__fish_aioq_using_subcommand help; and not __fish_seen_subcommand_from serve listen send work requeue bench watch-db metrics completions man help" -f -a "send" -d 'Publish messages to a channel'
complete -c aioq -n "__fish_aioq_using_subcommand help; and not __fish_seen_subcommand_from serve listen send work requeue bench watch-db metrics completions man help" -f -a "work" -d 'Run a command for each job of a /queue channel, acknowledging it by its exit status'
complete -c aioq -n "__fish_aioq_using_subcommand help; and not __fish_seen_subcommand_from serve listen send work requeue bench watch-db metrics completions man help" -f -a "requeue" -d 'Move messages (dead letters) from one /queue channel back to another'
complete -c aioq -n "__fish_aioq_using_subcommand help; and not __fish_seen_subcommand_from serve listen send work requeue bench watch-db metrics completions man help" -f -a "bench" -d 'Measure isolation, throughput, latency and fan-out of a broker'
complete -c aioq -n "__fish_aioq_using_subcommand help; and not __fish_seen_subcommand_from serve listen send work requeue bench watch-db metrics completions man help" -f -a "watch-db" -d 'PostgreSQL change feed with a coherent cache, an HTTP API and forwarding'
complete -c aioq -n "__fish_aioq_using_subcommand help; and not __fish_seen_subcommand_from serve listen send work requeue bench watch-db metrics completions man help" -f -a "metrics" -d 'Application metrics through the broker: report, collect, chart'
complete -c aioq -n "__fish_aioq_using_subcommand help; and not __fish_seen_subcommand_from serve listen send work requeue bench watch-db metrics completions man help" -f -a "completions" -d 'Print shell completions (bash, zsh, fish, elvish, powershell)'
complete -c aioq -n "__fish_aioq_using_subcommand help; and not __fish_seen_subcommand_from serve listen send work requeue bench watch-db metrics completions man help" -f -a "man" -d 'Write man pages for aioq and each subcommand'
complete -c aioq -n "__fish_aioq_using_subcommand help; and not __fish_seen_subcommand_from serve listen send work requeue bench watch-db metrics completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c aioq -n "__fish_aioq_using_subcommand help; and __fish_seen_subcommand_from metrics" -f -a "report" -d 'Sample a process\'s CPU and memory and publish them'
complete -c aioq -n "__fish_aioq_using_subcommand help; and __fish_seen_subcommand_from metrics" -f -a "collect" -d 'Gather samples: a live terminal table, JSON lines, or a web page'
