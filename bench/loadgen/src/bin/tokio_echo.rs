//! The ceiling row of oxloop's echo benchmarks: a TCP echo server on a single-thread tokio
//! runtime (current_thread), and the same over TLS (rustls) when given a certificate.
//!
//!     tokio-echo [--tls-cert PEM --tls-key PEM]
//!
//! Listens on 127.0.0.1, ports chosen by the kernel, and prints them as one JSON line:
//! `{"pid": P, "echo": PORT, "tls": PORT or null}`. Exits when stdin closes.
//!
//! The plain echo reads into one buffer shared by every connection and writes straight
//! back; only what the socket doesn't take at once is copied and awaited. An idle
//! connection then holds no buffer, as in the event loops it is compared with (the memory
//! workload holds 10k of them).

use std::cell::RefCell;
use std::io::{self, BufRead, Write};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 256 * 1024]);
}

async fn echo_plain(mut s: TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    loop {
        s.readable().await?;
        // Read and write back without an await in between, so the shared buffer is free
        // again before any other connection runs.
        let step = BUF.with(|b| -> io::Result<Option<Vec<u8>>> {
            let mut b = b.borrow_mut();
            let n = match s.try_read(&mut b[..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut done = 0;
            while done < n {
                match s.try_write(&b[done..n]) {
                    Ok(k) => done += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            Ok((done < n).then(|| b[done..n].to_vec()))
        });
        match step {
            Ok(Some(rest)) => {
                s.write_all(&rest).await?;
            }
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

async fn echo_tls(s: TcpStream, acceptor: tokio_rustls::TlsAcceptor) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut s = acceptor.accept(s).await?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n]).await?;
    }
}

fn tls_acceptor(cert: &str, key: &str) -> tokio_rustls::TlsAcceptor {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("read certificate")
        .collect::<Result<_, _>>()
        .expect("parse certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("read private key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate and key");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let tls = match (opt("--tls-cert"), opt("--tls-key")) {
        (Some(c), Some(k)) => Some(tls_acceptor(&c, &k)),
        (None, None) => None,
        _ => panic!("--tls-cert and --tls-key go together"),
    };
    // Exit when the harness closes our stdin (or goes away).
    std::thread::spawn(|| {
        let mut line = String::new();
        while io::stdin().lock().read_line(&mut line).unwrap_or(0) > 0 {
            line.clear();
        }
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_listener = match &tls {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let tls_port = tls_listener.as_ref().map_or("null".to_string(), |l| {
            l.local_addr().unwrap().port().to_string()
        });
        println!(
            "{{\"pid\": {}, \"echo\": {}, \"tls\": {}}}",
            std::process::id(),
            plain.local_addr().unwrap().port(),
            tls_port
        );
        io::stdout().flush().unwrap();
        if let (Some(l), Some(acceptor)) = (tls_listener, tls) {
            tokio::spawn(async move {
                loop {
                    let (s, _) = l.accept().await.expect("accept");
                    let a = acceptor.clone();
                    tokio::spawn(async move {
                        let _ = echo_tls(s, a).await;
                    });
                }
            });
        }
        loop {
            let (s, _) = plain.accept().await.expect("accept");
            tokio::spawn(async move {
                let _ = echo_plain(s).await;
            });
        }
    });
}
