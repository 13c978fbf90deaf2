//! The row cache: an LRU keyed by (table, primary key), fed by change events.
//!
//! A cached `None` means "this row does not exist", so a GET for a missing id
//! does not reach the database twice. After a reconnect to PostgreSQL the cache
//! cannot know what it missed, so it is emptied.
//!
//! A read-through (a GET that missed) must never overwrite what an event
//! brought meanwhile: it read the row before the event's transaction may have
//! committed. So a miss first leaves a pending mark with a token of its own,
//! and stores its result only if its mark is still there; every event
//! replaces or removes whatever is cached, marks included.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use lru::LruCache;
use serde::Serialize;
use serde_json::Value;

type Key = (String, String);

#[derive(Debug, Clone)]
enum Slot {
    Row(Option<Value>),
    /// A read-through is on its way to the database.
    Pending(u64),
}

pub struct Cache {
    rows: Mutex<LruCache<Key, Slot>>,
    next_token: AtomicU64,
    pub stats: CacheStats,
}

/// A read-through in progress: [`Cache::fill`] stores its result.
pub struct Miss {
    key: Key,
    token: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Statements this instance sent to PostgreSQL for reads and writes
    /// (LISTEN and health probes excluded).
    pub db_queries: AtomicU64,
    pub events: AtomicU64,
    pub invalidations: AtomicU64,
    /// Notifications dropped because the event queue was full.
    pub overflows: AtomicU64,
    /// DELETE events not emitted: the row was still there (keys mode).
    pub ignored: AtomicU64,
}

/// The canonical text of a primary key, whether it came from a URL (`29`) or an
/// event (`29`, `"abc"`).
pub fn id_key(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The primary key as PostgreSQL prints it, from a URL's text, for key types
/// whose text form is known (`01` and `1` are one integer; a UUID in any
/// case or with braces is one UUID). `None` for other types or text not of
/// the type: such a read goes to the database and is not cached, so no copy
/// can exist that events would not find.
pub fn canonical_id(pk_type: &str, id: &str) -> Option<String> {
    match pk_type {
        "integer" | "bigint" | "smallint" => id.trim().parse::<i64>().ok().map(|n| n.to_string()),
        "uuid" => {
            let hex: String = id
                .chars()
                .filter(|c| !matches!(c, '-' | '{' | '}'))
                .map(|c| c.to_ascii_lowercase())
                .collect();
            (hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| {
                format!(
                    "{}-{}-{}-{}-{}",
                    &hex[..8],
                    &hex[8..12],
                    &hex[12..16],
                    &hex[16..20],
                    &hex[20..]
                )
            })
        }
        "text" => Some(id.to_string()),
        t if t.starts_with("character varying") => Some(id.to_string()),
        _ => None,
    }
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Self {
            rows: Mutex::new(LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap())),
            next_token: AtomicU64::new(1),
            stats: CacheStats::default(),
        }
    }

    /// `Ok(row or None)` on a hit; on a miss, a pending mark is left and
    /// `Err(Miss)` says how to fill it.
    pub fn get(&self, table: &str, id: &str) -> Result<Option<Value>, Miss> {
        let key = (table.to_string(), id.to_string());
        let mut rows = self.rows.lock().unwrap();
        if let Some(Slot::Row(row)) = rows.get(&key) {
            self.stats.hits.fetch_add(1, Relaxed);
            return Ok(row.clone());
        }
        self.stats.misses.fetch_add(1, Relaxed);
        let token = self.next_token.fetch_add(1, Relaxed);
        rows.put(key.clone(), Slot::Pending(token));
        Err(Miss { key, token })
    }

    /// The row as cached, without counting a hit or leaving a mark on a
    /// miss; `None` when the cache does not hold it (or holds it absent).
    pub fn peek(&self, table: &str, id: &str) -> Option<Value> {
        let key = (table.to_string(), id.to_string());
        match self.rows.lock().unwrap().peek(&key) {
            Some(Slot::Row(row)) => row.clone(),
            _ => None,
        }
    }

    /// Stores a read-through's result, unless an event came for the row since
    /// the miss (its result may be older than the event's).
    pub fn fill(&self, miss: Miss, row: Option<Value>) {
        let mut rows = self.rows.lock().unwrap();
        if matches!(rows.peek(&miss.key), Some(Slot::Pending(t)) if *t == miss.token) {
            rows.put(miss.key, Slot::Row(row));
        }
    }

    /// What an event says the row now is.
    pub fn put(&self, table: &str, id: &str, row: Option<Value>) {
        self.rows
            .lock()
            .unwrap()
            .put((table.to_string(), id.to_string()), Slot::Row(row));
    }

    pub fn remove(&self, table: &str, id: &str) {
        self.rows
            .lock()
            .unwrap()
            .pop(&(table.to_string(), id.to_string()));
    }

    /// Forgets every row; returns how many there were.
    pub fn invalidate_all(&self) -> usize {
        let mut rows = self.rows.lock().unwrap();
        let n = rows.len();
        rows.clear();
        self.stats.invalidations.fetch_add(1, Relaxed);
        n
    }

    pub fn len(&self) -> usize {
        self.rows.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hit_miss_absent_and_eviction() {
        let c = Cache::new(2);
        assert!(c.get("t", "1").is_err());
        c.put("t", "1", Some(json!({"id": 1})));
        c.put("t", "2", None);
        assert_eq!(c.get("t", "1").ok(), Some(Some(json!({"id": 1}))));
        assert_eq!(c.get("t", "2").ok(), Some(None), "absent is cached");
        c.put("t", "3", None); // evicts the least recently used: 1
        assert!(c.get("t", "1").is_err());
        assert_eq!(c.stats.hits.load(Relaxed), 2);
        assert_eq!(c.stats.misses.load(Relaxed), 2);
        assert_eq!(c.invalidate_all(), 2);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_read_through_never_overwrites_a_newer_event() {
        let c = Cache::new(8);
        let miss = c.get("t", "1").unwrap_err();
        // The event for a commit that came after the read.
        c.put("t", "1", Some(json!({"v": 2})));
        c.fill(miss, Some(json!({"v": 1})));
        assert_eq!(c.get("t", "1").ok(), Some(Some(json!({"v": 2}))));
        // Nothing came between: the read-through fills.
        let miss = c.get("t", "2").unwrap_err();
        c.fill(miss, Some(json!({"v": 7})));
        assert_eq!(c.get("t", "2").ok(), Some(Some(json!({"v": 7}))));
        // An invalidation between also wins.
        let miss = c.get("t", "3").unwrap_err();
        c.remove("t", "3");
        c.fill(miss, Some(json!({"v": 1})));
        assert!(c.get("t", "3").is_err());
    }

    #[test]
    fn ids_from_urls_and_events_agree() {
        assert_eq!(id_key(&json!(29)), "29");
        assert_eq!(id_key(&json!("abc")), "abc");
        assert_eq!(canonical_id("integer", "01").as_deref(), Some("1"));
        assert_eq!(canonical_id("bigint", "x"), None);
        assert_eq!(
            canonical_id("uuid", "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}").as_deref(),
            Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        );
        assert_eq!(canonical_id("numeric", "1.0"), None);
    }
}
