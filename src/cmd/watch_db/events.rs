//! Notifications made into events, a batch at a time: the rows a batch needs
//! (every row in keys mode, truncated ones in rows mode) are read in one
//! statement per table, after every notification of the batch arrived, so
//! each row read is at least as new as the events that asked for it. One
//! read per event, one after another, let four writers overflow the event
//! queue, and any role's NOTIFY flood empty the cache.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use serde_json::{json, Value};

use super::cache::{canonical_id, id_key};
use super::http::{ident, App};
use super::schema::{self, Table};

/// Notifications made into events together at most.
pub const BATCH: usize = 256;

/// An event read from its notification, before its row is read.
struct Pending<'a> {
    event: Value,
    table: &'a Table,
    id: String,
    kind: String,
    keys_only: bool,
    /// Its row must be read: not trusted from the event, or not in it.
    read: bool,
}

/// What became of one notification.
pub enum Outcome {
    Event(Value),
    /// Not an aioq event of a watched table.
    NotAnEvent,
    /// A DELETE of a row that is still there (keys mode: any role can
    /// NOTIFY): neither printed nor forwarded.
    Ignored,
}

/// What `payloads` make, in order, with the cache brought up to date.
pub async fn apply(app: &App, payloads: &[String], trust: schema::Payload) -> Vec<Outcome> {
    let pending: Vec<Option<Pending>> = payloads.iter().map(|p| parse(app, p, trust)).collect();
    let mut wanted: HashMap<&str, (&Table, Vec<String>)> = HashMap::new();
    for p in pending.iter().flatten().filter(|p| p.read) {
        wanted
            .entry(p.table.name.as_str())
            .or_insert_with(|| (p.table, Vec::new()))
            .1
            .push(p.id.clone());
    }
    let mut rows: HashMap<&str, Result<HashMap<String, Value>, String>> = HashMap::new();
    for (name, (table, ids)) in wanted {
        rows.insert(
            name,
            read(app, table, ids).await.map_err(|e| format!("{e:#}")),
        );
    }
    pending
        .into_iter()
        .map(|p| {
            let Some(p) = p else {
                return Outcome::NotAnEvent;
            };
            let row = if p.read {
                Some(match &rows[p.table.name.as_str()] {
                    Ok(found) => Ok(found.get(&key(p.table, &p.id)).cloned()),
                    Err(e) => Err(e.clone()),
                })
            } else {
                None
            };
            match settle(app, p, row) {
                Some(event) => Outcome::Event(event),
                None => Outcome::Ignored,
            }
        })
        .collect()
}

fn parse<'a>(app: &'a App, payload: &str, trust: schema::Payload) -> Option<Pending<'a>> {
    let mut event: Value = serde_json::from_str(payload).ok()?;
    // Any role can NOTIFY: in keys mode what an event says about a row is
    // not taken, only that the row changed; the row is read with our
    // privileges.
    let keys_only = trust == schema::Payload::Keys;
    if keys_only {
        if let Some(obj) = event.as_object_mut() {
            obj.remove("data");
        }
    }
    let relname = event.get("table")?.as_str()?;
    let schema_name = event
        .get("schema")
        .and_then(Value::as_str)
        .unwrap_or("public");
    let table = app
        .tables
        .values()
        .find(|t| t.relname == relname && t.schema == schema_name)?;
    let id = id_key(event.get("id")?);
    let kind = event.get("type")?.as_str()?.to_string();
    app.cache.stats.events.fetch_add(1, Relaxed);
    // A DELETE is read too in keys mode: one for a row that is still there
    // would reach every consumer of the feed.
    let truncated = event.get("truncated") == Some(&Value::Bool(true));
    let read = keys_only || (truncated && kind != "DELETE");
    Some(Pending {
        event,
        table,
        id,
        kind,
        keys_only,
        read,
    })
}

/// A key as the database prints it, where its type's text form is known.
fn key(table: &Table, id: &str) -> String {
    canonical_id(&table.pk_type, id).unwrap_or_else(|| id.to_owned())
}

