//! The listener speaks HTTPS with a certificate and key from PEM files, and the client
//! fetches through it with the certificate as its only root.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::*;
use p4p_itracker::client::{AltoClient, FetchOutcome};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

#[test]
#[ignore = "needs the openssl command to make a certificate (scripts/test installs it)"]
fn alto_over_https_with_a_self_signed_certificate() {
    let dir = scratch("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    assert!(
        made.as_ref().is_ok_and(|o| o.status.success()),
        "openssl could not make a test certificate: {made:?}"
    );
    let t = start("loopback.toml", |c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    });
    assert!(t.server.url().starts_with("https://"));
    let pem = std::fs::read(&cert).expect("cert");
    let root = Certificate::from_pem(&pem).expect("pem").to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::new(vec![root])))
                .build(),
        )
        .build()
        .into();
    let mut client = AltoClient::with_agent(t.server.url(), agent);
    let fetched = client.fetch();
    assert!(
        matches!(fetched, Ok(FetchOutcome::Updated(_))),
        "{fetched:?}"
    );
    // Plain HTTP to the TLS listener does not get a map.
    let plain = ureq::get(&format!("http://{}/networkmap", t.server.addr())).call();
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));
}
