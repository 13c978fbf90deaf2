//! `watch-db --check`: is this database ready to be watched? Connects as the
//! watcher would, round-trips a NOTIFY (which fails through a pooler in
//! transaction mode and on a read replica), reports the notification queue,
//! each table's trigger and the privileges the watcher needs. Exit 0 only
//! when every check passes.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_postgres::AsyncMessage;

use super::pg::Pg;
use super::schema::{self, Payload, Table};

/// One line of the report.
struct Line {
    ok: bool,
    what: String,
    detail: String,
}

/// Runs every check and prints one line each; true when all passed.
pub async fn run(pg: &Pg, shown: &str, tables: &[Table], payload: Payload) -> anyhow::Result<bool> {
    let mut lines = Vec::new();
    let (client, connection) = pg.config.connect(pg.tls.clone()).await?;
    let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut connection = connection;
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = ntx.send(n.channel().to_string());
            }
        }
    });
    let tls: bool = client
        .query_one(
            "SELECT COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
            &[],
        )
        .await?
        .get(0);
    lines.push(Line {
        ok: true,
        what: "connection".into(),
        detail: format!(
            "{shown}, sslmode={}, {}",
            pg.mode,
            if tls {
                "encrypted (TLS)"
            } else {
                "not encrypted"
            }
        ),
    });

    let probe = format!("aioq_check_{}", std::process::id());
    client
        .batch_execute(&schema::formatted(&client, "LISTEN %I", &[&probe]).await?)
        .await?;
    let sent = Instant::now();
    let notified = client
        .execute("SELECT pg_notify($1, 'check')", &[&probe])
        .await;
    let arrived = match notified {
        Err(e) => Err(format!("NOTIFY failed: {e} (a read replica?)")),
        Ok(_) => match tokio::time::timeout(Duration::from_secs(5), nrx.recv()).await {
            Ok(Some(c)) if c == probe => Ok(sent.elapsed()),
            _ => Err(
                "no notification came back within 5 s (a pooler in transaction mode? \
                      use a direct connection)"
                    .to_string(),
            ),
        },
    };
    lines.push(match arrived {
        Ok(t) => Line {
            ok: true,
            what: "LISTEN/NOTIFY".into(),
            detail: format!("a notification came back in {t:.1?}"),
        },
        Err(why) => Line {
            ok: false,
            what: "LISTEN/NOTIFY".into(),
            detail: why,
        },
    });

    let usage: f64 = client
        .query_one("SELECT pg_notification_queue_usage()", &[])
        .await?
        .get(0);
    lines.push(Line {
        // Past half, a listener somewhere is not reading: NOTIFY fails when
        // the queue is full, and with it every write to a watched table.
        ok: usage < 0.5,
        what: "notification queue".into(),
        detail: format!("{:.1}% used", usage * 100.0),
    });

    for t in tables {
        lines.push(trigger(&client, t, payload).await?);
        lines.push(owners(&client, t).await?);
        lines.push(privileges(&client, t).await?);
    }
    driver.abort();

    let all = lines.iter().all(|l| l.ok);
    for l in &lines {
        println!(
            "{:4}  {:32}  {}",
            if l.ok { "ok" } else { "FAIL" },
            l.what,
            l.detail
        );
    }
    Ok(all)
}

