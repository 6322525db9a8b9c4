//! TLS through a real socket: a self-signed certificate made for the test, a rustls client
//! that trusts only it, and a plain-HTTP client that gets nothing.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn the_api_answers_over_tls_and_not_in_plain_text() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let dir = tempfile::tempdir().expect("dir");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
    let config = subledger_server::tls::load_config(&cert_path, &key_path).expect("tls config");

    let server = Server::new();
    let primary = server.funded_primary("12.5").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(subledger_server::serve_tls(
        listener,
        config,
        Arc::clone(&server.state),
        async move {
            let _ = stopped.await;
        },
    ));

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(certified.cert.der().to_vec()))
        .expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let request = request_text(
        "GET",
        "/account/get-balance",
        Some(&primary.authorization()),
        &[],
        "",
    );
    tls.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw).await;
    let response = parse_response(&raw, "/account/get-balance").expect("response");
    assert_eq!(response.status, 200);
    assert!(
        response.text.contains("\"value\":12.5"),
        "{}",
        response.text
    );

    // Plain HTTP to the TLS port is not answered as HTTP.
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        plain.read_to_end(&mut answer),
    )
    .await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plain text must not be served"
    );

    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), serving)
        .await
        .expect("shutdown")
        .expect("task")
        .expect("serve");
}
