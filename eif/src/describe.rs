//! The `describe` view of an image: nitro-cli's `describe-eif` JSON shape, plus the sections
//! with their digests and the metadata.

use serde_json::{Value, json};

use crate::reader::EifInfo;

/// Serialises a 48-byte digest as lowercase hex.
pub fn hex_ser<S: serde::Serializer>(d: &[u8; 48], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(d))
}

/// The JSON description of an image.
///
/// Keys nitro-cli emits keep nitro-cli's names ("EifVersion", "Measurements", "IsSigned",
/// "CheckCRC", …) so existing tooling can read them; "Sections" and "Cmdline" are ours. A
/// file whose CRC does not match is refused by the reader, so "CheckCRC" is always true here.
pub fn describe_json(info: &EifInfo) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("EifVersion".into(), json!(info.header.version));
    out.insert(
        "Measurements".into(),
        json!(info.measurements.to_nitro_map()),
    );
    out.insert("IsSigned".into(), json!(info.signature.is_some()));
    if let Some(sig) = &info.signature {
        out.insert(
            "SigningCertificate".into(),
            json!({
                "Subject": sig.subject,
                "IssuerName": sig.issuer,
                "NotBefore": sig.not_before,
                "NotAfter": sig.not_after,
            }),
        );
    }
    out.insert("CheckCRC".into(), json!(true));
    if let Some(sig) = &info.signature {
        out.insert("SignatureCheck".into(), json!(sig.valid));
        if let Some(p) = &sig.problem {
            out.insert("SignatureProblem".into(), json!(p));
        }
    }
    if let Some(m) = &info.metadata {
        out.insert("ImageName".into(), json!(m.img_name));
        out.insert("ImageVersion".into(), json!(m.img_version));
        out.insert("Metadata".into(), json!(m));
    }
    let arch = if info.header.flags & crate::header::FLAG_ARCH_ARM64 != 0 {
        "aarch64"
    } else {
        "x86_64"
    };
    out.insert("ArchType".into(), json!(arch));
    out.insert("Cmdline".into(), json!(info.cmdline));
    let sections: Vec<Value> = info
        .sections
        .iter()
        .map(|s| {
            json!({
                "Index": s.index,
                "Type": s.kind.to_string(),
                "Offset": s.offset,
                "Size": s.size,
                "Sha384": hex::encode(s.sha384),
            })
        })
        .collect();
    out.insert("Sections".into(), Value::Array(sections));
    Value::Object(out)
}

/// A short human-readable description of an image.
pub fn describe_text(info: &EifInfo) -> String {
    let mut s = format!(
        "EIF v{}, {} bytes, {} sections\n",
        info.header.version,
        info.file_len,
        info.sections.len()
    );
    for (name, v) in info.measurements.registers() {
        s.push_str(&format!("  {name}  {}\n", hex::encode(v)));
    }
    s.push_str(&format!("  cmdline  {:?}\n", info.cmdline));
    for sec in &info.sections {
        s.push_str(&format!(
            "  [{}] {:<9} offset {:>10} size {:>10} sha384 {}\n",
            sec.index,
            sec.kind,
            sec.offset,
            sec.size,
            hex::encode(sec.sha384)
        ));
    }
    if let Some(sig) = &info.signature {
        s.push_str(&format!(
            "  signed by {} (valid: {})\n",
            sig.subject, sig.valid
        ));
    }
    s
}
