//! The webhook: the alert a run sends, its retries and certificate check, its secret kept out
//! of the logs, and its way to the server: through the proxy the environment names (or not,
//! as `NO_PROXY` says), and past a dead address of a host name to the next one.
//!
//! The transport tests run the job as `notify-failure`, which sends its alert without a
//! database. Every server here is a real socket on loopback: the proxy forwards only there,
//! and the host names the job resolves itself are `localhost` or come from a hosts file of
//! the test's own.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::thread;

use common::astegni::Astegni;
use openssl::ssl::{SslAcceptor, SslMethod};

/// A request the webhook server got.
struct Request {
    /// `POST /path HTTP/1.1`
    line: String,
    host: String,
    content_type: String,
    body: String,
}

/// Serves the connections `listener` accepts, over TLS with `tls`, one at a time: answers each
/// request with the next status of `statuses` and yields it.
fn webhook_server(
    listener: TcpListener,
    tls: Option<SslAcceptor>,
    statuses: Vec<u16>,
) -> mpsc::Receiver<Request> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for status in statuses {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let request = match &tls {
                Some(acceptor) => match acceptor.accept(stream) {
                    Ok(stream) => answer(stream, status),
                    Err(_) => continue,
                },
                None => answer(stream, status),
            };
            if sender.send(request).is_err() {
                return;
            }
        }
    });
    receiver
}

fn answer(stream: impl Read + Write, status: u16) -> Request {
    let mut reader = BufReader::new(stream);
    let (line, headers) = read_head(&mut reader);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    let length = header("content-length").parse().unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("request body");
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
    let _ = stream.flush();
    Request {
        line,
        host: header("host"),
        content_type: header("content-type"),
        body: String::from_utf8(body).expect("utf-8 body"),
    }
}

/// The request line and the headers (names in lower case) of an HTTP request.
fn read_head(reader: &mut impl BufRead) -> (String, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("request line");
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("header");
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').expect("a header line");
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    (line.trim_end().to_owned(), headers)
}

/// What a client asked the proxy.
#[derive(Debug)]
struct Connect {
    /// `CONNECT host:port HTTP/1.1`
    line: String,
    authorization: Option<String>,
}

/// A minimal HTTP proxy on 127.0.0.1, as ureq uses one for http and https URLs alike: it reads
/// a `CONNECT host:port` request, reports it, and tunnels to 127.0.0.1:port whatever the host
/// (the tests reach nothing but loopback), or answers 502 if nothing listens there.
struct Proxy {
    port: u16,
    requests: mpsc::Receiver<Connect>,
}

/// Asked after a run (see [`Proxy::requests_so_far`]); nothing listens on port 0.
const SENTINEL: &str = "CONNECT sentinel.invalid:0 HTTP/1.1";

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (sender, requests) = mpsc::channel();
        // Heads are read in the order connections were accepted; tunnels run on their own
        // threads, so a retry's new connection is served while an old tunnel lingers.
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else {
                    return;
                };
                let mut reader = BufReader::new(client);
                let (line, headers) = read_head(&mut reader);
                let authorization = headers
                    .into_iter()
                    .find(|(name, _)| name == "proxy-authorization")
                    .map(|(_, value)| value);
                let target_port = line
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|target| target.rsplit_once(':'))
                    .and_then(|(_, port)| port.parse::<u16>().ok());
                // What the client sent after its head: nothing, as it waits for our answer.
                let early = reader.buffer().to_vec();
                let mut client = reader.into_inner();
                let sent = sender.send(Connect {
                    line,
                    authorization,
                });
                let upstream = target_port
                    .filter(|port| *port != 0)
                    .and_then(|port| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok());
                match upstream {
                    Some(upstream) => {
                        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                        tunnel(client, upstream, early);
                    }
                    None => {
                        let _ = client.write_all(
                            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
                if sent.is_err() {
                    return;
                }
            }
        });
        Proxy { port, requests }
    }

    /// The requests the proxy got until now. It reads requests in the order it accepted their
    /// connections: once a request of ours, made now, comes out, every earlier one (the job's)
    /// is out too. No waiting on a clock.
    fn requests_so_far(&self) -> Vec<Connect> {
        let mut ours = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).expect("connect");
        write!(ours, "{SENTINEL}\r\nHost: sentinel.invalid:0\r\n\r\n").expect("ask");
        let mut seen = Vec::new();
        loop {
            let request = self.requests.recv().expect("the proxy runs");
            if request.line == SENTINEL {
                return seen;
            }
            seen.push(request);
        }
    }
}

