//! The escrow itself, step by step, over the api's HTTPS routes, the payments sandbox and the
//! artifact store's presigned URLs.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use enclosure_api::auth::{Role, mint_dev_token};
use enclosure_attestation::{AttestationPolicy, TrustAnchor, pem_certificate_to_der};
use enclosure_client::{ClientOptions, EnclosureClient};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::stack::{Stack, api_client};
use super::{Failed, StepExt, done, money, progress, short_hex};

/// The milestone's price, in minor units (500.00 EUR).
const PRICE_MINOR: i64 = 50_000;
/// The platform's fee, in basis points (2.5 %).
const FEE_BPS: i64 = 250;
const CURRENCY: &str = "EUR";
/// What bob delivers.
const WORK_NAME: &str = "work.txt";
/// How often the demo polls while it waits.
const POLL: Duration = Duration::from_millis(200);
/// How often a wait reports that it is still waiting.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Runs the escrow against `stack`; each step prints one line.
pub async fn run(dir: &Path, stack: &Stack, timeout: Duration) -> Result<(), Failed> {
    attest(dir, stack).await.step("attestation")?;

    let api = Api {
        http: api_client(&stack.tls_root_pem).setup("demo")?,
        base: stack.api_url.clone(),
    };
    let alice = api.caller(dir, "alice", Role::Client).step("dev tokens")?;
    let bob = api
        .caller(dir, "bob", Role::Freelancer)
        .step("dev tokens")?;
    done(format!(
        "dev tokens for alice (client) and bob (freelancer), signed with the dev key of {}",
        dir.display()
    ));
    // Presigned URLs and the sandbox are plain endpoints of their own: a client without the
    // api's pinned root.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .setup("demo")?;
    let sandbox = Sandbox {
        http: plain.clone(),
        url: stack.sandbox_url.trim_end_matches('/').to_string(),
        key: sandbox_key(dir).setup("funding")?,
    };

    let (room, m) = open_room(&alice, &bob).await.step("room")?;
    let pid = fund(&alice, &sandbox, &room, &m, timeout)
        .await
        .step("funding")?;

    let work = format!(
        "Enclosure demo deliverable\nroom {room}\nmilestone {m}\nnonce {}\n",
        hex::encode(rand::random::<[u8; 16]>())
    )
    .into_bytes();
    let sha = hex::encode(Sha256::digest(&work));
    let artifact = upload(&bob, &plain, &m, &work, &sha).await.step("upload")?;

    bob.post(&format!("/v1/milestones/{m}/submit"), json!({}), 200)
        .await
        .step("submission")?;
    done(format!("submitted milestone {m} for validation"));

    wait_until(
        "the api's scheduler to validate the submission",
        timeout,
        async || milestone_state(&bob, &room, &m, "validated", &["submitted"]).await,
    )
    .await
    .step("validation")?;
    done(format!(
        "validated: the scheduler read {WORK_NAME} back from the store and matched it"
    ));

    alice
        .post(&format!("/v1/milestones/{m}/accept"), json!({}), 200)
        .await
        .step("acceptance")?;
    done(format!("accepted by alice: milestone {m}"));

    swap(&alice, &room, &m, &pid, timeout).await.step("swap")?;

    let got = download(&alice, &plain, &artifact).await.step("download")?;
    let got_sha = hex::encode(Sha256::digest(&got));
    if got_sha != sha || got != work {
        return Err(Failed::step(
            "hash",
            anyhow!("downloaded sha256 {got_sha}, uploaded sha256 {sha}"),
        ));
    }
    done(format!(
        "downloaded and checked sha256 {sha}: the bytes alice got are the bytes bob uploaded"
    ));
    Ok(())
}

