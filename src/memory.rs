//! The allocator's side of the footprint.
//!
//! The binary allocates with mimalloc v3 (`src/main.rs`). A fan-out makes
//! millions of short-lived sends, allocated on one worker thread and often
//! freed on another; with glibc the peak RSS of a job grew with its size
//! (1M tokens 172 MB, 1.25x the 100k job's), with mimalloc v3 it stays put
//! (117-120 MB, 1.07x), and a server idle after start-up holds 48 MB
//! instead of 59 (bench/RESULTS.md). mimalloc v2 was tried too: its arena
//! is committed eagerly and backed by transparent huge pages, 73 MB idle.
//!
//! mimalloc keeps a thread's freed pages until that thread allocates
//! again, and start-up frees ~12 MB (the stored releases are read on a
//! blocking-pool thread and consumed by the catalog build) just before the
//! server goes idle: [`release_startup_memory`] returns it at once.

/// Gives the pages freed so far back to the OS, on this thread and on the
/// blocking-pool thread(s) that read the state store.
pub async fn release_startup_memory() {
    collect();
    // An idle blocking thread runs this: the one that did the reading,
    // unless another is idle too, whose pages then go back instead.
    let _ = tokio::task::spawn_blocking(collect).await;
}

fn collect() {
    // SAFETY: `mi_collect` takes no pointers and only walks the calling
    // thread's own heap and mimalloc's free lists; it is safe to call at
    // any time, with any global allocator (it then finds nothing to do).
    unsafe { libmimalloc_sys::mi_collect(true) }
}
