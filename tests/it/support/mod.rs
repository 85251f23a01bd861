//! Shared test support: running the real binary, and the real server (in process or as the binary).

pub mod app;
pub mod blob_suite;
pub mod cli;
pub mod fuzz_http;
pub mod push_suite;
pub mod redis_proc;
pub mod release;
pub mod s3s;
pub mod scan;
pub mod server;
pub mod state_suite;

/// `fut`'s output, or a failure naming `what` once `limit` passes: a lost
/// deadline in the code under test fails the test instead of hanging it.
pub async fn within<T>(
    limit: std::time::Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}
