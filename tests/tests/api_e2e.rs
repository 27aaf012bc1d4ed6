//! The host api across real processes over HTTPS, on SQLite and on PostgreSQL.

use std::time::Duration;

use enclosure_api::auth::Role;
use enclosure_client::ClientError;
use enclosure_client::client::verify_signature;
use enclosure_tests::api::{ApiSettings, ApiStack, Backend};
use enclosure_tests::on_both;
use serde_json::{Value, json};

fn api_code(e: &ClientError) -> (u16, &str) {
    match e {
        ClientError::Api { status, code, .. } => (*status, code.as_str()),
        other => panic!("expected an api refusal, got {other}"),
    }
}

async fn whole_flow(backend: Backend) {
    let settings = ApiSettings {
        metrics: true,
        ..ApiSettings::default()
    };
    let stack = ApiStack::start(backend, 1, settings).await;
    let health: Value = stack
        .http()
        .get(format!("{}/v1/health", stack.apis[0].url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected_backend = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["database"]["backend"], expected_backend);
    assert_eq!(health["enclave"]["mode"], "dev");
    let alice = stack.client(0, "alice", Role::Client).await;
    let identity = alice
        .create_identity("alice's signing identity")
        .await
        .unwrap();
    assert_eq!(alice.list_identities().await.unwrap().len(), 1);

    // The SDK verifies the key certificate against the attested instance key...
    let key = alice.create_key(&identity.id).await.unwrap();
    assert_eq!(key.identity_id, identity.id);
    // ...and every signature against the certified key.
    let sig = alice.sign(&key, b"release milestone 1").await.unwrap();
    verify_signature(&key, b"release milestone 1", &sig.signature_der).unwrap();
    assert!(verify_signature(&key, b"release milestone 2", &sig.signature_der).is_err());
    let again = alice.get_key(&key.key_id).await.unwrap();
    assert_eq!(again.public_key_der, key.public_key_der);

    // Another user sees nothing of alice's: 404, not 403.
    let bob = stack.client(0, "bob", Role::Client).await;
    assert!(bob.list_identities().await.unwrap().is_empty());
    assert_eq!(
        api_code(&bob.get_key(&key.key_id).await.unwrap_err()),
        (404, "not_found")
    );
    assert_eq!(
        api_code(&bob.sign(&key, b"steal").await.unwrap_err()),
        (404, "not_found")
    );
    assert_eq!(
        api_code(&bob.create_key(&identity.id).await.unwrap_err()),
        (404, "not_found")
    );

    // The audit holds every create, sign and refusal, each with its actor.
    let mine = alice.audit(0, 100).await.unwrap();
    let actions: Vec<(&str, &str)> = mine
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("identity.create", "ok"),
            ("key.create", "ok"),
            ("key.sign", "ok")
        ]
    );
    assert_eq!(mine[2]["ticket_id"], json!(sig.ticket_id));
    let bobs = bob.audit(0, 100).await.unwrap();
    assert!(bobs.iter().all(|r| r["actor"] == "bob"));
    assert!(
        bobs.iter()
            .any(|r| r["action"] == "key.sign" && r["outcome"] == "refused"),
        "{bobs:?}"
    );
    let admin = stack.client(0, "root", Role::Admin).await;
    let all = admin.audit(0, 500).await.unwrap();
    assert!(all.iter().any(|r| r["actor"] == "alice") && all.iter().any(|r| r["actor"] == "bob"));
    assert!(all.iter().any(|r| r["action"] == "enclave.provision"));

    // Destroy: gone for good.
    alice.destroy_key(&key.key_id).await.unwrap();
    assert_eq!(
        api_code(&alice.get_key(&key.key_id).await.unwrap_err()),
        (404, "not_found")
    );
    assert_eq!(
        api_code(&alice.sign(&key, b"late").await.unwrap_err()),
        (404, "not_found")
    );

    // Metrics are served on their own listener, plain HTTP, and count these requests.
    let metrics_url = stack.apis[0].metrics_url.clone().unwrap();
    let metrics = reqwest::get(metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("enclosure_http_requests_total")
            && metrics.contains("route=\"/v1/keys/{key_id}/sign\""),
        "{metrics}"
    );
    // The OpenAPI document describes exactly the routes served.
    let spec: Value = stack
        .http()
        .get(format!("{}/v1/openapi.json", stack.apis[0].url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut paths: Vec<&str> = spec["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/v1/artifacts/{artifact_id}/download-url",
            "/v1/attestation",
            "/v1/audit",
            "/v1/health",
            "/v1/identities",
            "/v1/identities/{id}/keys",
            "/v1/keys/{key_id}",
            "/v1/keys/{key_id}/sign",
            "/v1/milestones/{milestone_id}/accept",
            "/v1/milestones/{milestone_id}/artifacts",
            "/v1/milestones/{milestone_id}/artifacts/upload-url",
            "/v1/milestones/{milestone_id}/auto-accept",
            "/v1/milestones/{milestone_id}/cancel",
            "/v1/milestones/{milestone_id}/dispute",
            "/v1/milestones/{milestone_id}/expire",
            "/v1/milestones/{milestone_id}/fund",
            "/v1/milestones/{milestone_id}/payment",
            "/v1/milestones/{milestone_id}/refund",
            "/v1/milestones/{milestone_id}/reject",
            "/v1/milestones/{milestone_id}/resolve",
            "/v1/milestones/{milestone_id}/submit",
            "/v1/milestones/{milestone_id}/validate",
            "/v1/rooms",
            "/v1/rooms/{room_id}",
            "/v1/rooms/{room_id}/accept",
            "/v1/rooms/{room_id}/audit",
            "/v1/rooms/{room_id}/cancel",
            "/v1/rooms/{room_id}/notes",
            "/v1/webhooks/payments",
        ]
    );
    let sign_params = spec["paths"]["/v1/keys/{key_id}/sign"]["post"]["parameters"].to_string();
    assert!(sign_params.contains("Idempotency-Key"), "{sign_params}");

    // `enclosure attest fetch` verifies a fresh document: under a policy naming the dev root
    // it passes, under the default policy (AWS root only) it is refused.
    let policy = stack.dir().join("dev-policy.toml");
    std::fs::write(&policy, "dev_roots = [\"dev-ca/root.pem\"]\n").unwrap();
    let fetch = |policy: Option<&std::path::Path>| {
        let mut cmd = enclosure_tests::command("enclosure");
        cmd.args(["attest", "fetch", "--api", &stack.apis[0].url, "--cacert"])
            .arg(stack.dir().join("tls/cert.pem"));
        if let Some(p) = policy {
            cmd.arg("--policy").arg(p);
        }
        cmd.output().unwrap()
    };
    let ok = fetch(Some(&policy));
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success() && text.contains("VERIFIED"), "{text}");
    assert!(text.contains("DEV ROOT"), "{text}");
    let refused = fetch(None);
    assert_eq!(refused.status.code(), Some(1));

    // The chain verifies from the command line.
    if backend == Backend::Sqlite {
        let out = enclosure_tests::command("enclosure")
            .args(["audit", "verify", "--data-dir"])
            .arg(stack.dir())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.starts_with("intact"), "{text}");
    }
}

