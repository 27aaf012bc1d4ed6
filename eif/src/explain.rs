//! Verifying an image against expected PCRs and explaining a mismatch: which PCRs differ,
//! which sections feed them, and — given a reference image — which sections and which files
//! inside the ramdisks differ.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cpio::CpioEntry;
use crate::error::{Error, Result};
use crate::header::SectionKind;
use crate::measure::{Digest48, Measurements};
use crate::reader::EifInfo;

/// The PCRs an EIF determines; attestation documents carry more, which are not compared.
pub const IMAGE_PCRS: [u8; 4] = [0, 1, 2, 8];

/// Expected PCR values by register index.
pub type ExpectedPcrs = BTreeMap<u8, Digest48>;

/// Parses expected PCRs from JSON: nitro-cli's `describe-eif`/`build-enclave` output
/// (`{"Measurements": {"PCR0": "…"}}`) or a flat `{"PCR0": "…"}`; names are case-insensitive.
pub fn parse_expected_pcrs(json: &str) -> Result<ExpectedPcrs> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| Error::ExpectedPcrs(e.to_string()))?;
    let obj = v
        .get("Measurements")
        .unwrap_or(&v)
        .as_object()
        .ok_or_else(|| Error::ExpectedPcrs("expected a JSON object of PCRs".into()))?;
    let mut out = ExpectedPcrs::new();
    for (k, val) in obj {
        let Some(n) = k
            .to_ascii_uppercase()
            .strip_prefix("PCR")
            .and_then(|n| n.parse::<u8>().ok())
        else {
            continue; // e.g. "HashAlgorithm"
        };
        let s = val
            .as_str()
            .ok_or_else(|| Error::ExpectedPcrs(format!("{k} is not a string")))?;
        let bytes = hex::decode(s.trim()).map_err(|e| Error::ExpectedPcrs(format!("{k}: {e}")))?;
        let value: Digest48 = bytes.try_into().map_err(|b: Vec<u8>| {
            Error::ExpectedPcrs(format!("{k} is {} bytes, expected 48 (SHA-384)", b.len()))
        })?;
        out.insert(n, value);
    }
    if !IMAGE_PCRS.iter().any(|i| out.contains_key(i)) {
        return Err(Error::ExpectedPcrs(
            "none of PCR0, PCR1, PCR2, PCR8 is given".into(),
        ));
    }
    Ok(out)
}

/// How one register compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PcrCheck {
    /// Register index.
    pub index: u8,
    /// Value computed from the image (PCR8 of an unsigned image is all zeros, as attested).
    pub actual: String,
    /// Expected value, when one was given.
    pub expected: Option<String>,
    /// True when expected and equal; false when expected and different.
    pub matches: Option<bool>,
    /// The sections this register measures.
    pub inputs: String,
}

/// The image's PCR0/1/2/8 as a running enclave attests them: PCR8 of an unsigned image is
/// all zeros. Usable as the expected values when verifying against a reference image.
pub fn attested_pcrs(m: &Measurements) -> BTreeMap<u8, Digest48> {
    BTreeMap::from([
        (0, m.pcr0),
        (1, m.pcr1),
        (2, m.pcr2),
        (8, m.pcr8.unwrap_or([0; 48])),
    ])
}

/// Compares the image's PCRs with the expected ones.
pub fn check_pcrs(info: &EifInfo, expected: &ExpectedPcrs) -> Vec<PcrCheck> {
    let ramdisks = info.ramdisks().count();
    attested_pcrs(&info.measurements)
        .into_iter()
        .map(|(index, actual)| {
            let inputs = match index {
                0 => format!("kernel ‖ cmdline ‖ {}", ramdisk_range(0, ramdisks)),
                1 => "kernel ‖ cmdline ‖ ramdisk 0".into(),
                2 if ramdisks > 1 => ramdisk_range(1, ramdisks),
                2 => "nothing (single ramdisk)".into(),
                _ if info.measurements.pcr8.is_some() => "DER of the signing certificate".into(),
                _ => "nothing (unsigned image)".into(),
            };
            let exp = expected.get(&index);
            PcrCheck {
                index,
                actual: hex::encode(actual),
                expected: exp.map(hex::encode),
                matches: exp.map(|e| *e == actual),
                inputs,
            }
        })
        .collect()
}

fn ramdisk_range(first: usize, count: usize) -> String {
    match count.saturating_sub(first) {
        0 | 1 => format!("ramdisk {first}"),
        _ => format!("ramdisks {first}..={}", count - 1),
    }
}

