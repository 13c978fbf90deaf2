//! What watch-db needs to know about a table, and the trigger that makes
//! PostgreSQL announce its changes.
//!
//! DDL cannot take bind parameters, so every statement that names a table,
//! column or channel is built by PostgreSQL itself with `format('%I', $1)` and
//! `format('%L', $1)` from bound parameters, then executed: quoting is always
//! PostgreSQL's own.

use anyhow::{bail, Context};
use tokio_postgres::GenericClient;

/// The trigger function's name; one function serves every table.
pub const FUNCTION: &str = "aioq_notify";

/// The trigger function: builds the event, falls back to table/id/type (and
/// `"truncated": true`) when it would not fit a NOTIFY payload (under 8000
/// bytes, or the writing transaction fails), and notifies on the channel given as the trigger's first
/// argument (the primary key column is the second). The third says what the
/// event carries: `keys` (table, key, operation: every role may LISTEN, so
/// rows stay out) or `rows` (old and new rows and the diff). Schema-qualified,
/// with its search_path fixed, so no object a role creates elsewhere can stand
/// in for the functions it calls.
const FUNCTION_SQL: &str = r#"
CREATE OR REPLACE FUNCTION public.aioq_notify() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  chan text := TG_ARGV[0];
  pk text := TG_ARGV[1];
  keys_only boolean := COALESCE(TG_ARGV[2], 'rows') = 'keys';
  old_row jsonb;
  new_row jsonb;
  data jsonb := '{}'::jsonb;
  event jsonb;
  msg text;
BEGIN
  IF TG_OP <> 'INSERT' THEN old_row := to_jsonb(OLD); data := data || jsonb_build_object('old', old_row); END IF;
  IF TG_OP <> 'DELETE' THEN new_row := to_jsonb(NEW); data := data || jsonb_build_object('new', new_row); END IF;
  IF TG_OP = 'UPDATE' THEN
    data := data || jsonb_build_object('diff', (
      SELECT COALESCE(jsonb_object_agg(n.key, n.value), '{}'::jsonb)
      FROM jsonb_each(new_row) AS n
      WHERE n.value IS DISTINCT FROM old_row -> n.key));
  END IF;
  event := jsonb_build_object('table', TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA,
                              'id', COALESCE(new_row, old_row) -> pk, 'type', TG_OP,
                              'txid', txid_current());
  IF TG_OP = 'UPDATE' AND (old_row -> pk) IS DISTINCT FROM (new_row -> pk) THEN
    event := event || jsonb_build_object('old_id', old_row -> pk);
  END IF;
  IF keys_only THEN
    msg := event::text;
  ELSE
    msg := (event || jsonb_build_object('data', data))::text;
  END IF;
  IF octet_length(msg) > 7999 THEN
    msg := (event || jsonb_build_object('truncated', true))::text;
  END IF;
  PERFORM pg_notify(chan, msg);
  RETURN NULL;
END
$fn$"#;

/// What the trigger's events carry, and what the watcher trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Payload {
    /// Table, schema, key and operation only; the watcher reads the row with
    /// its own privileges. A forged notification can at worst cause a
    /// re-read.
    Keys,
    /// Old and new rows and the diff in the event (no read per event; every
    /// role that can LISTEN on the channel reads them, and any role can
    /// NOTIFY one).
    Rows,
}

impl Payload {
    pub fn as_str(self) -> &'static str {
        match self {
            Payload::Keys => "keys",
            Payload::Rows => "rows",
        }
    }
}

/// The trigger function's body as PostgreSQL keeps it (`pg_proc.prosrc`),
/// to tell a current installation from an older one.
pub fn function_body() -> &'static str {
    FUNCTION_SQL
        .split("$fn$")
        .nth(1)
        .expect("the function's body is between $fn$ quotes")
}

/// A watched table, as read from the catalog.
#[derive(Debug, Clone)]
pub struct Table {
    /// As the user named it (and as it appears in URLs).
    pub name: String,
    pub schema: String,
    pub relname: String,
    pub pk: String,
    /// The primary key's type, as `format_type` spells it (for casts).
    pub pk_type: String,
    pub columns: Vec<String>,
    pub channel: String,
}

impl Table {
    pub fn trigger_name(&self) -> String {
        format!("aioq_notify_{}", self.relname)
    }
}

