//! The provider boundary through `HttpPaymentProvider` against the sandbox: idempotent create,
//! transfer and refund (one effect per key), state rules, credentials, restarts, and the real
//! `enclosure-payments-sandbox` binary.

mod payments_support;

use std::time::Duration;

use enclosure_api::payments::sandbox::DeliveryMode;
use enclosure_api::payments::{
    CreatePayment, PaymentProvider, ProviderError, ProviderPaymentStatus, Refund, Transfer,
};
use payments_support::*;

fn create(key: &str, amount_minor: i64, reference: &str) -> CreatePayment {
    CreatePayment {
        idempotency_key: key.into(),
        amount_minor,
        currency: "eur".into(),
        reference: reference.into(),
    }
}

fn transfer(key: &str, payment_id: &str, amount_minor: i64) -> Transfer {
    Transfer {
        idempotency_key: key.into(),
        payment_id: payment_id.into(),
        amount_minor,
        destination: "freelancer-7".into(),
    }
}

fn refund(key: &str, payment_id: &str) -> Refund {
    Refund {
        idempotency_key: key.into(),
        payment_id: payment_id.into(),
    }
}

fn rejected_code(e: ProviderError) -> String {
    match e {
        ProviderError::Rejected { code, .. } => code,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_by_key() {
    let sandbox = start_sandbox(config(None, DeliveryMode::default())).await;
    let p = provider(&sandbox.url(), API_KEY);
    let a = p.create_payment(create("k1", 500, "m1")).await.unwrap();
    let b = p.create_payment(create("k1", 500, "m1")).await.unwrap();
    assert_eq!(a, b, "the same key and body replay the first answer");
    assert_eq!(
        p.create_payment(create("k1", 501, "m1")).await,
        Err(ProviderError::IdempotencyConflict),
        "the same key with another body is refused"
    );
    let c = p.create_payment(create("k2", 500, "m1")).await.unwrap();
    assert_ne!(a.id, c.id, "a new key is a new payment");
    assert_eq!(p.get_payment(&a.id).await.unwrap(), a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_is_idempotent_and_happens_once() {
    let sandbox = start_sandbox(config(None, DeliveryMode::default())).await;
    let p = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    let pay = p.create_payment(create("c", 10_000, "m")).await.unwrap();

    // Before the client paid: refused, and the refusal is not remembered under the key.
    let early = p
        .transfer(transfer("t1", &pay.id, 9_500))
        .await
        .unwrap_err();
    assert_eq!(rejected_code(early), "payment_not_escrowed");
    admin.confirm(&pay.id, "confirm", "succeed").await;

    let first = p.transfer(transfer("t1", &pay.id, 9_500)).await.unwrap();
    let again = p.transfer(transfer("t1", &pay.id, 9_500)).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first.amount_minor, 9_500);
    assert_eq!(
        p.transfer(transfer("t1", &pay.id, 9_000)).await,
        Err(ProviderError::IdempotencyConflict)
    );
    let twice = p
        .transfer(transfer("t2", &pay.id, 9_500))
        .await
        .unwrap_err();
    assert_eq!(rejected_code(twice), "already_transferred");

    let fetched = p.get_payment(&pay.id).await.unwrap();
    assert_eq!(fetched.status, ProviderPaymentStatus::Transferred);
    assert_eq!(fetched.transfer_id.as_deref(), Some(first.id.as_str()));
    let paid_events = admin
        .events()
        .await
        .into_iter()
        .filter(|e| e.kind == "transfer.paid")
        .count();
    assert_eq!(paid_events, 1, "one transfer, one event");
    let refund_after = p.refund(refund("r", &pay.id)).await.unwrap_err();
    assert_eq!(rejected_code(refund_after), "already_transferred");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_amount_is_bounded_by_the_payment() {
    let sandbox = start_sandbox(config(None, DeliveryMode::default())).await;
    let p = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    let pay = p.create_payment(create("c", 1_000, "m")).await.unwrap();
    admin.confirm(&pay.id, "confirm", "succeed").await;
    for amount in [0, -1, 1_001] {
        let e = p
            .transfer(transfer(&format!("t{amount}"), &pay.id, amount))
            .await;
        assert_eq!(rejected_code(e.unwrap_err()), "bad_request", "{amount}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_is_idempotent_and_happens_once() {
    let sandbox = start_sandbox(config(None, DeliveryMode::default())).await;
    let p = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    let pay = p.create_payment(create("c", 2_000, "m")).await.unwrap();
    let early = p.refund(refund("r1", &pay.id)).await.unwrap_err();
    assert_eq!(rejected_code(early), "payment_not_escrowed");
    admin.confirm(&pay.id, "confirm", "succeed").await;

    let first = p.refund(refund("r1", &pay.id)).await.unwrap();
    assert_eq!(first, p.refund(refund("r1", &pay.id)).await.unwrap());
    assert_eq!(first.amount_minor, 2_000);
    let twice = p.refund(refund("r2", &pay.id)).await.unwrap_err();
    assert_eq!(rejected_code(twice), "already_refunded");
    let after = p.transfer(transfer("t", &pay.id, 100)).await.unwrap_err();
    assert_eq!(rejected_code(after), "already_refunded");
    assert_eq!(
        p.get_payment(&pay.id).await.unwrap().status,
        ProviderPaymentStatus::Refunded
    );
    let refunds = admin
        .events()
        .await
        .into_iter()
        .filter(|e| e.kind == "refund.succeeded")
        .count();
    assert_eq!(refunds, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_payments_and_bad_ids_are_not_found() {
    let sandbox = start_sandbox(config(None, DeliveryMode::default())).await;
    let p = provider(&sandbox.url(), API_KEY);
    assert_eq!(
        p.get_payment("pay_nope").await,
        Err(ProviderError::NotFound)
    );
    assert_eq!(
        p.get_payment("../v1/events").await,
        Err(ProviderError::NotFound)
    );
    assert_eq!(
        p.transfer(transfer("t", "pay_nope", 1)).await,
        Err(ProviderError::NotFound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_key_is_unauthorized() {
    let sandbox = start_sandbox(config(None, DeliveryMode::default())).await;
    for key in ["sk_test_wrong", ""] {
        let p = provider(&sandbox.url(), key);
        assert_eq!(
            p.create_payment(create("k", 1, "m")).await,
            Err(ProviderError::Unauthorized),
            "{key:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_idempotency_key_is_refused() {
    let sandbox = start_sandbox(config(None, DeliveryMode::default())).await;
    let p = provider(&sandbox.url(), API_KEY);
    let e = p.create_payment(create("", 1, "m")).await.unwrap_err();
    assert_eq!(rejected_code(e), "missing_idempotency_key");
    let raw = reqwest::Client::new()
        .post(format!("{}/v1/payments", sandbox.url()))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({"amount_minor": 1, "currency": "eur", "reference": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_provider_is_retryable() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", probe.local_addr().unwrap());
    drop(probe);
    let e = provider(&url, API_KEY)
        .create_payment(create("k", 1, "m"))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(!format!("{e} {e:?}").contains(API_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_payments_keys_and_undelivered_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(None, DeliveryMode::default());
    cfg.data_dir = Some(dir.path().to_path_buf());
    let (pay, addr) = {
        let sandbox = start_sandbox(cfg.clone()).await;
        let p = provider(&sandbox.url(), API_KEY);
        let pay = p.create_payment(create("k", 700, "m")).await.unwrap();
        Admin::new(&sandbox.url())
            .confirm(&pay.id, "c", "succeed")
            .await;
        (pay, sandbox.addr())
    };
    // The first server's listener closes when its task is aborted; give it a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let receiver = Receiver::start(0).await;
    cfg.webhook_url = Some(receiver.url());
    let sandbox = start_sandbox(cfg).await;
    assert_ne!(sandbox.addr(), addr);
    let p = provider(&sandbox.url(), API_KEY);
    let fetched = p.get_payment(&pay.id).await.unwrap();
    assert_eq!(fetched.status, ProviderPaymentStatus::Succeeded);
    assert_eq!(
        p.create_payment(create("k", 700, "m")).await.unwrap().id,
        pay.id,
        "idempotency records survive the restart"
    );
    // The event recorded while no receiver was configured is delivered after the restart.
    let got = receiver.wait_for(1).await;
    assert!(String::from_utf8_lossy(&got[0].body).contains(&pay.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_binary_serves_and_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("api-key");
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
    std::fs::write(&secret_file, WEBHOOK_SECRET).unwrap();
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let receiver = Receiver::start(0).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_enclosure-payments-sandbox"))
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--api-key-file")
        .arg(&key_file)
        .arg("--webhook-secret-file")
        .arg(&secret_file)
        .arg("--webhook-url")
        .arg(receiver.url())
        .arg("--duplicate")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://{addr}");
    let p = provider(&url, API_KEY);
    let mut created = None;
    // A freshly linked binary on a loaded machine can take seconds to start.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match p.create_payment(create("k", 300, "m")).await {
            Ok(pay) => {
                created = Some(pay);
                break;
            }
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e}"),
        }
    }
    let pay = created.expect("the sandbox binary never answered");
    Admin::new(&url).confirm(&pay.id, "c", "succeed").await;
    let got = receiver.wait_for(2).await;
    assert_eq!(got[0].body, got[1].body, "--duplicate delivers twice");
    assert!(dir.path().join("data/payments-sandbox.json").exists());
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_with_one_key_have_one_effect() {
    let sandbox = start_sandbox(config(None, DeliveryMode::default())).await;
    let p = std::sync::Arc::new(provider(&sandbox.url(), API_KEY));
    let calls = (0..20).map(|_| {
        let p = p.clone();
        tokio::spawn(async move { p.create_payment(create("same", 900, "m")).await })
    });
    let mut ids = std::collections::BTreeSet::new();
    for c in calls {
        ids.insert(c.await.unwrap().unwrap().id);
    }
    assert_eq!(ids.len(), 1, "twenty racing retries, one payment");

    // Racing transfers under different keys (two saga runs): exactly one pays out.
    let pay = ids.into_iter().next().unwrap();
    Admin::new(&sandbox.url())
        .confirm(&pay, "confirm", "succeed")
        .await;
    let calls = (0..10).map(|i| {
        let p = p.clone();
        let pay = pay.clone();
        tokio::spawn(async move { p.transfer(transfer(&format!("t{i}"), &pay, 900)).await })
    });
    let mut ok = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(rejected_code(e), "already_transferred"),
        }
    }
    assert_eq!(ok, 1);
}