/// One section compared with the reference image's section at the same position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SectionDiff {
    /// "kernel", "cmdline", "ramdisk 0", …
    pub section: String,
    /// SHA-384 in this image, if it has the section.
    pub ours: Option<String>,
    /// SHA-384 in the reference, if it has the section.
    pub theirs: Option<String>,
    /// Size in this image.
    pub our_size: Option<u64>,
    /// Size in the reference.
    pub their_size: Option<u64>,
    /// Whether the section is identical.
    pub same: bool,
}

/// Lists every measured section of the image, compared with a reference when given.
pub fn compare_sections(ours: &EifInfo, theirs: Option<&EifInfo>) -> Vec<SectionDiff> {
    let list = |i: &EifInfo| -> Vec<(String, String, u64)> {
        let mut r = 0;
        i.sections
            .iter()
            .filter_map(|s| {
                let name = match s.kind {
                    SectionKind::Kernel => "kernel".to_string(),
                    SectionKind::Cmdline => "cmdline".to_string(),
                    SectionKind::Ramdisk => {
                        r += 1;
                        format!("ramdisk {}", r - 1)
                    }
                    SectionKind::Metadata | SectionKind::Signature => return None,
                };
                Some((name, hex::encode(s.sha384), s.size))
            })
            .collect()
    };
    let a = list(ours);
    let b = theirs.map(list).unwrap_or_default();
    let mut names: Vec<String> = a.iter().map(|x| x.0.clone()).collect();
    for (n, _, _) in &b {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
        .into_iter()
        .map(|name| {
            let x = a.iter().find(|s| s.0 == name);
            let y = b.iter().find(|s| s.0 == name);
            SectionDiff {
                same: theirs.is_some() && x.map(|s| &s.1) == y.map(|s| &s.1),
                section: name,
                ours: x.map(|s| s.1.clone()),
                theirs: y.map(|s| s.1.clone()),
                our_size: x.map(|s| s.2),
                their_size: y.map(|s| s.2),
            }
        })
        .collect()
}

/// How one path differs between two ramdisks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryDiff {
    /// Path inside the archive.
    pub path: String,
    /// The entry in this image, if present.
    pub ours: Option<CpioEntry>,
    /// The entry in the reference, if present.
    pub theirs: Option<CpioEntry>,
    /// Which attributes differ: "mode", "uid", "gid", "size", "mtime", "content", or
    /// "only here" / "only in reference".
    pub differences: Vec<&'static str>,
}

/// Lists the entries that differ between two archives, by path.
pub fn diff_entries(ours: &[CpioEntry], theirs: &[CpioEntry]) -> Vec<EntryDiff> {
    let a: BTreeMap<&str, &CpioEntry> = ours.iter().map(|e| (e.path.as_str(), e)).collect();
    let b: BTreeMap<&str, &CpioEntry> = theirs.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut paths: Vec<&str> = a.keys().chain(b.keys()).copied().collect();
    paths.sort_unstable();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|p| {
            let (x, y) = (a.get(p).copied(), b.get(p).copied());
            let differences = match (x, y) {
                (Some(x), Some(y)) => {
                    let mut d = Vec::new();
                    let fields: [(&'static str, bool); 6] = [
                        ("mode", x.mode != y.mode),
                        ("uid", x.uid != y.uid),
                        ("gid", x.gid != y.gid),
                        ("size", x.size != y.size),
                        ("mtime", x.mtime != y.mtime),
                        ("content", x.sha384 != y.sha384),
                    ];
                    d.extend(fields.iter().filter(|f| f.1).map(|f| f.0));
                    d
                }
                (Some(_), None) => vec!["only here"],
                (None, Some(_)) => vec!["only in reference"],
                (None, None) => Vec::new(),
            };
            (!differences.is_empty()).then(|| EntryDiff {
                path: p.to_string(),
                ours: x.cloned(),
                theirs: y.cloned(),
                differences,
            })
        })
        .collect()
}

