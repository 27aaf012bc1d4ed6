//! The demo's HTTP callers: dev users of the api with bearer tokens, the payments sandbox as
//! alice's bank, and helpers that keep presigned URLs' signatures out of what is printed.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use enclosure_api::auth::{Role, mint_dev_token};
use serde_json::{Value, json};

/// A URL without its query string (a presigned URL's signature lives there).
pub(super) fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let signed = u.query().is_some();
            u.set_query(None);
            if signed {
                format!("{u}?<signature>")
            } else {
                u.to_string()
            }
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

/// Where a URL points: its scheme, host and port only.
pub(super) fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "<unparsable URL>".into(),
    }
}

/// A string field by JSON pointer, or a clear error.
pub(super) fn text(v: &Value, pointer: &str) -> anyhow::Result<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| format!("the answer has no {pointer}: {v}"))
}

/// The api, as the demo reaches it.
pub(super) struct Api {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
}

impl Api {
    /// A dev user of the stack: a fresh dev token from the data directory's dev key.
    pub(super) fn caller(
        &self,
        dir: &Path,
        name: &'static str,
        role: Role,
    ) -> anyhow::Result<Caller<'_>> {
        let token = mint_dev_token(
            dir,
            name,
            role,
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .with_context(|| format!("minting {name}'s dev token"))?;
        Ok(Caller {
            api: self,
            name,
            token,
        })
    }
}

/// One dev user with a bearer token (never printed; no Debug on purpose).
pub(super) struct Caller<'a> {
    api: &'a Api,
    pub(super) name: &'static str,
    token: String,
}

impl Caller<'_> {
    pub(super) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None, 200).await
    }

    /// A POST with a fresh Idempotency-Key that must answer `want`.
    pub(super) async fn post(&self, path: &str, body: Value, want: u16) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, Some(body), want)
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .api
            .http
            .request(method.clone(), format!("{}{path}", self.api.base))
            .bearer_auth(&self.token);
        if method != reqwest::Method::GET {
            req = req.header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path} as {}", self.name))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.as_u16() != want {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let code = v["code"].as_str().unwrap_or("unknown");
            let detail = v["detail"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
                " (the api refused the dev token: does it run with the dev key of this --data-dir?)"
            } else {
                ""
            };
            bail!(
                "{method} {path} as {}: {status} {code}: {detail}{hint}",
                self.name
            );
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{method} {path}: the answer is not JSON"))
    }
}

/// The sandbox payment provider, as alice's bank.
pub(super) struct Sandbox {
    pub(super) http: reqwest::Client,
    pub(super) url: String,
    pub(super) key: String,
}

impl Sandbox {
    /// alice pays the pending payment.
    pub(super) async fn confirm(&self, pid: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/v1/payments/{pid}/confirm", self.url))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&json!({"outcome": "succeed"}))
            .send()
            .await
            .with_context(|| format!("paying {pid} at the sandbox {}", self.url))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            bail!(
                "the sandbox refused to confirm {pid}: {status} {}",
                body.trim()
            );
        }
        Ok(())
    }
}

/// The sandbox's API key, from the file `enclosure up` made.
pub(super) fn sandbox_key(dir: &Path) -> anyhow::Result<String> {
    let (path, _) = enclosure_api::payments::dev_secret_paths(dir);
    let key = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the sandbox API key file {}", path.display()))?;
    Ok(key.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_urls_lose_their_signature() {
        let url = "http://127.0.0.1:9300/b/k?X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc";
        let r = redact(url);
        assert_eq!(r, "http://127.0.0.1:9300/b/k?<signature>");
        assert!(!r.contains("abc") && !r.contains("AKIA"));
        assert_eq!(redact("http://h/p"), "http://h/p");
        assert_eq!(redact("not a url"), "<unparsable URL>");
        assert_eq!(origin(url), "http://127.0.0.1:9300");
    }

    #[test]
    fn fields_are_read_by_pointer() {
        let v = json!({"a": [{"id": "x"}]});
        assert_eq!(text(&v, "/a/0/id").unwrap(), "x");
        assert!(text(&v, "/a/1/id").is_err());
    }
}
