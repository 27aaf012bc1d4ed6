//! Sandbox webhook delivery against an in-test receiver: signed events that verify, duplicates,
//! retries until 2xx, delays, reordering, skewed clocks, and the receiver-side refusals.

mod payments_support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use enclosure_api::payments::events::{EventError, ProviderEventType, verify_event};
use enclosure_api::payments::sandbox::DeliveryMode;
use enclosure_api::payments::{CreatePayment, PaymentProvider, ProviderPaymentStatus, Secret};
use enclosure_policy::escrow::{PaymentEvent, PaymentState};
use enclosure_policy::webhook::{DEFAULT_TOLERANCE_SECS, WebhookError};
use payments_support::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn secrets() -> Vec<Secret> {
    vec![Secret::new(WEBHOOK_SECRET)]
}

/// The payment ids of verified deliveries, in the order they arrived.
fn payment_ids(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| {
            verify_event(r.signature.as_deref(), &r.body, &secrets(), now(), 300)
                .unwrap()
                .data
                .payment_id
        })
        .collect()
}

async fn paid(
    provider: &impl PaymentProvider,
    admin: &Admin,
    reference: &str,
) -> enclosure_api::payments::ProviderPayment {
    let p = provider
        .create_payment(CreatePayment {
            idempotency_key: format!("create-{reference}"),
            amount_minor: 10_000,
            currency: "EUR".into(),
            reference: reference.into(),
        })
        .await
        .unwrap();
    admin
        .confirm(&p.id, &format!("confirm-{reference}"), "succeed")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_payment_delivers_a_signed_succeeded_event() {
    let receiver = Receiver::start(0).await;
    let sandbox = start_sandbox(config(Some(receiver.url()), DeliveryMode::default())).await;
    let provider = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());

    let created = provider
        .create_payment(CreatePayment {
            idempotency_key: "create-m1".into(),
            amount_minor: 12_345,
            currency: "eur".into(),
            reference: "milestone-1".into(),
        })
        .await
        .unwrap();
    assert_eq!(created.status, ProviderPaymentStatus::Pending);
    assert!(receiver.all().is_empty(), "creating moves no money");

    admin.confirm(&created.id, "confirm-m1", "succeed").await;
    let got = receiver.wait_for(1).await;
    let event = verify_event(
        got[0].signature.as_deref(),
        &got[0].body,
        &secrets(),
        now(),
        DEFAULT_TOLERANCE_SECS,
    )
    .unwrap();
    assert_eq!(event.kind, ProviderEventType::PaymentSucceeded);
    assert_eq!(event.payment_event(), Some(PaymentEvent::Succeeded));
    assert_eq!(event.data.payment_id, created.id);
    assert_eq!(event.data.reference.as_deref(), Some("milestone-1"));
    assert_eq!(event.data.amount_minor, Some(12_345));

    // What the api does next: fetch the payment back and check it agrees with the event.
    let fetched = provider.get_payment(&event.data.payment_id).await.unwrap();
    assert_eq!(Some(fetched.status), event.kind.expected_status());
    assert_eq!(fetched.status.payment_state(), PaymentState::Escrowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_payment_delivers_payment_failed() {
    let receiver = Receiver::start(0).await;
    let sandbox = start_sandbox(config(Some(receiver.url()), DeliveryMode::default())).await;
    let provider = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    let p = provider
        .create_payment(CreatePayment {
            idempotency_key: "k".into(),
            amount_minor: 1,
            currency: "usd".into(),
            reference: "m".into(),
        })
        .await
        .unwrap();
    admin.confirm(&p.id, "c", "fail").await;
    let got = receiver.wait_for(1).await;
    let event = verify_event(
        got[0].signature.as_deref(),
        &got[0].body,
        &secrets(),
        now(),
        300,
    )
    .unwrap();
    assert_eq!(event.payment_event(), Some(PaymentEvent::Failed));
    let fetched = provider.get_payment(&p.id).await.unwrap();
    assert_eq!(fetched.status.payment_state(), PaymentState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_mode_delivers_the_same_event_twice() {
    let receiver = Receiver::start(0).await;
    let mode = DeliveryMode {
        duplicate: true,
        ..DeliveryMode::default()
    };
    let sandbox = start_sandbox(config(Some(receiver.url()), mode)).await;
    let provider = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    paid(&provider, &admin, "dup").await;

    let got = receiver.wait_for(2).await;
    let ids: Vec<String> = got
        .iter()
        .map(|r| {
            verify_event(r.signature.as_deref(), &r.body, &secrets(), now(), 300)
                .unwrap()
                .id
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1], "a duplicate carries the same event id");
    let events = admin.events_when(|e| e[0].delivered == 2).await;
    assert_eq!(events.len(), 1, "one event, delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_errors_are_retried_until_2xx() {
    let receiver = Receiver::start(3).await;
    let sandbox = start_sandbox(config(Some(receiver.url()), DeliveryMode::default())).await;
    let provider = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    paid(&provider, &admin, "retry").await;

    let got = receiver.wait_for(4).await;
    // Every attempt carries the identical, verifiable body.
    for r in &got {
        assert_eq!(r.body, got[0].body);
        verify_event(r.signature.as_deref(), &r.body, &secrets(), now(), 300).unwrap();
    }
    let record = admin.events_when(|e| e[0].delivered == 1).await.remove(0);
    assert_eq!((record.attempts, record.delivered), (4, 1));
    assert_eq!(record.last_status, Some(200));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.all().len(), 4, "no deliveries after the 2xx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_receiver_is_retried_until_it_comes_up() {
    // Reserve a port, close it, and point the sandbox there: connections are refused.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let url = format!("http://{addr}/webhooks/payments");
    let sandbox = start_sandbox(config(Some(url), DeliveryMode::default())).await;
    let provider = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    paid(&provider, &admin, "down").await;
    let events = admin.events_when(|e| e[0].attempts >= 2).await;
    assert_eq!(events[0].delivered, 0);
    // Best effort: bring a receiver up on the same port and see the event arrive.
    if let Ok(listener) = tokio::net::TcpListener::bind(addr).await {
        let received = std::sync::Arc::new(std::sync::Mutex::new(0u32));
        let r2 = received.clone();
        let app = axum::Router::new().route(
            "/webhooks/payments",
            axum::routing::post(move || {
                let r2 = r2.clone();
                async move {
                    *r2.lock().unwrap() += 1;
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        wait_until(|| *received.lock().unwrap() >= 1).await;
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_mode_holds_deliveries() {
    let receiver = Receiver::start(0).await;
    // Long enough that paying plus the check below cannot outlast it on a loaded machine.
    let mode = DeliveryMode {
        delay_ms: 3_000,
        ..DeliveryMode::default()
    };
    let sandbox = start_sandbox(config(Some(receiver.url()), mode)).await;
    let provider = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    let started = Instant::now();
    paid(&provider, &admin, "delay").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.all().is_empty(), "delivered before the delay");
    receiver.wait_for(1).await;
    assert!(started.elapsed() >= Duration::from_millis(3_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorder_mode_delivers_newest_first() {
    let receiver = Receiver::start(0).await;
    // Held for up to a minute, so only the batch or a flush can release them.
    let mode = DeliveryMode {
        reorder_batch: 2,
        reorder_max_hold_ms: 60_000,
        ..DeliveryMode::default()
    };
    let sandbox = start_sandbox(config(Some(receiver.url()), mode)).await;
    let provider = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    let first = paid(&provider, &admin, "first").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.all().is_empty(), "held until the batch fills");
    let second = paid(&provider, &admin, "second").await;
    let got = receiver.wait_for(2).await;
    let order = payment_ids(&got);
    assert_eq!(order, [second.id, first.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_can_change_at_runtime_and_skewed_clocks_are_refused() {
    let receiver = Receiver::start(0).await;
    let sandbox = start_sandbox(config(Some(receiver.url()), DeliveryMode::default())).await;
    let provider = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    for (offset, kind) in [(-400i64, "stale"), (400, "future")] {
        admin
            .set_mode(&DeliveryMode {
                sign_offset_secs: offset,
                ..DeliveryMode::default()
            })
            .await;
        let n = receiver.all().len();
        paid(&provider, &admin, kind).await;
        let got = receiver.wait_for(n + 1).await;
        let r = &got[n];
        let err =
            verify_event(r.signature.as_deref(), &r.body, &secrets(), now(), 300).unwrap_err();
        match (kind, err) {
            ("stale", EventError::Signature(WebhookError::Stale { .. })) => {}
            ("future", EventError::Signature(WebhookError::FutureTimestamp { .. })) => {}
            (k, e) => panic!("{k}: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_refuses_forgeries_and_accepts_rotated_secrets() {
    let receiver = Receiver::start(0).await;
    let sandbox = start_sandbox(config(Some(receiver.url()), DeliveryMode::default())).await;
    let provider = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    paid(&provider, &admin, "forge").await;
    let got = receiver.wait_for(1).await;
    let (sig, body) = (got[0].signature.as_deref(), got[0].body.clone());

    // Rotation: the receiver holds the new secret first and the old one still passes.
    let rotating = vec![
        Secret::new("whsec_the_next_one"),
        Secret::new(WEBHOOK_SECRET),
    ];
    assert!(verify_event(sig, &body, &rotating, now(), 300).is_ok());
    // Once the old secret is dropped, deliveries signed with it are refused.
    let rotated = vec![Secret::new("whsec_the_next_one")];
    assert_eq!(
        verify_event(sig, &body, &rotated, now(), 300),
        Err(EventError::Signature(WebhookError::BadSignature))
    );
    // A forged body under the genuine header: refused before it is parsed.
    let forged = String::from_utf8(body.clone())
        .unwrap()
        .replace("payment.succeeded", "refund.succeeded");
    assert_eq!(
        verify_event(sig, forged.as_bytes(), &secrets(), now(), 300),
        Err(EventError::Signature(WebhookError::BadSignature))
    );
    // A replay of the genuine delivery ten minutes later: stale.
    assert!(matches!(
        verify_event(sig, &body, &secrets(), now() + 600, 300),
        Err(EventError::Signature(WebhookError::Stale { .. }))
    ));
    // No header at all.
    assert_eq!(
        verify_event(None, &body, &secrets(), now(), 300),
        Err(EventError::MissingSignature)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receiver_is_reached_through_the_configured_ca() {
    // The api's webhook route is HTTPS under its own (dev) certificate: trust exactly that.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert_pem.clone().into_bytes(),
        cert.key_pair.serialize_pem().into_bytes(),
    )
    .await
    .unwrap();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let r2 = received.clone();
    let app = axum::Router::new().route(
        "/v1/webhooks/payments",
        axum::routing::post(move |body: axum::body::Bytes| {
            let r2 = r2.clone();
            async move {
                r2.lock().unwrap().push(body.to_vec());
                axum::http::StatusCode::OK
            }
        }),
    );
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = std_listener.local_addr().unwrap().port();
    std_listener.set_nonblocking(true).unwrap();
    let server = tokio::spawn(async move {
        let _ = axum_server::from_tcp_rustls(std_listener, tls)
            .serve(app.into_make_service())
            .await;
    });

    let mut cfg = config(
        Some(format!("https://localhost:{port}/v1/webhooks/payments")),
        DeliveryMode::default(),
    );
    cfg.webhook_ca_pem = Some(cert_pem.into_bytes());
    let sandbox = start_sandbox(cfg).await;
    let provider = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    paid(&provider, &admin, "tls").await;
    wait_until(|| !received.lock().unwrap().is_empty()).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receiver_with_an_untrusted_certificate_gets_nothing() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert.cert.pem().into_bytes(),
        cert.key_pair.serialize_pem().into_bytes(),
    )
    .await
    .unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { axum::http::StatusCode::OK }),
    );
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = std_listener.local_addr().unwrap().port();
    std_listener.set_nonblocking(true).unwrap();
    let server = tokio::spawn(async move {
        let _ = axum_server::from_tcp_rustls(std_listener, tls)
            .serve(app.into_make_service())
            .await;
    });
    let mut cfg = config(
        Some(format!("https://localhost:{port}/hook")),
        DeliveryMode::default(),
    );
    cfg.webhook_ca_pem = Some(other.cert.pem().into_bytes());
    let sandbox = start_sandbox(cfg).await;
    let provider = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    paid(&provider, &admin, "untrusted").await;
    let events = admin.events_when(|e| e[0].attempts >= 2).await;
    assert_eq!(
        events[0].delivered, 0,
        "a certificate outside the CA is never trusted"
    );
    assert_eq!(events[0].last_status, None);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorder_batch_that_never_fills_is_released_after_its_hold() {
    let receiver = Receiver::start(0).await;
    let mode = DeliveryMode {
        reorder_batch: 10,
        reorder_max_hold_ms: 1_000,
        ..DeliveryMode::default()
    };
    let sandbox = start_sandbox(config(Some(receiver.url()), mode)).await;
    let provider = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    let started = Instant::now();
    let only = paid(&provider, &admin, "alone").await;
    let got = receiver.wait_for(1).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "held first"
    );
    assert_eq!(payment_ids(&got), [only.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_releases_held_events_newest_first() {
    let receiver = Receiver::start(0).await;
    // Held for up to a minute, so only the batch or a flush can release them.
    let mode = DeliveryMode {
        reorder_batch: 10,
        reorder_max_hold_ms: 60_000,
        ..DeliveryMode::default()
    };
    let sandbox = start_sandbox(config(Some(receiver.url()), mode)).await;
    let provider = provider(&sandbox.url(), API_KEY);
    let admin = Admin::new(&sandbox.url());
    let first = paid(&provider, &admin, "a").await;
    let second = paid(&provider, &admin, "b").await;
    let third = paid(&provider, &admin, "c").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.all().is_empty());
    let released: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/sandbox/delivery/flush", sandbox.url()))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(released["released"], 3);
    let got = receiver.wait_for(3).await;
    let order = payment_ids(&got);
    assert_eq!(order, [third.id, second.id, first.id]);
}