/// Relays bytes both ways between `client` and `upstream` until each side is done.
fn tunnel(mut client: TcpStream, mut upstream: TcpStream, early: Vec<u8>) {
    let (Ok(mut client_reader), Ok(mut upstream_writer)) =
        (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    thread::spawn(move || {
        let _ = upstream_writer.write_all(&early);
        let _ = io::copy(&mut client_reader, &mut upstream_writer);
        let _ = upstream_writer.shutdown(Shutdown::Write);
    });
    thread::spawn(move || {
        let _ = io::copy(&mut upstream, &mut client);
        let _ = client.shutdown(Shutdown::Write);
    });
}

/// A TCP socket bound to an address but not listening: connections there are refused, and no
/// other socket can listen there while it lives. A port nothing listens on would do only until
/// some other process takes it; std binds sockets only to listen, hence libc.
struct Refusing {
    socket: OwnedFd,
}

impl Refusing {
    /// Binds `ip:port` (port 0: any free port).
    fn bind(ip: Ipv4Addr, port: u16) -> Refusing {
        // SAFETY: plain system calls; the descriptor is owned by `socket` from here on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `address` is a valid sockaddr_in of the length given.
        let bound = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&raw const address).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        assert_eq!(bound, 0, "bind {ip}:{port}: {}", io::Error::last_os_error());
        Refusing { socket }
    }

    fn port(&self) -> u16 {
        let mut address = libc::sockaddr_in {
            sin_family: 0,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };
        let mut length = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `address` has room for the `length` bytes the kernel may write.
        let done = unsafe {
            libc::getsockname(
                self.socket.as_raw_fd(),
                (&raw mut address).cast(),
                &raw mut length,
            )
        };
        assert_eq!(done, 0, "getsockname: {}", io::Error::last_os_error());
        u16::from_be(address.sin_port)
    }
}

