//! Helpers shared by the TLS test binaries: a PKI in OpenBao, a TLS server over loopback that
//! says which client certificate it saw, and clients that handshake once and say which server
//! certificate they saw.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use credswap::provider::{VaultAuth, VaultSession};
use credswap::testkit::OpenBaoServer;
use credswap::tls::rustls;
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The PKI role every test issues from (it allows `localhost`, its subdomains and IP SANs).
pub const ROLE: &str = "loopback";

pub struct Pki {
    pub bao: OpenBaoServer,
    /// The root CA's certificate (PEM).
    pub ca_pem: String,
    pub session: VaultSession,
}

/// A fresh OpenBao with the PKI engine at `pki` and role [`ROLE`] capped at `max_ttl`.
pub async fn pki(max_ttl: Duration) -> Pki {
    let bao = tokio::task::spawn_blocking(OpenBaoServer::start)
        .await
        .unwrap()
        .expect("start OpenBao");
    let (bao, ca_pem) = tokio::task::spawn_blocking(move || {
        let ca = bao.enable_pki(ROLE, max_ttl).expect("enable PKI");
        (bao, ca)
    })
    .await
    .unwrap();
    let session = VaultSession::connect(
        bao.addr(),
        VaultAuth::Token(bao.root_token().to_owned().into()),
    )
    .await
    .expect("root login");
    Pki {
        bao,
        ca_pem,
        session,
    }
}

/// The tests' own rustls provider (explicit: the test build links more than one).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn roots(pems: &[&str]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for pem in pems {
        for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(der.unwrap()).unwrap();
        }
    }
    roots
}

/// A client that trusts `roots` and presents no certificate. Sessions are not resumed, so every
/// handshake is a full one and shows the certificate served at that moment.
pub fn plain_client(roots: RootCertStore) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

/// What one side saw of the other's leaf certificate, at the moment of the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub serial: String,
    /// Within its validity at the handshake.
    pub valid: bool,
}

impl Leaf {
    fn of(der: &CertificateDer<'_>) -> Leaf {
        let (_, certificate) = X509Certificate::from_der(der.as_ref()).unwrap();
        let validity = certificate.validity();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        Leaf {
            serial: serial_of(certificate.raw_serial()),
            valid: validity.not_before.timestamp() <= now && now <= validity.not_after.timestamp(),
        }
    }

    /// The server's reply: `<serial> <valid>`, or `none`.
    fn parse(reply: &str) -> Option<Leaf> {
        let (serial, valid) = reply.trim().split_once(' ')?;
        Some(Leaf {
            serial: serial.to_owned(),
            valid: valid == "valid",
        })
    }

    fn reply(leaf: Option<&Leaf>) -> String {
        match leaf {
            Some(leaf) => format!(
                "{} {}",
                leaf.serial,
                if leaf.valid { "valid" } else { "invalid" }
            ),
            None => "none".to_owned(),
        }
    }
}

/// A serial as Vault writes it (colon-separated hex, no leading zero byte).
pub fn serial_of(raw: &[u8]) -> String {
    let start = raw
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    raw[start..]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// How the server answers once the handshake is done.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// Writes `<client serial> <valid|invalid>` (or `none`) and closes.
    Line,
    /// Reads an HTTP/1.1 request and answers 200 with that line as the body.
    Http,
}

/// A TLS server on a loopback port, stopped on drop.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(config: Arc<ServerConfig>, reply: Reply) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let _connection = tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(Leaf::of);
                let line = Leaf::reply(client.as_ref());
                match reply {
                    Reply::Line => {
                        let _ = tls.write_all(line.as_bytes()).await;
                    }
                    Reply::Http => {
                        let mut request = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{line}",
                            line.len()
                        );
                        let _ = tls.write_all(response.as_bytes()).await;
                    }
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    Server { addr, task }
}

/// What a client saw: the server's leaf, and the server's reply (the client leaf it saw).
#[derive(Debug)]
pub struct Seen {
    pub server: Leaf,
    pub client: Option<Leaf>,
}

/// One full handshake with `addr` as `localhost`, then the server's reply.
pub async fn handshake(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<Seen, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let connector = TlsConnector::from(Arc::clone(config));
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let server = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(Leaf::of)
        .ok_or("the server presented no certificate")?;
    let mut reply = String::new();
    let _ = tls
        .read_to_string(&mut reply)
        .await
        .map_err(|e| format!("reading the reply: {e}"))?;
    Ok(Seen {
        server,
        client: Leaf::parse(&reply),
    })
}

/// The client leaf a reply line (an HTTP body) names.
pub fn client_leaf(body: &str) -> Option<Leaf> {
    Leaf::parse(body)
}
