//! The EIF reader on arbitrary bytes: it must return Ok or a typed error, never panic,
//! hang or allocate by a size field it has not checked against the input length.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    read_everything(data);
    // Most mutations break the CRC, which the reader checks before parsing metadata,
    // signature or ramdisks; read a copy with the CRC made right, so the fuzzer reaches them.
    if data.len() >= 548 {
        let mut fixed = data.to_vec();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&fixed[..544]);
        crc.update(&fixed[548..]);
        fixed[544..548].copy_from_slice(&crc.finalize().to_be_bytes());
        read_everything(&fixed);
    }
});

fn read_everything(data: &[u8]) {
    let mut cursor = std::io::Cursor::new(data);
    if let Ok(info) = enclosure_eif::read_eif(&mut cursor) {
        // Everything the CLI does with an image that reads must hold up too.
        let _ = enclosure_eif::describe::describe_json(&info);
        let _ = enclosure_eif::describe::describe_text(&info);
        let checks = enclosure_eif::explain::check_pcrs(&info, &Default::default());
        let _ = enclosure_eif::explain::diagnose(&checks);
        for ramdisk in info.ramdisks() {
            if let Ok(r) = enclosure_eif::reader::section_reader(&mut cursor, ramdisk) {
                let _ = enclosure_eif::cpio::read_newc(r);
            }
        }
    }
}