/// The rows of `ids` in `table`, by key, in one statement. Keys of a known
/// type that do not parse as one are rows that cannot exist; for other types
/// a key the database refuses fails the statement, and the rows are read one
/// at a time instead.
async fn read(
    app: &App,
    table: &Table,
    ids: Vec<String>,
) -> anyhow::Result<HashMap<String, Value>> {
    let known = canonical_id(&table.pk_type, "0").is_some()
        || canonical_id(&table.pk_type, "00000000-0000-0000-0000-000000000000").is_some();
    let mut keys: Vec<String> = ids
        .iter()
        .filter_map(|id| {
            if known {
                canonical_id(&table.pk_type, id)
            } else {
                Some(id.clone())
            }
        })
        .collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let db = app.pool.get().await?;
    app.cache.stats.db_queries.fetch_add(1, Relaxed);
    let sql = format!(
        "SELECT r.{pk}::text, to_jsonb(r) FROM {}.{} r WHERE r.{pk} = ANY($1::text[]::{}[])",
        ident(&table.schema),
        ident(&table.relname),
        table.pk_type,
        pk = ident(&table.pk),
    );
    match db.query(&sql, &[&keys]).await {
        Ok(rows) => Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect()),
        Err(_) if !known => {
            let mut found = HashMap::new();
            for id in keys {
                app.cache.stats.db_queries.fetch_add(1, Relaxed);
                if let Ok(Some(row)) = db.query_opt(&super::http::select_sql(table), &[&id]).await {
                    found.insert(id, row.get(0));
                }
            }
            Ok(found)
        }
        Err(e) => Err(e.into()),
    }
}

/// Brings the cache up to date with one event and its row as read (`None`:
/// not read), and returns the event as printed.
fn settle(app: &App, p: Pending, row: Option<Result<Option<Value>, String>>) -> Option<Value> {
    let Pending {
        mut event,
        table,
        id,
        kind,
        keys_only,
        ..
    } = p;
    match row {
        Some(Err(e)) => {
            tracing::warn!(
                "could not read {} {} after its change event: {e}",
                table.name,
                crate::proto::shown(id.as_bytes())
            );
            app.cache.remove(&table.name, &id);
            return Some(event);
        }
        Some(Ok(Some(row))) if kind == "DELETE" => {
            app.cache.stats.ignored.fetch_add(1, Relaxed);
            tracing::debug!(
                "ignoring a DELETE of {} {} that is still there (forged, or the row was \
                 inserted again since)",
                table.name,
                crate::proto::shown(id.as_bytes())
            );
            app.cache.put(&table.name, &id, Some(row));
            return None;
        }
        Some(Ok(None)) if kind == "DELETE" => {
            event["verified"] = json!(true);
            // What the row was, as far as this watcher knew it.
            if let Some(old) = app.cache.peek(&table.name, &id) {
                event["data"] = json!({ "old": old });
            }
        }
        Some(Ok(row)) => {
            // The row before, as this watcher's cache held it (the event
            // before this one for it, or a read since): the old row and the
            // diff that rows mode's trigger gives, where the cache can.
            let old = match kind.as_str() {
                "UPDATE" => app.cache.peek(&table.name, &id),
                _ => None,
            };
            event["data"] = json!({ "new": row });
            if let (Some(old), Some(new)) = (old, row.as_ref().and_then(Value::as_object)) {
                let diff: serde_json::Map<String, Value> = new
                    .iter()
                    .filter(|(k, v)| old.get(k.as_str()) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                event["data"]["old"] = old;
                event["data"]["diff"] = Value::Object(diff);
            }
            event["fetched"] = json!(true);
        }
        None => {}
    }
    // A row gone, as an event says: trusted, it is cached as absent; not
    // trusted (keys mode), it is only forgotten, and the next read asks the
    // database.
    let gone = |id: &str| {
        if keys_only {
            app.cache.remove(&table.name, id)
        } else {
            app.cache.put(&table.name, id, None)
        }
    };
    if let Some(old) = event.get("old_id") {
        gone(&id_key(old));
    }
    match kind.as_str() {
        "DELETE" => gone(&id),
        _ => match event.pointer("/data/new") {
            Some(row) if !row.is_null() => app.cache.put(&table.name, &id, Some(row.clone())),
            _ => app.cache.remove(&table.name, &id),
        },
    }
    Some(event)
}