on_both!(whole_flow_over_https, whole_flow);

async fn bad_input(backend: Backend) {
    let stack = ApiStack::start(backend, 1, ApiSettings::default()).await;
    let url = &stack.apis[0].url;
    let http = stack.http();
    let alice = stack.token("alice", Role::Client);

    async fn post(
        http: &reqwest::Client,
        url: &str,
        token: Option<&str>,
        idem: Option<&str>,
        ctype: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut req = http
            .post(format!("{url}/v1/identities"))
            .header("content-type", ctype)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            assert_eq!(ct.as_deref(), Some("application/problem+json"), "{v}");
        }
        (status, v)
    }
    struct Case {
        what: &'static str,
        token: Option<String>,
        idem: Option<&'static str>,
        ctype: &'static str,
        body: Vec<u8>,
        status: u16,
        code: &'static str,
    }
    let body = br#"{"name":"x"}"#.to_vec();
    let case = |what, token: Option<String>, idem, status, code| Case {
        what,
        token,
        idem,
        ctype: "application/json",
        body: body.clone(),
        status,
        code,
    };
    let mut wrong_aud = stack.claims("alice", "client");
    wrong_aud["aud"] = json!("someone-else");
    let mut expired = stack.claims("alice", "client");
    expired["iat"] = json!(enclosure_tests::now() - 7200);
    expired["exp"] = json!(enclosure_tests::now() - 3600);
    let cases = vec![
        case(
            "malformed JWT",
            Some("not.a.jwt".into()),
            Some("k1"),
            401,
            "",
        ),
        case(
            "wrong audience",
            Some(stack.token_with_claims(wrong_aud)),
            Some("k2"),
            401,
            "wrong_audience",
        ),
        case(
            "expired token",
            Some(stack.token_with_claims(expired)),
            Some("k3"),
            401,
            "token_expired",
        ),
        case(
            "missing Idempotency-Key",
            Some(alice.clone()),
            None,
            400,
            "bad_request",
        ),
        Case {
            body: format!("{{\"name\":\"{}\"}}", "a".repeat(300 * 1024)).into_bytes(),
            ..case(
                "oversized body",
                Some(alice.clone()),
                Some("k5"),
                413,
                "payload_too_large",
            )
        },
        Case {
            ctype: "text/plain",
            ..case(
                "wrong content type",
                Some(alice.clone()),
                Some("k6"),
                415,
                "unsupported_media_type",
            )
        },
        Case {
            body: b"{\"name\":".to_vec(),
            ..case(
                "malformed JSON",
                Some(alice.clone()),
                Some("k7"),
                400,
                "bad_request",
            )
        },
    ];
    for c in cases {
        let (got, v) = post(&http, url, c.token.as_deref(), c.idem, c.ctype, c.body).await;
        assert_eq!(got, c.status, "{}: {v}", c.what);
        if !c.code.is_empty() {
            assert_eq!(v["code"], json!(c.code), "{}: {v}", c.what);
        }
    }
    // None of those created anything.
    let r: Value = http
        .get(format!("{url}/v1/identities"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!([]));
    // A key id that is not yours is 404 and audited as a refusal.
    let sdk = stack.client(0, "alice", Role::Client).await;
    let id = sdk.create_identity("mine").await.unwrap();
    let key = sdk.create_key(&id.id).await.unwrap();
    let mallory = stack.client(0, "mallory", Role::Client).await;
    assert_eq!(
        api_code(&mallory.destroy_key(&key.key_id).await.unwrap_err()),
        (404, "not_found")
    );
    assert!(sdk.sign(&key, b"still mine").await.is_ok());
}