/// Is the trigger there, calling this version of the function with the
/// expected channel, key and payload mode?
async fn trigger(db: &tokio_postgres::Client, t: &Table, payload: Payload) -> anyhow::Result<Line> {
    let what = format!("trigger on {}.{}", t.schema, t.relname);
    let row = db
        .query_opt(
            "SELECT p.prosrc, t.tgargs FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
             WHERE t.tgrelid = to_regclass($1) AND t.tgname = $2",
            &[&t.name, &t.trigger_name()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Line {
            ok: false,
            what,
            detail: "not installed: run with --install".into(),
        });
    };
    let source: String = row.get(0);
    let args: Vec<u8> = row.get(1);
    // tgargs: the arguments, each ended by a NUL byte.
    let args: Vec<String> = args
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let want = [t.channel.as_str(), t.pk.as_str(), payload.as_str()];
    if source.trim() != schema::function_body().trim() {
        return Ok(Line {
            ok: false,
            what,
            detail: "installed by another version of aioq: run with --install to update it".into(),
        });
    }
    if args != want {
        // Only the payload differs: the trigger was installed for the other
        // mode, and its watchers may run in it. Reinstalling would switch
        // them all: say how to check in the trigger's mode first.
        let other_mode = args.len() == 3 && args[..2] == want[..2];
        let fix = if other_mode {
            format!(
                "the trigger sends {} events: check with --payload {} if that is what its                  watchers use, or run with --install to switch it (every watcher of the                  table must then use --payload {})",
                args[2],
                args[2],
                payload.as_str()
            )
        } else {
            "run with --install".to_string()
        };
        return Ok(Line {
            ok: false,
            what,
            detail: format!("installed with arguments {args:?}, expected {want:?}: {fix}"),
        });
    }
    Ok(Line {
        ok: true,
        what,
        detail: format!(
            "installed and current, notifying {} ({} payload)",
            t.channel,
            payload.as_str()
        ),
    })
}

/// Who owns the trigger function and the table. The function's owner can
/// change the code every write to the table runs, as the role writing: safe
/// when that is the table's owner (who could add any trigger anyway) or a
/// superuser, an escalation for any other role.
async fn owners(db: &tokio_postgres::Client, t: &Table) -> anyhow::Result<Line> {
    let what = format!("owners for {}.{}", t.schema, t.relname);
    let row = db
        .query_opt(
            "SELECT pg_get_userbyid(p.proowner), r.rolsuper, pg_get_userbyid(c.relowner), \
                    p.proowner = c.relowner \
             FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner, pg_class c \
             WHERE p.oid = to_regprocedure('public.aioq_notify()') AND c.oid = to_regclass($1)",
            &[&t.name],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Line {
            ok: false,
            what,
            detail: format!(
                "no function public.{}(): run with --install",
                schema::FUNCTION
            ),
        });
    };
    let (function, superuser, table, same): (String, bool, String, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let detail = format!(
        "function public.{}() owned by {function:?}{}, table by {table:?}",
        schema::FUNCTION,
        if superuser { " (superuser)" } else { "" }
    );
    if same || superuser {
        return Ok(Line {
            ok: true,
            what,
            detail,
        });
    }
    Ok(Line {
        ok: false,
        what,
        detail: format!(
            "{detail}: role {function:?} can change the code every write to the table runs; \
             drop the function as a superuser and run --install as the table's owner"
        ),
    })
}

/// The watcher reads rows (events, reads); `--http` also writes.
async fn privileges(db: &tokio_postgres::Client, t: &Table) -> anyhow::Result<Line> {
    const PRIVILEGES: [&str; 4] = ["SELECT", "INSERT", "UPDATE", "DELETE"];
    let row = db
        .query_one(
            "SELECT has_table_privilege(t, 'SELECT'), has_table_privilege(t, 'INSERT'),
                    has_table_privilege(t, 'UPDATE'), has_table_privilege(t, 'DELETE')
             FROM to_regclass($1) t",
            &[&t.name],
        )
        .await?;
    let (mut have, mut lack) = (Vec::new(), Vec::new());
    for (i, p) in PRIVILEGES.into_iter().enumerate() {
        if row.get::<_, bool>(i) {
            have.push(p)
        } else {
            lack.push(p)
        }
    }
    let can_read = have.contains(&"SELECT");
    Ok(Line {
        ok: can_read,
        what: format!("privileges on {}.{}", t.schema, t.relname),
        detail: if lack.is_empty() {
            "SELECT, INSERT, UPDATE, DELETE".into()
        } else if can_read {
            format!(
                "{} (without {}: --http cannot write)",
                have.join(", "),
                lack.join(", ")
            )
        } else {
            "no SELECT: the watcher cannot read the rows it caches".into()
        },
    })
}
