//! The enclave signer across real processes: enclave and proxy binaries on Unix sockets.

use enclosure_policy::ticket::{
    MAX_TICKET_TTL_SECS, TICKET_VERSION, Ticket, TicketClaims, TicketKey, TicketOperation,
    payload_digest,
};
use enclosure_protocol::keycert::KeyCertificate;
use enclosure_protocol::{EnclaveClient, EnclaveErrorCode as Code, Request, Response, SecretBytes};
use enclosure_tests::{Stack, now, ticket};
use hmac::{Hmac, Mac};
use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{Signature, VerifyingKey};
use p384::pkcs8::DecodePublicKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IDENTITY: &str = "identity-alice";

fn ticket_key() -> TicketKey {
    TicketKey::from_bytes([0x42; 32])
}

async fn provision(c: &mut EnclaveClient, key: &TicketKey) -> Response {
    c.call(Request::Provision {
        ticket_key: SecretBytes::new(key.expose_secret().to_vec()),
    })
    .await
    .expect("transport")
    .expect("provisioned")
}

async fn generate(c: &mut EnclaveClient, key: &TicketKey, key_id: &str) -> (Vec<u8>, Vec<u8>) {
    let t = ticket(key, TicketOperation::GenerateKey, IDENTITY, key_id, b"");
    match c.call(Request::GenerateKey { ticket: t }).await.unwrap() {
        Ok(Response::KeyGenerated {
            key_id: got,
            public_key,
            certificate,
        }) => {
            assert_eq!(got, key_id);
            (public_key, certificate)
        }
        other => panic!("generate failed: {other:?}"),
    }
}

async fn sign(c: &mut EnclaveClient, key_id: &str, t: Ticket, msg: &[u8]) -> Result<Vec<u8>, Code> {
    match c
        .call(Request::Sign {
            key_id: key_id.into(),
            ticket: t,
            message: msg.to_vec(),
        })
        .await
        .expect("transport")
    {
        Ok(Response::Signature { signature }) => Ok(signature),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => Err(e.code),
    }
}

fn verify_sig(spki: &[u8], msg: &[u8], der: &[u8]) -> bool {
    let vk = VerifyingKey::from_public_key_der(spki).expect("P-384 SPKI");
    let sig = Signature::from_der(der).expect("DER signature");
    vk.verify(msg, &sig).is_ok()
}

/// A ticket with a valid MAC over arbitrary claims, computed independently of the policy
/// crate's issuer (which refuses bad lifetimes), from the documented canonical encoding.
fn raw_ticket(key: &TicketKey, claims: TicketClaims) -> Ticket {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.expose_secret()).unwrap();
    mac.update(&claims.canonical_bytes());
    Ticket {
        claims,
        mac: mac.finalize().into_bytes().into(),
    }
}