/// Reads a table's schema, primary key and columns; a clear error when it does
/// not exist or lacks a single-column primary key.
pub async fn describe(
    db: &impl GenericClient,
    name: &str,
    channel: Option<&str>,
) -> anyhow::Result<Table> {
    let row = db
        .query_opt(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')",
            &[&name],
        )
        .await
        .with_context(|| format!("looking up table {name}"))?;
    let Some(row) = row else {
        bail!("table {name} does not exist (or is not a table)");
    };
    let (schema, relname): (String, String) = (row.get(0), row.get(1));
    let pk = db
        .query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod)
             FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = to_regclass($1) AND i.indisprimary",
            &[&name],
        )
        .await?;
    if pk.len() != 1 {
        bail!(
            "table {name} needs a single-column primary key (it has {})",
            if pk.is_empty() {
                "none".to_string()
            } else {
                format!("{} columns", pk.len())
            }
        );
    }
    let columns = db
        .query(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0
             AND NOT attisdropped ORDER BY attnum",
            &[&name],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Table {
        name: name.to_string(),
        channel: channel.map_or_else(|| format!("chan_{relname}"), str::to_string),
        schema,
        relname,
        pk: pk[0].get(0),
        pk_type: pk[0].get(1),
        columns,
    })
}

/// Builds a statement with PostgreSQL's own quoting (`%I` identifiers, `%L`
/// literals) from bound parameters.
pub async fn formatted(
    db: &impl GenericClient,
    template: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let placeholders: Vec<String> = (2..=args.len() + 1)
        .map(|i| format!("${i}::text"))
        .collect();
    let sql = format!("SELECT format($1::text, {})", placeholders.join(", "));
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&template];
    params.extend(
        args.iter()
            .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync)),
    );
    Ok(db.query_one(&sql, &params).await?.get(0))
}

/// Creates the function and the triggers, in one transaction; running it again
/// changes nothing.
pub async fn install(
    db: &mut tokio_postgres::Client,
    tables: &[Table],
    payload: Payload,
) -> anyhow::Result<()> {
    let tx = db.transaction().await?;
    tx.batch_execute(FUNCTION_SQL)
        .await
        .context("creating the trigger function")?;
    // CREATE OR REPLACE keeps the owner of a function that was there: a role
    // that made public.aioq_notify() first would keep changing what runs in
    // every write to the watched tables, as whoever writes them. Checked
    // after the statement, in its transaction, so no one slips in between.
    let owner: Option<String> = tx
        .query_opt(
            "SELECT pg_get_userbyid(proowner) FROM pg_proc \
             WHERE oid = 'public.aioq_notify()'::regprocedure AND proowner <> \
             (SELECT oid FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await?
        .map(|r| r.get(0));
    if let Some(owner) = owner {
        let me: String = tx.query_one("SELECT current_user::text", &[]).await?.get(0);
        bail!(
            "public.{FUNCTION}() already exists and is owned by role {owner:?}, not by {me:?} \
             (the role installing): that role could change the code every write to the \
             watched tables runs. Nothing was installed. Drop it as a superuser \
             (DROP FUNCTION public.{FUNCTION}() CASCADE), check who may CREATE in schema \
             public (REVOKE CREATE ON SCHEMA public FROM PUBLIC), and run --install again"
        );
    }
    for t in tables {
        let ddl = formatted(
            &tx,
            "CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %I.%I \
             FOR EACH ROW EXECUTE FUNCTION public.aioq_notify(%L, %L, %L)",
            &[
                &t.trigger_name(),
                &t.schema,
                &t.relname,
                &t.channel,
                &t.pk,
                payload.as_str(),
            ],
        )
        .await?;
        tx.batch_execute(&ddl)
            .await
            .with_context(|| format!("creating the trigger on {}", t.name))?;
    }
    tx.commit().await?;
    Ok(())
}

/// Removes the triggers, and the function when no trigger uses it any more.
pub async fn uninstall(db: &mut tokio_postgres::Client, tables: &[Table]) -> anyhow::Result<()> {
    let tx = db.transaction().await?;
    for t in tables {
        let ddl = formatted(
            &tx,
            "DROP TRIGGER IF EXISTS %I ON %I.%I",
            &[&t.trigger_name(), &t.schema, &t.relname],
        )
        .await?;
        tx.batch_execute(&ddl).await?;
    }
    let users: i64 = tx
        .query_one(
            "SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid WHERE p.proname = $1",
            &[&FUNCTION],
        )
        .await?
        .get(0);
    if users == 0 {
        tx.batch_execute("DROP FUNCTION IF EXISTS public.aioq_notify()")
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
