//! Shared test support: running the real binary, and the real server (in process or as the binary).
#![allow(dead_code)]

pub mod app;
pub mod cli;
pub mod server;
pub mod state_suite;
