//! TLS and mutual TLS: throwaway CAs and certificates made with rcgen, the
//! real broker and the real clients.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::util::{Proc as Client, *};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// Writes `{name}.pem` and `{name}.key` signed by this CA; returns their paths.
    fn issue(&self, dir: &Path, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (path(&c), path(&k))
    }

    fn write(&self, dir: &Path, name: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, self.cert.pem()).unwrap();
        path(&p)
    }
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

struct Pki {
    _dir: tempfile::TempDir,
    ca: String,
    server: (String, String),
    client: (String, String),
    /// A client certificate from a CA the broker does not trust.
    stranger: (String, String),
    /// Two more clients of the test CA, for access rules by identity.
    alice: (String, String),
    bob: (String, String),
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("aioq test CA");
    let other = Ca::new("some other CA");
    Pki {
        ca: ca.write(dir.path(), "ca.pem"),
        server: ca.issue(dir.path(), "server", ExtendedKeyUsagePurpose::ServerAuth),
        client: ca.issue(dir.path(), "client", ExtendedKeyUsagePurpose::ClientAuth),
        stranger: other.issue(dir.path(), "stranger", ExtendedKeyUsagePurpose::ClientAuth),
        alice: ca.issue(dir.path(), "alice", ExtendedKeyUsagePurpose::ClientAuth),
        bob: ca.issue(dir.path(), "bob", ExtendedKeyUsagePurpose::ClientAuth),
        _dir: dir,
    }
}

/// A broker that requires client certificates from the test CA.
fn mutual_tls_broker(pki: &Pki, extra: &[&str]) -> Broker {
    let mut args = vec![
        "--tls-cert",
        &pki.server.0,
        "--tls-key",
        &pki.server.1,
        "--tls-client-ca",
        &pki.ca,
    ];
    args.extend_from_slice(extra);
    Broker::spawn(&args)
}

/// A client's flags for trusting `ca` and presenting `cert` (certificate, key).
fn client_flags<'a>(ca: &'a str, cert: &'a (String, String)) -> [&'a str; 6] {
    ["--tls-ca", ca, "--tls-cert", &cert.0, "--tls-key", &cert.1]
}

/// `aioq send --count 1` with extra flags; its exit code.
fn send_one(port: u16, extra: &[&str], message: &str) -> Option<i32> {
    let port = port.to_string();
    let mut args = vec![
        "send",
        "--port",
        &port,
        "--channel",
        "/topic/tls",
        "--message",
        message,
        "--no-reconnect",
    ];
    args.extend_from_slice(extra);
    Client::spawn(&args, false).exit_code(15.0)
}