/// `Basic` credentials as a proxy gets them.
/// An acceptor presenting the harness's certificate for `localhost`, and the file of the CA
/// that signed it (removed when the test ends).
fn localhost_tls(name: &str) -> (SslAcceptor, RemovedOnDrop) {
    let (ca_pem, certificate, key) = common::localhost_identity();
    let ca_file =
        std::env::temp_dir().join(format!("astegni-{name}-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, &ca_pem).expect("CA file");
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    acceptor.set_certificate(&certificate).expect("certificate");
    acceptor.set_private_key(&key).expect("key");
    (acceptor.build(), RemovedOnDrop(ca_file))
}

#[test]
fn webhook_gets_slack_json_and_its_secret_stays_out_of_the_logs() {
    let astegni = Astegni::with_one_due_account("webhook");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // First answer 500: the job must retry.
    let requests = webhook_server(listener, None, vec![500, 200]);
    let url = format!("http://127.0.0.1:{port}/services/T000/B000/XyZsecretToken");
    let (code, stdout, stderr) = astegni.run(&["--webhook-url", &url]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let first = requests.recv().expect("first request");
    let second = requests.recv().expect("retried request");
    assert_eq!(
        first.line,
        "POST /services/T000/B000/XyZsecretToken HTTP/1.1"
    );
    assert_eq!(first.line, second.line);
    assert_eq!(second.content_type, "application/json");
    assert!(
        second.body.starts_with(
            "{\"text\":\"Astegni deletion job: COMPLETED: 0 roles and 1 accounts deleted\\n"
        ),
        "{}",
        second.body
    );
    assert!(!stdout.contains("XyZsecretToken") && !stderr.contains("XyZsecretToken"));
}

#[test]
fn webhook_over_https_verifies_the_certificate() {
    let astegni = Astegni::with_one_due_account("webhooktls");
    let (acceptor, ca_file) = localhost_tls("hook");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // The first run trusts the system's CAs only: each of its three attempts fails the
    // handshake (and uses up a status). The second trusts our CA: the fourth is answered.
    let requests = webhook_server(listener, Some(acceptor), vec![200; 4]);
    let url = format!("https://localhost:{port}/hook/SeCrEt");
    let args = ["--webhook-url", url.as_str(), "--notify-on", "always"];
    let (code, _, stderr) = astegni.run(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("webhook https://localhost:{port}/... failed")),
        "an untrusted certificate must not be accepted: {stderr}"
    );
    let ca = ca_file.0.to_str().expect("path");
    let (code, _, stderr) = astegni.db_run_with_env(&args, &[("SSL_CERT_FILE", ca)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("webhook"), "{stderr}");
    let request = requests.recv().expect("request over TLS");
    assert_eq!(request.line, "POST /hook/SeCrEt HTTP/1.1");
    assert!(
        request
            .body
            .starts_with("{\"text\":\"Astegni deletion job: "),
        "{}",
        request.body
    );
    assert!(!stderr.contains("SeCrEt"));
}

#[test]
fn an_unreachable_webhook_is_logged_without_its_secret() {
    let astegni = Astegni::with_one_due_account("webhookdown");
    let dead = Refusing::bind(Ipv4Addr::LOCALHOST, 0);
    let url = format!("http://127.0.0.1:{}/hooks/SECRETPATH", dead.port());
    let (code, stdout, stderr) = astegni.run(&["--webhook-url", &url, "--notify-on", "always"]);
    assert_eq!(code, 0, "deletions are unaffected: {stderr}");
    assert!(
        stderr.contains(&format!(
            "webhook http://127.0.0.1:{}/... failed",
            dead.port()
        )),
        "{stderr}"
    );
    assert!(!stdout.contains("SECRETPATH") && !stderr.contains("SECRETPATH"));
    assert_eq!(astegni.count("users"), 0, "the account was deleted");
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        openssl::base64::encode_block(format!("{user}:{password}").as_bytes())
    )
}

#[test]
fn an_http_webhook_goes_through_the_proxy_and_no_secret_is_logged() {
    let proxy = Proxy::start();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // The first run: a 500 then a 200 (a retry, through the proxy again); the second: 503s.
    let requests = webhook_server(listener, None, vec![500, 200, 503, 503, 503]);
    let dead = Refusing::bind(Ipv4Addr::LOCALHOST, 0);
    let url = format!("http://localhost:{port}/services/T0/B0/HookPathSecret");
    let http_proxy = format!("http://hookuser:ProxyPa55w0rd@127.0.0.1:{}", proxy.port);
    // HTTPS_PROXY is for https URLs: a job that took it would fail on the dead port. NO_PROXY
    // names other hosts only.
    let https_proxy = format!("http://127.0.0.1:{}", dead.port());
    let env = [
        ("ASTEGNI_WEBHOOK_URL", url.as_str()),
        ("HTTP_PROXY", http_proxy.as_str()),
        ("HTTPS_PROXY", https_proxy.as_str()),
        ("NO_PROXY", "example.com,.internal"),
    ];

    let (code, stdout, stderr) = common::run_job(&["notify-failure"], &env);
    assert_eq!(code, 0, "the alert was delivered: {stdout}\n{stderr}");
    let connects = proxy.requests_so_far();
    assert_eq!(connects.len(), 2, "one tunnel per attempt: {connects:?}");
    for connect in &connects {
        assert_eq!(connect.line, format!("CONNECT localhost:{port} HTTP/1.1"));
        assert_eq!(
            connect.authorization,
            Some(basic("hookuser", "ProxyPa55w0rd"))
        );
    }
    for _ in 0..2 {
        let request = requests.recv().expect("a request through the tunnel");
        assert_eq!(request.line, "POST /services/T0/B0/HookPathSecret HTTP/1.1");
        assert_eq!(request.host, format!("localhost:{port}"));
        assert_eq!(request.content_type, "application/json");
        assert!(
            request
                .body
                .starts_with("{\"text\":\"Astegni deletion job FAILED on "),
            "{}",
            request.body
        );
    }

    // A failure is logged with the webhook's host and the proxy's, and neither secret.
    let (code, stdout, stderr) = common::run_job(&["notify-failure"], &env);
    assert_eq!(code, 1, "no channel delivered: {stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "webhook http://localhost:{port}/... via proxy 127.0.0.1:{} failed after 3 attempts: \
             HTTP status 503",
            proxy.port
        )),
        "{stderr}"
    );
    assert_eq!(proxy.requests_so_far().len(), 3);
    for secret in ["HookPathSecret", "ProxyPa55w0rd", "hookuser"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} logged: {stdout}\n{stderr}"
        );
    }
}

#[test]
fn no_proxy_sends_the_webhook_past_the_proxy() {
    let proxy = Proxy::start();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = webhook_server(listener, None, vec![200]);
    let url = format!("http://localhost:{port}/hook/NoProxySecret");
    let http_proxy = format!("http://127.0.0.1:{}", proxy.port);
    let env = [
        ("ASTEGNI_WEBHOOK_URL", url.as_str()),
        ("http_proxy", http_proxy.as_str()),
        ("no_proxy", "example.com, localhost"),
    ];
    let (code, stdout, stderr) = common::run_job(&["notify-failure"], &env);
    assert_eq!(code, 0, "the alert was delivered: {stdout}\n{stderr}");
    let request = requests.recv().expect("the request");
    assert_eq!(request.line, "POST /hook/NoProxySecret HTTP/1.1");
    let connects = proxy.requests_so_far();
    assert!(connects.is_empty(), "the proxy was used: {connects:?}");
}