async fn instance_key_from_attestation(stack: &Stack, c: &mut EnclaveClient) -> Vec<u8> {
    let nonce: [u8; 32] = rand::random();
    let doc = match c
        .call(Request::Attest {
            nonce: nonce.to_vec(),
            user_data: vec![],
        })
        .await
        .unwrap()
    {
        Ok(Response::Attestation { document }) => document,
        other => panic!("attest failed: {other:?}"),
    };
    enclosure_tests::attested_instance_key(&doc, &stack.dev_root_pem(), &nonce)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_sign_and_verify_against_the_attested_instance_key() {
    let stack = Stack::start().await;
    let mut c = stack.client().await;
    let tk = ticket_key();
    assert_eq!(
        provision(&mut c, &tk).await,
        Response::Provisioned { already: false }
    );
    assert_eq!(
        provision(&mut c, &tk).await,
        Response::Provisioned { already: true }
    );
    let other = TicketKey::from_bytes([1; 32]);
    let refused = c
        .call(Request::Provision {
            ticket_key: SecretBytes::new(other.expose_secret().to_vec()),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.code, Code::ProvisionConflict);

    let (spki, cert) = generate(&mut c, &tk, "key-1").await;
    let msg = b"pay 100 to bob";
    let sig = sign(
        &mut c,
        "key-1",
        ticket(&tk, TicketOperation::Sign, IDENTITY, "key-1", msg),
        msg,
    )
    .await
    .expect("signed");
    assert!(verify_sig(&spki, msg, &sig));
    assert!(!verify_sig(&spki, b"pay 999 to bob", &sig));

    let instance_key = instance_key_from_attestation(&stack, &mut c).await;
    let body = KeyCertificate::from_bytes(&cert)
        .unwrap()
        .verify(&instance_key)
        .expect("key certificate verifies under the attested instance key");
    assert_eq!(body.key_id, "key-1");
    assert_eq!(body.identity_id, IDENTITY);
    assert_eq!(body.public_key, spki);

    // Health reports the key and the provisioning.
    match c.call(Request::Health).await.unwrap().unwrap() {
        Response::Health {
            key_count,
            provisioned,
            mode,
            instance_public_key,
            ..
        } => {
            assert_eq!(key_count, 1);
            assert!(provisioned);
            assert_eq!(mode, "dev");
            assert_eq!(instance_public_key, instance_key);
        }
        other => panic!("{other:?}"),
    }

    // Destroy: the key is gone, and its ticket cannot be used twice.
    let t = ticket(&tk, TicketOperation::DestroyKey, IDENTITY, "key-1", b"");
    let r = c
        .call(Request::DestroyKey {
            key_id: "key-1".into(),
            ticket: t,
        })
        .await
        .unwrap();
    assert_eq!(r, Ok(Response::KeyDestroyed));
    let t = ticket(&tk, TicketOperation::Sign, IDENTITY, "key-1", msg);
    assert_eq!(sign(&mut c, "key-1", t, msg).await, Err(Code::UnknownKey));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_ticket_is_refused_with_its_own_error() {
    let stack = Stack::start().await;
    let mut c = stack.client().await;
    let tk = ticket_key();
    let msg = b"message";

    // Before provisioning, no key operation runs.
    let t = ticket(&tk, TicketOperation::GenerateKey, IDENTITY, "k", b"");
    let r = c.call(Request::GenerateKey { ticket: t }).await.unwrap();
    assert_eq!(r.unwrap_err().code, Code::NotProvisioned);
    let t = ticket(&tk, TicketOperation::Sign, IDENTITY, "k", msg);
    assert_eq!(sign(&mut c, "k", t, msg).await, Err(Code::NotProvisioned));

    provision(&mut c, &tk).await;
    generate(&mut c, &tk, "k").await;
    generate(&mut c, &tk, "k2").await;

    // Replay.
    let t = ticket(&tk, TicketOperation::Sign, IDENTITY, "k", msg);
    assert!(sign(&mut c, "k", t.clone(), msg).await.is_ok());
    assert_eq!(sign(&mut c, "k", t, msg).await, Err(Code::TicketReplayed));

    // Expired (a lifetime within the maximum, but in the past).
    let base = |issued_at: u64, expires_at: u64| TicketClaims {
        version: TICKET_VERSION,
        ticket_id: rand::random(),
        operation: TicketOperation::Sign,
        identity_id: IDENTITY.into(),
        key_id: "k".into(),
        payload_sha384: payload_digest(msg),
        nonce: rand::random(),
        issued_at,
        expires_at,
    };
    let t = raw_ticket(&tk, base(now() - 70, now() - 20));
    assert_eq!(sign(&mut c, "k", t, msg).await, Err(Code::TicketExpired));

    // A TTL over the maximum, with a valid MAC.
    let t = raw_ticket(&tk, base(now(), now() + MAX_TICKET_TTL_SECS + 30));
    assert_eq!(
        sign(&mut c, "k", t, msg).await,
        Err(Code::TicketBadLifetime)
    );

    // A forged MAC.
    let mut t = ticket(&tk, TicketOperation::Sign, IDENTITY, "k", msg);
    t.mac[0] ^= 0x80;
    assert_eq!(sign(&mut c, "k", t, msg).await, Err(Code::TicketBadMac));
    let t = ticket(
        &TicketKey::from_bytes([9; 32]),
        TicketOperation::Sign,
        IDENTITY,
        "k",
        msg,
    );
    assert_eq!(sign(&mut c, "k", t, msg).await, Err(Code::TicketBadMac));

    // Another digest, key, operation or identity.
    let t = ticket(&tk, TicketOperation::Sign, IDENTITY, "k", b"something else");
    assert_eq!(
        sign(&mut c, "k", t, msg).await,
        Err(Code::TicketWrongPayload)
    );
    let t = ticket(&tk, TicketOperation::Sign, IDENTITY, "k", msg);
    assert_eq!(sign(&mut c, "k2", t, msg).await, Err(Code::TicketWrongKey));
    let t = ticket(&tk, TicketOperation::DestroyKey, IDENTITY, "k", msg);
    assert_eq!(
        sign(&mut c, "k", t, msg).await,
        Err(Code::TicketWrongOperation)
    );
    let t = ticket(&tk, TicketOperation::Sign, "identity-mallory", "k", msg);
    assert_eq!(
        sign(&mut c, "k", t, msg).await,
        Err(Code::TicketWrongIdentity)
    );
    let t = ticket(&tk, TicketOperation::Sign, IDENTITY, "k", msg);
    let r = c
        .call(Request::DestroyKey {
            key_id: "k".into(),
            ticket: t,
        })
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().code, Code::TicketWrongOperation);

    // None of the refusals had an effect: the key still signs with a fresh ticket.
    let t = ticket(&tk, TicketOperation::Sign, IDENTITY, "k", msg);
    assert!(sign(&mut c, "k", t, msg).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_the_connection_without_allocating() {
    let mut stack = Stack::start().await;
    // Directly at the enclave and through the proxy: each must refuse from the prefix alone.
    for (addr, which) in [
        (stack.enclave_addr(), "enclave"),
        (stack.proxy_addr(), "proxy"),
    ] {
        let peak_before = match which {
            "enclave" => stack.enclave.as_ref().unwrap().vm_peak_kib(),
            _ => stack.proxy.as_ref().unwrap().vm_peak_kib(),
        };
        let mut c = EnclaveClient::connect(&addr).await.unwrap();
        // Claim 4 GiB and send nothing more: an answer proves the body was never awaited.
        c.stream_mut()
            .write_all(&u32::MAX.to_be_bytes())
            .await
            .unwrap();
        c.stream_mut().flush().await.unwrap();
        let mut prefix = [0u8; 4];
        c.stream_mut().read_exact(&mut prefix).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
        c.stream_mut().read_exact(&mut body).await.unwrap();
        let env = enclosure_protocol::ResponseEnvelope::decode(&body).unwrap();
        let e = env.result.unwrap_err();
        assert_eq!(e.code, Code::BadRequest, "{which}");
        assert!(
            e.message.contains("exceeds the cap"),
            "{which}: {}",
            e.message
        );
        // Then the connection is closed.
        let mut rest = Vec::new();
        c.stream_mut().read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{which} kept talking");
        let peak_after = match which {
            "enclave" => stack.enclave.as_mut().unwrap().vm_peak_kib(),
            _ => stack.proxy.as_mut().unwrap().vm_peak_kib(),
        };
        assert!(
            peak_after < peak_before + 1024 * 1024,
            "{which}: peak virtual memory grew from {peak_before} KiB to {peak_after} KiB"
        );
    }
    stack.enclave.as_mut().unwrap().assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_a_typed_error_and_service_goes_on() {
    let stack = Stack::start().await;
    let mut bad = stack.client().await;
    let env = bad
        .call_raw(b"\x9f\xff\x00 definitely not an envelope")
        .await
        .unwrap();
    assert_eq!(env.result.unwrap_err().code, Code::BadRequest);
    // An envelope of a future version is refused as such.
    let future = future_version_envelope();
    let env = bad.call_raw(&future).await.unwrap();
    assert_eq!(env.result.unwrap_err().code, Code::UnsupportedVersion);
    // The same connection and others still work.
    assert!(matches!(
        bad.call(Request::Health).await.unwrap(),
        Ok(Response::Health { .. })
    ));
    let mut good = stack.client().await;
    assert!(matches!(
        good.call(Request::Health).await.unwrap(),
        Ok(Response::Health { .. })
    ));
}

/// A request envelope claiming protocol version 99.
fn future_version_envelope() -> Vec<u8> {
    let mut env = enclosure_protocol::RequestEnvelope::new(5, Request::Health);
    env.version = 99;
    env.encode().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_an_enclave_restart_through_the_sealed_backup() {
    let mut stack = Stack::start().await;
    let tk = ticket_key();
    let mut c = stack.client().await;
    provision(&mut c, &tk).await;
    let (spki_a, _) = generate(&mut c, &tk, "key-a").await;
    let (spki_b, _) = generate(&mut c, &tk, "key-b").await;
    let blob = match c.call(Request::ExportBackup).await.unwrap().unwrap() {
        Response::Backup {
            blob,
            key_count,
            generation,
        } => {
            assert_eq!(key_count, 2);
            // Provisioning and two keys: three changes.
            assert_eq!(generation, 3);
            blob
        }
        other => panic!("{other:?}"),
    };
    drop(c);

    stack.kill_enclave();
    stack.start_enclave().await;
    // The proxy reconnects to the new enclave for new client connections.
    let mut c = stack.client().await;
    let msg = b"after restart";
    let t = ticket(&tk, TicketOperation::Sign, IDENTITY, "key-a", msg);
    assert_eq!(
        sign(&mut c, "key-a", t, msg).await,
        Err(Code::NotProvisioned)
    );

    // Any changed byte is refused, and leaves the enclave empty.
    for i in 0..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x20;
        let r = c.call(Request::ImportBackup { blob: bad }).await.unwrap();
        assert_eq!(r.unwrap_err().code, Code::BackupRejected, "byte {i}");
    }
    match c.call(Request::Health).await.unwrap().unwrap() {
        Response::Health {
            key_count,
            provisioned,
            ..
        } => {
            assert_eq!(key_count, 0);
            assert!(!provisioned);
        }
        other => panic!("{other:?}"),
    }

    let r = c
        .call(Request::ImportBackup { blob: blob.clone() })
        .await
        .unwrap();
    assert_eq!(
        r,
        Ok(Response::BackupImported {
            key_count: 2,
            added: 2
        })
    );
    // Importing the same blob again changes nothing.
    let r = c.call(Request::ImportBackup { blob }).await.unwrap();
    assert_eq!(
        r,
        Ok(Response::BackupImported {
            key_count: 2,
            added: 0
        })
    );

    let instance_key = instance_key_from_attestation(&stack, &mut c).await;
    for (id, spki) in [("key-a", &spki_a), ("key-b", &spki_b)] {
        let t = ticket(&tk, TicketOperation::Sign, IDENTITY, id, msg);
        let sig = sign(&mut c, id, t, msg).await.expect("restored key signs");
        assert!(verify_sig(spki, msg, &sig), "{id} has the same public key");
        // The new instance certifies the restored key under its own attested key.
        let cert = match c
            .call(Request::CertifyKey { key_id: id.into() })
            .await
            .unwrap()
        {
            Ok(Response::KeyCertified { certificate }) => certificate,
            other => panic!("{other:?}"),
        };
        let body = KeyCertificate::from_bytes(&cert)
            .unwrap()
            .verify(&instance_key)
            .unwrap();
        assert_eq!((body.key_id.as_str(), &body.public_key), (id, spki));
    }
    let r = c
        .call(Request::CertifyKey {
            key_id: "nope".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().code, Code::UnknownKey);
}
