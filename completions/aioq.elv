
use builtin;
use str;

set edit:completion:arg-completer[aioq] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'aioq'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'aioq'= {
            cand -v 'More log output on stderr (-v debug, -vv trace)'
            cand --verbose 'More log output on stderr (-v debug, -vv trace)'
            cand -q 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand --quiet 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'Run the message broker'
            cand listen 'Subscribe to a channel and print what arrives'
            cand send 'Publish messages to a channel'
            cand work 'Run a command for each job of a /queue channel, acknowledging it by its exit status'
            cand requeue 'Move messages (dead letters) from one /queue channel back to another'
            cand bench 'Measure isolation, throughput, latency and fan-out of a broker'
            cand watch-db 'PostgreSQL change feed with a coherent cache, an HTTP API and forwarding'
            cand metrics 'Application metrics through the broker: report, collect, chart'
            cand completions 'Print shell completions (bash, zsh, fish, elvish, powershell)'
            cand man 'Write man pages for aioq and each subcommand'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'aioq;serve'= {
            cand --config 'Settings from this TOML file (flags and environment override it): every flag by its name without dashes, [[channel]] policies by prefix, [access] rules by TLS identity. SIGHUP reloads it'
            cand --host 'Address to listen on. Loopback by default: the protocol has no authentication, so exposing it is a decision to make on purpose. (AIOQ_HOST points clients at a broker; it does not move this one.)'
            cand --port 'TCP port; 0 picks a free one'
            cand --send-queue 'Messages each /topic subscriber''s send queue holds'
            cand --send-queue-bytes 'Payload bytes each subscriber''s send queue holds; the queue is full at whichever bound comes first, so memory stays bounded for large messages'
            cand --worker-queue 'Messages each /queue worker''s send queue holds (its prefetch): what a stalled worker can hold back from the others'
            cand --backlog 'Messages a /queue channel holds when no worker has room; beyond it the publisher is back-pressured'
            cand --backlog-bytes 'Payload bytes a /queue channel''s backlog holds; beyond it the publisher is back-pressured. All backlogs together hold at most half of --max-memory, so the other half stays for live subscribers'
            cand --backlog-ttl 'Discard the backlog of a /queue channel that has had no worker for this long (counted as expired). Default: keep it until a worker comes'
            cand --topic-overflow 'What happens to a /topic subscriber whose send queue is full'
            cand --max-frame 'Largest frame accepted (e.g. 16MiB); a client announcing more is disconnected'
            cand --max-channel 'Longest channel name accepted, in bytes'
            cand --max-channels 'Channels held at once. One source address (an IPv6 /64) may create a tenth of them as worker-less /queue channels by publishing; a publish past that, or past the limit, is dropped and counted as channel_limit. A subscription to a new channel when the registry is full evicts the oldest /queue channel that has no worker (its backlog counted as evicted); only when every channel has subscribers is it refused with end-of-stream'
            cand --max-subscriptions 'Subscriptions one protocol v2 connection may hold at once (a v1 connection holds one)'
            cand --ack-wait 'How long a protocol v2 worker that acknowledges its deliveries may hold one unanswered before it goes to another worker (attempt raised)'
            cand --max-deliveries 'Failed deliveries (a nak, an ack wait run out) after which a message goes to its channel''s dead-letter channel (CHANNEL/dead)'
            cand --max-credit 'Unacknowledged deliveries a protocol v2 worker may ask to hold at once (its credit)'
            cand --durable 'Keep the messages of /queue channels whose names start with PREFIX on disk (repeatable; `durable = true` in a [[channel]] entry too): they survive a restart or a crash of the broker, a publish is confirmed once it is stored (as --fsync says), and a message is gone from disk only once acknowledged (or written to a worker that does not acknowledge). Not with --cluster, whose /queue channels JetStream keeps'
            cand --data-dir 'Where durable channels are kept. One broker per directory (a second is refused while the first runs)'
            cand --fsync 'When a durable publish counts as stored: `always` (on disk: every write is fsynced, one fsync shared by every publisher waiting on it), `interval:D` (written to the file, fsynced every D: a power loss can take the last D, a crash of the broker alone nothing), `never` (written; synced when the system pleases). Per channel: `fsync = "always"` or `"never"` in a [[channel]] entry'
            cand --segment-size 'Size at which the durable store starts a new segment file; a segment is deleted once every message in it (and in every older one) is done'
            cand --max-disk 'Bytes the durable store''s segment files may hold. At the bound a protocol 1 publisher to a durable channel waits (TCP back-pressure) and a protocol 2 publish is refused with `disk_full`, until workers settle enough for a segment to be deleted. Default: the file system''s room (a full disk holds publishers back the same way). Per channel: `max-disk` in a [[channel]] entry (its stored payload bytes)'
            cand --max-connections 'Connections served at once; more are refused with an end-of-stream frame'
            cand --subscribe-timeout 'How long a new connection has to send its subscribe frame'
            cand --keepalive 'Idle time before TCP keepalive probes; 0 turns keepalive off'
            cand --drain-timeout 'How long shutdown may spend flushing send queues'
            cand --max-memory 'Payload bytes all send queues and backlogs may hold together; past it, /topic subscribers miss messages (counted) and /queue publishers wait'
            cand --max-connections-per-ip 'Connections one source address (an IPv6 /64) may hold; 0: no limit. Default: a quarter of --max-connections for every address but loopback (local clients all share one address); given, it applies to loopback too'
            cand --write-timeout 'Disconnect a subscriber whose socket accepts nothing for this long while messages wait for it (a vanished host, or one stalled for good)'
            cand --frame-timeout 'Close a connection that leaves a frame half-sent for this long'
            cand --tls-cert 'Serve TLS with this certificate chain (PEM); needs --tls-key'
            cand --tls-key 'Private key for --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1)'
            cand --tls-client-ca 'Require client certificates signed by this CA (mutual TLS): only admitted clients connect'
            cand --cluster 'Join a cluster of brokers through this NATS server (e.g. nats://10.0.0.9:4222; several, comma-separated). /topic messages reach subscribers on every broker; /queue channels become JetStream work-queue streams shared by every broker''s workers'
            cand --cluster-ack-wait 'How long JetStream waits for a broker to acknowledge a /queue message before giving it to another broker (a broker that died holding it)'
            cand --cluster-queue-bytes 'Bytes each /queue stream may hold in JetStream; past it publishers wait [default: no byte limit, only --cluster-queue-messages]. JetStream sets this much of its storage aside for every stream when it is created, so a limit also caps the number of /queue channels at the server''s storage divided by it'
            cand --cluster-queue-messages 'JetStream messages each /queue stream holds; past it publishers wait. A publisher''s messages to one channel that arrive together are stored as one JetStream message (up to 256 of them, 64 KiB), so this bounds stored batches; --cluster-queue-bytes bounds the bytes exactly'
            cand --cluster-replicas 'Copies JetStream keeps of each /queue stream (1 to 5; more than 1 needs a clustered NATS)'
            cand --http 'Serve monitoring over HTTP here: /healthz, /api/server, /api/connections, /api/channels and /metrics (Prometheus). Read-only; keep it on loopback or a private network'
            cand --http-allow-host 'A host name browsers may reach the HTTP face by (repeatable), beside localhost and IP literals: any other Host header gets 403, so that a web page cannot rebind its own name to this address and read it'
            cand --http-channel-series 'Channels /metrics gives series of their own (`aioq_channel_*`, labelled by channel): the N with the most messages published, so that a dashboard needs no /api/channels and Prometheus no unbounded labels. 0 for none'
            cand --metrics-channel 'Channel for --metrics'
            cand --metrics-interval 'Time between --metrics samples'
            cand --check-config 'Check --config and the flags, say what is in force, and exit (0 when valid, 2 when not)'
            cand --cluster-memory 'Keep /queue streams in NATS memory instead of on disk (faster; lost when nats-server restarts)'
            cand --metrics 'Publish the broker''s own CPU, memory and counters, like `aioq metrics report`'
            cand -v 'More log output on stderr (-v debug, -vv trace)'
            cand --verbose 'More log output on stderr (-v debug, -vv trace)'
            cand -q 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand --quiet 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'aioq;listen'= {
            cand --host 'Broker host name or address'
            cand --port 'Broker TCP port'
            cand --tls-ca 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]'
            cand --tls-cert 'Client certificate chain (PEM), for brokers that require one; needs --tls-key'
            cand --tls-key 'Private key for --tls-cert (PEM)'
            cand --tls-server-name 'Name to expect in the broker''s certificate [default: the host the client connects to]'
            cand --channel 'Channel to subscribe to; repeat it for several on one connection (a broker that speaks protocol 2)'
            cand --listen 'Channel to subscribe to; repeat it for several on one connection (a broker that speaks protocol 2)'
            cand --protocol 'Protocol to speak: auto (2 when the broker does, else 1), 1 or 2'
            cand --count 'Exit 0 after this many messages'
            cand --format 'How each message is printed'
            cand --tls 'Connect with TLS (implied by any other --tls-* flag)'
            cand --no-reconnect 'Exit when the connection ends instead of reconnecting (0 on end-of-stream, 1 on a broken connection, 3 when the broker cannot be reached, 5 when it turns the connection away at once)'
            cand --ack 'Acknowledge each /queue message once it is printed (protocol 2): a message the listener did not print (it was stopped first) goes to another worker instead of being lost'
            cand -v 'More log output on stderr (-v debug, -vv trace)'
            cand --verbose 'More log output on stderr (-v debug, -vv trace)'
            cand -q 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand --quiet 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'aioq;send'= {
            cand --host 'Broker host name or address'
            cand --port 'Broker TCP port'
            cand --tls-ca 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]'
            cand --tls-cert 'Client certificate chain (PEM), for brokers that require one; needs --tls-key'
            cand --tls-key 'Private key for --tls-cert (PEM)'
            cand --tls-server-name 'Name to expect in the broker''s certificate [default: the host the client connects to]'
            cand --channel 'Channel to publish to'
            cand --interval 'Time between generated messages (seconds, or 500ms); 0 sends as fast as the broker''s back-pressure allows'
            cand --size 'Payload size in bytes: the generated text padded with dots, or cut, to it; default: the text alone'
            cand --count 'Number of messages to send, then exit (default: forever; 1 with --message)'
            cand --message 'Send this text instead of generated `Msg {i} from {pid}` messages (the process id)'
            cand --buffer 'Messages held while the broker is unreachable. Generated messages beyond it are dropped and counted; with --stdin, reading input pauses instead'
            cand --protocol 'Protocol to speak: auto (2 when the broker does, else 1), 1 or 2'
            cand --tls 'Connect with TLS (implied by any other --tls-* flag)'
            cand --stdin 'Send one message per line of standard input; exit when it ends, after everything was written and the broker acknowledged the goodbye'
            cand --no-reconnect 'Exit when the connection breaks instead of reconnecting (3 when the broker cannot be reached, 5 when it turns the connection away)'
            cand --no-confirm 'At the end, do not wait for the broker to confirm (with end-of-stream) that it routed everything: flush, close and exit 0. For brokers that do not answer the goodbye'
            cand --confirm 'Wait for each message''s confirm before sending the next (protocol 2; slower, and a refusal is known before the next message leaves)'
            cand -v 'More log output on stderr (-v debug, -vv trace)'
            cand --verbose 'More log output on stderr (-v debug, -vv trace)'
            cand -q 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand --quiet 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'aioq;work'= {
            cand --host 'Broker host name or address'
            cand --port 'Broker TCP port'
            cand --tls-ca 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]'
            cand --tls-cert 'Client certificate chain (PEM), for brokers that require one; needs --tls-key'
            cand --tls-key 'Private key for --tls-cert (PEM)'
            cand --tls-server-name 'Name to expect in the broker''s certificate [default: the host the client connects to]'
            cand --channel 'The /queue channel to take jobs from'
            cand --concurrency 'Commands run at once; also the jobs held from the broker at once'
            cand --timeout 'Kill a command that runs longer than this (the job is tried again)'
            cand --count 'Exit 0 after this many jobs (done or not)'
            cand --tls 'Connect with TLS (implied by any other --tls-* flag)'
            cand --no-reconnect 'Exit when the connection ends instead of reconnecting'
            cand -v 'More log output on stderr (-v debug, -vv trace)'
            cand --verbose 'More log output on stderr (-v debug, -vv trace)'
            cand -q 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand --quiet 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'aioq;requeue'= {
            cand --host 'Broker host name or address'
            cand --port 'Broker TCP port'
            cand --tls-ca 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]'
            cand --tls-cert 'Client certificate chain (PEM), for brokers that require one; needs --tls-key'
            cand --tls-key 'Private key for --tls-cert (PEM)'
            cand --tls-server-name 'Name to expect in the broker''s certificate [default: the host the client connects to]'
            cand --from 'The /queue channel to take messages from (a dead-letter channel)'
            cand --to 'The channel to put them on'
            cand --count 'Move at most this many'
            cand --idle 'Without --count: stop once nothing has come for this long'
            cand --tls 'Connect with TLS (implied by any other --tls-* flag)'
            cand -v 'More log output on stderr (-v debug, -vv trace)'
            cand --verbose 'More log output on stderr (-v debug, -vv trace)'
            cand -q 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand --quiet 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'aioq;bench'= {
            cand --target 'Broker to measure: HOST:PORT (aioq), nats://HOST:PORT or redis://HOST:PORT; default: an embedded aioq broker on a free port'
            cand --subscribe-target 'Subscribers and workers connect here (HOST:PORT) while publishers use --target: two brokers of one cluster, to measure across it'
            cand --target-metrics 'The --target broker''s Prometheus page (`aioq serve --http`), read before and after each throughput run for its physics: messages and bytes per socket write, CPU time per delivery'
            cand --tls-ca 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]'
            cand --tls-cert 'Client certificate chain (PEM), for brokers that require one; needs --tls-key'
            cand --tls-key 'Private key for --tls-cert (PEM)'
            cand --tls-server-name 'Name to expect in the broker''s certificate [default: the host the client connects to]'
            cand --scenario 'Which scenario to run'
            cand --kinds 'Channel kinds the isolation and throughput scenarios measure'
            cand --subscribers 'Fast subscribers (isolation), subscribers or workers (throughput)'
            cand --slow 'Slow subscribers added in the second isolation run'
            cand --slow-mode 'How the slow subscribers misbehave'
            cand --trickle-rate 'Messages per second a trickling subscriber reads'
            cand --rate 'Publish rate of the isolation runs, messages per second'
            cand --duration 'Length of each isolation run'
            cand --messages 'Messages published in the throughput runs'
            cand --stall-timeout 'Give up a throughput run (exit 1) when nothing is sent or delivered for this long: the broker stopped reading, or holds the publisher back with nowhere to deliver'
            cand --size 'Payload size (at least 24 bytes: sequence number, due and send times)'
            cand --latency-rate 'Publish rate of the latency run, messages per second'
            cand --latency-duration 'Length of the latency run'
            cand --connections 'Subscriber connections in the fan-out run'
            cand --protocol 'Protocol an aioq target is spoken to in: v1, or v2 (publishers and measuring subscribers; the isolation runs'' slow subscribers stay on v1)'
            cand --min-isolation 'Exit 1 when an isolation ratio falls below this, or when isolation is inconclusive'
            cand --compare 'Print every figure beside this earlier run''s (`--json` output), with the change, changes within --noise marked as such'
            cand --max-regression 'With --compare: exit 1 when a figure got worse by more than this many percent'
            cand --noise 'With --compare: changes within this many percent are noise'
            cand --send-queue 'Embedded broker: messages per subscriber send queue'
            cand --send-queue-bytes 'Embedded broker: payload bytes per subscriber send queue'
            cand --topic-overflow 'Embedded broker: what happens to a /topic subscriber whose queue is full'
            cand --tls 'Connect with TLS (implied by any other --tls-* flag)'
            cand --confirms 'With --protocol v2: every publish asks a confirm, and each publisher''s goodbye waits for the last (cumulative confirms, one per read buffer)'
            cand --acks 'With --protocol v2: /queue workers acknowledge their deliveries (one ACK up to the last per read; credit --worker-queue of the broker)'
            cand --json 'Print one JSON document on stdout instead of tables'
            cand --csv 'Print the figures as CSV (figure,value,unit) instead of tables'
            cand --no-prime 'Skip the priming burst that fills the stalled subscribers'' kernel buffers before an isolation run is measured (the verdict is then inconclusive unless the run itself owes them enough)'
            cand -v 'More log output on stderr (-v debug, -vv trace)'
            cand --verbose 'More log output on stderr (-v debug, -vv trace)'
            cand -q 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand --quiet 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'aioq;watch-db'= {
            cand --dsn 'PostgreSQL connection string (a direct connection: LISTEN does not work through a pooler in transaction mode). Keep the password out of it: PGPASSWORD is read as libpq does'
            cand --payload 'What events carry (with --install: what the trigger sends; otherwise: what this watcher trusts). In keys mode a notification only says which row changed, and the row is read with this watcher''s privileges'
            cand --table 'Table to watch, optionally schema-qualified; repeat for more. Each needs a single-column primary key'
            cand --channel 'NOTIFY channel for every table (default: chan_<table> for each)'
            cand --http 'Serve the JSON API on this address (port 0 picks one; the log says which)'
            cand --http-allow-host 'A host name browsers may reach the HTTP face by (repeatable), beside localhost and IP literals: any other Host header gets 403, so that a web page cannot rebind its own name to this address and read it'
            cand --http-max-connections 'HTTP connections served at once; more wait until one closes'
            cand --http-header-timeout 'Time a client has to send a request''s headers once it has begun'
            cand --http-token-file 'A file holding a token every HTTP request must bear (`Authorization: Bearer TOKEN`)'
            cand --publish 'Forward every event into this broker channel'
            cand --tls-ca 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]'
            cand --tls-cert 'Client certificate chain (PEM), for brokers that require one; needs --tls-key'
            cand --tls-key 'Private key for --tls-cert (PEM)'
            cand --tls-server-name 'Name to expect in the broker''s certificate [default: the host the client connects to]'
            cand --broker-host 'Broker host for --publish'
            cand --broker-port 'Broker port for --publish'
            cand --event-queue 'Notifications held between PostgreSQL and the cache; past it they are dropped, counted, and the cache starts over (a RESYNC event)'
            cand --cache-size 'Rows the cache holds (least recently used go first)'
            cand --check 'Check that the database is ready to be watched (connection, TLS, a NOTIFY round trip, the notification queue, each table''s trigger and privileges), print a line per check, exit 0 only when all pass'
            cand --install 'Create (or update) the trigger function and triggers, then exit'
            cand --uninstall 'Remove the triggers (and the function when unused), then exit'
            cand --tls 'Connect with TLS (implied by any other --tls-* flag)'
            cand --json 'One JSON object per line on stdout instead of pretty JSON'
            cand -v 'More log output on stderr (-v debug, -vv trace)'
            cand --verbose 'More log output on stderr (-v debug, -vv trace)'
            cand -q 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand --quiet 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'aioq;metrics'= {
            cand -v 'More log output on stderr (-v debug, -vv trace)'
            cand --verbose 'More log output on stderr (-v debug, -vv trace)'
            cand -q 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand --quiet 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand report 'Sample a process''s CPU and memory and publish them'
            cand collect 'Gather samples: a live terminal table, JSON lines, or a web page'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'aioq;metrics;report'= {
            cand --host 'Broker host name or address'
            cand --port 'Broker TCP port'
            cand --tls-ca 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]'
            cand --tls-cert 'Client certificate chain (PEM), for brokers that require one; needs --tls-key'
            cand --tls-key 'Private key for --tls-cert (PEM)'
            cand --tls-server-name 'Name to expect in the broker''s certificate [default: the host the client connects to]'
            cand --name 'Name shown by the collector'
            cand --pid 'Process to watch (default: this one, running a small demo workload)'
            cand --interval 'Time between samples'
            cand --channel 'Channel to publish on'
            cand --leak 'Demo workload: grow memory by this many 100-byte items per sample, up to --leak-limit'
            cand --leak-limit 'Where the --leak demo stops growing (it then holds steady)'
            cand --idle-interval 'Time between samples while the collectors say nobody watches (no terminal table, no browser on the page). A reporter that hears from no collector keeps --interval'
            cand --control-channel 'Channel on which collectors say whether anyone watches'
            cand --tls 'Connect with TLS (implied by any other --tls-* flag)'
            cand -v 'More log output on stderr (-v debug, -vv trace)'
            cand --verbose 'More log output on stderr (-v debug, -vv trace)'
            cand -q 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand --quiet 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'aioq;metrics;collect'= {
            cand --host 'Broker host name or address'
            cand --port 'Broker TCP port'
            cand --tls-ca 'CA certificates (PEM) that the broker''s certificate must chain to [default: the system''s, /etc/ssl/certs/ca-certificates.crt]'
            cand --tls-cert 'Client certificate chain (PEM), for brokers that require one; needs --tls-key'
            cand --tls-key 'Private key for --tls-cert (PEM)'
            cand --tls-server-name 'Name to expect in the broker''s certificate [default: the host the client connects to]'
            cand --channel 'Channel the reporters publish on'
            cand --http 'Serve the live page, `/feed` (server-sent events) and `/api/reporters` here'
            cand --http-allow-host 'A host name browsers may reach the HTTP face by (repeatable), beside localhost and IP literals: any other Host header gets 403, so that a web page cannot rebind its own name to this address and read it'
            cand --stale-after 'A reporter not heard from for this long is marked stale'
            cand --forget-after 'A reporter not heard from for this long is forgotten'
            cand --max-reporters 'Reporters followed at once; samples from more are refused and counted'
            cand --http-max-connections 'Browsers (and other HTTP clients) served at once'
            cand --control-channel 'Channel on which the collector tells reporters whether anyone watches (the table on a terminal, the JSON lines in a pipe or a file, or a browser on the page; not stdout sent to /dev/null): they sample at their --interval while someone does, at their --idle-interval while nobody does'
            cand --tls 'Connect with TLS (implied by any other --tls-* flag)'
            cand -v 'More log output on stderr (-v debug, -vv trace)'
            cand --verbose 'More log output on stderr (-v debug, -vv trace)'
            cand -q 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand --quiet 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'aioq;metrics;help'= {
            cand report 'Sample a process''s CPU and memory and publish them'
            cand collect 'Gather samples: a live terminal table, JSON lines, or a web page'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'aioq;metrics;help;report'= {
        }
        &'aioq;metrics;help;collect'= {
        }
        &'aioq;metrics;help;help'= {
        }
        &'aioq;completions'= {
            cand --out 'Write the scripts for every supported shell into this directory instead'
            cand -v 'More log output on stderr (-v debug, -vv trace)'
            cand --verbose 'More log output on stderr (-v debug, -vv trace)'
            cand -q 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand --quiet 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'aioq;man'= {
            cand --out 'Directory to write aioq.1 and aioq-<subcommand>.1 into'
            cand -v 'More log output on stderr (-v debug, -vv trace)'
            cand --verbose 'More log output on stderr (-v debug, -vv trace)'
            cand -q 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand --quiet 'Less log output on stderr (-q warnings only, -qq errors only)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'aioq;help'= {
            cand serve 'Run the message broker'
            cand listen 'Subscribe to a channel and print what arrives'
            cand send 'Publish messages to a channel'
            cand work 'Run a command for each job of a /queue channel, acknowledging it by its exit status'
            cand requeue 'Move messages (dead letters) from one /queue channel back to another'
            cand bench 'Measure isolation, throughput, latency and fan-out of a broker'
            cand watch-db 'PostgreSQL change feed with a coherent cache, an HTTP API and forwarding'
            cand metrics 'Application metrics through the broker: report, collect, chart'
            cand completions 'Print shell completions (bash, zsh, fish, elvish, powershell)'
            cand man 'Write man pages for aioq and each subcommand'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'aioq;help;serve'= {
        }
        &'aioq;help;listen'= {
        }
        &'aioq;help;send'= {
        }
        &'aioq;help;work'= {
        }
        &'aioq;help;requeue'= {
        }
        &'aioq;help;bench'= {
        }
        &'aioq;help;watch-db'= {
        }
        &'aioq;help;metrics'= {
            cand report 'Sample a process''s CPU and memory and publish them'
            cand collect 'Gather samples: a live terminal table, JSON lines, or a web page'
        }
        &'aioq;help;metrics;report'= {
        }
        &'aioq;help;metrics;collect'= {
        }
        &'aioq;help;completions'= {
        }
        &'aioq;help;man'= {
        }
        &'aioq;help;help'= {
        }
    ]
    $completions[$command]
}
