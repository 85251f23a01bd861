//! Reading the rest of a refused upload. hyper answers and closes without
//! reading what the client is still sending, so a client mid-upload sees a
//! reset instead of the reason (507 disk full, 413 too large). Draining a
//! bounded amount first, as nginx's lingering close does, lets the answer
//! arrive.

use crate::blob::ByteStream;
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Past these, the connection is closed with the answer unread.
const DRAIN_BYTES: u64 = 256 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// One body read through two handles: the store consumes one, and the
/// handler drains what the store left if it refused.
pub fn split(body: ByteStream) -> (ByteStream, Rest) {
    let shared = Arc::new(Mutex::new(body));
    (Box::pin(Shared(shared.clone())), Rest(shared))
}

struct Shared(Arc<Mutex<ByteStream>>);

impl Stream for Shared {
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        inner.as_mut().poll_next(cx)
    }
}

pub struct Rest(Arc<Mutex<ByteStream>>);

impl Rest {
    /// Reads and discards the rest of the body, within the byte and time
    /// budgets; stops at the first error.
    pub async fn drain(self) {
        let mut rest = Shared(self.0);
        let mut read = 0u64;
        let discard = async {
            while let Some(Ok(chunk)) = rest.next().await {
                read += chunk.len() as u64;
                if read > DRAIN_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn the_rest_is_what_the_first_reader_left() {
        let chunks = (0..10u8).map(|i| Ok(Bytes::from(vec![i; 100])));
        let (mut first, rest) = split(Box::pin(futures_util::stream::iter(chunks)));
        assert_eq!(first.next().await.unwrap().unwrap()[0], 0);
        assert_eq!(first.next().await.unwrap().unwrap()[0], 1);
        drop(first);
        let mut left = Shared(rest.0.clone());
        assert_eq!(left.next().await.unwrap().unwrap()[0], 2);
        rest.drain().await;
        assert!(left.next().await.is_none());
    }
}
