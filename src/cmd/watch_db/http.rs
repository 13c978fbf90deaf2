//! `--http`: a JSON API over the watched tables. Reads come from the cache (a
//! miss reads the database once); writes go to the database only, and the cache
//! learns of them from the change feed like every other instance.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::cache::{canonical_id, Cache};
use super::schema::Table;

pub struct App {
    pub tables: HashMap<String, Table>,
    pub cache: Cache,
    pub pool: deadpool_postgres::Pool,
    pub guard: Guard,
}

/// Who may call the API: checked before any route.
#[derive(Debug, Default)]
pub struct Guard {
    /// `--http-token-file`: every request needs `Authorization: Bearer`.
    pub token: Option<String>,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/_stats", get(stats))
        .route("/{table}", post(insert))
        .route("/{table}/{id}", get(read).put(update).delete(remove))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// The checks every request passes (the Host header is checked before, by
/// the server): the token, and a JSON content type for writes, so that a web page
/// cannot write rows with a form or a "simple" cross-site request.
async fn guard(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Said in the log too, at most once a second: a client that keeps
    // getting these is misconfigured (or is a web page it should not be).
    static REFUSED: crate::broker::log_every::LogEvery = crate::broker::log_every::LogEvery::new();
    let refuse = |status: StatusCode, why: &str| {
        if let Some(n) = REFUSED.due_now() {
            tracing::warn!(
                "HTTP: refused {n} request(s) since the last line, the last {} {} ({}): {why}",
                request.method(),
                request.uri().path().chars().take(100).collect::<String>(),
                status.as_u16()
            );
        }
        ApiError(status, why.to_string()).into_response()
    };
    let headers = request.headers();
    if let Some(token) = &app.guard.token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 7235).
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim_start());
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return refuse(StatusCode::UNAUTHORIZED, "a bearer token is required");
        }
    }
    let writes = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    );
    if writes {
        let json = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "writes need Content-Type: application/json",
            );
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Quotes an identifier (one that came from the catalog).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn qualified(t: &Table) -> String {
    format!("{}.{}", ident(&t.schema), ident(&t.relname))
}

/// `WHERE pk = $n` with the URL's text parsed as the key's own type, so the
/// primary key index is used and a malformed id is PostgreSQL's error.
fn pk_match(t: &Table, n: usize) -> String {
    format!("{} = ${n}::text::{}", ident(&t.pk), t.pk_type)
}

pub fn select_sql(t: &Table) -> String {
    format!(
        "SELECT to_jsonb(r) FROM {} r WHERE r.{}",
        qualified(t),
        pk_match(t, 1)
    )
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "msg": self.1 }))).into_response()
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            // The statement was wrong for this table (types, constraints,
            // malformed id): the client's mistake, in PostgreSQL's words.
            Some(db) => ApiError(StatusCode::BAD_REQUEST, db.message().to_string()),
            None => ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database unavailable: {e}"),
        )
    }
}

type ApiResult = Result<(StatusCode, Json<Value>), ApiError>;

/// Longest id a URL may carry.
const MAX_ID: usize = 256;

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.len() > MAX_ID {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("id of {} bytes: at most {MAX_ID}", id.len()),
        ));
    }
    Ok(())
}

fn table<'a>(app: &'a App, name: &str) -> Result<&'a Table, ApiError> {
    app.tables.get(name).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no table {name} is served here"),
        )
    })
}

/// The body's columns, checked against the table's.
fn columns<'a>(t: &Table, body: &'a Value) -> Result<Vec<&'a String>, ApiError> {
    let obj: &Map<String, Value> = body.as_object().ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object".into(),
        )
    })?;
    if obj.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the body has no columns".into(),
        ));
    }
    for k in obj.keys() {
        if !t.columns.contains(k) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("unknown column {k} in table {}", t.name),
            ));
        }
    }
    Ok(obj.keys().collect())
}

fn parse_body(body: &str) -> Result<Value, ApiError> {
    serde_json::from_str(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))
}

fn log(method: &Method, path: &str, status: StatusCode, started: Instant, cache: &str) {
    // The path is any client's text: escaped, so it cannot forge log lines.
    let path = crate::proto::shown(path.as_bytes());
    tracing::info!(
        "{method} {path} {} {:.1?}{cache}",
        status.as_u16(),
        started.elapsed()
    );
}

async fn stats(State(app): State<Arc<App>>) -> Json<Value> {
    let s = &app.cache.stats;
    Json(json!({
        "hits": s.hits.load(Relaxed),
        "misses": s.misses.load(Relaxed),
        "db_queries": s.db_queries.load(Relaxed),
        "events": s.events.load(Relaxed),
        "invalidations": s.invalidations.load(Relaxed),
        "overflows": s.overflows.load(Relaxed),
        "ignored_events": s.ignored.load(Relaxed),
        "cached_rows": app.cache.len(),
    }))
}

