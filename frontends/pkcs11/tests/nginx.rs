//! nginx 1.22 (Debian 12) with a master and two workers, its keys in the
//! module through libp11's engine and no patch: the Keyless SSL
//! walkthrough's check (one full handshake, five resumed, one signature
//! at the key server), TLS 1.3 with an RSA key (PSS), a reload, and a
//! killed worker. The workers fork after the module is loaded, so every
//! handshake here also tests the module's fork handling.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start(module_config: &Path, ports: (u16, u16)) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let engine = engine_conf(d);
        let sites = &fixture().pki.sites_dir;
        let server = |port: u16, label: &str| {
            format!(
                "  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n    \
                 ssl_certificate_key \"engine:pkcs11:pkcs11:object={label};type=private\";\n    \
                 ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:SSL:1m;\n    location / {{ return 200 \"hello from nginx ({label})\\n\"; }}\n  }}\n",
                sites.join(format!("{label}.pem")).display()
            )
        };
        let temp = |name: &str| format!("  {name}_temp_path {};\n", d.join(name).display());
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 2;\nerror_log {}/error.log info;\npid {}/nginx.pid;\n\
             env KEYLESS_PKCS11_CONFIG;\nssl_engine pkcs11;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n{}{}{}{}{}{}{}}}\n",
            d.display(),
            d.display(),
            temp("client_body"),
            temp("proxy"),
            temp("fastcgi"),
            temp("uwsgi"),
            temp("scgi"),
            server(ports.0, "p256"),
            server(ports.1, "rsa2048"),
        );
        let conf_path = d.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("nginx")
            .args(["-p"])
            .arg(d)
            .arg("-c")
            .arg(&conf_path)
            .env("OPENSSL_CONF", &engine)
            .env("KEYLESS_PKCS11_CONFIG", module_config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { child, dir };
        nginx.wait_for(ports.0);
        nginx.wait_for(ports.1);
        assert!(
            nginx.workers().len() == 2,
            "two workers: {:?}\n{}",
            nginx.workers(),
            nginx.log()
        );
        nginx
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn wait_for(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited: {status}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx does not listen on {port}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The worker processes' pids.
    fn workers(&self) -> Vec<u32> {
        let pid = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        children.split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }

    fn signal(&self, pid: u32, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait until the workers are two and none is in `old`.
    fn wait_new_workers(&self, old: &[u32]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.workers();
            if now.len() == 2 && now.iter().all(|p| !old.contains(p)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "workers {now:?} (old {old:?}):\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nginx {
    /// A fast shutdown (SIGTERM), which takes the workers with it; a
    /// SIGKILL of the master alone would leave them running.
    fn drop(&mut self) {
        let workers = self.workers();
        self.signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in workers {
            let _ = Command::new("kill").args(["-s", "KILL", &pid.to_string()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(port: u16, ca: &PathBuf) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(ca)
        .arg(format!("https://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nginx_with_two_workers_serves_with_keys_on_the_key_server() {
    let server = key_server("127.0.0.1:0".parse::<SocketAddr>().unwrap());
    let no_ed25519: Vec<&str> = KEYS.iter().map(|(k, _)| *k).filter(|k| *k != "ed25519").collect();
    let config = module_config_with("nginx", &[server.addr], &no_ed25519, "");
    let ports = (free_port(), free_port());
    let nginx = Nginx::start(&config, ports);

    // The walkthrough's check: one full handshake, five resumed, one
    // signature at the key server.
    let before = server.signatures();
    let out = s_client(ports.0, &["-tls1_2", "-reconnect"]);
    let new = out.lines().filter(|l| l.starts_with("New,")).count();
    let reused = out.lines().filter(|l| l.starts_with("Reused,")).count();
    assert_eq!((new, reused), (1, 5), "{out}");
    assert_eq!(server.signatures() - before, 1, "one signature for six handshakes");

    // TLS 1.3 with the RSA key: RSA-PSS, signed at the key server.
    let before = server.signatures();
    let out = s_client(ports.1, &["-tls1_3"]);
    assert!(
        out.contains("TLSv1.3") && out.contains("Peer signature type: RSA-PSS"),
        "{out}"
    );
    assert_eq!(server.signatures() - before, 1);

    // Many full handshakes reach both workers; each signs once.
    let ca = fixture().pki.ca_cert.clone();
    let before = server.signatures();
    for _ in 0..10 {
        assert!(get(ports.0, &ca).contains("hello from nginx (p256)"));
    }
    assert_eq!(server.signatures() - before, 10);

    // A reload: new workers, still signing.
    let old = nginx.workers();
    nginx.signal(nginx.child.id(), "HUP");
    nginx.wait_new_workers(&old);
    let before = server.signatures();
    assert!(get(ports.1, &ca).contains("hello from nginx (rsa2048)"));
    assert!(server.signatures() > before, "signed after the reload");

    // A killed worker: the master forks another, which signs too.
    let workers = nginx.workers();
    nginx.signal(workers[0], "KILL");
    nginx.wait_new_workers(&workers[..1]);
    let before = server.signatures();
    for _ in 0..6 {
        assert!(get(ports.0, &ca).contains("hello from nginx (p256)"));
    }
    assert_eq!(server.signatures() - before, 6);
    let log = nginx.log();
    assert!(!log.contains("[emerg]") && !log.contains("[crit]"), "{log}");
}
