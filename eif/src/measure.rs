//! PCR0/1/2/8 exactly as nitro-cli computes them, fed in chunks so no section is ever held
//! whole in memory.
//!
//! nitro-cli hashes each PCR's input with plain SHA-384 and then "extends" a zeroed register
//! once: `PCR = SHA-384(0^48 ‖ SHA-384(input))`. PCR0's input is kernel ‖ cmdline ‖ every
//! ramdisk, PCR1's is kernel ‖ cmdline ‖ first ramdisk (nitro's bootstrap), PCR2's is the
//! remaining ramdisks (the application), PCR8's is the DER of the signing certificate.

use std::collections::BTreeMap;

use sha2::{Digest, Sha384};

use crate::header::SectionKind;

/// A SHA-384 digest or PCR value.
pub type Digest48 = [u8; 48];

/// What nitro-cli prints as "HashAlgorithm": the `Debug` rendering of its SHA-384 hasher.
pub const HASH_ALGORITHM: &str = "Sha384 { ... }";

/// SHA-384 of `data` in one call.
pub fn sha384(data: &[u8]) -> Digest48 {
    Sha384::digest(data).into()
}

/// Extends a zeroed PCR once with `digest`, as the Nitro hypervisor does at boot.
pub fn extend_zero(digest: &Digest48) -> Digest48 {
    let mut h = Sha384::new();
    h.update([0u8; 48]);
    h.update(digest);
    h.finalize().into()
}

/// The measurements of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measurements {
    /// PCR0: the whole image (kernel, cmdline, every ramdisk).
    pub pcr0: Digest48,
    /// PCR1: kernel, cmdline and the first (bootstrap) ramdisk.
    pub pcr1: Digest48,
    /// PCR2: the remaining (application) ramdisks.
    pub pcr2: Digest48,
    /// PCR8: the signing certificate, present only for signed images.
    pub pcr8: Option<Digest48>,
}

impl Measurements {
    /// The PCRs by name ("PCR0" …), in hex, as nitro-cli's "Measurements" object.
    pub fn to_nitro_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("HashAlgorithm".to_string(), HASH_ALGORITHM.to_string());
        for (name, value) in self.registers() {
            m.insert(name.to_string(), hex::encode(value));
        }
        m
    }

    /// The registers present, by name.
    pub fn registers(&self) -> Vec<(&'static str, Digest48)> {
        let mut v = vec![
            ("PCR0", self.pcr0),
            ("PCR1", self.pcr1),
            ("PCR2", self.pcr2),
        ];
        if let Some(p) = self.pcr8 {
            v.push(("PCR8", p));
        }
        v
    }
}

/// PCR8 for a signing certificate given in DER.
pub fn pcr8_for_certificate(cert_der: &[u8]) -> Digest48 {
    extend_zero(&sha384(cert_der))
}

/// Accumulates PCR0/1/2 over measured sections fed in file order, plus one digest per section.
#[derive(Clone, Debug, Default)]
pub struct Measurer {
    image: Sha384,
    bootstrap: Sha384,
    app: Sha384,
    ramdisks: usize,
    current: Option<(SectionKind, bool, Sha384)>,
}

impl Measurer {
    /// A measurer with nothing fed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a measured section (kernel, cmdline or ramdisk); other kinds only get a digest.
    pub fn begin(&mut self, kind: SectionKind) {
        let bootstrap = match kind {
            SectionKind::Kernel | SectionKind::Cmdline => true,
            SectionKind::Ramdisk => {
                self.ramdisks += 1;
                self.ramdisks == 1
            }
            SectionKind::Signature | SectionKind::Metadata => false,
        };
        self.current = Some((kind, bootstrap, Sha384::new()));
    }

    /// Feeds the next chunk of the current section.
    pub fn update(&mut self, chunk: &[u8]) {
        if let Some((kind, bootstrap, section)) = &mut self.current {
            section.update(chunk);
            if matches!(kind, SectionKind::Signature | SectionKind::Metadata) {
                return;
            }
            self.image.update(chunk);
            if *bootstrap {
                self.bootstrap.update(chunk);
            } else {
                self.app.update(chunk);
            }
        }
    }

    /// Ends the current section and returns its SHA-384.
    pub fn end(&mut self) -> Digest48 {
        match self.current.take() {
            Some((_, _, section)) => section.finalize().into(),
            None => sha384(&[]),
        }
    }

    /// The PCRs, with PCR8 when a signing certificate (DER) is given.
    pub fn finish(self, cert_der: Option<&[u8]>) -> Measurements {
        Measurements {
            pcr0: extend_zero(&self.image.finalize().into()),
            pcr1: extend_zero(&self.bootstrap.finalize().into()),
            pcr2: extend_zero(&self.app.finalize().into()),
            pcr8: cert_der.map(pcr8_for_certificate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_application_gives_the_known_pcr2() {
        let m = Measurer::new().finish(None);
        assert_eq!(
            hex::encode(m.pcr2),
            "21b9efbc184807662e966d34f390821309eeac6802309798826296bf3e8bec7c10edb30948c90ba67310f7b964fc500a"
        );
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut a = Measurer::new();
        a.begin(SectionKind::Kernel);
        a.update(&data);
        a.end();
        let mut b = Measurer::new();
        b.begin(SectionKind::Kernel);
        for c in data.chunks(7) {
            b.update(c);
        }
        b.end();
        assert_eq!(a.finish(None), b.finish(None));
    }
}
