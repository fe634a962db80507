//! Load generator for oxloop's benchmark (`bench/bench.py`).
//!
//! One tokio current-thread runtime (the client should use one core and leave the other to
//! the server), `--conns` connections, one request in flight on each. Every byte is checked:
//! an echo must come back identical (each request carries its sequence number, so a
//! reordered or stale echo fails too), an HTTP response must be `200` with the advertised
//! `Content-Length` and the expected body. A wrong byte, a short read or a closed
//! connection ends the run with exit status 2 and a message on stderr.
//!
//! Modes:
//!   echo  --addr A --conns N --size BYTES [--tls-ca PEM] (--warmup S --duration S | --requests N)
//!   http  --addr A --conns N [--expect-body TEXT] (--warmup S --duration S | --requests N)
//!   hold  --addr A --conns N   connect N connections, one 16-byte echo on each, print
//!                               `{"held": N}`, keep them open until stdin closes
//!
//! echo/http run `--warmup` seconds, then measure for `--duration` seconds: requests that
//! complete in that window are counted and their latencies kept. With `--server-pid`, the
//! server's utime/stime (clock ticks, /proc/PID/stat) and its exact run time (ns, summed
//! over /proc/PID/task/*/schedstat; -1 where the kernel has no schedstat) are read at both
//! ends of the window.
//! With `--requests N` instead (the fixed-count mode, for instruction counts under
//! callgrind), echo/http do exactly N requests in all, spread over the connections (the
//! first N % conns connections do one more), every one checked and counted, with no warm-up,
//! and exit when the last one is answered; `--lockstep PID` adds: one request at a time,
//! round-robin over the connections, each sent only when process PID (the server) sleeps, so
//! the server's work per request does not depend on timing. The result is one JSON line on
//! stdout.

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::process::exit;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Messages up to this size are written, then read back; larger ones are written and read
/// at the same time (a server that echoes while it reads could otherwise fill both socket
/// buffers and wait on the client forever).
const SEQUENTIAL_MAX: usize = 16 * 1024;

struct Args {
    mode: String,
    addr: SocketAddr,
    conns: usize,
    size: usize,
    warmup: f64,
    duration: f64,
    server_pid: Option<u32>,
    requests: Option<u64>,
    lockstep: Option<String>,
    tls_ca: Option<String>,
    expect_body: Option<String>,
}

fn usage(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    eprintln!(
        "usage: loadgen echo|http|hold --addr HOST:PORT [--conns N] [--size BYTES] \
         [--warmup S] [--duration S] [--requests N [--lockstep PID]] [--server-pid PID] [--tls-ca PEM] [--expect-body TEXT]"
    );
    exit(64)
}

fn num<T: std::str::FromStr>(flag: &str, val: &str) -> T {
    val.parse()
        .unwrap_or_else(|_| usage(&format!("bad value for {flag}: {val:?}")))
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_else(|| usage("missing mode"));
    if !matches!(mode.as_str(), "echo" | "http" | "hold") {
        usage(&format!("unknown mode {mode:?}"));
    }
    let mut a = Args {
        mode,
        addr: "127.0.0.1:0".parse().unwrap(),
        conns: 1,
        size: 1024,
        warmup: 0.3,
        duration: 1.0,
        server_pid: None,
        requests: None,
        lockstep: None,
        tls_ca: None,
        expect_body: None,
    };
    let mut have_addr = false;
    while let Some(flag) = it.next() {
        let val = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--addr" => {
                a.addr = val.parse().unwrap_or_else(|_| usage("bad --addr"));
                have_addr = true;
            }
            "--conns" => a.conns = num(&flag, &val),
            "--size" => a.size = num(&flag, &val),
            "--warmup" => a.warmup = num(&flag, &val),
            "--duration" => a.duration = num(&flag, &val),
            "--server-pid" => a.server_pid = Some(num(&flag, &val)),
            "--requests" => a.requests = Some(num(&flag, &val)),
            "--lockstep" => a.lockstep = Some(num::<u32>(&flag, &val).to_string()),
            "--tls-ca" => a.tls_ca = Some(val),
            "--expect-body" => a.expect_body = Some(val),
            _ => usage(&format!("unknown option {flag}")),
        }
    }
    if !have_addr {
        usage("--addr is required");
    }
    if a.conns == 0 {
        usage("--conns must be at least 1");
    }
    if a.requests == Some(0) {
        usage("--requests must be at least 1");
    }
    if a.lockstep.is_some() && (a.requests.is_none() || a.size > SEQUENTIAL_MAX) {
        usage("--lockstep needs --requests, and --size at most 16 KiB");
    }
    a
}

