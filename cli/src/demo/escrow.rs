//! The escrow itself, step by step, over the api's HTTPS routes, the payments sandbox and the
//! artifact store's presigned URLs.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use enclosure_api::auth::Role;
use enclosure_attestation::{AttestationPolicy, TrustAnchor, pem_certificate_to_der};
use enclosure_client::{ClientOptions, EnclosureClient};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::http::{Api, Caller, Sandbox, origin, redact, sandbox_key, text};
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
    send_to_store(req, "PUT", &url).await?;
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

/// Sends a presigned request to the artifact store; a transport failure or a non-2xx answer
/// is an error that names the method and the URL with its signature redacted.
async fn send_to_store(
    req: reqwest::RequestBuilder,
    method: &str,
    url: &str,
) -> anyhow::Result<reqwest::Response> {
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow!("{method} {}: {}", redact(url), e.without_url()))?;
    if !resp.status().is_success() {
        bail!(
            "the artifact store answered {} to {method} {}",
            resp.status(),
            redact(url)
        );
    }
    Ok(resp)
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
    let resp = send_to_store(plain.get(&url), "GET", &url).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
