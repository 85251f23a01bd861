//! The core against a server in memory that tampers as the TUF threat list
//! says an attacker would: every refusal is asserted by its kind and its
//! words, and every acceptance by the bytes and state an app would keep.

#![allow(dead_code)]

mod checks;
mod downloads;
mod flips;
mod keysets;
mod live;
mod support;