/// Fail loudly: a benchmark on a server that returns wrong bytes measures nothing.
fn fail(what: &str) -> ! {
    eprintln!("loadgen: FAILED: {what}");
    let _ = io::stderr().flush();
    exit(2)
}

/// (utime, stime) in clock ticks of a process (all its threads), from /proc/PID/stat.
fn proc_cpu_ticks(pid: &str) -> (u64, u64) {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| fail(&format!("cannot read {path}: {e}")));
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')').map_or(0, |i| i + 1)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let num = |i: usize| -> u64 { f.get(i).and_then(|s| s.parse().ok()).unwrap_or(0) };
    (num(11), num(12))
}

/// Nanoseconds a process (all its threads) has run on a CPU, from
/// /proc/PID/task/*/schedstat (the scheduler's own accounting: exact, unlike the tick-
/// sampled utime/stime). None where schedstat is missing (CONFIG_SCHED_INFO off).
fn proc_cpu_ns(pid: &str) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        // A thread that ended between the listing and the read no longer counts.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

struct Shared {
    phase: Cell<u8>,
    latencies_ns: RefCell<Vec<u64>>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

async fn connect(args: &Args, tls: &Option<tokio_rustls::TlsConnector>) -> Box<dyn Stream> {
    let tcp = TcpStream::connect(args.addr)
        .await
        .unwrap_or_else(|e| fail(&format!("connect to {}: {e}", args.addr)));
    tcp.set_nodelay(true)
        .unwrap_or_else(|e| fail(&format!("TCP_NODELAY: {e}")));
    match tls {
        None => Box::new(tcp),
        Some(connector) => {
            let name = ServerName::try_from("localhost").unwrap();
            let s = connector
                .connect(name, tcp)
                .await
                .unwrap_or_else(|e| fail(&format!("TLS handshake: {e}")));
            Box::new(s)
        }
    }
}

fn tls_connector(ca: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| fail(&format!("read {ca}: {e}")));
    for cert in certs {
        let cert = cert.unwrap_or_else(|e| fail(&format!("parse {ca}: {e}")));
        roots
            .add(cert)
            .unwrap_or_else(|e| fail(&format!("CA certificate {ca}: {e}")));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn fill_payload(buf: &mut [u8], conn: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i.wrapping_mul(31) ^ conn.wrapping_mul(7)) as u8;
    }
}

