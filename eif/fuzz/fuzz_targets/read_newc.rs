//! The newc cpio reader (used on ramdisks of untrusted images) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = enclosure_eif::cpio::read_newc(data);
});
