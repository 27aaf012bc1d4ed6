//! The proxy in-process, in front of a frame-echoing stand-in for the enclave.

use std::time::Duration;

use enclosure_host_proxy::{ProxyConfig, run};
use enclosure_protocol::{
    Address, EnclaveErrorCode, FrameReader, Listener, ResponseEnvelope, connect, write_frame,
};
use tokio::io::AsyncReadExt;

/// Echoes every frame back: the proxy must pass bytes through without understanding them.
async fn echo_enclave(addr: Address) {
    let listener = Listener::bind(&addr).await.unwrap();
    loop {
        let mut s = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let r = FrameReader::default();
            while let Ok(f) = r.read_frame(&mut s).await {
                if write_frame(&mut s, &f).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn start(
    config: impl FnOnce(&mut ProxyConfig),
    with_enclave: bool,
) -> (tempfile::TempDir, Address) {
    let dir = tempfile::tempdir().unwrap();
    let enclave = Address::Unix(dir.path().join("enclave.sock"));
    let proxy = Address::Unix(dir.path().join("proxy.sock"));
    if with_enclave {
        tokio::spawn(echo_enclave(enclave.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut cfg = ProxyConfig::new(enclave);
    cfg.connect_timeout = Duration::from_millis(300);
    config(&mut cfg);
    let listener = Listener::bind(&proxy).await.unwrap();
    tokio::spawn(run(listener, cfg));
    (dir, proxy)
}

async fn refusal(stream: &mut enclosure_protocol::Stream) -> EnclaveErrorCode {
    let frame = FrameReader::default().read_frame(stream).await.unwrap();
    ResponseEnvelope::decode(&frame)
        .unwrap()
        .result
        .unwrap_err()
        .code
}

#[tokio::test]
async fn frames_pass_through_untouched_even_large_ones() {
    let (_dir, proxy) = start(|_| {}, true).await;
    let mut s = connect(&proxy).await.unwrap();
    let r = FrameReader::default();
    for body in [b"not even CBOR".to_vec(), vec![0xa5; 200_000]] {
        write_frame(&mut s, &body).await.unwrap();
        assert_eq!(r.read_frame(&mut s).await.unwrap(), body);
    }
}

#[tokio::test]
async fn connections_over_the_cap_are_refused() {
    let (_dir, proxy) = start(|c| c.max_connections = 1, true).await;
    let mut first = connect(&proxy).await.unwrap();
    write_frame(&mut first, b"hold").await.unwrap();
    FrameReader::default().read_frame(&mut first).await.unwrap();
    let mut second = connect(&proxy).await.unwrap();
    assert_eq!(refusal(&mut second).await, EnclaveErrorCode::Unavailable);
    // The first connection still works.
    write_frame(&mut first, b"still here").await.unwrap();
    assert_eq!(
        FrameReader::default().read_frame(&mut first).await.unwrap(),
        b"still here"
    );
}

#[tokio::test]
async fn idle_clients_are_disconnected() {
    let (_dir, proxy) = start(|c| c.idle_timeout = Duration::from_millis(200), true).await;
    let mut s = connect(&proxy).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the proxy closes an idle connection")
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn an_unreachable_enclave_is_reported_in_protocol_terms() {
    let (_dir, proxy) = start(|_| {}, false).await;
    let mut s = connect(&proxy).await.unwrap();
    assert_eq!(refusal(&mut s).await, EnclaveErrorCode::Unavailable);
}
