//! The Redis link every Redis-backed store shares: one connection (a
//! `ConnectionManager`), a deadline on every operation, and a fresh
//! connection after a timeout or a broken one, so when Redis comes back the
//! next operation simply works. Stores keep their own keys under the
//! deployment prefix (`state.redis_prefix`) and their own scripts.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError};

use super::StoreError;

pub(crate) const BACKEND: &str = "redis";

struct Inner {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// Replaced wholesale when it times out or breaks (see [`RedisLink::reset`]).
    conn: ArcSwap<ConnectionManager>,
    prefix: String,
    timeout: Duration,
}

/// Cheap to clone: every clone shares the connection.
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

impl RedisLink {
    /// Connects and proves Redis answers, all within `timeout`; fails with
    /// `Unavailable` (and the reason) otherwise, so a misconfigured or absent
    /// Redis is reported at start-up instead of on the first request.
    /// `timeout` is also the deadline of every later operation.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let link = Self::connect_lazy(url, prefix, timeout)?;
        link.ping().await.map_err(|e| match e {
            StoreError::Unavailable { reason, .. } => unavailable(format!(
                "no answer from {} within {} ms: {reason}",
                redact_url(url),
                timeout.as_millis()
            )),
            e => e,
        })?;
        Ok(link)
    }

    /// Like [`connect`](Self::connect) but without the start-up round trip:
    /// the connection is made by the first operation (and remade whenever it
    /// is lost). Fails only on a malformed URL, prefix or timeout.
    pub fn connect_lazy(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        if prefix.is_empty() || prefix.contains(['{', '}']) || prefix.contains(char::is_whitespace)
        {
            return Err(unavailable(format!(
                "state.redis_prefix {prefix:?} must be non-empty, without braces or spaces"
            )));
        }
        if timeout.is_zero() {
            return Err(unavailable(
                "state.redis_timeout_ms must be above 0".to_owned(),
            ));
        }
        let client = redis::Client::open(url)
            .map_err(|e| unavailable(format!("invalid redis URL {}: {e}", redact_url(url))))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Few quick retries inside one connection attempt: operations are
            // bounded by `timeout` anyway, and a failed attempt is simply
            // redone by the next operation.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = lazy_manager(&client, &config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                config,
                conn: ArcSwap::from_pointee(conn),
                prefix: prefix.to_owned(),
                timeout,
            }),
        })
    }

    /// The deployment prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The deadline of one operation.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// For subscriptions (pub/sub), which need a connection of their own.
    pub fn client(&self) -> &redis::Client {
        &self.inner.client
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|mut c| async move {
            let _: redis::Value = c.query(&redis::cmd("PING")).await?;
            Ok(())
        })
        .await
    }

    /// Runs one operation against the current connection under the
    /// deadline. `op` gets a handle to the connection whose errors are
    /// already mapped ([`Conn`]); past the deadline the answer is
    /// `Unavailable` and the connection is replaced.
    pub async fn run<'a, T, E, F, Fut>(&'a self, op: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: FnOnce(Conn<'a>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let used = self.inner.conn.load_full();
        let conn = Conn {
            manager: (*used).clone(),
            link: self,
            used: Arc::clone(&used),
        };
        match tokio::time::timeout(self.inner.timeout, op(conn)).await {
            Ok(result) => result,
            Err(_) => {
                // Possibly a half-open connection that would never answer:
                // start over with a fresh one.
                self.reset(&used);
                Err(unavailable(format!(
                    "no answer within {} ms",
                    self.inner.timeout.as_millis()
                ))
                .into())
            }
        }
    }

    /// Swaps in a fresh lazily connected manager, unless another operation
    /// already replaced `used`.
    fn reset(&self, used: &Arc<ConnectionManager>) {
        match lazy_manager(&self.inner.client, &self.inner.config) {
            Ok(fresh) => {
                self.inner.conn.compare_and_swap(used, Arc::new(fresh));
            }
            Err(e) => tracing::warn!(error = %e, "redis: cannot replace the connection"),
        }
    }
}

fn lazy_manager(
    client: &redis::Client,
    config: &ConnectionManagerConfig,
) -> Result<ConnectionManager, StoreError> {
    ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
        .map_err(|e| unavailable(format!("cannot set up the redis connection: {e}")))
}

/// One operation's handle: the connection plus what is needed to report
/// (and recover from) its failures.
pub struct Conn<'a> {
    manager: ConnectionManager,
    link: &'a RedisLink,
    used: Arc<ConnectionManager>,
}

impl Conn<'_> {
    pub async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let result = cmd.query_async(&mut self.manager).await;
        result.map_err(|e| self.fail(e))
    }

    pub async fn invoke<T: redis::FromRedisValue>(
        &mut self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let result = invocation.invoke_async(&mut self.manager).await;
        result.map_err(|e| self.fail(e))
    }

    /// Sends a pipeline (in order, one round trip; atomic only if built
    /// with `.atomic()`).
    pub async fn pipe<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> Result<T, StoreError> {
        let result = pipe.query_async(&mut self.manager).await;
        result.map_err(|e| self.fail(e))
    }

    /// Maps a Redis error. Anything that is not an answer from the server
    /// (I/O, protocol, client trouble) replaces the connection.
    fn fail(&self, e: RedisError) -> StoreError {
        match e.kind() {
            ErrorKind::UnexpectedReturnType => {
                StoreError::Corrupt(format!("redis returned an unexpected value: {e}"))
            }
            ErrorKind::Server(_) | ErrorKind::Extension => unavailable(e.to_string()),
            _ => {
                self.link.reset(&self.used);
                unavailable(e.to_string())
            }
        }
    }
}

/// Hides the password (and user) of a Redis URL for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

pub(crate) fn unavailable(reason: String) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@db.example:6379/0"),
            "redis://***@db.example:6379/0"
        );
        assert_eq!(
            redact_url("rediss://user:p@ss@db:6380"),
            "rediss://***@db:6380"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://h/0?x=a@b"),
            "redis://h/0?x=a@b",
            "an @ after the host is not userinfo"
        );
    }

    #[tokio::test]
    async fn bad_settings_are_refused_up_front() {
        let t = Duration::from_millis(100);
        for (url, prefix, timeout) in [
            ("redis://127.0.0.1:1", "", t),
            ("redis://127.0.0.1:1", "a{b}", t),
            ("redis://127.0.0.1:1", "a b", t),
            ("redis://127.0.0.1:1", "ok", Duration::ZERO),
            ("mongodb://127.0.0.1", "ok", t),
        ] {
            assert!(
                matches!(
                    RedisLink::connect_lazy(url, prefix, timeout),
                    Err(StoreError::Unavailable {
                        backend: "redis",
                        ..
                    })
                ),
                "{url} {prefix:?} {timeout:?}"
            );
        }
    }
}
