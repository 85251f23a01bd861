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
