//! `keyless-bench`'s command line (in the library, so `keyless-tool man`
//! can write its manual page from the same definition).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keyless-bench",
    version = keyless_service::VERSION,
    about = "Load generator for keyless key servers",
    disable_version_flag = true
)]
pub struct Cli {
    /// Print the version and the commit, and exit (`-v` or `-V`).
    #[arg(short = 'v', short_alias = 'V', long = "version", action = clap::ArgAction::Version)]
    pub version: Option<bool>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Throughput (N connections x M in flight) or latency (closed loop with
    /// a pause, or open loop at a fixed rate) against a running key server.
    Run {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        load: LoadArgs,
        /// Open loop: total requests per second (default: closed loop).
        #[arg(long)]
        rate: Option<f64>,
        /// Closed loop: pause after each answer before refilling, in microseconds.
        #[arg(long, default_value_t = 0)]
        pause_us: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run at several in-flight levels; print a table and write an SVG plot.
    Sweep {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        load: LoadArgs,
        /// In-flight requests per connection at each level.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64,128,256")]
        levels: Vec<usize>,
        /// Where to write the plot of throughput against p99.
        #[arg(long, default_value = "sweep.svg")]
        svg: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The raw signing rate of a key on this core, in-process, same code as the server.
    Ceiling {
        /// The private key file.
        #[arg(long)]
        key_file: PathBuf,
        /// Operation (default: the usual one for the key type).
        #[arg(long)]
        op: Option<String>,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// crypto_mb's path, for the multi-buffer ceiling measured beside
        /// the single one (default: libcrypto_mb.so.11 from the library
        /// path), read from KEYLESS_MULTIBUFFER_LIBRARY as the key server does.
        #[arg(long, env = "KEYLESS_MULTIBUFFER_LIBRARY")]
        multibuffer_library: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The raw throughput of an HSM key: C_Sign back to back on N sessions
    /// (one thread each), the same per-operation work as the server's pool.
    HsmCeiling {
        /// PKCS#11 URI of the key (as in private_key_stores).
        #[arg(long)]
        uri: String,
        /// Operation, e.g. ecdsa-sha256, rsa-pkcs1-sha256.
        #[arg(long)]
        op: String,
        #[arg(long, default_value_t = 1)]
        sessions: usize,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long)]
        json: bool,
    },
    /// TLS handshakes against an edge (or any TLS server): full or resumed,
    /// TLS 1.2 or 1.3, N concurrent clients; handshakes/s and latency.
    Handshake {
        /// Server address, HOST:PORT.
        #[arg(long, default_value = "127.0.0.1:8443")]
        server: String,
        /// Name to send as SNI and verify (default: localhost).
        #[arg(long, default_value = "localhost")]
        server_name: String,
        /// CA of the server's certificate.
        #[arg(long, default_value = "dev-pki/ca.pem")]
        ca: PathBuf,
        /// full or resumed.
        #[arg(long, default_value = "full")]
        mode: String,
        /// 1.2 or 1.3.
        #[arg(long, default_value = "1.3")]
        tls: String,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Optional client certificate and key.
        #[arg(long)]
        cert: Option<PathBuf>,
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// Open N connections, one exchange each, and hold them idle: TLS to an
    /// edge (one keep-alive GET) or mutual TLS to a key server (one ping).
    /// Prints `held N` once all are open, then holds them for --hold seconds.
    Hold {
        /// Server address, HOST:PORT.
        #[arg(long)]
        server: String,
        /// edge or key-server.
        #[arg(long, default_value = "edge")]
        kind: String,
        #[arg(long, default_value = "localhost")]
        server_name: String,
        #[arg(long, default_value = "dev-pki/ca.pem")]
        ca: PathBuf,
        /// Client certificate and key (key-server).
        #[arg(long, default_value = "dev-pki/client.pem")]
        cert: PathBuf,
        #[arg(long, default_value = "dev-pki/client-key.pem")]
        key: PathBuf,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Handshakes in progress at once while opening.
        #[arg(long, default_value_t = 64)]
        parallel: usize,
        /// Seconds to hold them once all are open.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
        /// Connect from this local address, e.g. 127.0.0.2.
        #[arg(long)]
        bind: Option<std::net::IpAddr>,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// A TCP proxy adding a delay each way (a key server "far away").
    DelayProxy {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 5.0)]
        delay_ms: f64,
    },
}

#[derive(Args, Clone)]
pub struct Target {
    /// Key server address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:2407")]
    pub server: String,
    /// Name in the server certificate (default: HOST).
    #[arg(long)]
    pub server_name: Option<String>,
    /// CA of the server certificate.
    #[arg(long, default_value = "dev-pki/ca.pem")]
    pub ca: PathBuf,
    /// Client certificate and key.
    #[arg(long, default_value = "dev-pki/client.pem")]
    pub cert: PathBuf,
    #[arg(long, default_value = "dev-pki/client-key.pem")]
    pub key: PathBuf,
    /// Public key (or certificate) of the key to use; its SKI names it and
    /// every sampled answer is verified with it.
    #[arg(long, default_value = "dev-pki/pubkeys/p256.pem")]
    pub pubkey: PathBuf,
    /// Operation (default: the usual one for the key type), e.g. ecdsa-sha256,
    /// rsa-pkcs1-sha256, rsa-pss-sha256, ed25519, rsa-decrypt, ping.
    #[arg(long)]
    pub op: Option<String>,
}

#[derive(Args, Clone)]
pub struct LoadArgs {
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Requests in flight per connection (pipelined).
    #[arg(long, default_value_t = 128)]
    pub in_flight: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Verify one answer in this many against the public key (0: none).
    #[arg(long, default_value_t = 100)]
    pub verify_every: u64,
    /// Generator threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Never sleep: the generator's threads poll for answers and pace
    /// requests by spinning (each takes a whole core). On loopback a
    /// sleeping generator is woken by the server's core at the server's
    /// expense; spinning measures the server as if the load came from
    /// another machine, and open-loop requests leave on time.
    #[arg(long)]
    pub spin: bool,
}
