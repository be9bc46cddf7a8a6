//! TLS for tests: a self-signed certificate for `localhost` and 127.0.0.1, and a proxy that terminates TLS in front of a plain service (the local ClickHouse, say).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};
use tokio::net::{TcpListener, TcpStream};

use crate::{unique_name, HarnessError};

/// A self-signed certificate (its own CA) valid for two days, with its key,
/// as PEM files in a directory of its own.
pub struct SelfSigned {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The certificate's PEM, for a client's trust store.
    pub cert_pem: Vec<u8>,
}

impl SelfSigned {
    /// Makes a certificate for `localhost` and `127.0.0.1`.
    pub fn localhost() -> Result<Self, HarnessError> {
        let failed = |e: ErrorStack| HarnessError(format!("making a test certificate: {e}"));
        let key = PKey::from_rsa(Rsa::generate(2048).map_err(failed)?).map_err(failed)?;
        let mut name = X509NameBuilder::new().map_err(failed)?;
        name.append_entry_by_text("CN", "localhost")
            .map_err(failed)?;
        let name = name.build();
        let mut serial = BigNum::new().map_err(failed)?;
        serial
            .rand(64, MsbOption::MAYBE_ZERO, false)
            .map_err(failed)?;
        let mut builder = X509::builder().map_err(failed)?;
        builder.set_version(2).map_err(failed)?;
        let serial = serial.to_asn1_integer().map_err(failed)?;
        builder.set_serial_number(&serial).map_err(failed)?;
        builder.set_subject_name(&name).map_err(failed)?;
        builder.set_issuer_name(&name).map_err(failed)?;
        builder.set_pubkey(&key).map_err(failed)?;
        let not_before = Asn1Time::days_from_now(0).map_err(failed)?;
        let not_after = Asn1Time::days_from_now(2).map_err(failed)?;
        builder.set_not_before(&not_before).map_err(failed)?;
        builder.set_not_after(&not_after).map_err(failed)?;
        builder
            .append_extension(
                BasicConstraints::new()
                    .critical()
                    .ca()
                    .build()
                    .map_err(failed)?,
            )
            .map_err(failed)?;
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&builder.x509v3_context(None, None))
            .map_err(failed)?;
        builder.append_extension(san).map_err(failed)?;
        builder
            .sign(&key, MessageDigest::sha256())
            .map_err(failed)?;
        let cert_pem = builder.build().to_pem().map_err(failed)?;
        let key_pem = key.private_key_to_pem_pkcs8().map_err(failed)?;

        let written = |e: std::io::Error| HarnessError(format!("writing a test certificate: {e}"));
        let dir = std::env::temp_dir().join(unique_name("tls"));
        std::fs::create_dir_all(&dir).map_err(written)?;
        let cert_file = dir.join("cert.pem");
        let key_file = dir.join("key.pem");
        std::fs::write(&cert_file, &cert_pem).map_err(written)?;
        std::fs::write(&key_file, key_pem).map_err(written)?;
        Ok(Self {
            cert_file,
            key_file,
            cert_pem,
        })
    }
}

/// Accepts TLS connections with a certificate and forwards the plain bytes
/// to `upstream`, for as long as the test process lives.
pub struct TlsTerminator {
    /// Where TLS clients connect.
    pub address: SocketAddr,
}

impl TlsTerminator {
    /// Starts on a free loopback port, presenting `certificate`.
    pub async fn start(
        certificate: &SelfSigned,
        upstream: SocketAddr,
    ) -> Result<Self, HarnessError> {
        let failed = |e: ErrorStack| HarnessError(format!("setting up the tls proxy: {e}"));
        let mut acceptor =
            SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(failed)?;
        acceptor
            .set_certificate_chain_file(&certificate.cert_file)
            .map_err(failed)?;
        acceptor
            .set_private_key_file(&certificate.key_file, openssl::ssl::SslFiletype::PEM)
            .map_err(failed)?;
        let acceptor = Arc::new(acceptor.build());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| HarnessError(format!("binding the tls proxy: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| HarnessError(format!("binding the tls proxy: {e}")))?;
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(ssl) = Ssl::new(acceptor.context()) else {
                        return;
                    };
                    let Ok(mut client) = tokio_openssl::SslStream::new(ssl, client) else {
                        return;
                    };
                    // A client that refuses the certificate ends here.
                    if Pin::new(&mut client).accept().await.is_err() {
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Ok(Self { address })
    }
}
