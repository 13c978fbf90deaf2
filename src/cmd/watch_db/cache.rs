//! The row cache: an LRU keyed by (table, primary key), fed by change events.
//!
//! A cached `None` means "this row does not exist", so a GET for a missing id
//! does not reach the database twice. After a reconnect to PostgreSQL the cache
//! cannot know what it missed, so it is emptied.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use lru::LruCache;
use serde::Serialize;
use serde_json::Value;

type Key = (String, String);

pub struct Cache {
    rows: Mutex<LruCache<Key, Option<Value>>>,
    pub stats: CacheStats,
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
}

/// The canonical text of a primary key, whether it came from a URL (`29`) or an
/// event (`29`, `"abc"`).
pub fn id_key(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Self {
            rows: Mutex::new(LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap())),
            stats: CacheStats::default(),
        }
    }

    /// `Some(row or None)` on a hit, `None` on a miss.
    pub fn get(&self, table: &str, id: &str) -> Option<Option<Value>> {
        let hit = self
            .rows
            .lock()
            .unwrap()
            .get(&(table.to_string(), id.to_string()))
            .cloned();
        match hit {
            Some(_) => self.stats.hits.fetch_add(1, Relaxed),
            None => self.stats.misses.fetch_add(1, Relaxed),
        };
        hit
    }

    pub fn put(&self, table: &str, id: &str, row: Option<Value>) {
        self.rows
            .lock()
            .unwrap()
            .put((table.to_string(), id.to_string()), row);
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
        assert_eq!(c.get("t", "1"), None);
        c.put("t", "1", Some(json!({"id": 1})));
        c.put("t", "2", None);
        assert_eq!(c.get("t", "1"), Some(Some(json!({"id": 1}))));
        assert_eq!(c.get("t", "2"), Some(None), "absent is cached");
        c.put("t", "3", None); // evicts the least recently used: 1
        assert_eq!(c.get("t", "1"), None);
        assert_eq!(c.stats.hits.load(Relaxed), 2);
        assert_eq!(c.stats.misses.load(Relaxed), 2);
        assert_eq!(c.invalidate_all(), 2);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn ids_from_urls_and_events_agree() {
        assert_eq!(id_key(&json!(29)), "29");
        assert_eq!(id_key(&json!("abc")), "abc");
    }
}
