//! `daemonproxy-bridge`: makes one daemonproxy a procman deputy on LCM
//! (docs/fleet.md §4). Flags and wiring only; the work is in
//! `daemonproxy::bridge`. See daemonproxy-bridge(8).

use daemonproxy::bridge::deputy::{Config, LocalMode};
use daemonproxy::bridge::run::{Bridge, Cidr, Connection, Options};
use daemonproxy::procman::Url;
use daemonproxy::procman::auth::{AuthMode, Key};
use std::time::Duration;

const HELP: &str = "\
usage: daemonproxy-bridge [OPTIONS]
Makes a daemonproxy a procman deputy: a sheriff on LCM steers its commands.

Connection to daemonproxy (default: --control-fd 0):
  --socket PATH            connect to daemonproxy's control socket
  --control-fd N           use inherited socket N (a controller service's
                           control.socket, or control.event/control.cmd)
LCM:
  --lcm-url URL            udpm://GROUP:PORT?ttl=N or tcpq://HOST:PORT
                           (default $LCM_DEFAULT_URL, else
                           udpm://239.255.76.67:7667?ttl=0)
  --id ID                  deputy id (default: the host name)
Behaviour:
  --local hide|observe|control
                           services the bridge did not create: not reported
                           (hide, the default), reported and left alone
                           (observe), or started and stopped as ordered
                           (control); controllers, the bridge among them,
                           are never reported
  --read-only              report, never act on orders
  --allow-sheriff GLOB     obey only these sheriff ids (repeatable)
  --allow-source CIDR      obey only orders from these addresses (udpm; repeatable)
  --allow-exec GLOB        run only these programs, judged by their real
                           path (FNM_PATHNAME; repeatable); PATH, LD_* and
                           other lookup variables may not be assigned
  --max-order-age SECONDS  refuse older or later orders (default 60; 0: off)
  --max-output-rate BYTES  per command and second (default 1048576)
  --stop-on-exit           stop the commands before exiting on a signal
Authentication:
  --auth off|sign|require  PMA1 trailers (default off; sign with a key file)
  --auth-key-file PATH     hex key, mode 0600 (repeatable: two for rotation)
Other:
  -v, --verbose            log more
  -h, --help               this text
      --version            the version

Exit: 0 after a signal (the services keep running), 1 on an error or when
daemonproxy goes away, 2 if another deputy has the same id.
";

fn fail(msg: &str) -> ! {
    eprintln!("daemonproxy-bridge: {msg}");
    std::process::exit(1);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut connection = None;
    let mut url_arg = None;
    let mut cfg = Config {
        id: daemonproxy::sys::hostname(),
        read_only: false,
        // A stock sheriff adopts every reported command and waits for it
        // in "stop everything": by default report only procman's own
        // (docs/fleet.md §4.1).
        local: LocalMode::Hide,
        allow_sheriff: Vec::new(),
        allow_exec: Vec::new(),
        max_order_age: Some(Duration::from_secs(60)),
        fd_passing: true,
        max_output_rate: 1 << 20,
    };
    let (mut allow_source, mut auth, mut key_files) = (Vec::new(), AuthMode::Off, Vec::new());
    let (mut stop_on_exit, mut verbose) = (false, false);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| fail(&format!("{a} needs a value (see --help)")));
        match a.as_str() {
            "--socket" => connection = Some(Connection::Socket(value().into())),
            "--control-fd" => {
                let n = value().parse().unwrap_or_else(|_| fail("--control-fd needs a descriptor number"));
                connection = Some(Connection::Fd(n));
            }
            "--lcm-url" => url_arg = Some(value()),
            "--id" => cfg.id = value(),
            "--local" => {
                cfg.local = match value().as_str() {
                    "hide" => LocalMode::Hide,
                    "observe" => LocalMode::Observe,
                    "control" => LocalMode::Control,
                    v => fail(&format!("--local {v}: expected hide, observe or control")),
                }
            }
            "--read-only" => cfg.read_only = true,
            "--allow-sheriff" => cfg.allow_sheriff.push(value()),
            "--allow-exec" => {
                let v = value();
                if v.contains('/') && !v.starts_with('/') {
                    fail(&format!("--allow-exec {v}: a pattern with '/' must be an absolute path"));
                }
                cfg.allow_exec.push(v)
            }
            "--allow-source" => {
                let v = value();
                allow_source.push(Cidr::parse(&v).unwrap_or_else(|| fail(&format!("--allow-source {v}: not a CIDR"))));
            }
            "--max-order-age" => {
                let v: f64 = value().parse().unwrap_or_else(|_| fail("--max-order-age needs seconds"));
                cfg.max_order_age = (v > 0.0).then(|| Duration::from_secs_f64(v));
            }
            "--max-output-rate" => {
                cfg.max_output_rate = value().parse().unwrap_or_else(|_| fail("--max-output-rate needs bytes"))
            }
            "--stop-on-exit" => stop_on_exit = true,
            "--auth" => auth = value().parse().unwrap_or_else(|e| fail(&format!("--auth: {e}"))),
            "--auth-key-file" => key_files.push(value()),
            "-v" | "--verbose" => verbose = true,
            "-h" | "--help" => {
                print!("{HELP}");
                return;
            }
            "--version" => {
                println!("daemonproxy-bridge {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            _ => fail(&format!("unknown option {a} (see --help)")),
        }
    }
    if cfg.read_only && cfg.local == LocalMode::Control {
        cfg.local = LocalMode::Observe; // --read-only never controls
    }
    let url = Url::from_env_or(url_arg.as_deref()).unwrap_or_else(|e| fail(&format!("LCM URL: {e}")));
    let keys: Vec<Key> = key_files
        .iter()
        .map(|p| Key::load(std::path::Path::new(p)).unwrap_or_else(|e| fail(&format!("{p}: {e}"))))
        .collect();
    if auth != AuthMode::Off && keys.is_empty() {
        fail("--auth sign|require needs --auth-key-file");
    }
    let opts = Options {
        deputy: cfg,
        connection: connection.unwrap_or(Connection::Fd(0)),
        url,
        allow_source,
        auth,
        keys,
        stop_on_exit,
        verbose,
    };
    let mut b = Bridge::new(opts).unwrap_or_else(|e| fail(&format!("start-up: {e}")));
    std::process::exit(b.run());
}
