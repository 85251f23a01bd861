//! Shared test support: running the real binary, and (later) the real server.
#![allow(dead_code)]

pub mod cli;