on_both!(bad_input_is_refused_without_side_effects, bad_input);

async fn restart(backend: Backend) {
    let mut stack = ApiStack::start(backend, 1, ApiSettings::default()).await;
    let mut alice = stack.client(0, "alice", Role::Client).await;
    let id = alice.create_identity("survivor").await.unwrap();
    let key = alice.create_key(&id.id).await.unwrap();
    let old_instance = alice.instance_public_key().to_vec();

    stack.stack.kill_enclave();
    stack.stack.start_enclave().await;

    // Until the api has restored the new enclave, key operations answer 503 + Retry-After
    // (or already succeed); within a few seconds they succeed with the same key.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let sig = loop {
        match alice.sign(&key, b"after the restart").await {
            Ok(sig) => break sig,
            Err(ClientError::Api { status: 503, .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
        assert!(std::time::Instant::now() < deadline, "keys never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The same public key verifies the new signature.
    verify_signature(&key, b"after the restart", &sig.signature_der).unwrap();
    // A new instance attests, and certifies the restored key under its own key.
    alice.reattest().await.unwrap();
    assert_ne!(alice.instance_public_key(), old_instance.as_slice());
    let restored = alice.get_key(&key.key_id).await.unwrap();
    assert_eq!(restored.public_key_der, key.public_key_der);
    let admin = stack.client(0, "root", Role::Admin).await;
    let all = admin.audit(0, 500).await.unwrap();
    assert!(
        all.iter()
            .any(|r| r["action"] == "enclave.restore" && r["outcome"] == "ok"),
        "{all:?}"
    );
}

on_both!(keys_come_back_after_an_enclave_restart, restart);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_processes_share_idempotency_and_rate_limits_on_postgres() {
    let stack = ApiStack::start(
        Backend::Postgres,
        2,
        ApiSettings {
            per_user_per_minute: Some(3),
            ..ApiSettings::default()
        },
    )
    .await;
    let http = stack.http();
    let token = stack.token("alice", Role::Client);
    let sdk = stack.client(0, "alice", Role::Client).await;
    let id = sdk.create_identity("shared").await.unwrap();
    let key = sdk.create_key(&id.id).await.unwrap(); // key op 1

    // An idempotent retry sent to the other process gets the stored response.
    let sign = |i: usize, idem: &'static str, msg: &'static str| {
        http.post(format!("{}/v1/keys/{}/sign", stack.apis[i].url, key.key_id))
            .bearer_auth(&token)
            .header("Idempotency-Key", idem)
            .json(&json!({ "message": base64_of(msg) }))
            .send()
    };
    let first = sign(0, "sign-1", "once").await.unwrap(); // key op 2
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let retry = sign(1, "sign-1", "once").await.unwrap();
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(
        retry, first,
        "the same signature and ticket, not a second signing"
    );
    // The same key with another body is refused on either process.
    let other = sign(1, "sign-1", "twice").await.unwrap();
    assert_eq!(other.status(), 422);

    // The rate limit (a bucket of 3 key operations, refilled one every 20 s) is shared: the
    // 3rd operation passes on the other process, then the 4th is refused on each process,
    // though neither alone has counted 3, with the wait until the next refill.
    let r = sign(1, "r3", "again").await.unwrap();
    assert_eq!(r.status(), 200, "r3: {}", r.text().await.unwrap());
    for (i, idem) in [(0, "r4"), (1, "r5")] {
        let limited = sign(i, idem, "again").await.unwrap();
        assert_eq!(limited.status(), 429, "{idem}");
        let retry_after: u64 = limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=20).contains(&retry_after), "{retry_after}");
    }

    // Exactly one signing per idempotency key reached the audit, across both processes.
    let admin = stack.client(0, "root", Role::Admin).await;
    let all = admin.audit(0, 500).await.unwrap();
    let signed = all
        .iter()
        .filter(|r| r["action"] == "key.sign" && r["outcome"] == "ok")
        .count();
    assert_eq!(signed, 2, "1 original + 1 within the limit");
    assert!(
        all.iter()
            .any(|r| r["action"] == "key.sign" && r["detail"] == "rate_limited")
    );

    // The audit table refuses the app role's UPDATE, DELETE and TRUNCATE.
    let pg = stack.pg.as_ref().unwrap();
    for sql in [
        "UPDATE audit SET outcome = 'ok'",
        "DELETE FROM audit",
        "TRUNCATE audit",
    ] {
        let (ok, err) = pg.as_app(sql);
        assert!(!ok, "{sql} succeeded as the app role");
        assert!(!err.is_empty());
    }
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