#[test]
fn an_https_webhook_is_tunnelled_through_the_proxy_and_verified() {
    let proxy = Proxy::start();
    let (acceptor, ca_file) = localhost_tls("proxy");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = webhook_server(listener, Some(acceptor), vec![200]);
    let dead = Refusing::bind(Ipv4Addr::LOCALHOST, 0);
    let url = format!("https://localhost:{port}/services/T0/B0/TlsPathSecret");
    let https_proxy = format!("http://127.0.0.1:{}", proxy.port);
    // HTTP_PROXY is for http URLs: a job that took it would fail on the dead port.
    let http_proxy = format!("http://127.0.0.1:{}", dead.port());
    let ca = ca_file.0.to_str().expect("path");
    let env = [
        ("ASTEGNI_WEBHOOK_URL", url.as_str()),
        ("HTTPS_PROXY", https_proxy.as_str()),
        ("HTTP_PROXY", http_proxy.as_str()),
        ("SSL_CERT_FILE", ca),
    ];
    let (code, stdout, stderr) = common::run_job(&["notify-failure"], &env);
    assert_eq!(code, 0, "the alert was delivered: {stdout}\n{stderr}");
    let request = requests.recv().expect("the request over TLS");
    assert_eq!(request.line, "POST /services/T0/B0/TlsPathSecret HTTP/1.1");
    let connects = proxy.requests_so_far();
    assert_eq!(connects.len(), 1, "{connects:?}");
    assert_eq!(
        connects[0].line,
        format!("CONNECT localhost:{port} HTTP/1.1")
    );
    assert_eq!(connects[0].authorization, None);
}

/// The test's own host name, resolved from the test's hosts file only.
const HOST: &str = "hooks.astegni.test";

/// Runs what follows it (a program and its arguments) with `hosts` as /etc/hosts and an
/// nsswitch.conf that looks host names up in that file only, in a user and mount namespace of
/// its own (unshare(1) and mount(8), util-linux): this needs no root, changes nothing outside,
/// and glibc's resolver, which the job uses, reads the file as it would any hosts file.
/// Returns the command prefix and the directory of the files.
fn with_hosts(hosts: &str) -> (Vec<String>, RemovedOnDrop) {
    let dir = std::env::temp_dir().join(format!("astegni-hosts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("hosts dir");
    let hosts_file = dir.join("hosts");
    let nsswitch = dir.join("nsswitch.conf");
    std::fs::write(&hosts_file, hosts).expect("hosts file");
    std::fs::write(&nsswitch, "hosts: files\n").expect("nsswitch.conf");
    let script = "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/nsswitch.conf \
                  && shift 2 && exec \"$@\"";
    let prefix = [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        script,
        "sh",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([hosts_file, nsswitch].map(|path| path.display().to_string()))
    .collect();
    (prefix, RemovedOnDrop(dir))
}

/// A file or directory removed when the test ends, passed or failed.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn a_host_name_whose_first_address_is_dead_is_reached_at_the_next() {
    // `localhost` would do only where it resolves to ::1 and 127.0.0.1, which depends on the
    // machine's /etc/hosts; a hosts file of our own names two addresses on every machine. The
    // dead one is refused (a bound socket that does not listen), the live one answers: the job
    // must go on to the second address. 127.0.0.3 and 127.0.0.2 are equally far from the
    // source address 127.0.0.1, so glibc's address sorting (RFC 6724) keeps the file's order;
    // `getent` below checks that, in the same kind of namespace.
    let live = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = live.local_addr().expect("addr").port();
    let _dead = Refusing::bind(Ipv4Addr::new(127, 0, 0, 3), port);
    let requests = webhook_server(live, None, vec![200]);
    let (prefix, _files) = with_hosts(&format!("127.0.0.3 {HOST}\n127.0.0.2 {HOST}\n"));

    let lookup = Command::new(&prefix[0])
        .args(&prefix[1..])
        .args(["getent", "ahosts", HOST])
        .output()
        .expect("run unshare (util-linux)");
    let listing = String::from_utf8_lossy(&lookup.stdout);
    assert!(
        lookup.status.success(),
        "unshare/getent failed: {}\n{listing}",
        String::from_utf8_lossy(&lookup.stderr)
    );
    let mut addresses: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    addresses.dedup();
    assert_eq!(
        addresses,
        ["127.0.0.3", "127.0.0.2"],
        "the resolver must give the dead address first"
    );

    let url = format!("http://{HOST}:{port}/hook/TwoAddressSecret");
    let wrapper: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = common::run_job_under(
        &wrapper,
        &["notify-failure"],
        &[("ASTEGNI_WEBHOOK_URL", &url)],
    );
    assert_eq!(code, 0, "the alert was delivered: {stdout}\n{stderr}");
    let request = requests.recv().expect("the request");
    assert_eq!(request.line, "POST /hook/TwoAddressSecret HTTP/1.1");
    assert_eq!(request.host, format!("{HOST}:{port}"));
}
