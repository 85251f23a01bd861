//! The allocator's side of the footprint.
//!
//! The binary allocates with mimalloc v3 (`src/main.rs`). A fan-out makes
//! millions of short-lived sends, allocated on one worker thread and often
//! freed on another; with glibc the peak RSS of a job grew with its size,
//! with mimalloc v3 it stays put, and an idle server holds less (figures in
//! bench/RESULTS.md, "footprint" and "fan-out"). mimalloc v2 commits its
//! arena eagerly on transparent huge pages, and idles higher.
//!
//! mimalloc keeps a thread's freed pages until that thread allocates
//! again, and start-up frees megabytes (the stored releases are read on a
//! blocking-pool thread and consumed by the catalog build) just before the
//! server goes idle: [`release_startup_memory`] returns them at once.

/// Gives the pages freed so far back to the OS, on this thread and on the
/// blocking-pool thread(s) that read the state store.
pub async fn release_startup_memory() {
    collect();
    // An idle blocking thread runs this: the one that did the reading,
    // unless another is idle too, whose pages then go back instead.
    let _ = tokio::task::spawn_blocking(collect).await;
}

#[allow(unsafe_code)] // the crate's one FFI call
fn collect() {
    // SAFETY: `mi_collect` takes no pointers and only walks the calling
    // thread's own heap and mimalloc's free lists; it is safe to call at
    // any time, with any global allocator (it then finds nothing to do).
    unsafe { libmimalloc_sys::mi_collect(true) }
}