/// Fetches a fresh attestation (random nonce) and verifies it under the data directory's
/// dev root.
async fn attest(dir: &Path, stack: &Stack) -> anyhow::Result<()> {
    let root_path = dir.join("dev-ca/root.pem");
    let pem =
        std::fs::read(&root_path).with_context(|| format!("reading {}", root_path.display()))?;
    let der = pem_certificate_to_der(&pem)
        .with_context(|| format!("{} is not a PEM certificate", root_path.display()))?;
    let client = EnclosureClient::connect(ClientOptions {
        base_url: stack.api_url.clone(),
        tls_root_pem: Some(stack.tls_root_pem.clone()),
        token: None,
        policy: AttestationPolicy::default().with_dev_root_der(der),
    })
    .await?;
    let doc = client.attestation();
    let anchor = match doc.trust_anchor() {
        TrustAnchor::AwsNitroRoot => "AWS Nitro root".to_string(),
        TrustAnchor::DevRoot => format!("dev root {}", root_path.display()),
    };
    let key = short_hex(&Sha256::digest(client.instance_public_key()), 16);
    let pcr0 = doc
        .pcr(0)
        .map(|p| short_hex(p, 16))
        .unwrap_or_else(|| "absent".into());
    done(format!(
        "attestation verified (fresh nonce, {anchor}, module {}, instance key sha256 {key}, PCR0 {pcr0})",
        doc.module_id()
    ));
    Ok(())
}

/// alice proposes a room with one milestone for bob; both accept.
async fn open_room(alice: &Caller<'_>, bob: &Caller<'_>) -> anyhow::Result<(String, String)> {
    let now = now_ms();
    let room = alice
        .post(
            "/v1/rooms",
            json!({
                "title": "Enclosure demo: a logo",
                "freelancer": bob.name,
                "currency": CURRENCY,
                "platform_fee_bps": FEE_BPS,
                "inspection_period_ms": 86_400_000,
                "max_revisions": 2,
                "milestones": [{
                    "title": "the logo",
                    "price_minor": PRICE_MINOR,
                    "funding_deadline_ms": now + 3_600_000,
                    "delivery_deadline_ms": now + 7_200_000,
                }],
            }),
            201,
        )
        .await?;
    let id = text(&room, "/id")?;
    let m = text(&room, "/milestones/0/id")?;
    alice
        .post(&format!("/v1/rooms/{id}/accept"), json!({}), 200)
        .await?;
    let r = bob
        .post(&format!("/v1/rooms/{id}/accept"), json!({}), 200)
        .await?;
    let state = text(&r, "/state")?;
    if state != "active" {
        bail!("both accepted, yet room {id} is {state}");
    }
    done(format!(
        "room {id} active: alice and bob accepted milestone {m} ({}, fee {FEE_BPS} bps)",
        money(PRICE_MINOR, CURRENCY)
    ));
    Ok((id, m))
}

/// alice asks to fund, pays at the sandbox provider, and the provider's signed webhook funds
/// the milestone. Answers the provider's payment id.
async fn fund(
    alice: &Caller<'_>,
    sandbox: &Sandbox,
    room: &str,
    m: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let p = alice
        .post(&format!("/v1/milestones/{m}/fund"), json!({}), 201)
        .await?;
    let pid = text(&p, "/provider_payment_id")?;
    let amount = money(
        p["amount_minor"].as_i64().unwrap_or_default(),
        p["currency"].as_str().unwrap_or(CURRENCY),
    );
    progress(format!(
        "payment {pid} pending ({amount}); alice pays it at the sandbox provider"
    ));
    sandbox.confirm(&pid).await?;
    wait_until("the provider's webhook", timeout, async || {
        milestone_state(alice, room, m, "funded", &["open"]).await
    })
    .await?;
    let mv = alice.get(&format!("/v1/milestones/{m}/payment")).await?;
    let state = text(&mv, "/payment/state")?;
    if state != "escrowed" {
        bail!("the milestone is funded but its payment is {state}, not escrowed");
    }
    done(format!("funded: payment {pid} escrowed ({amount})"));
    Ok(pid)
}