fn listen_one(port: u16, extra: &[&str]) -> Client {
    let port = port.to_string();
    let mut args = vec![
        "listen",
        "--port",
        &port,
        "--channel",
        "/topic/tls",
        "--count",
        "1",
        "--no-reconnect",
    ];
    args.extend_from_slice(extra);
    Client::spawn(&args, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_work_and_plain_clients_are_turned_away() {
    let pki = pki();
    let broker = Broker::spawn(&["--tls-cert", &pki.server.0, "--tls-key", &pki.server.1]);
    broker.log.wait_for_async(5.0, "serving TLS").await;
    let tls = ["--tls-ca", pki.ca.as_str()];
    let mut listen = listen_one(broker.port, &tls);
    wait_subscribed(&broker, "/topic/tls", 1).await;
    assert_eq!(send_one(broker.port, &tls, "over TLS"), Some(0));
    assert_eq!(listen.exit_code(10.0), Some(0));
    assert_eq!(listen.out.snapshot(), vec!["over TLS".to_string()]);

    // A client speaking the plain protocol to the TLS port is closed, and the
    // broker says why.
    let mut plain = Raw::subscribe(broker.port, "/topic/tls").await;
    assert!(within(10.0, "plain client closed", plain.closed()).await);
    broker.log.wait_for_async(5.0, "TLS handshake failed").await;

    // A client that does not trust the broker's CA refuses to talk to it.
    let code = send_one(broker.port, &["--tls"], "unverified");
    assert_ne!(
        code,
        Some(0),
        "the system CAs do not vouch for a throwaway CA"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let pki = pki();
    let broker = mutual_tls_broker(&pki, &[]);
    broker
        .log
        .wait_for_async(5.0, "client certificates required")
        .await;
    let admitted = client_flags(&pki.ca, &pki.client);
    let mut listen = listen_one(broker.port, &admitted);
    wait_subscribed(&broker, "/topic/tls", 1).await;

    // No certificate: refused.
    let mut bare = listen_one(broker.port, &["--tls-ca", pki.ca.as_str()]);
    assert_ne!(bare.exit_code(15.0), Some(0));
    broker.log.wait_for_async(5.0, "TLS handshake failed").await;
    // A certificate from another CA: refused.
    let stranger = client_flags(&pki.ca, &pki.stranger);
    let said = broker.log.len();
    assert_ne!(send_one(broker.port, &stranger, "intruder"), Some(0));
    // Its reason is another: said, though the address's line of this second
    // was said already (walkthrough 12: only the first reason showed).
    let line = broker
        .log
        .wait_for_after(said, 5.0, "TLS handshake failed")
        .await;
    assert!(!line.contains("no certificate"), "{line}");
    // Neither got in: only the admitted listener is subscribed, and the first
    // message it sees is the admitted sender's.
    assert_eq!(send_one(broker.port, &admitted, "admitted"), Some(0));
    assert_eq!(listen.exit_code(10.0), Some(0));
    assert_eq!(listen.out.snapshot(), vec!["admitted".to_string()]);
    // Both refusals counted (the log says one line a second per address).
    let mut broker = broker;
    let summary = broker.terminate();
    assert!(
        summary_field(&summary, "refused") >= 2,
        "both refusals counted: {summary}"
    );
}

/// Runs `aioq` with `args`: its exit code and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unreadable_certificate_files_are_a_clear_error() {
    // A certificate without its key is a usage error.
    let (code, err) = run(&["serve", "--port", "0", "--tls-cert", "cert.pem"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--tls-key"), "{err}");

    let (code, err) = run(&[
        "serve",
        "--port",
        "0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert_eq!(
        code,
        Some(2),
        "a file a flag names that cannot be used: {err}"
    );
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");

    let (code, err) = run(&["send", "--tls-ca", "/nonexistent/ca.pem", "--message", "x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn bench_measures_a_broker_over_tls() {
    let pki = pki();
    let broker = Broker::spawn(&["--tls-cert", &pki.server.0, "--tls-key", &pki.server.1]);
    let out = std::process::Command::new(BIN)
        .args([
            "bench",
            "--target",
            &broker.addr(),
            "--tls-ca",
            &pki.ca,
            "--scenario",
            "throughput",
            "--messages",
            "20000",
            "--subscribers",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for run in doc["throughput"].as_array().unwrap() {
        assert_eq!(run["lost"], 0, "{run:#}");
        assert!(run["delivered"].as_u64().unwrap() > 0, "{run:#}");
    }
}

/// `serve --metrics` publishes from inside the broker, so it works behind
/// mutual TLS too: a collector with a certificate gets the broker's samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_reports_itself_behind_mutual_tls() {
    let pki = pki();
    let broker = mutual_tls_broker(&pki, &["--metrics", "--metrics-interval", "100ms"]);
    let port = broker.port.to_string();
    let mut args = vec![
        "listen",
        "--port",
        &port,
        "--channel",
        "/topic/metrics",
        "--count",
        "1",
        "--format",
        "raw",
        "--no-reconnect",
    ];
    args.extend_from_slice(&client_flags(&pki.ca, &pki.client));
    let mut listener = Client::spawn(&args, false);
    assert_eq!(listener.exit_code(15.0), Some(0));
    let sample: serde_json::Value =
        serde_json::from_str(listener.out.snapshot().concat().trim()).unwrap();
    assert_eq!(sample["pid"], broker.child.id());
    assert!(sample["broker"]["connections"].as_u64().unwrap() >= 1);
}

/// Each way a client's TLS flags can disagree with the broker is said for
/// what it is, with the flag that fixes it, and never after a "connected"
/// line: a mismatch is a usage error (2), a refused certificate a refusal (5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_mismatches_are_diagnosed_with_the_flag_that_fixes_them() {
    let pki = pki();
    let tls = mutual_tls_broker(&pki, &[]);
    let plain = Broker::spawn(&[]);
    tls.log
        .wait_for_async(5.0, "client certificates required")
        .await;
    let ca = ["--tls-ca", pki.ca.as_str()];
    let stranger = client_flags(&pki.ca, &pki.stranger);
    let mut wrong_name = client_flags(&pki.ca, &pki.client).to_vec();
    wrong_name.extend(["--tls-server-name", "elsewhere.example"]);
    let cases: [(u16, &[&str], i32, &str); 6] = [
        (tls.port, &[], 2, "it speaks TLS: add --tls"),
        (plain.port, &ca, 2, "it does not speak TLS: drop --tls"),
        (
            tls.port,
            &ca,
            2,
            "it requires a client certificate: add --tls-cert",
        ),
        (tls.port, &stranger, 5, "it refused our certificate"),
        (tls.port, &["--tls"], 2, "pass its CA with --tls-ca"),
        (tls.port, &wrong_name, 2, "--tls-server-name"),
    ];
    // With or without --no-reconnect: a mistake waiting cannot fix ends the
    // client (walkthrough 6: without it, the client retried for ever).
    for (port, flags, want, says) in cases {
        for (command, once) in [
            ("listen", true),
            ("send", true),
            ("listen", false),
            ("send", false),
        ] {
            let port = port.to_string();
            let mut args = vec![command, "--port", &port];
            if once {
                args.push("--no-reconnect");
            }
            if command == "send" {
                args.extend(["--message", "x"]);
            }
            args.extend_from_slice(flags);
            let mut client = Client::spawn(&args, false);
            let code = client.exit_code(15.0);
            let err = client.err.text();
            assert_eq!(code, Some(want), "{args:?}: {err}");
            assert!(err.contains(says), "{args:?} should say {says:?}: {err}");
            assert!(!err.contains("connected to"), "{args:?}: {err}");
        }
    }
}

/// The certificate recipe most tutorials give (`openssl x509 -req` without
/// `-extfile`) makes an X.509 v1 certificate: the broker says so and how to
/// make a v3 one, instead of calling a matching pair unusable. The README's
/// recipe then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openssl_v1_certificate_is_named_and_the_readme_recipe_works() {
    let dir = tempfile::tempdir().unwrap();
    let sh = |script: &str| {
        let out = std::process::Command::new("sh")
            .args(["-ec", script])
            .current_dir(dir.path())
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{script}: {} (install openssl with `apt-get install openssl`)",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 \
        -subj '/CN=test CA' 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr \
        -subj '/CN=localhost' 2>/dev/null
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out v1.pem -days 2 2>/dev/null",
    );
    let at = |f: &str| path(&dir.path().join(f));
    let (code, err) = run(&[
        "serve",
        "--port",
        "0",
        "--tls-cert",
        &at("v1.pem"),
        "--tls-key",
        &at("broker.key"),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("X.509 v1") && err.contains("-extfile"),
        "{err}"
    );

    // The README's recipe.
    sh("printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > broker.ext
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out broker.pem -days 2 -extfile broker.ext 2>/dev/null");
    let broker = Broker::spawn(&[
        "--tls-cert",
        &at("broker.pem"),
        "--tls-key",
        &at("broker.key"),
    ]);
    let ca = at("ca.pem");
    let mut listen = listen_one(broker.port, &["--tls-ca", &ca]);
    wait_subscribed(&broker, "/topic/tls", 1).await;
    assert_eq!(send_one(broker.port, &["--tls-ca", &ca], "v3"), Some(0));
    assert_eq!(listen.exit_code(10.0), Some(0));
    assert_eq!(listen.out.snapshot(), vec!["v3".to_string()]);
}

/// `aioq listen --channel CHANNEL --count 1 --no-reconnect` with `flags`.
fn listen_on(port: u16, channel: &str, flags: &[&str]) -> Client {
    let port = port.to_string();
    let mut args = vec!["listen", "--port", &port, "--channel", channel];
    args.extend_from_slice(&["--count", "1", "--no-reconnect"]);
    args.extend_from_slice(flags);
    Client::spawn(&args, false)
}

/// `aioq send --message MESSAGE` to `channel`; its exit code.
fn send_to(port: u16, channel: &str, message: &str, flags: &[&str]) -> Option<i32> {
    let port = port.to_string();
    let mut args = vec!["send", "--port", &port, "--channel", channel];
    args.extend_from_slice(&["--message", message, "--no-reconnect"]);
    args.extend_from_slice(flags);
    Client::spawn(&args, false).exit_code(15.0)
}

/// Access rules by certificate: each identity subscribes and publishes only
/// where its rules allow (a refused subscription is end-of-stream, exit 5
/// for `--no-reconnect`; a refused publish is counted and never routed);
/// a client no entry names gets nothing, although the file has no
/// `[access.default]` (it once got everything: fail-open). SIGHUP applies
/// new rules: a subscription they no longer allow is ended, a publish they
/// now allow is routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_by_certificate_decide_who_subscribes_and_publishes() {
    let pki = pki();
    let rules = |bob_publishes: &str, alice_subscribes: &str| {
        format!(
            "http = \"127.0.0.1:0\"\n\
             [[access.identity]]\nmatch = \"CN=alice\"\nsubscribe = [{alice_subscribes}]\npublish = [\"/topic/*\"]\n\
             [[access.identity]]\nmatch = \"CN=bob\"\nsubscribe = [\"/topic/news\"]\npublish = [{bob_publishes}]\n"
        )
    };
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), rules("", "\"/topic/*\"")).unwrap();
    let broker = mutual_tls_broker(&pki, &["--config", file.path().to_str().unwrap()]);
    let port: u16 = broker.monitor_port();
    let alice = client_flags(&pki.ca, &pki.alice);
    let bob = client_flags(&pki.ca, &pki.bob);
    let nobody = client_flags(&pki.ca, &pki.client);

    // Subscriptions outside the rules: end-of-stream at once.
    assert_eq!(
        listen_on(broker.port, "/topic/secret", &bob).exit_code(15.0),
        Some(5)
    );
    broker
        .log
        .wait_for_async(5.0, "(CN=bob) refused: may not subscribe to /topic/secret")
        .await;
    assert_eq!(
        listen_on(broker.port, "/topic/news", &nobody).exit_code(15.0),
        Some(5)
    );
    assert_eq!(
        listen_on(broker.port, "/topic/secret", &nobody).exit_code(15.0),
        Some(5)
    );

    // Bob may not publish: his message is counted and goes nowhere, so the
    // first message Alice's listener sees is her own; it is refused (protocol
    // 2 says so), so his `send` exits 6.
    let mut news = listen_on(broker.port, "/topic/news", &alice);
    wait_subscribed(&broker, "/topic/news", 1).await;
    assert_eq!(
        send_to(broker.port, "/topic/news", "from bob", &bob),
        Some(6)
    );
    broker
        .log
        .wait_for_async(5.0, "(CN=bob) may not publish to /topic/news")
        .await;
    assert_eq!(
        send_to(broker.port, "/topic/news", "from alice", &alice),
        Some(0)
    );
    assert_eq!(news.exit_code(10.0), Some(0));
    assert_eq!(news.out.snapshot(), vec!["from alice".to_string()]);
    let (_, server) = http(port, "GET", "/api/server", None).await;
    assert_eq!(server["totals"]["denied"], 3, "{server}");
    let dropped = server["totals"]["dropped"].to_string();
    assert!(dropped.contains("denied"), "{dropped}");
    // A listener that has seen a message is past the client's refusal
    // window (an end-of-stream within 20 ms of connecting reads as refused).
    let mut watching = {
        let port = broker.port.to_string();
        let mut args = vec!["listen", "--port", &port, "--channel", "/topic/news"];
        args.extend_from_slice(&["--count", "2", "--no-reconnect"]);
        args.extend_from_slice(&alice);
        Client::spawn(&args, false)
    };
    wait_subscribed(&broker, "/topic/news", 2).await;
    assert_eq!(
        send_to(broker.port, "/topic/news", "before", &alice),
        Some(0)
    );
    watching.out.wait_for(10.0, "before");
    let conns = http(port, "GET", "/api/connections", None).await.1;
    assert!(conns.to_string().contains("CN=alice"), "{conns}");

    // New rules: Bob may publish to /topic/news, Alice may no longer
    // subscribe there. Her open subscription is ended; his publish goes out.
    std::fs::write(file.path(), rules("\"/topic/news\"", "\"/topic/other\"")).unwrap();
    signal(&broker.child, "HUP");
    broker
        .log
        .wait_for_async(
            10.0,
            "the reloaded access rules no longer allow /topic/news",
        )
        .await;
    assert_eq!(watching.exit_code(10.0), Some(0));
    assert_eq!(watching.out.snapshot(), vec!["before".to_string()]);
    let mut bobs = listen_on(broker.port, "/topic/news", &bob);
    wait_subscribed(&broker, "/topic/news", 3).await;
    assert_eq!(
        send_to(broker.port, "/topic/news", "bob again", &bob),
        Some(0)
    );
    assert_eq!(bobs.exit_code(10.0), Some(0));
    assert_eq!(bobs.out.snapshot(), vec!["bob again".to_string()]);
}
