//! `aioq watch-db` against a real, throwaway PostgreSQL cluster.

use serde_json::{json, Value};

use crate::util::pg::Pg;
use crate::util::*;

const PATRON: &str = "CREATE TABLE patron (
    id serial PRIMARY KEY, name text NOT NULL, visits int NOT NULL DEFAULT 0, note text)";

fn watch(pg: &Pg, db: &str, extra: &[&str]) -> Proc {
    let dsn = pg.dsn(db);
    let mut args = vec!["watch-db", "--dsn", &dsn, "--table", "patron"];
    args.extend_from_slice(extra);
    Proc::spawn(&args, false)
}

/// JSON events printed so far (one per line with --json).
fn events(p: &Proc) -> Vec<Value> {
    p.out
        .snapshot()
        .iter()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect()
}

async fn wait_events(p: &Proc, n: usize) -> Vec<Value> {
    wait_until_async(10.0, &format!("{n} event(s)"), || p.out.len() >= n).await;
    events(p)
}

fn http_port(p: &Proc) -> u16 {
    let line = p.err.wait_for(20.0, "serving HTTP on http://");
    line.rsplit(':').next().unwrap().trim().parse().unwrap()
}

async fn stat(port: u16, name: &str) -> u64 {
    http(port, "GET", "/_stats", None).await.1[name]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_is_idempotent_and_events_carry_rows_and_diffs() {
    let pg = Pg::start();
    let db = pg.database("restaurant").await;
    db.batch_execute(PATRON).await.unwrap();
    for _ in 0..2 {
        let mut p = watch(&pg, "restaurant", &["--install", "--payload", "rows"]);
        assert_eq!(p.exit_code(20.0), Some(0));
        assert!(p
            .out
            .text()
            .contains("notifying chan_patron (rows payload)"));
    }
    let triggers: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'aioq_notify%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(triggers, 1, "installing twice leaves one trigger");
    let w = watch(&pg, "restaurant", &["--json", "--payload", "rows"]);
    w.err.wait_for_async(20.0, "listening on chan_patron").await;

    db.batch_execute("INSERT INTO patron (name, visits) VALUES ('Ada', 1)")
        .await
        .unwrap();
    db.batch_execute("UPDATE patron SET visits = 2 WHERE name = 'Ada'")
        .await
        .unwrap();
    db.batch_execute("DELETE FROM patron WHERE name = 'Ada'")
        .await
        .unwrap();
    let ev = wait_events(&w, 3).await;
    assert_eq!(ev[0]["table"], "patron");
    assert_eq!(ev[0]["type"], "INSERT");
    assert_eq!(ev[0]["id"], 1);
    assert_eq!(
        ev[0]["data"]["new"],
        json!({"id": 1, "name": "Ada", "visits": 1, "note": null})
    );
    assert!(ev[0]["data"].get("old").is_none());
    assert_eq!(ev[1]["type"], "UPDATE");
    assert_eq!(
        ev[1]["data"]["diff"],
        json!({"visits": 2}),
        "only changed columns"
    );
    assert_eq!(ev[1]["data"]["old"]["visits"], 1);
    assert_eq!(ev[1]["data"]["new"]["visits"], 2);
    assert_eq!(ev[2]["type"], "DELETE");
    assert_eq!(ev[2]["data"]["old"]["name"], "Ada");
    assert!(ev[2]["data"].get("new").is_none());

    // A row too large for NOTIFY: the write still succeeds, the event comes
    // without rows, and the watcher fetches the row itself.
    let big = "x".repeat(20_000);
    db.execute(
        "INSERT INTO patron (name, note) VALUES ('Big', $1)",
        &[&big],
    )
    .await
    .unwrap();
    let ev = wait_events(&w, 4).await;
    assert_eq!(ev[3]["truncated"], true);
    assert_eq!(ev[3]["fetched"], true);
    assert_eq!(ev[3]["data"]["new"]["note"].as_str().unwrap().len(), 20_000);

    let mut p = watch(&pg, "restaurant", &["--uninstall"]);
    assert_eq!(p.exit_code(20.0), Some(0));
    let left: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE proname = 'aioq_notify'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the function goes with its last trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_setups_exit_non_zero_with_a_clear_message() {
    let pg = Pg::start();
    let db = pg.database("shop").await;
    db.batch_execute(
        "CREATE TABLE nokey (a int); CREATE TABLE twokey (a int, b int, PRIMARY KEY (a, b))",
    )
    .await
    .unwrap();
    let dsn = pg.dsn("shop");
    for (table, needle) in [
        ("missing", "table missing does not exist"),
        ("nokey", "needs a single-column primary key (it has none)"),
        (
            "twokey",
            "needs a single-column primary key (it has 2 columns)",
        ),
    ] {
        let mut p = Proc::spawn(&["watch-db", "--dsn", &dsn, "--table", table], false);
        assert_eq!(p.exit_code(20.0), Some(1), "{table}");
        assert!(p.err.text().contains(needle), "{table}: {}", p.err.text());
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bad = format!("postgres://postgres:secret@127.0.0.1:{closed}/shop");
    let mut p = Proc::spawn(&["watch-db", "--dsn", &bad, "--table", "t"], false);
    assert_eq!(p.exit_code(20.0), Some(1));
    let err = p.err.text();
    assert!(
        err.contains("cannot connect to PostgreSQL (postgres@127.0.0.1/shop, sslmode=prefer)"),
        "{err}"
    );
    assert!(!err.contains("secret"), "the password is not printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_stay_coherent_and_bad_requests_get_400() {
    let pg = Pg::start();
    let db = pg.database("app").await;
    db.batch_execute(PATRON).await.unwrap();
    let mut install = watch(&pg, "app", &["--install", "--payload", "rows"]);
    assert_eq!(install.exit_code(20.0), Some(0));
    let a = watch(
        &pg,
        "app",
        &["--json", "--http", "127.0.0.1:0", "--payload", "rows"],
    );
    let b = watch(
        &pg,
        "app",
        &["--json", "--http", "127.0.0.1:0", "--payload", "rows"],
    );
    let (pa, pb) = (http_port(&a), http_port(&b));
    a.err.wait_for_async(20.0, "listening on chan_patron").await;
    b.err.wait_for_async(20.0, "listening on chan_patron").await;

    let (status, body) = http(
        pa,
        "POST",
        "/patron",
        Some(r#"{"name": "Grace", "visits": 3}"#),
    )
    .await;
    assert_eq!((status, &body["msg"]), (200, &json!("ok")));
    let id = body["id"].as_i64().unwrap();
    // B learns of the insert from the feed and serves it without a query.
    wait_until_async(10.0, "B saw the insert", || b.out.len() >= 1).await;
    let before = stat(pb, "db_queries").await;
    let (status, row) = http(pb, "GET", &format!("/patron/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(row["name"], "Grace");
    assert_eq!(
        stat(pb, "db_queries").await,
        before,
        "served from B's cache"
    );

    let (status, _) = http(
        pa,
        "PUT",
        &format!("/patron/{id}"),
        Some(r#"{"name": "Grace H."}"#),
    )
    .await;
    assert_eq!(status, 200);
    wait_until_async(10.0, "B saw the update", || b.out.len() >= 2).await;
    let (_, row) = http(pb, "GET", &format!("/patron/{id}"), None).await;
    assert_eq!(row["name"], "Grace H.", "B is fresh, not stale");
    assert_eq!(row["visits"], 3);
    assert_eq!(
        stat(pb, "db_queries").await,
        before,
        "still without touching the database"
    );

    let (status, _) = http(pa, "DELETE", &format!("/patron/{id}"), None).await;
    assert_eq!(status, 200);
    wait_until_async(10.0, "B saw the delete", || b.out.len() >= 3).await;
    let (status, _) = http(pb, "GET", &format!("/patron/{id}"), None).await;
    assert_eq!(status, 404);
    assert_eq!(
        stat(pb, "db_queries").await,
        before,
        "absence is cached too"
    );
    // The log line may be written just after the response goes out.
    let logged = format!("GET /patron/{id} 404");
    wait_until_async(5.0, "requests are logged", || b.err.contains(&logged)).await;
    assert!(b.err.contains(" hit"), "with hit or miss");

    // A miss reads the database once, then hits.
    let (status, _) = http(pb, "GET", "/patron/999", None).await;
    assert_eq!(status, 404);
    let (status, _) = http(pb, "GET", "/patron/999", None).await;
    assert_eq!(status, 404);
    assert_eq!(stat(pb, "db_queries").await, before + 1);

    for (method, path, body, code, needle) in [
        ("POST", "/patron", "{not json", 400, "bad JSON"),
        (
            "POST",
            "/patron",
            r#"{"nme": "x"}"#,
            400,
            "unknown column nme",
        ),
        (
            "POST",
            "/patron",
            r#"{"name": "x", "visits": "many"}"#,
            400,
            "invalid input syntax for type integer",
        ),
        (
            "POST",
            "/patron",
            r#"{"visits": 1}"#,
            400,
            "null value in column \"name\"",
        ),
        (
            "GET",
            "/patron/abc",
            "",
            400,
            "invalid input syntax for type integer",
        ),
        (
            "PUT",
            "/patron/424242",
            r#"{"name": "x"}"#,
            404,
            "not found",
        ),
        ("DELETE", "/patron/424242", "", 404, "not found"),
        ("GET", "/nosuch/1", "", 404, "no table nosuch"),
    ] {
        let (status, body) = http(pa, method, path, (!body.is_empty()).then_some(body)).await;
        assert_eq!(status, code, "{method} {path}: {body}");
        assert!(
            body["msg"].as_str().unwrap().contains(needle),
            "{method} {path}: {body}"
        );
    }
    // Still serving after all that.
    let (status, _) = http(pa, "GET", "/_stats", None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_after_terminate_invalidates_the_cache_and_events_flow_again() {
    let pg = Pg::start();
    let db = pg.database("app").await;
    db.batch_execute(PATRON).await.unwrap();
    db.batch_execute("INSERT INTO patron (name) VALUES ('Linus')")
        .await
        .unwrap();
    let mut install = watch(&pg, "app", &["--install", "--payload", "rows"]);
    assert_eq!(install.exit_code(20.0), Some(0));
    let w = watch(
        &pg,
        "app",
        &["--json", "--http", "127.0.0.1:0", "--payload", "rows"],
    );
    let port = http_port(&w);
    w.err.wait_for_async(20.0, "listening on chan_patron").await;
    let (_, row) = http(port, "GET", "/patron/1", None).await;
    assert_eq!(row["name"], "Linus");
    let queries = stat(port, "db_queries").await;

    let killed: i64 = db
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'aioq watch-db listener'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    // A change while the listener is down: its notification is lost for good.
    db.batch_execute("UPDATE patron SET name = 'Linus T.' WHERE id = 1")
        .await
        .unwrap();
    w.err.wait_for_async(20.0, "cache invalidated").await;
    let ev = wait_events(&w, 1).await;
    assert!(ev.iter().any(|e| e["type"] == "RESYNC"), "{ev:?}");
    // The cache does not serve the stale row: it asks the database again.
    let (_, row) = http(port, "GET", "/patron/1", None).await;
    assert_eq!(row["name"], "Linus T.");
    assert_eq!(stat(port, "db_queries").await, queries + 1);
    // And events flow again.
    let n = w.out.len();
    db.batch_execute("UPDATE patron SET visits = 9 WHERE id = 1")
        .await
        .unwrap();
    let ev = wait_events(&w, n + 1).await;
    assert_eq!(ev.last().unwrap()["data"]["diff"], json!({"visits": 9}));
    let (_, row) = http(port, "GET", "/patron/1", None).await;
    assert_eq!(row["visits"], 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_delivers_events_to_a_broker_subscriber() {
    let pg = Pg::start();
    let db = pg.database("app").await;
    db.batch_execute(PATRON).await.unwrap();
    let mut install = watch(&pg, "app", &["--install"]);
    assert_eq!(install.exit_code(20.0), Some(0));
    let broker = Broker::spawn(&[]);
    let port = broker.port.to_string();
    let listen = Proc::spawn(
        &["listen", "--port", &port, "--channel", "/topic/db/patron"],
        false,
    );
    wait_subscribed(&broker, "/topic/db/patron", 1).await;
    let w = watch(
        &pg,
        "app",
        &["--publish", "/topic/db/patron", "--broker-port", &port],
    );
    w.err.wait_for_async(20.0, "listening on chan_patron").await;
    w.err
        .wait_for_async(20.0, "publishing to /topic/db/patron")
        .await;
    db.batch_execute("INSERT INTO patron (name) VALUES ('Barbara')")
        .await
        .unwrap();
    let line = listen.out.wait_for_async(10.0, "Barbara").await;
    let ev: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["type"], "INSERT");
    assert_eq!(ev["data"]["new"]["name"], "Barbara");
}

/// In keys mode (the default) LISTEN/NOTIFY carries no row: a role with no
/// grant on the table that LISTENs learns only which row changed, and one that
/// forges a NOTIFY can at worst make the watcher read the row again. The
/// cache is keyed by the key as PostgreSQL prints it (`01` is `1`), and
/// writes need a JSON content type and a loopback Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_mode_cannot_be_poisoned_or_read_and_the_http_face_is_guarded() {
    let pg = Pg::start();
    let db = pg.database("shop").await;
    db.batch_execute(PATRON).await.unwrap();
    db.batch_execute(
        "INSERT INTO patron (name, visits) VALUES ('Ada', 1);
         CREATE ROLE mallory LOGIN;
         GRANT CONNECT ON DATABASE shop TO mallory;",
    )
    .await
    .unwrap();
    let mut install = watch(&pg, "shop", &["--install"]);
    assert_eq!(install.exit_code(20.0), Some(0));
    assert!(install.out.text().contains("(keys payload)"));
    let w = watch(&pg, "shop", &["--json", "--http", "127.0.0.1:0"]);
    let port = http_port(&w);
    w.err.wait_for_async(20.0, "listening on chan_patron").await;

    // Mallory listens, and forges an event with a row of her own.
    let mallory = {
        let (client, connection) = tokio_postgres::connect(
            &pg.dsn("shop").replace("postgres@", "mallory@"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("mallory connects");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut connection = connection;
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            use futures::StreamExt;
            while let Some(Ok(m)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = m {
                    let _ = tx.send(n.payload().to_string());
                }
            }
        });
        client.batch_execute("LISTEN chan_patron").await.unwrap();
        (client, rx)
    };
    let (mallory_db, mut overheard) = mallory;
    assert_eq!(http(port, "GET", "/patron/1", None).await.1["name"], "Ada");
    mallory_db
        .batch_execute(
            r#"NOTIFY chan_patron, '{"table":"patron","schema":"public","id":1,"type":"UPDATE","data":{"new":{"id":1,"name":"pwned","visits":0,"note":null}}}'"#,
        )
        .await
        .unwrap();
    mallory_db
        .batch_execute(
            r#"NOTIFY chan_patron, '{"table":"patron","schema":"public","id":1,"type":"DELETE"}'"#,
        )
        .await
        .unwrap();
    // The UPDATE is printed with the row as the database has it; the DELETE
    // of a row that is there is not printed (nor forwarded) at all.
    poll_until(10.0, "the forged DELETE ignored", || async {
        let n = stat(port, "ignored_events").await;
        (n == 1).then_some(()).ok_or(n.to_string())
    })
    .await;
    assert_eq!(w.out.len(), 1, "{}", w.out.text());
    assert!(!w.out.text().contains("DELETE"), "{}", w.out.text());
    let (status, row) = http(port, "GET", "/patron/1", None).await;
    assert_eq!((status, &row["name"]), (200, &json!("Ada")), "{row}");

    // Neither a NOTIFY payload nor a URL path writes a log line of its own.
    let forged = "2026-12-04T00:00:00.000000Z  WARN FORGED";
    mallory_db
        .batch_execute(&format!(
            "NOTIFY chan_patron, E'not json\\n{forged}-NOTIFY'"
        ))
        .await
        .unwrap();
    w.err
        .wait_for_async(10.0, "that is not an aioq event")
        .await;
    let path = "/patron%0a2026-12-04T00:00:00.000000Z%20%20WARN%20FORGED-PATH/1";
    let _ = http(port, "GET", path, None).await;
    w.err.wait_for_async(10.0, "FORGED-PATH").await;
    assert!(
        !w.err.snapshot().iter().any(|l| l.starts_with(forged)),
        "a log line was forged:\n{}",
        w.err.text()
    );

    // The owner's update reaches Mallory as a key, not a row.
    db.batch_execute("UPDATE patron SET name = 'Ada L.' WHERE id = 1")
        .await
        .unwrap();
    wait_until_async(10.0, "the real event", || w.out.len() >= 2).await;
    // Mallory's own connection hears it in its own time: read until the
    // real event arrives (or the deadline), not once.
    let is_real = |p: &String| !p.contains("pwned") && p.contains("UPDATE");
    let mut heard: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !heard.iter().any(is_real) {
        match tokio::time::timeout_at(deadline, overheard.recv()).await {
            Ok(Some(p)) => heard.push(p),
            _ => break,
        }
    }
    let real: Vec<_> = heard.iter().filter(|p| is_real(p)).collect();
    assert_eq!(real.len(), 1, "{heard:?}");
    assert!(
        !real[0].contains("Ada"),
        "Mallory read the row: {}",
        real[0]
    );

    // One row, whatever the URL's spelling of its key.
    assert_eq!(
        http(port, "GET", "/patron/01", None).await.1["name"],
        "Ada L."
    );
    db.batch_execute("UPDATE patron SET visits = 9 WHERE id = 1")
        .await
        .unwrap();
    wait_until_async(10.0, "the visits event", || w.out.len() >= 3).await;
    // The row was cached (read above): the event carries it as it was, and
    // the diff, as rows mode's trigger would.
    let update = events(&w).pop().unwrap();
    assert_eq!(update["type"], "UPDATE", "{update}");
    assert_eq!(update["data"]["diff"], json!({ "visits": 9 }), "{update}");
    assert_eq!(update["data"]["old"]["name"], "Ada L.", "{update}");
    assert_ne!(update["data"]["old"]["visits"], 9, "{update}");
    assert_eq!(http(port, "GET", "/patron/01", None).await.1["visits"], 9);
    let long = format!("/patron/{}", "9".repeat(300));
    assert_eq!(http(port, "GET", &long, None).await.0, 400);

    // The HTTP face: a JSON content type for writes, a loopback Host.
    let raw = |req: String| async move { http_raw(port, &req).await.0 };
    let body = r#"{"name":"csrf"}"#;
    let post = |ctype: &str, host: &str| {
        format!(
            "POST /patron HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(raw(post("text/plain", "localhost")).await, 415);
    w.err.wait_for(
        10.0,
        "POST /patron (415): writes need Content-Type: application/json",
    );
    assert_eq!(raw(post("application/json", "evil.example")).await, 403);
    w.err
        .wait_for(10.0, "(403), the last with Host \"evil.example\"");
    assert_eq!(
        raw(post("application/json", &format!("127.0.0.1:{port}"))).await,
        200
    );
    let rows: i64 = db
        .query_one("SELECT count(*) FROM patron WHERE name = 'csrf'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "only the JSON request from a loopback Host wrote");
}

/// `--http-token-file`: every route needs the bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_guards_every_route() {
    let pg = Pg::start();
    let db = pg.database("tok").await;
    db.batch_execute(PATRON).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cret\n").unwrap();
    let w = watch(
        &pg,
        "tok",
        &[
            "--http",
            "127.0.0.1:0",
            "--http-token-file",
            file.to_str().unwrap(),
        ],
    );
    let port = http_port(&w);
    assert_eq!(http(port, "GET", "/_stats", None).await.0, 401);
    let authed = |token: &str| {
        let req = format!(
            "GET /_stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        async move { http_raw(port, &req).await.0 }
    };
    assert_eq!(authed("wrong").await, 401);
    assert_eq!(authed("s3cret").await, 200);

    // An empty token file would admit the empty token: a usage error.
    std::fs::write(&file, "\n").unwrap();
    let mut empty = watch(
        &pg,
        "tok",
        &[
            "--http",
            "127.0.0.1:0",
            "--http-token-file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(empty.exit_code(20.0), Some(2));
    assert!(empty.err.contains("is empty"), "{}", empty.err.text());
}

/// Coherence under concurrency: a read-through that read a row before an
/// update committed must not land after that update's event. B reads as a
/// role whose reads row-level security slows to a second; while B's GET of
/// row 1 is in flight, the row is updated and B applies the event; B's next
/// GET serves the update (before: the slow read's old row, for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_started_before_an_update_never_lands_after_its_event() {
    let pg = Pg::start();
    let db = pg.database("race").await;
    db.batch_execute(PATRON).await.unwrap();
    db.batch_execute(
        "INSERT INTO patron (name, visits) VALUES ('one', 1);
         CREATE ROLE app LOGIN;
         GRANT SELECT ON patron TO app;
         CREATE FUNCTION slowly() RETURNS boolean LANGUAGE sql AS 'SELECT pg_sleep(1) IS NOT NULL';
         ALTER TABLE patron ENABLE ROW LEVEL SECURITY;
         CREATE POLICY slow_reads ON patron FOR SELECT TO app USING (slowly());",
    )
    .await
    .unwrap();
    let mut install = watch(&pg, "race", &["--install", "--payload", "rows"]);
    assert_eq!(install.exit_code(20.0), Some(0));
    let dsn = pg.dsn("race").replace("postgres@", "app@");
    let b = Proc::spawn(
        &[
            "watch-db",
            "--dsn",
            &dsn,
            "--table",
            "patron",
            "--payload",
            "rows",
            "--json",
            "--http",
            "127.0.0.1:0",
        ],
        false,
    );
    let port = http_port(&b);
    b.err.wait_for_async(20.0, "listening on chan_patron").await;

    let read = tokio::spawn(async move { http(port, "GET", "/patron/1", None).await });
    let running_by = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let running: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
                 AND state = 'active' AND query LIKE '%to_jsonb%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if running > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < running_by,
            "B's read never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    db.batch_execute("UPDATE patron SET visits = 2 WHERE id = 1")
        .await
        .unwrap();
    wait_until_async(10.0, "B applied the event", || b.out.len() >= 1).await;
    let (status, first) = read.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(first["visits"], 1, "the read began before the update");
    let (_, now) = http(port, "GET", "/patron/1", None).await;
    assert_eq!(
        now["visits"], 2,
        "B serves the update, not the slow read's row"
    );
}

/// TLS to PostgreSQL as libpq does it: against a server with `ssl = on` and
/// a certificate from a CA the test makes, `sslmode=verify-full` with that CA
/// connects and the connection is encrypted; another CA, or a host name the
/// certificate does not hold, is refused with the reason; `sslmode=disable`
/// connects in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgresql_honours_sslmode_and_sslrootcert() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("pg test CA");
    let (other_ca, _) = ca("another CA");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca_cert, &ca_key)
        .unwrap();
    let pg = Pg::start_tls(&server.pem(), &server_key.serialize_pem());
    let db = pg.database("secure").await;
    db.batch_execute(PATRON).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
    std::fs::write(&good, ca_cert.pem()).unwrap();
    std::fs::write(&bad, other_ca.pem()).unwrap();

    let dsn =
        |host: &str, query: &str| format!("postgres://postgres@{host}:{}/secure?{query}", pg.port);
    let install = |dsn: String| {
        let mut p = Proc::spawn(
            &["watch-db", "--dsn", &dsn, "--table", "patron", "--install"],
            false,
        );
        (p.exit_code(20.0), p.err.text())
    };
    let verify_full = dsn(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", good.display()),
    );
    let (code, err) = install(verify_full.clone());
    assert_eq!(code, Some(0), "{err}");

    let (code, err) = install(dsn(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", bad.display()),
    ));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("sslmode=verify-full") && err.contains("UnknownIssuer"),
        "{err}"
    );

    // 127.0.0.1 reaches the same server, but the certificate holds only
    // "localhost": verify-full refuses, verify-ca (the chain only) accepts.
    let (code, err) = install(dsn(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", good.display()),
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not valid for name"), "{err}");
    let (code, err) = install(dsn(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", good.display()),
    ));
    assert_eq!(code, Some(0), "{err}");

    // The watcher's own connections are encrypted; with sslmode=disable not.
    let w = Proc::spawn(
        &["watch-db", "--dsn", &verify_full, "--table", "patron"],
        false,
    );
    w.err.wait_for_async(20.0, "listening on chan_patron").await;
    let encrypted: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'aioq watch-db listener' AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(encrypted, 1, "the LISTEN connection uses TLS");
    let (code, err) = install(dsn("localhost", "sslmode=disable"));
    assert_eq!(code, Some(0), "{err}");
}

/// A NOTIFY flood faster than the watcher can read rows fills a bounded
/// queue: what does not fit is dropped and counted, the cache starts over
/// with a RESYNC event saying how many were missed, and every event carries
/// this watcher's sequence number (and, from the trigger, the transaction id),
/// so a consumer can tell "nothing happened" from "I missed something".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_flood_overflows_a_bounded_queue_into_a_counted_resync() {
    let pg = Pg::start();
    let db = pg.database("flood").await;
    db.batch_execute(PATRON).await.unwrap();
    let mut install = watch(&pg, "flood", &["--install"]);
    assert_eq!(install.exit_code(20.0), Some(0));
    let w = watch(
        &pg,
        "flood",
        &["--json", "--http", "127.0.0.1:0", "--event-queue", "50"],
    );
    let port = http_port(&w);
    w.err.wait_for_async(20.0, "listening on chan_patron").await;
    db.batch_execute("INSERT INTO patron (name) VALUES ('first')")
        .await
        .unwrap();
    let first = wait_events(&w, 1).await;
    assert!(first[0]["txid"].as_i64().is_some(), "{}", first[0]);
    db.batch_execute(
        "SELECT pg_notify('chan_patron', json_build_object('table', 'patron', 'schema', 'public',
                'id', i, 'type', 'UPDATE')::text)
         FROM generate_series(1, 20000) i",
    )
    .await
    .unwrap();
    w.err.wait_for_async(30.0, "notification(s) dropped").await;
    wait_until_async(30.0, "a RESYNC event", || {
        events(&w)
            .iter()
            .any(|e| e["reason"] == "event queue overflow")
    })
    .await;
    let resync = events(&w)
        .into_iter()
        .find(|e| e["reason"] == "event queue overflow")
        .unwrap();
    let missed = resync["missed"].as_u64().unwrap();
    assert!(missed > 0, "{resync}");
    assert!(stat(port, "overflows").await >= missed);
    let seqs: Vec<u64> = events(&w)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|p| p[1] == p[0] + 1),
        "one number per event, no gap in what this watcher printed"
    );
}

/// `--check` says whether a database is ready to be watched, one line per
/// check, and exits 0 only when all pass: a missing trigger, a trigger
/// installed for the other payload mode, and a role without SELECT each fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_each_condition_and_exits_0_only_when_all_pass() {
    let pg = Pg::start();
    let db = pg.database("ready").await;
    db.batch_execute(PATRON).await.unwrap();
    db.batch_execute("CREATE ROLE reader LOGIN").await.unwrap();
    let check = |extra: &[&str], dsn: Option<String>| {
        let dsn = dsn.unwrap_or_else(|| pg.dsn("ready"));
        let mut args = vec!["watch-db", "--dsn", &dsn, "--table", "patron", "--check"];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn(&args, false);
        let code = p.exit_code(20.0);
        (code, p.out.text())
    };
    let (code, out) = check(&[], None);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL  trigger on public.patron") && out.contains("--install"),
        "{out}"
    );
    assert!(out.contains("ok    LISTEN/NOTIFY"), "{out}");

    let mut install = watch(&pg, "ready", &["--install"]);
    assert_eq!(install.exit_code(20.0), Some(0));
    let (code, out) = check(&[], None);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "connection",
        "LISTEN/NOTIFY",
        "notification queue",
        "trigger on",
        "privileges on",
    ] {
        assert!(out.contains(&format!("ok    {line}")), "{line}: {out}");
    }
    let (code, out) = check(&["--payload", "rows"], None);
    assert_eq!(code, Some(1), "the trigger sends keys: {out}");
    // Not "run with --install" alone: that would switch every keys-mode
    // watcher of the table (walkthrough 17).
    assert!(
        out.contains("the trigger sends keys events: check with --payload keys"),
        "{out}"
    );

    let (code, out) = check(&[], Some(pg.dsn("ready").replace("postgres@", "reader@")));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no SELECT"), "{out}");
}

/// The HTTP face cannot be held by idle or dripping clients: headers must
/// arrive within --http-header-timeout, and past --http-max-connections new
/// connections wait until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_excess_http_clients_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pg = Pg::start();
    let db = pg.database("limits").await;
    db.batch_execute(PATRON).await.unwrap();
    let w = watch(
        &pg,
        "limits",
        &[
            "--http",
            "127.0.0.1:0",
            "--http-max-connections",
            "2",
            "--http-header-timeout",
            "500ms",
        ],
    );
    let port = http_port(&w);

    // Half a request line, then nothing: closed after the header timeout.
    let mut drip = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    drip.write_all(b"GET /_stats HTTP/1.1\r\nHo").await.unwrap();
    let mut buf = Vec::new();
    within(
        10.0,
        "the dripping client is cut",
        drip.read_to_end(&mut buf),
    )
    .await
    .unwrap();

    // Two idle connections take both places; a third waits, and is served
    // once one of them leaves.
    let hold1 = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let _hold2 = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut third = tokio::spawn(async move { http(port, "GET", "/_stats", None).await.0 });
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut third).await;
    assert!(
        early.is_err(),
        "the third connection was served past the limit"
    );
    drop(hold1);
    assert_eq!(
        within(10.0, "the third is served", third).await.unwrap(),
        200
    );
}

/// Whole headers, then a body that drips a byte a second: a request must be
/// received within the header timeout and 5 s more (408), so two drippers
/// cannot hold both places for ever (before: `/_stats` waited for good).
/// A non-loopback bind without a token is warned about, and serves only a
/// Host it knows: localhost, IP literals, and `--http-allow-host` names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_cut_and_foreign_hosts_refused_on_any_bind() {
    let pg = Pg::start();
    let db = pg.database("drip").await;
    db.batch_execute(PATRON).await.unwrap();
    let w = watch(
        &pg,
        "drip",
        &[
            "--http",
            "0.0.0.0:0",
            "--http-max-connections",
            "2",
            "--http-header-timeout",
            "1s",
            "--http-allow-host",
            "cache.internal",
        ],
    );
    let port = http_port(&w);
    w.err.wait_for(
        5.0,
        "is not a loopback address and has no --http-token-file",
    );
    let (a, b) = (tokio::spawn(drip_body(port)), tokio::spawn(drip_body(port)));
    assert_eq!(
        within(
            15.0,
            "/_stats past two drippers",
            http(port, "GET", "/_stats", None)
        )
        .await
        .0,
        200
    );
    let answer = String::from_utf8_lossy(&within(15.0, "the dripper's answer", a).await.unwrap())
        .into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    drop(b);

    let get = |host: &'static str| async move {
        let request = format!("GET /_stats HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        http_raw(port, &request).await
    };
    assert_eq!(get("evil.example").await.0, 403);
    assert_eq!(get("cache.internal:8080").await.0, 200);
    assert_eq!(get("192.0.2.7").await.0, 200);
}

/// The password need not be on the command line: PGPASSWORD, or a password
/// file (PGPASSFILE, as libpq reads it, ignored when others may read it),
/// against a PostgreSQL that requires a password of this role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_come_from_pgpassword_or_a_private_password_file() {
    let pg = Pg::start();
    let db = pg.database("secret").await;
    db.batch_execute(PATRON).await.unwrap();
    let hba: String = db.query_one("SHOW hba_file", &[]).await.unwrap().get(0);
    db.batch_execute(&format!(
        "CREATE ROLE app LOGIN PASSWORD 'pw:1';
         GRANT SELECT ON patron TO app;
         CREATE TEMP TABLE hba (line text);
         INSERT INTO hba VALUES ('host all app 127.0.0.1/32 scram-sha-256'),
                                ('local all all trust'), ('host all all 127.0.0.1/32 trust');
         COPY hba TO '{hba}';
         SELECT pg_reload_conf();"
    ))
    .await
    .unwrap();
    let dsn = pg.dsn("secret").replace("postgres@", "app@");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(&file, format!("127.0.0.1:{}:secret:app:pw\\:1\n", pg.port)).unwrap();
    let check = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["watch-db", "--dsn", &dsn, "--table", "patron", "--check"])
            .env_remove("PGPASSWORD")
            .env_remove("PGPASSFILE")
            .env("HOME", dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = check(&[]);
    assert_eq!(code, Some(1), "no password: {out}");
    assert!(out.contains("password"), "{out}");
    let (code, out) = check(&[("PGPASSWORD", "pw:1")]);
    assert!(out.contains("ok    connection"), "{out}");
    assert_eq!(
        code,
        Some(1),
        "connected; only the trigger is missing: {out}"
    );

    use std::os::unix::fs::PermissionsExt;
    let pgpass = file.to_str().unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, out) = check(&[("PGPASSFILE", pgpass)]);
    assert!(out.contains("ok    connection"), "{out}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, out) = check(&[("PGPASSFILE", pgpass)]);
    assert!(out.contains("others may read it"), "{out}");
    assert!(!out.contains("ok    connection"), "{out}");
}

/// A role with CREATE on schema public makes `public.aioq_notify()` before
/// the administrator runs `--install`: `CREATE OR REPLACE` would keep her as
/// its owner, and her code would run as whoever writes the table (a
/// superuser, here). `--install` refuses, naming the owner, and installs
/// nothing; `--check` names the owner of the function and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_refuses_a_trigger_function_another_role_owns() {
    let pg = Pg::start();
    let db = pg.database("r21").await;
    db.batch_execute(PATRON).await.unwrap();
    db.batch_execute("CREATE ROLE mallory LOGIN; GRANT CREATE ON SCHEMA public TO mallory;")
        .await
        .unwrap();
    let (mallory, conn) = tokio_postgres::connect(
        &pg.dsn("r21").replace("postgres@", "mallory@"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    mallory
        .batch_execute(
            "CREATE FUNCTION public.aioq_notify() RETURNS trigger LANGUAGE plpgsql \
             AS $$BEGIN RETURN NULL; END$$",
        )
        .await
        .unwrap();

    let mut install = watch(&pg, "r21", &["--install"]);
    assert_eq!(install.exit_code(20.0), Some(1), "{}", install.err.text());
    let said = install.err.text();
    assert!(
        said.contains("owned by role \"mallory\"") && said.contains("Nothing was installed"),
        "{said}"
    );
    let triggers: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'patron'::regclass AND NOT tgisinternal",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(triggers, 0, "a trigger calls mallory's function");

    let dsn = pg.dsn("r21");
    let mut check = Proc::spawn(
        &["watch-db", "--dsn", &dsn, "--table", "patron", "--check"],
        false,
    );
    assert_eq!(check.exit_code(20.0), Some(1));
    let out = check.out.text();
    assert!(
        out.contains("FAIL  owners for public.patron") && out.contains("owned by \"mallory\""),
        "{out}"
    );

    // Once the function is gone, the install owns what it makes.
    db.batch_execute("DROP FUNCTION public.aioq_notify()")
        .await
        .unwrap();
    let mut install = watch(&pg, "r21", &["--install"]);
    assert_eq!(install.exit_code(20.0), Some(0), "{}", install.err.text());
    let mut check = Proc::spawn(
        &["watch-db", "--dsn", &dsn, "--table", "patron", "--check"],
        false,
    );
    assert_eq!(check.exit_code(20.0), Some(0), "{}", check.out.text());
    assert!(
        check
            .out
            .text()
            .contains("owned by \"postgres\" (superuser)"),
        "{}",
        check.out.text()
    );
}

/// A POST whose headers arrive whole and whose body then drips a byte a
/// second; what the server answered.
async fn drip_body(port: u16) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        b"POST /patron HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 100000\r\n\r\n{",
    )
    .await
    .unwrap();
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if s.write_all(b" ").await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    answer
}