/// bob uploads the work through a presigned PUT and registers it. Answers the artifact id.
async fn upload(
    bob: &Caller<'_>,
    plain: &reqwest::Client,
    m: &str,
    work: &[u8],
    sha: &str,
) -> anyhow::Result<String> {
    let meta = json!({"name": WORK_NAME, "content_type": "text/plain",
                      "size_bytes": work.len(), "sha256": sha});
    let put = bob
        .post(
            &format!("/v1/milestones/{m}/artifacts/upload-url"),
            meta.clone(),
            201,
        )
        .await?;
    let url = text(&put, "/url")?;
    let mut req = plain.put(&url).body(work.to_vec());
    let headers = put["headers"]
        .as_array()
        .context("the upload URL came without its headers")?;
    for h in headers {
        let (Some(name), Some(value)) = (h[0].as_str(), h[1].as_str()) else {
            bail!("the upload URL's headers are not [name, value] pairs");
        };
        // reqwest sets content-length from the body itself.
        if !name.eq_ignore_ascii_case("content-length") {
            req = req.header(name, value);
        }
    }
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow!("PUT {}: {}", redact(&url), e.without_url()))?;
    if !resp.status().is_success() {
        bail!(
            "the artifact store answered {} to PUT {}",
            resp.status(),
            redact(&url)
        );
    }
    let id = text(&put, "/artifact_id")?;
    let mut body = meta;
    body["artifact_id"] = json!(id);
    let a = bob
        .post(&format!("/v1/milestones/{m}/artifacts"), body, 201)
        .await?;
    let stored = text(&a, "/sha256")?;
    if stored != sha {
        bail!("the store measured sha256 {stored}, bob uploaded {sha}");
    }
    done(format!(
        "uploaded {WORK_NAME} ({} bytes, sha256 {sha}) as artifact {id}, by a presigned PUT to {}",
        work.len(),
        origin(&url)
    ));
    Ok(id)
}

/// Waits until the accepted milestone is transferred and its release is done; checks the
/// payout and the fee add up to the price.
async fn swap(
    alice: &Caller<'_>,
    room: &str,
    m: &str,
    pid: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_until("the swap to pay bob out", timeout, async || {
        milestone_state(alice, room, m, "transferred", &["accepted"]).await
    })
    .await?;
    let mv = wait_until("the release to settle", timeout, async || {
        let mv = alice.get(&format!("/v1/milestones/{m}/payment")).await?;
        let step = mv["settlements"][0]["step"].as_str().unwrap_or("none");
        match step {
            "done" => Ok(Wait::Done(mv)),
            "stalled" => bail!(
                "the release stalled: {}",
                mv["settlements"][0]["last_error"]
                    .as_str()
                    .unwrap_or("no reason given")
            ),
            other => Ok(Wait::Pending(format!("settlement {other}"))),
        }
    })
    .await?;
    let s = &mv["settlements"][0];
    let (kind, payment) = (text(s, "/kind")?, text(&mv, "/payment/state")?);
    let amount = s["amount_minor"].as_i64().context("no settlement amount")?;
    let fee = s["fee_minor"].as_i64().context("no settlement fee")?;
    if kind != "release" || payment != "released" {
        bail!("expected a release and a released payment, got a {kind} and a {payment} payment");
    }
    if amount + fee != PRICE_MINOR {
        bail!(
            "payout {} and fee {} do not add up to the price {}",
            money(amount, CURRENCY),
            money(fee, CURRENCY),
            money(PRICE_MINOR, CURRENCY)
        );
    }
    done(format!(
        "swap: milestone {m} transferred, payment {pid} released; payout {} to bob, fee {} ({FEE_BPS} bps)",
        money(amount, CURRENCY),
        money(fee, CURRENCY)
    ));
    Ok(())
}