/// Plain-language reasons for a mismatch, derived from which registers differ.
///
/// PCR1 covers kernel, cmdline and the first ramdisk; PCR2 the other ramdisks; PCR0 all of
/// them. So the pattern of mismatches narrows down where the difference is.
pub fn diagnose(checks: &[PcrCheck]) -> Vec<String> {
    let state = |i: u8| checks.iter().find(|c| c.index == i).and_then(|c| c.matches);
    let mut out = Vec::new();
    match (state(0), state(1), state(2)) {
        (_, Some(true), Some(false)) => out.push(
            "kernel, cmdline and the bootstrap ramdisk (ramdisk 0) are as expected; the difference is in the application ramdisks (1 and later)".into(),
        ),
        (_, Some(false), Some(true)) => out.push(
            "the application ramdisks are as expected; the difference is in the kernel, the cmdline or the bootstrap ramdisk (ramdisk 0)".into(),
        ),
        (_, Some(false), Some(false)) => out.push(
            "both the bootstrap part (kernel, cmdline, ramdisk 0) and the application ramdisks differ".into(),
        ),
        (Some(false), Some(true), Some(true)) => out.push(
            "PCR1 and PCR2 match but PCR0 does not: the same bytes are split differently between ramdisks (order or count of ramdisks)".into(),
        ),
        (Some(false), _, _) => out.push(
            "PCR0 differs: some measured section (kernel, cmdline or a ramdisk) differs; give PCR1 and PCR2 or --against a reference image to narrow it down".into(),
        ),
        _ => {}
    }
    if state(8) == Some(false) {
        out.push(
            "PCR8 differs: the image is signed by another certificate, or one side is unsigned"
                .into(),
        );
    }
    out
}

/// The entry differences inside one ramdisk position of two images.
#[derive(Clone, Debug, Serialize)]
pub struct RamdiskDiff {
    /// Position of the ramdisk (0 is the bootstrap).
    pub ramdisk: usize,
    /// Entries that differ, or why the archives could not be compared.
    pub entries: std::result::Result<Vec<EntryDiff>, String>,
}

/// For each ramdisk position whose digest differs between two images, lists the cpio
/// entries that differ. Both images are read again, streaming.
pub fn diff_ramdisks<A: std::io::Read + std::io::Seek, B: std::io::Read + std::io::Seek>(
    ours: &mut A,
    our_info: &EifInfo,
    theirs: &mut B,
    their_info: &EifInfo,
) -> Vec<RamdiskDiff> {
    let pairs = our_info.ramdisks().zip(their_info.ramdisks()).enumerate();
    pairs
        .filter(|(_, (a, b))| a.sha384 != b.sha384)
        .map(|(ramdisk, (a, b))| {
            let list = |r: Result<Vec<CpioEntry>>, side: &str| {
                r.map_err(|e| format!("{side} ramdisk {ramdisk}: {e}"))
            };
            let entries = list(
                crate::reader::section_reader(ours, a).and_then(crate::cpio::read_newc),
                "this image's",
            )
            .and_then(|x| {
                list(
                    crate::reader::section_reader(theirs, b).and_then(crate::cpio::read_newc),
                    "the reference's",
                )
                .map(|y| diff_entries(&x, &y))
            });
            RamdiskDiff { ramdisk, entries }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_pcrs_accept_nitro_and_flat_shapes() {
        let h = "ab".repeat(48);
        let nitro = format!(
            r#"{{"Measurements": {{"HashAlgorithm": "Sha384 {{ ... }}", "PCR0": "{h}"}}}}"#
        );
        assert_eq!(parse_expected_pcrs(&nitro).unwrap()[&0], [0xab; 48]);
        let flat = format!(r#"{{"pcr2": "{h}"}}"#);
        assert!(parse_expected_pcrs(&flat).unwrap().contains_key(&2));
        assert!(parse_expected_pcrs(r#"{"PCR0": "abcd"}"#).is_err());
        assert!(parse_expected_pcrs("{}").is_err());
        assert!(parse_expected_pcrs("[").is_err());
    }

    #[test]
    fn entry_diff_reports_each_attribute() {
        let e = |path: &str, mode, mtime, data: &[u8]| CpioEntry {
            path: path.into(),
            mode,
            uid: 0,
            gid: 0,
            mtime,
            size: data.len() as u64,
            sha384: crate::measure::sha384(data),
        };
        let a = [
            e("a", 0o100644, 0, b"x"),
            e("b", 0o100644, 0, b"y"),
            e("c", 0o100644, 0, b"z"),
        ];
        let b = [
            e("a", 0o100644, 0, b"x"),
            e("b", 0o100755, 5, b"yy"),
            e("d", 0o100644, 0, b"z"),
        ];
        let d = diff_entries(&a, &b);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].path, "b");
        assert_eq!(d[0].differences, ["mode", "size", "mtime", "content"]);
        assert_eq!(d[1].differences, ["only here"]);
        assert_eq!(d[2].differences, ["only in reference"]);
    }
}
