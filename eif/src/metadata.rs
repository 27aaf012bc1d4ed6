//! The metadata section: nitro-cli's EifIdentityInfo JSON, with a build time fixed from
//! SOURCE_DATE_EPOCH so that the same inputs always give the same bytes.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Build facts recorded in the metadata section (nitro-cli's `EifBuildInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EifBuildInfo {
    /// Build time, RFC 3339; fixed, never the wall clock.
    #[serde(rename = "BuildTime")]
    pub build_time: String,
    /// The tool that built the image.
    #[serde(rename = "BuildTool")]
    pub build_tool: String,
    /// Its version.
    #[serde(rename = "BuildToolVersion")]
    pub build_tool_version: String,
    /// Operating system of the kernel.
    #[serde(rename = "OperatingSystem")]
    pub img_os: String,
    /// Kernel version.
    #[serde(rename = "KernelVersion")]
    pub img_kernel: String,
}

/// The metadata section's JSON (nitro-cli's `EifIdentityInfo`), fields in nitro's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EifIdentityInfo {
    /// Image name.
    #[serde(rename = "ImageName")]
    pub img_name: String,
    /// Image version.
    #[serde(rename = "ImageVersion")]
    pub img_version: String,
    /// Build facts.
    #[serde(rename = "BuildMetadata")]
    pub build_info: EifBuildInfo,
    /// nitro-cli stores `docker inspect` output here; we build without Docker, so null.
    #[serde(rename = "DockerInfo")]
    pub docker_info: serde_json::Value,
    /// Free-form metadata supplied by the builder.
    #[serde(rename = "CustomMetadata")]
    pub custom_info: serde_json::Value,
}

impl EifIdentityInfo {
    /// Identity for an image built by this crate at `build_time_secs` since the epoch.
    pub fn new(name: &str, version: &str, build_time_secs: i64) -> Result<Self> {
        Ok(EifIdentityInfo {
            img_name: name.to_string(),
            img_version: version.to_string(),
            build_info: EifBuildInfo {
                build_time: format_build_time(build_time_secs)?,
                build_tool: env!("CARGO_PKG_NAME").to_string(),
                build_tool_version: env!("CARGO_PKG_VERSION").to_string(),
                img_os: "Unknown".to_string(),
                img_kernel: "Unknown".to_string(),
            },
            docker_info: serde_json::Value::Null,
            custom_info: serde_json::Value::Null,
        })
    }

    /// The section bytes: compact JSON, as nitro-cli writes it.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Metadata(e.to_string()))
    }
}

/// Seconds since the epoch from a SOURCE_DATE_EPOCH value, 0 when unset.
///
/// The caller reads the environment; this only parses, so it can be tested without it.
pub fn source_date_epoch(value: Option<&str>) -> Result<i64> {
    match value {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= 0)
            .ok_or_else(|| Error::SourceDateEpoch(v.to_string())),
    }
}

/// Formats seconds since the epoch like chrono's `to_rfc3339` for UTC: `1970-01-01T00:00:00+00:00`.
pub fn format_build_time(secs: i64) -> Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| Error::SourceDateEpoch(secs.to_string()))?;
    let fmt =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+00:00");
    t.format(&fmt)
        .map_err(|_| Error::SourceDateEpoch(secs.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_zero_formats_like_chrono() {
        assert_eq!(format_build_time(0).unwrap(), "1970-01-01T00:00:00+00:00");
        assert_eq!(
            format_build_time(1_700_000_000).unwrap(),
            "2023-11-14T22:13:20+00:00"
        );
    }

    #[test]
    fn source_date_epoch_parsing() {
        assert_eq!(source_date_epoch(None).unwrap(), 0);
        assert_eq!(source_date_epoch(Some("42")).unwrap(), 42);
        assert!(source_date_epoch(Some("-1")).is_err());
        assert!(source_date_epoch(Some("yesterday")).is_err());
    }
}