/// A role with no grant floods the channel: one statement of 20,000 NOTIFYs
/// (the security review's), into an event queue that holds them. The
/// watcher reads the rows they name in batches, one statement per 256 events
/// at most: about 80 reads, where it made one per event, one after another
/// (20,000; with the default queue of 10,000 the review saw 8,972 dropped, a
/// RESYNC and 11,083 reads). The cache keeps its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_flood_from_any_role_does_not_empty_the_cache() {
    let pg = Pg::start();
    let db = pg.database("noflush").await;
    db.batch_execute(PATRON).await.unwrap();
    db.batch_execute(
        "INSERT INTO patron (name) SELECT 'p' || g FROM generate_series(1, 50) g;
         CREATE ROLE mallory LOGIN; GRANT CONNECT ON DATABASE noflush TO mallory;",
    )
    .await
    .unwrap();
    let mut install = watch(&pg, "noflush", &["--install"]);
    assert_eq!(install.exit_code(20.0), Some(0));
    let w = watch(
        &pg,
        "noflush",
        &["--json", "--http", "127.0.0.1:0", "--event-queue", "20000"],
    );
    let port = http_port(&w);
    w.err.wait_for_async(20.0, "listening on chan_patron").await;
    for id in 1..=50 {
        assert_eq!(
            http(port, "GET", &format!("/patron/{id}"), None).await.0,
            200
        );
    }
    assert_eq!(stat(port, "cached_rows").await, 50);
    let (mallory, conn) = tokio_postgres::connect(
        &pg.dsn("noflush").replace("postgres@", "mallory@"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let queries_before = stat(port, "db_queries").await;
    mallory
        .batch_execute(
            "SELECT count(pg_notify('chan_patron', '{\"table\":\"patron\",\"schema\":\"public\",\
             \"id\":' || g || ',\"type\":\"UPDATE\"}')) FROM generate_series(1, 20000) g",
        )
        .await
        .unwrap();
    poll_until(30.0, "20,000 events applied", || async {
        let n = stat(port, "events").await;
        (n >= 20_000).then_some(()).ok_or(n.to_string())
    })
    .await;
    assert_eq!(stat(port, "overflows").await, 0);
    assert!(!w.out.text().contains("RESYNC"), "the cache started over");
    let queries = stat(port, "db_queries").await - queries_before;
    assert!(queries <= 200, "{queries} reads for 20,000 events");
    // The rows the flood named are still cached, as the database has them.
    assert_eq!(stat(port, "cached_rows").await, 50);
    assert_eq!(http(port, "GET", "/patron/7", None).await.1["name"], "p7");
}
