//! Console sessions, kept on the server: the browser holds only a random id
//! (32 bytes, hex, in the `firmcast_session` cookie); who signed in, with
//! which role, and the session's CSRF token live here.
//!
//! One small trait, two stores: in memory for the embedded backend (one
//! instance), and Redis when `[state] backend = "redis"`, so any instance
//! behind the balancer serves a session another one started. A session
//! unused for `[console] session_idle_secs` (8 h) is gone; every use
//! restarts that clock.
//!
//! The stores key a session by the sha256 of its id, never by the id: what
//! a Redis dump or a memory read shows cannot be replayed as a cookie.

use crate::config::Role;
use crate::storage::{RedisLink, StoreError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A session id as the cookie carries it: 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(..)") // a bearer secret: never in logs
    }
}

impl SessionId {
    /// A new id from 32 bytes of the OS's randomness.
    pub fn generate() -> Self {
        SessionId(hex::encode(rand::random::<[u8; 32]>()))
    }

    /// The id a cookie value names, if it has the shape of one.
    pub fn parse(value: &str) -> Option<Self> {
        (value.len() == 64
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| SessionId(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the stores key the session by.
    fn key(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

/// One signed-in person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The admin token's configured name (the audit log's actor).
    pub actor: String,
    /// The role at sign-in; each request takes the token's role as
    /// configured then (see `Auth::role_of`).
    pub role: Role,
    /// Carried by every state-changing form and upload of this session.
    pub csrf: String,
    pub signed_in_at: chrono::DateTime<chrono::Utc>,
}

impl Session {
    pub fn new(actor: String, role: Role) -> Self {
        Session {
            actor,
            role,
            csrf: hex::encode(rand::random::<[u8; 32]>()),
            signed_in_at: chrono::Utc::now(),
        }
    }
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Keeps `session` under `id` for the idle time.
    async fn put(&self, id: &SessionId, session: &Session) -> Result<(), StoreError>;

    /// The session, its idle clock restarted; `None` when unknown or idle
    /// too long.
    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;

    /// Forgets the session (sign-out); unknown ids are fine.
    async fn delete(&self, id: &SessionId) -> Result<(), StoreError>;
}

/// Sessions in this process (the embedded backend: one instance).
pub struct MemorySessions {
    idle: Duration,
    /// At most this many; past it the least recently used goes.
    cap: usize,
    sessions: Mutex<HashMap<String, (Session, Instant)>>,
}

impl MemorySessions {
    pub fn new(idle: Duration) -> Self {
        MemorySessions {
            idle,
            cap: 10_000,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Session, Instant)>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn put(&self, id: &SessionId, session: &Session) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut all = self.lock();
        // Only a configured token makes a session, so this stays small;
        // still, expired ones go here and the map never grows past `cap`.
        all.retain(|_, (_, used)| now.duration_since(*used) < self.idle);
        if all.len() >= self.cap {
            if let Some(oldest) = all
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                all.remove(&oldest);
            }
        }
        all.insert(id.key(), (session.clone(), now));
        Ok(())
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let now = Instant::now();
        let key = id.key();
        let mut all = self.lock();
        match all.get_mut(&key) {
            Some((session, used)) if now.duration_since(*used) < self.idle => {
                *used = now;
                Ok(Some(session.clone()))
            }
            Some(_) => {
                all.remove(&key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.lock().remove(&id.key());
        Ok(())
    }
}

/// Sessions in Redis, shared by every instance: `P:console:session:<sha256
/// of the id>` holds the session's JSON and expires after the idle time,
/// which every read restarts (`GETEX ... EX`, one round trip).
pub struct RedisSessions {
    link: RedisLink,
    idle_secs: u64,
}

impl RedisSessions {
    pub fn new(link: RedisLink, idle: Duration) -> Self {
        RedisSessions {
            link,
            idle_secs: idle.as_secs().max(1),
        }
    }

    fn key(&self, id: &SessionId) -> String {
        format!("{}:console:session:{}", self.link.prefix(), id.key())
    }
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn put(&self, id: &SessionId, session: &Session) -> Result<(), StoreError> {
        let key = self.key(id);
        let json = serde_json::to_string(session).expect("a session serializes");
        let secs = self.idle_secs;
        self.link
            .run(|mut c| async move {
                c.query::<()>(redis::cmd("SET").arg(&key).arg(&json).arg("EX").arg(secs))
                    .await
            })
            .await
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let key = self.key(id);
        let secs = self.idle_secs;
        let json: Option<String> = self
            .link
            .run(|mut c| async move {
                c.query(redis::cmd("GETEX").arg(&key).arg("EX").arg(secs))
                    .await
            })
            .await?;
        json.map(|j| {
            serde_json::from_str(&j)
                .map_err(|e| StoreError::Corrupt(format!("console session record: {e}")))
        })
        .transpose()
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        let key = self.key(id);
        self.link
            .run(|mut c| async move { c.query::<()>(redis::cmd("DEL").arg(&key)).await })
            .await
    }
}

/// The session store for an opened backend.
pub fn open(backend: &crate::storage::Backend, idle: Duration) -> Arc<dyn SessionStore> {
    match backend {
        crate::storage::Backend::Embedded { .. } => Arc::new(MemorySessions::new(idle)),
        crate::storage::Backend::Redis(link) => Arc::new(RedisSessions::new(link.clone(), idle)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_digits_and_never_printed() {
        let id = SessionId::generate();
        assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
        assert_ne!(SessionId::generate(), id);
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"0".repeat(65)] {
            assert_eq!(SessionId::parse(bad), None, "{bad}");
        }
        assert!(!format!("{id:?}").contains(id.as_str()));
        assert_ne!(id.key(), id.as_str(), "stores key by the hash");
    }

    #[tokio::test(start_paused = true)]
    async fn memory_sessions_expire_when_idle_and_each_use_restarts_the_clock() {
        let store = MemorySessions::new(Duration::from_secs(8 * 3600));
        let (id, s) = (
            SessionId::generate(),
            Session::new("ops".into(), Role::Admin),
        );
        store.put(&id, &s).await.unwrap();
        tokio::time::advance(Duration::from_secs(7 * 3600)).await;
        assert_eq!(store.get(&id).await.unwrap(), Some(s.clone()));
        tokio::time::advance(Duration::from_secs(7 * 3600)).await;
        assert_eq!(
            store.get(&id).await.unwrap(),
            Some(s.clone()),
            "used 7 h ago"
        );
        tokio::time::advance(Duration::from_secs(8 * 3600)).await;
        assert_eq!(store.get(&id).await.unwrap(), None, "idle 8 h");
        store.put(&id, &s).await.unwrap();
        store.delete(&id).await.unwrap();
        assert_eq!(store.get(&id).await.unwrap(), None, "signed out");
    }

    #[tokio::test]
    async fn memory_sessions_stay_under_their_cap() {
        let mut store = MemorySessions::new(Duration::from_secs(60));
        store.cap = 3;
        let ids: Vec<SessionId> = (0..5).map(|_| SessionId::generate()).collect();
        for id in &ids {
            store
                .put(id, &Session::new("ops".into(), Role::Viewer))
                .await
                .unwrap();
        }
        assert_eq!(store.lock().len(), 3);
        assert!(store.get(&ids[4]).await.unwrap().is_some());
    }
}
