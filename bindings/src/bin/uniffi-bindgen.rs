//! `uniffi-bindgen`: generates the Kotlin, Swift and Python bindings from the built library
//! (`generate --library target/debug/libcasenote_ffi.so --language kotlin --out-dir DIR`), with
//! the very UniFFI version the library was built with, so the two always match.

fn main() {
    uniffi::uniffi_bindgen_main()
}
