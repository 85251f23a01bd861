//! `uniffi-bindgen`: generates the Kotlin, Swift and Python sources for
//! `firmcast-client-ffi` from its built library (library mode). Pinned to the
//! FFI crate's uniffi version, so bindings and library always match.

fn main() {
    uniffi::uniffi_bindgen_main()
}
