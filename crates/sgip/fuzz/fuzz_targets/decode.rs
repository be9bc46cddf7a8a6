//! libFuzzer target: arbitrary bytes through the SGIP stream decoder, checked by `sgip::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sgip::fuzzing::check_decoder(data);
});
