//! `uniffi-bindgen`: UniFFI's binding generator, built from the same UniFFI version as the
//! library so that generated code and library metadata always agree.

fn main() {
    uniffi::uniffi_bindgen_main()
}