/// alice fetches the artifact through a presigned GET the swap unlocked.
async fn download(
    alice: &Caller<'_>,
    plain: &reqwest::Client,
    artifact: &str,
) -> anyhow::Result<Vec<u8>> {
    let u = alice
        .get(&format!("/v1/artifacts/{artifact}/download-url"))
        .await?;
    let url = text(&u, "/url")?;
    let resp = plain
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow!("GET {}: {}", redact(&url), e.without_url()))?;
    if !resp.status().is_success() {
        bail!(
            "the artifact store answered {} to GET {}",
            resp.status(),
            redact(&url)
        );
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| anyhow!("GET {}: {}", redact(&url), e.without_url()))?;
    done(format!(
        "downloaded {WORK_NAME} as alice ({} bytes, by a presigned GET from {})",
        bytes.len(),
        origin(&url)
    ));
    Ok(bytes.to_vec())
}

/// A URL without its query string (a presigned URL's signature lives there).
fn redact(url: &str) -> String {
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
fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "<unparsable URL>".into(),
    }
}

/// A string field by JSON pointer, or a clear error.
fn text(v: &Value, pointer: &str) -> anyhow::Result<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| format!("the answer has no {pointer}: {v}"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One look at something the demo waits for.
enum Wait<T> {
    Done(T),
    /// Not yet; what it looks like now.
    Pending(String),
}

/// Polls `check` until it is done, reporting progress, for at most `timeout`.
async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<Wait<T>>,
) -> anyhow::Result<T> {
    progress(format!(
        "waiting for {what} (up to {} s)…",
        timeout.as_secs()
    ));
    let started = Instant::now();
    let mut next_report = REPORT_EVERY;
    loop {
        let last = match check().await? {
            Wait::Done(v) => return Ok(v),
            Wait::Pending(now) => now,
        };
        let waited = started.elapsed();
        if waited >= timeout {
            bail!(
                "gave up waiting for {what} after {} s ({last})",
                timeout.as_secs()
            );
        }
        if waited >= next_report {
            progress(format!(
                "still waiting for {what} ({} s, {last})",
                waited.as_secs()
            ));
            next_report += REPORT_EVERY;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The milestone's state: done at `want`, pending at one of `on_the_way`, an error otherwise.
async fn milestone_state(
    who: &Caller<'_>,
    room: &str,
    m: &str,
    want: &str,
    on_the_way: &[&str],
) -> anyhow::Result<Wait<()>> {
    let r = who.get(&format!("/v1/rooms/{room}")).await?;
    let state = r["milestones"]
        .as_array()
        .and_then(|ms| ms.iter().find(|x| x["id"] == m))
        .and_then(|x| x["state"].as_str())
        .with_context(|| format!("room {room} does not show milestone {m}"))?;
    if state == want {
        Ok(Wait::Done(()))
    } else if on_the_way.contains(&state) {
        Ok(Wait::Pending(format!("milestone {state}")))
    } else {
        bail!("milestone {m} went {state}, not {want}")
    }
}

/// The api, as the demo reaches it.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A dev user of the stack: a fresh dev token from the data directory's dev key.
    fn caller(&self, dir: &Path, name: &'static str, role: Role) -> anyhow::Result<Caller<'_>> {
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
struct Caller<'a> {
    api: &'a Api,
    name: &'static str,
    token: String,
}

impl Caller<'_> {
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None, 200).await
    }

    /// A POST with a fresh Idempotency-Key that must answer `want`.
    async fn post(&self, path: &str, body: Value, want: u16) -> anyhow::Result<Value> {
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
struct Sandbox {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Sandbox {
    /// alice pays the pending payment.
    async fn confirm(&self, pid: &str) -> anyhow::Result<()> {
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
fn sandbox_key(dir: &Path) -> anyhow::Result<String> {
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

    #[tokio::test]
    async fn waits_end_done_or_timed_out() {
        let mut n = 0;
        let got = wait_until("three looks", Duration::from_secs(5), async || {
            n += 1;
            Ok(if n == 3 {
                Wait::Done(n)
            } else {
                Wait::Pending(format!("look {n}"))
            })
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
        let e = wait_until::<()>("never", Duration::from_millis(300), async || {
            Ok(Wait::Pending("still no".into()))
        })
        .await
        .unwrap_err();
        assert!(e.to_string().contains("still no"), "{e}");
    }
}
