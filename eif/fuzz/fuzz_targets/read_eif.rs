//! The EIF reader on arbitrary bytes: it must return Ok or a typed error, never panic,
//! hang or allocate by a size field it has not checked against the input length.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cursor = std::io::Cursor::new(data);
    if let Ok(info) = enclosure_eif::read_eif(&mut cursor) {
        // Everything the CLI does with a good image must hold up too.
        let _ = enclosure_eif::describe::describe_json(&info);
        let checks = enclosure_eif::explain::check_pcrs(&info, &Default::default());
        let _ = enclosure_eif::explain::diagnose(&checks);
        let mut again = std::io::Cursor::new(data);
        let _ = enclosure_eif::explain::diff_ramdisks(&mut cursor, &info, &mut again, &info);
    }
});