fn stamp(buf: &mut [u8], seq: u64) {
    let n = buf.len().min(8);
    buf[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

fn check_echo(conn: usize, seq: u64, sent: &[u8], got: &[u8]) {
    if sent != got {
        let at = sent.iter().zip(got).position(|(a, b)| a != b).unwrap_or(0);
        fail(&format!(
            "connection {conn}, request {seq}: echo differs at byte {at} of {} \
             (sent {:#04x}, got {:#04x})",
            sent.len(),
            sent[at],
            got[at]
        ));
    }
}

fn read_err(conn: usize, e: io::Error) -> ! {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        fail(&format!(
            "connection {conn}: server closed the connection mid-response"
        ))
    }
    fail(&format!("connection {conn}: read: {e}"))
}

fn record(shared: &Shared, phase: u8, t0: Instant) {
    // Count a request only if the whole of it fell inside the measured window.
    if phase == MEASURE && shared.phase.get() == MEASURE {
        shared
            .latencies_ns
            .borrow_mut()
            .push(t0.elapsed().as_nanos() as u64);
    }
}

/// How many requests connection `conn` makes: unlimited (until the phase is STOP) without
/// `--requests`, else its share of the total.
fn quota(requests: Option<u64>, conns: usize, conn: usize) -> u64 {
    match requests {
        None => u64::MAX,
        Some(n) => n / conns as u64 + u64::from((conn as u64) < n % conns as u64),
    }
}

/// One echo request of at most SEQUENTIAL_MAX bytes: write it, read it back, check it.
async fn echo_once(
    s: &mut Box<dyn Stream>,
    conn: usize,
    seq: u64,
    out: &mut [u8],
    back: &mut [u8],
) {
    stamp(out, seq);
    if let Err(e) = s.write_all(out).await {
        fail(&format!("connection {conn}: write: {e}"));
    }
    if let Err(e) = s.read_exact(back).await {
        read_err(conn, e);
    }
    check_echo(conn, seq, out, back);
}

async fn echo_conn(
    mut s: Box<dyn Stream>,
    conn: usize,
    size: usize,
    quota: u64,
    shared: Rc<Shared>,
) {
    let mut out = vec![0u8; size];
    let mut back = vec![0u8; size];
    fill_payload(&mut out, conn);
    let mut seq = 0u64;
    if size <= SEQUENTIAL_MAX {
        while seq < quota {
            let phase = shared.phase.get();
            if phase == STOP {
                return;
            }
            let t0 = Instant::now();
            echo_once(&mut s, conn, seq, &mut out, &mut back).await;
            record(&shared, phase, t0);
            seq += 1;
        }
    }
    if seq == quota {
        return;
    }
    let (mut rd, mut wr) = tokio::io::split(s);
    while seq < quota {
        let phase = shared.phase.get();
        if phase == STOP {
            return;
        }
        stamp(&mut out, seq);
        let t0 = Instant::now();
        let (w, r) = tokio::join!(wr.write_all(&out), rd.read_exact(&mut back));
        if let Err(e) = w {
            fail(&format!("connection {conn}: write: {e}"));
        }
        if let Err(e) = r {
            read_err(conn, e);
        }
        check_echo(conn, seq, &out, &back);
        record(&shared, phase, t0);
        seq += 1;
    }
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

const HTTP_REQUEST: &[u8] =
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: oxloop-loadgen\r\n\r\n";

/// Buffers an HTTP connection reuses from request to request.
struct HttpBufs {
    buf: Vec<u8>,
    chunk: Vec<u8>,
}

impl HttpBufs {
    fn new() -> Self {
        HttpBufs {
            buf: Vec::with_capacity(4096),
            chunk: vec![0u8; 4096],
        }
    }
}

/// One HTTP request: send it, read the response, check status, length and body.
async fn http_once(
    s: &mut Box<dyn Stream>,
    conn: usize,
    seq: u64,
    body: Option<&[u8]>,
    bufs: &mut HttpBufs,
) {
    let HttpBufs { buf, chunk } = bufs;
    if let Err(e) = s.write_all(HTTP_REQUEST).await {
        fail(&format!("connection {conn}: write: {e}"));
    }
    buf.clear();
    let mut head_len = None;
    let mut total = None;
    loop {
        if head_len.is_none() {
            if let Some(h) = find_header_end(buf) {
                let head = std::str::from_utf8(&buf[..h]).unwrap_or_else(|_| {
                    fail(&format!("connection {conn}: response head is not UTF-8"))
                });
                let status = head.split("\r\n").next().unwrap_or("");
                if !status.starts_with("HTTP/1.1 200 ") {
                    fail(&format!("connection {conn}: status line {status:?}"));
                }
                let mut len = None;
                for line in head.split("\r\n").skip(1) {
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse::<usize>().ok();
                        }
                    }
                }
                let len = len.unwrap_or_else(|| {
                    fail(&format!("connection {conn}: no Content-Length in {head:?}"))
                });
                head_len = Some(h);
                total = Some(h + len);
            }
        }
        if let Some(t) = total {
            if buf.len() >= t {
                break;
            }
        }
        match s.read(chunk).await {
            Ok(0) => fail(&format!("connection {conn}: server closed the connection")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => read_err(conn, e),
        }
    }
    let (h, t) = (head_len.unwrap(), total.unwrap());
    if buf.len() != t {
        fail(&format!(
            "connection {conn}, request {seq}: {} bytes past the response",
            buf.len() - t
        ));
    }
    if let Some(b) = body {
        if &buf[h..t] != b {
            fail(&format!(
                "connection {conn}, request {seq}: body {:?}",
                String::from_utf8_lossy(&buf[h..t])
            ));
        }
    }
}

async fn http_conn(
    mut s: Box<dyn Stream>,
    conn: usize,
    body: Option<Vec<u8>>,
    quota: u64,
    shared: Rc<Shared>,
) {
    let mut bufs = HttpBufs::new();
    let mut seq = 0u64;
    while seq < quota {
        let phase = shared.phase.get();
        if phase == STOP {
            return;
        }
        let t0 = Instant::now();
        http_once(&mut s, conn, seq, body.as_deref(), &mut bufs).await;
        record(&shared, phase, t0);
        seq += 1;
    }
}

/// Block until process `pid` sleeps in the kernel (state S in /proc/PID/stat): a
/// single-threaded server then waits for events, having finished with the last ones.
fn wait_idle(pid: &str) {
    let path = format!("/proc/{pid}/stat");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| fail(&format!("cannot read {path}: {e}")));
        let state = text[text.rfind(')').map_or(0, |i| i + 1)..]
            .split_whitespace()
            .next();
        if state == Some("S") {
            return;
        }
        if start.elapsed() > Duration::from_secs(120) {
            fail(&format!(
                "process {pid} did not go idle in 120 s (state {state:?})"
            ));
        }
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// `--lockstep PID`: the requests one at a time, round-robin over the connections, each
/// sent only once the server (PID) sleeps. The server then handles exactly one request per
/// wake-up, so what it executes per request does not depend on timing.
async fn lockstep(mut streams: Vec<Box<dyn Stream>>, args: &Args, pid: &str, shared: &Shared) {
    let n = args.requests.unwrap_or(0);
    let conns = streams.len();
    let mut outs: Vec<Vec<u8>> = (0..conns)
        .map(|i| {
            let mut out = vec![0u8; args.size];
            fill_payload(&mut out, i);
            out
        })
        .collect();
    let mut back = vec![0u8; args.size];
    let body = args.expect_body.as_deref().map(str::as_bytes);
    let mut bufs = HttpBufs::new();
    for k in 0..n {
        let conn = (k % conns as u64) as usize;
        let seq = k / conns as u64;
        wait_idle(pid);
        let t0 = Instant::now();
        let s = &mut streams[conn];
        if args.mode == "http" {
            http_once(s, conn, seq, body, &mut bufs).await;
        } else {
            echo_once(s, conn, seq, &mut outs[conn], &mut back).await;
        }
        record(shared, MEASURE, t0);
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn run_load(args: Args) {
    let tls = args.tls_ca.as_deref().map(tls_connector);
    let fixed = args.requests.is_some();
    let shared = Rc::new(Shared {
        // A fixed count has no warm-up: every request is measured.
        phase: Cell::new(if fixed { MEASURE } else { WARMUP }),
        latencies_ns: RefCell::new(Vec::with_capacity(1 << 20)),
    });
    let mut streams = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        streams.push(connect(&args, &tls).await);
    }
    let mut tasks = Vec::with_capacity(args.conns);
    let body = args.expect_body.clone().map(String::into_bytes);
    let lockstep_streams = if args.lockstep.is_some() {
        std::mem::take(&mut streams)
    } else {
        Vec::new()
    };
    for (i, s) in streams.into_iter().enumerate() {
        let sh = shared.clone();
        let q = quota(args.requests, args.conns, i);
        tasks.push(if args.mode == "http" {
            tokio::task::spawn_local(http_conn(s, i, body.clone(), q, sh))
        } else {
            tokio::task::spawn_local(echo_conn(s, i, args.size, q, sh))
        });
    }
    if !fixed {
        tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    }
    let pid = args.server_pid.map(|p| p.to_string());
    let server0 = pid.as_deref().map(proc_cpu_ticks);
    let server_ns0 = pid.as_deref().and_then(proc_cpu_ns);
    let self0 = proc_cpu_ticks("self");
    let t0 = Instant::now();
    shared.phase.set(MEASURE);
    if let Some(p) = &args.lockstep {
        lockstep(lockstep_streams, &args, p, &shared).await;
    } else if fixed {
        // Every task ends after its quota (a failure exits the process).
        for t in tasks.drain(..) {
            t.await
                .unwrap_or_else(|e| fail(&format!("connection task: {e}")));
        }
    } else {
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    }
    shared.phase.set(STOP);
    let elapsed = t0.elapsed().as_secs_f64();
    let server1 = pid.as_deref().map(proc_cpu_ticks);
    let server_ns1 = pid.as_deref().and_then(proc_cpu_ns);
    let self1 = proc_cpu_ticks("self");
    let mut lat = shared.latencies_ns.take();
    lat.sort_unstable();
    if let Some(n) = args.requests {
        if lat.len() as u64 != n {
            fail(&format!("{} requests counted, {n} asked for", lat.len()));
        }
    }
    let (su, ss) = match (server0, server1) {
        (Some(a), Some(b)) => (b.0 - a.0, b.1 - a.1),
        _ => (0, 0),
    };
    // -1: not measured (no schedstat).
    let server_ns = match (server_ns0, server_ns1) {
        (Some(a), Some(b)) => b.saturating_sub(a) as i64,
        _ => -1,
    };
    println!(
        "{{\"requests\": {}, \"elapsed\": {:.6}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \
         \"server_utime_ticks\": {}, \"server_stime_ticks\": {}, \"server_cpu_ns\": {}, \
         \"client_utime_ticks\": {}, \"client_stime_ticks\": {}}}",
        lat.len(),
        elapsed,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        su,
        ss,
        server_ns,
        self1.0 - self0.0,
        self1.1 - self0.1
    );
    // Connections close when the runtime drops their tasks.
    drop(tasks);
}

async fn hold(args: Args) {
    let tls = None;
    let mut held: Vec<Box<dyn Stream>> = Vec::with_capacity(args.conns);
    // Connect in waves, so the server's accept backlog never overflows.
    let wave = 100;
    let mut i = 0;
    while i < args.conns {
        let n = wave.min(args.conns - i);
        let mut wave_tasks = Vec::with_capacity(n);
        for k in 0..n {
            let conn = i + k;
            let mut s = connect(&args, &tls).await;
            wave_tasks.push(tokio::task::spawn_local(async move {
                let mut out = [0u8; 16];
                fill_payload(&mut out, conn);
                let mut back = [0u8; 16];
                if let Err(e) = s.write_all(&out).await {
                    fail(&format!("connection {conn}: write: {e}"));
                }
                if let Err(e) = s.read_exact(&mut back).await {
                    read_err(conn, e);
                }
                check_echo(conn, 0, &out, &back);
                s
            }));
        }
        for t in wave_tasks {
            held.push(t.await.unwrap());
        }
        i += n;
    }
    println!("{{\"held\": {}}}", held.len());
    io::stdout().flush().unwrap();
    // Keep them open (idle) until the harness closes our stdin.
    let mut line = String::new();
    let _ = io::stdin().lock().read_line(&mut line);
    drop(held);
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    if args.mode == "hold" {
        local.block_on(&rt, hold(args));
    } else {
        local.block_on(&rt, run_load(args));
    }
}

#[cfg(test)]
mod tests {
    use super::quota;

    #[test]
    fn quota_spreads_a_fixed_count_over_the_connections() {
        let shares: Vec<u64> = (0..4).map(|c| quota(Some(10), 4, c)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        assert_eq!((0..10).map(|c| quota(Some(3), 10, c)).sum::<u64>(), 3);
        assert_eq!(quota(None, 10, 3), u64::MAX);
    }
}