async fn read(State(app): State<Arc<App>>, Path((name, id)): Path<(String, String)>) -> Response {
    let started = Instant::now();
    let path = format!("/{name}/{id}");
    let mut hit = true;
    let result: ApiResult = async {
        let t = table(&app, &name)?;
        check_id(&id)?;
        let key = canonical_id(&t.pk_type, &id);
        let cached = match &key {
            Some(key) => app.cache.get(&t.name, key).map_err(Some),
            None => Err(None),
        };
        let row = match cached {
            Ok(row) => row,
            Err(miss) => {
                hit = false;
                let db = app.pool.get().await?;
                app.cache.stats.db_queries.fetch_add(1, Relaxed);
                let row: Option<Value> = db
                    .query_opt(&select_sql(t), &[&id])
                    .await?
                    .map(|r| r.get(0));
                if let Some(miss) = miss {
                    app.cache.fill(miss, row.clone());
                }
                row
            }
        };
        match row {
            Some(row) => Ok((StatusCode::OK, Json(row))),
            None => Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("{name} {id} not found"),
            )),
        }
    }
    .await;
    respond(
        &Method::GET,
        &path,
        started,
        if hit { " hit" } else { " miss" },
        result,
    )
}

fn respond(
    method: &Method,
    path: &str,
    started: Instant,
    cache: &str,
    result: ApiResult,
) -> Response {
    let response = match result {
        Ok(ok) => ok.into_response(),
        Err(e) => e.into_response(),
    };
    log(method, path, response.status(), started, cache);
    response
}

async fn insert(State(app): State<Arc<App>>, Path(name): Path<String>, body: String) -> Response {
    let started = Instant::now();
    let result: ApiResult = async {
        let t = table(&app, &name)?;
        let body = parse_body(&body)?;
        let cols: Vec<String> = columns(t, &body)?.into_iter().map(|c| ident(c)).collect();
        let sql = format!(
            "INSERT INTO {q} ({c}) SELECT {c} FROM jsonb_populate_record(NULL::{q}, $1::jsonb) RETURNING to_jsonb({pk})",
            q = qualified(t),
            c = cols.join(", "),
            pk = ident(&t.pk),
        );
        let db = app.pool.get().await?;
        app.cache.stats.db_queries.fetch_add(1, Relaxed);
        let id: Value = db.query_one(&sql, &[&body]).await?.get(0);
        Ok((StatusCode::OK, Json(json!({ "msg": "ok", "id": id }))))
    }
    .await;
    respond(&Method::POST, &format!("/{name}"), started, "", result)
}

async fn update(
    State(app): State<Arc<App>>,
    Path((name, id)): Path<(String, String)>,
    body: String,
) -> Response {
    let started = Instant::now();
    let result: ApiResult = async {
        let t = table(&app, &name)?;
        let body = parse_body(&body)?;
        let cols: Vec<String> = columns(t, &body)?.into_iter().map(|c| ident(c)).collect();
        let sql = format!(
            "UPDATE {q} SET ({c}) = (SELECT {c} FROM jsonb_populate_record(NULL::{q}, $1::jsonb)) WHERE {m}",
            q = qualified(t),
            c = cols.join(", "),
            m = pk_match(t, 2),
        );
        let db = app.pool.get().await?;
        app.cache.stats.db_queries.fetch_add(1, Relaxed);
        match db.execute(&sql, &[&body, &id]).await? {
            0 => Err(ApiError(StatusCode::NOT_FOUND, format!("{name} {id} not found"))),
            _ => Ok((StatusCode::OK, Json(json!({ "msg": "ok" })))),
        }
    }
    .await;
    respond(&Method::PUT, &format!("/{name}/{id}"), started, "", result)
}

async fn remove(State(app): State<Arc<App>>, Path((name, id)): Path<(String, String)>) -> Response {
    let started = Instant::now();
    let result: ApiResult = async {
        let t = table(&app, &name)?;
        let sql = format!("DELETE FROM {} WHERE {}", qualified(t), pk_match(t, 1));
        let db = app.pool.get().await?;
        app.cache.stats.db_queries.fetch_add(1, Relaxed);
        match db.execute(&sql, &[&id]).await? {
            0 => Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("{name} {id} not found"),
            )),
            _ => Ok((StatusCode::OK, Json(json!({ "msg": "ok" })))),
        }
    }
    .await;
    respond(
        &Method::DELETE,
        &format!("/{name}/{id}"),
        started,
        "",
        result,
    )
}
