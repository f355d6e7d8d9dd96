//! Every decoder a request reaches, fed arbitrary bytes: none may panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keelson_api::fuzz::exercise(data);
});
