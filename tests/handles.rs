//! Named handles (docs/protocol.md §3.12–3.16, docs/protocol.md §4.2, docs/protocol.md §6): `fd.pipe`,
//! `fd.open`, `fd.socket`, `fd.delete`, the constant handles, replacement
//! and peers.

mod util;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use util::*;

const CONSTANTS: [&str; 4] = [
    "fd.state\tcontrol.cmd\tspecial\twrite\tdaemonproxy command pipe",
    "fd.state\tcontrol.event\tspecial\tread\tdaemonproxy event stream",
    "fd.state\tcontrol.socket\tspecial\tread,write\tdaemonproxy control socket",
    "fd.state\tnull\tspecial\tread,write\t/dev/null",
];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn pipe_plain_and_socketpairs() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("fd.pipe\tlog.r\tlog.w", &["fd.state\tlog.r\tpipe\tfrom\tlog.w", "fd.state\tlog.w\tpipe\tto\tlog.r"]);
    dp.cmd(
        "fd.pipe\tt.1\tt.2\tunix,dgram",
        &["fd.state\tt.1\tpipe\tunix,dgram,to\tt.2", "fd.state\tt.2\tpipe\tunix,dgram,to\tt.1"],
    );
    dp.cmd(
        "fd.pipe\ts1\ts2\tseqpacket",
        &["fd.state\ts1\tpipe\tunix,seqpacket,to\ts2", "fd.state\ts2\tpipe\tunix,seqpacket,to\ts1"],
    );
    dp.cmd(
        "fd.pipe\tu.1\tu.2\tunix",
        &["fd.state\tu.1\tpipe\tunix,stream,to\tu.2", "fd.state\tu.2\tpipe\tunix,stream,to\tu.1"],
    );
    dp.cmd(
        "fd.pipe\tv.1\tv.2\tstream",
        &["fd.state\tv.1\tpipe\tunix,stream,to\tv.2", "fd.state\tv.2\tpipe\tunix,stream,to\tv.1"],
    );
    dp.cmd(
        "fd.pipe\tp.r\tp.w\tnonblock",
        &["fd.state\tp.r\tpipe\tnonblock,from\tp.w", "fd.state\tp.w\tpipe\tnonblock,to\tp.r"],
    );
    dp.cmd(
        "fd.pipe\tq.r\tq.w\t-,,nonblock,",
        &["fd.state\tq.r\tpipe\tnonblock,from\tq.w", "fd.state\tq.w\tpipe\tnonblock,to\tq.r"],
    );
    dp.cmd(
        "fd.pipe\tn.1\tn.2\tunix,dgram,nonblock",
        &["fd.state\tn.1\tpipe\tunix,dgram,nonblock,to\tn.2", "fd.state\tn.2\tpipe\tunix,dgram,nonblock,to\tn.1"],
    );
    dp.cmd("fd.pipe\te.r\te.w\t", &["fd.state\te.r\tpipe\tfrom\te.w", "fd.state\te.w\tpipe\tto\te.r"]);
}

#[test]
fn pipe_errors() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd_err("fd.pipe\tx\tx", "pipe ends must have different names");
    dp.cmd_err("fd.pipe\ta\tb\tbogus", "unknown flag \"bogus\"");
    dp.cmd_err("fd.pipe\ta\tb\tnonblock,bogus", "unknown flag \"bogus\"");
    dp.cmd_err("fd.pipe\ta\tb\ttcp", "socketpair() failed: Operation not supported");
    dp.cmd_err("fd.pipe\ta\tb\tinet", "socketpair() failed: Operation not supported");
    dp.cmd_err("fd.pipe\tnull\tb", "File descriptor cannot be altered");
    dp.cmd_err("fd.pipe\ta\tcontrol.cmd", "File descriptor cannot be altered");
    // nothing was created by the failures
    let dump = dp.statedump();
    assert!(
        !dump.iter().any(|l| l.starts_with("fd.state\ta\t")
            || l.starts_with("fd.state\tb\t")
            || l.starts_with("fd.state\tx\t")),
        "{dump:#?}"
    );
}

#[test]
fn pipe_nonblock_is_set_on_the_descriptor() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd(
        "fd.pipe\tp.r\tp.w\tnonblock",
        &["fd.state\tp.r\tpipe\tnonblock,from\tp.w", "fd.state\tp.w\tpipe\tnonblock,to\tp.r"],
    );
    dp.cmd("fd.pipe\tb.r\tb.w", &["fd.state\tb.r\tpipe\tfrom\tb.w", "fd.state\tb.w\tpipe\tto\tb.r"]);
    // fd 1 is redirected to the output file; check 0, 3 (nonblock) and 2
    dp.args("chk", "sh\t-c\tfor i in 0 3 2; do grep ^flags /proc/self/fdinfo/$i; done > nb.out");
    dp.fds("chk", "p.r\tnull\tb.r\tp.w");
    let pid = dp.start("chk");
    dp.wait_match(&format!("service.state\tchk\tdown\t*\t{pid}\texit\t0\t0\t0"), T);
    let out = dp.dir.read("nb.out");
    let flags: Vec<u32> =
        out.lines().map(|l| u32::from_str_radix(l.trim_start_matches("flags:").trim(), 8).unwrap()).collect();
    assert_eq!(flags.len(), 3, "{out}");
    assert!(flags[0] & 0o4000 != 0 && flags[1] & 0o4000 != 0, "nonblock pipe ends: {out}");
    assert!(flags[2] & 0o4000 == 0, "plain pipe end is blocking: {out}");
}

#[test]
fn pipe_replacement_leaves_peer_unknown() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("fd.pipe\ta.r\ta.w", &["fd.state\ta.r\tpipe\tfrom\ta.w", "fd.state\ta.w\tpipe\tto\ta.r"]);
    dp.cmd("fd.pipe\ta.r\tb.w", &["fd.state\ta.r\tpipe\tfrom\tb.w", "fd.state\tb.w\tpipe\tto\ta.r"]);
    let dump = dp.statedump();
    assert!(dump.contains(&"fd.state\ta.w\tpipe\tto\t?".to_string()), "{dump:#?}");
    assert!(dump.contains(&"fd.state\ta.r\tpipe\tfrom\tb.w".to_string()), "{dump:#?}");
    // replacing a pipe end with a file
    dp.cmd("fd.open\tb.w\twrite\t/dev/null", &["fd.state\tb.w\tfile\twrite\t/dev/null"]);
    let dump = dp.statedump();
    assert!(dump.contains(&"fd.state\ta.r\tpipe\tfrom\t?".to_string()), "{dump:#?}");
}

#[test]
fn open_flags_and_files() {
    let dir = TempDir::new("open");
    dir.write("old.txt", "old contents\n");
    let mut dp = Dp::interactive_in(dir, &[]);
    dp.cmd(
        "fd.open\tapplog\twrite,create,append,mkdir\tlogs/app.log",
        &["fd.state\tapplog\tfile\twrite,append,create,mkdir\tlogs/app.log"],
    );
    let md = std::fs::metadata(dp.dir.join("logs/app.log")).expect("file created with mkdir");
    assert_eq!(md.permissions().mode() & 0o777, 0o600, "new files 0600 under umask 077");
    let dmd = std::fs::metadata(dp.dir.join("logs")).unwrap();
    assert_eq!(dmd.permissions().mode() & 0o777, 0o700, "mkdir creates 0700 directories");
    dp.cmd(
        "fd.open\tf1\tmkdir,nonblock,trunc,create,append,write\tx/f1.txt",
        &["fd.state\tf1\tfile\twrite,append,create,trunc,nonblock,mkdir\tx/f1.txt"],
    );
    dp.cmd("fd.open\trw\twrite,read\t/dev/null", &["fd.state\trw\tfile\tread,write\t/dev/null"]);
    dp.cmd("fd.open\tr\tread\t/dev/null", &["fd.state\tr\tfile\tread\t/dev/null"]);
    dp.cmd("fd.open\tr2\t,read,\t/dev/null", &["fd.state\tr2\tfile\tread\t/dev/null"]);
    dp.cmd("fd.open\tw\twrite\t/dev/null", &["fd.state\tw\tfile\twrite\t/dev/null"]);
    // trunc empties an existing file
    dp.cmd("fd.open\tt\twrite,trunc\told.txt", &["fd.state\tt\tfile\twrite,trunc\told.txt"]);
    assert_eq!(dp.dir.read("old.txt"), "");
    // path used as given, absolute paths too
    let abs = dp.dir.join("abs.txt").to_str().unwrap().to_string();
    dp.cmd(&format!("fd.open\tabs\twrite,create\t{abs}"), &[&format!("fd.state\tabs\tfile\twrite,create\t{abs}")]);
    assert!(dp.dir.exists("abs.txt"));
    // data written through the handle by a service lands in the file (append)
    dp.args("wr", "sh\t-c\techo line1; echo line2");
    dp.fds("wr", "null\tapplog\tnull");
    let pid = dp.start("wr");
    dp.wait_match(&format!("service.state\twr\tdown\t*\t{pid}\texit\t0\t0\t0"), T);
    let pid = dp.start("wr");
    dp.wait_match(&format!("service.state\twr\tdown\t*\t{pid}\texit\t0\t0\t0"), T);
    assert_eq!(dp.dir.read("logs/app.log"), "line1\nline2\nline1\nline2\n");
}

#[test]
fn open_errors() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd_err("fd.open\tf2\tbogus\t/dev/null", "unknown flag \"bogus\"");
    dp.cmd_err("fd.open\tf2\t-\t/dev/null", "unknown flag \"-\"");
    dp.cmd_err("fd.open\tf2\tread,wrte\t/dev/null", "unknown flag \"wrte\"");
    dp.cmd_err("fd.open\tf\tread\tmissing.txt", "open failed: No such file or directory");
    dp.cmd_err("fd.open\tf\twrite\tno/such/dir/x", "open failed: No such file or directory");
    dp.cmd_err("fd.open\tnull\tread\t/dev/null", "File descriptor cannot be altered");
    dp.cmd_err("fd.open\tcontrol.cmd\tread\t/dev/null", "File descriptor cannot be altered");
    // a failed replacement keeps the old handle
    dp.cmd("fd.open\tkeep\tread\t/dev/null", &["fd.state\tkeep\tfile\tread\t/dev/null"]);
    dp.cmd_err("fd.open\tkeep\tread\tmissing.txt", "open failed: No such file or directory");
    let dump = dp.statedump();
    assert!(dump.contains(&"fd.state\tkeep\tfile\tread\t/dev/null".to_string()), "{dump:#?}");
}

#[test]
fn socket_unbound_variants() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("fd.socket\tsk\tunix", &["fd.state\tsk\tsocket\tunix,stream\t"]);
    dp.cmd("fd.socket\tsk6\tinet6", &["fd.state\tsk6\tsocket\tinet6,stream\t"]);
    dp.cmd("fd.socket\tud\tudp", &["fd.state\tud\tsocket\tinet,dgram\t"]);
    dp.cmd("fd.socket\ttc\ttcp", &["fd.state\ttc\tsocket\tinet,stream\t"]);
    dp.cmd("fd.socket\tsp\tseqpacket", &["fd.state\tsp\tsocket\tunix,seqpacket\t"]);
    dp.cmd("fd.socket\tdg\tunix,dgram,nonblock", &["fd.state\tdg\tsocket\tunix,dgram,nonblock\t"]);
    dp.cmd("fd.socket\tem\t,", &["fd.state\tem\tsocket\tunix,stream\t"]);
}

#[test]
fn socket_unix_bind_and_listen() {
    let dir = TempDir::new("sock");
    let mut dp = Dp::interactive_in(dir, &[]);
    dp.cmd("fd.socket\tls\tunix,listen\tctl.sock", &["fd.state\tls\tsocket\tunix,stream,bind,listen=32\tctl.sock"]);
    UnixStream::connect(dp.dir.join("ctl.sock")).expect("connect to the listening socket");
    dp.cmd("fd.socket\tub\tunix\tb.sock", &["fd.state\tub\tsocket\tunix,stream,bind\tb.sock"]);
    let ft = std::fs::symlink_metadata(dp.dir.join("b.sock")).unwrap().file_type();
    assert!(ft.is_socket(), "ADDRSPEC implies bind");
    dp.cmd(
        "fd.socket\tm\tunix,listen=5,nonblock,mkdir\tsub/dir/m.sock",
        &["fd.state\tm\tsocket\tunix,stream,bind,listen=5,mkdir,nonblock\tsub/dir/m.sock"],
    );
    UnixStream::connect(dp.dir.join("sub/dir/m.sock")).expect("connect to mkdir socket");
    dp.cmd("fd.socket\tbd\tunix,dgram,bind\td.sock", &["fd.state\tbd\tsocket\tunix,dgram,bind\td.sock"]);
    // F12: a stale socket file (nobody listening) is replaced
    {
        let _l = UnixListener::bind(dp.dir.join("stale.sock")).unwrap();
    }
    assert!(dp.dir.exists("stale.sock"));
    dp.cmd("fd.socket\tst\tunix,listen\tstale.sock", &["fd.state\tst\tsocket\tunix,stream,bind,listen=32\tstale.sock"]);
    UnixStream::connect(dp.dir.join("stale.sock")).expect("connect to re-bound stale socket");
    // a live socket is not stolen
    dp.cmd_err("fd.socket\tst2\tunix,listen\tctl.sock", "bind: Address already in use");
}

#[test]
fn socket_tcp_bind_listen_and_errors() {
    let mut dp = Dp::interactive(&[]);
    let p = free_port();
    dp.cmd(
        &format!("fd.socket\tweb\ttcp,listen=11\t127.0.0.1:{p}"),
        &[&format!("fd.state\tweb\tsocket\tinet,stream,bind,listen=11\t127.0.0.1:{p}")],
    );
    TcpStream::connect(("127.0.0.1", p)).expect("connect to the tcp listener");
    let q = free_port();
    dp.cmd(
        &format!("fd.socket\tall\ttcp,listen\t*:{q}"),
        &[&format!("fd.state\tall\tsocket\tinet,stream,bind,listen=32\t*:{q}")],
    );
    TcpStream::connect(("127.0.0.1", q)).expect("connect to *:PORT");
    dp.cmd("fd.socket\tu0\tudp\t127.0.0.1", &["fd.state\tu0\tsocket\tinet,dgram,bind\t127.0.0.1"]);
    // address in use, with the docs/protocol.md §2.7 truncation of the example
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let bp = busy.local_addr().unwrap().port();
    dp.cmd_err(&format!("fd.socket\tfd2b\ttcp\t127.0.0.1:{bp}"), "bind: Address already in use");
    dp.cmd_err("fd.socket\ts\ttcp\t127.0.0.1:70000", "invalid address");
    dp.cmd_err("fd.socket\ts\ttcp\t127.0.0.1:65536", "invalid address");
    dp.cmd_err("fd.socket\ts\ttcp\tnot-an-address", "invalid address");
    dp.cmd_err("fd.socket\ts\ttcp\t1.2.3", "invalid address");
    dp.cmd_err("fd.socket\ts\ttcp\t127.0.0.1:x", "invalid address");
    dp.cmd_err(&format!("fd.socket\ts\tunix\t{}", "p".repeat(108)), "invalid address");
    dp.cmd_err("fd.socket\ts\ttcp,bind", "expected address argument");
    dp.cmd_err("fd.socket\ts\tunix,listen", "expected address argument");
    dp.cmd_err("fd.socket\ts\tunix,listen=0\tx.sock", "invalid listen queue length");
    dp.cmd_err("fd.socket\ts\tunix,listen=65536\tx.sock", "invalid listen queue length");
    dp.cmd_err("fd.socket\ts\tunix,listen=x\tx.sock", "invalid listen queue length");
    dp.cmd_err("fd.socket\ts\tunix,bogus", "unknown flag \"bogus\"");
    dp.cmd_err("fd.socket\tcontrol.socket\tunix", "File descriptor cannot be altered");
    drop(busy);
}

#[test]
fn delete_handles() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("fd.pipe\ttemp.r\ttemp.w", &["fd.state\ttemp.r\tpipe\tfrom\ttemp.w", "fd.state\ttemp.w\tpipe\tto\ttemp.r"]);
    dp.cmd("fd.delete\ttemp.r", &["fd.state\ttemp.r\tdeleted"]);
    let dump = dp.statedump();
    assert!(dump.contains(&"fd.state\ttemp.w\tpipe\tto\t?".to_string()), "{dump:#?}");
    assert!(!dump.iter().any(|l| l.starts_with("fd.state\ttemp.r\t")), "{dump:#?}");
    dp.cmd_err("fd.delete\ttemp.r", "No such file descriptor");
    dp.cmd("fd.delete\ttemp.w", &["fd.state\ttemp.w\tdeleted"]);
    // std handles are ordinary
    dp.cmd("fd.delete\tstdin", &["fd.state\tstdin\tdeleted"]);
    for c in ["null", "control.cmd", "control.event", "control.socket"] {
        dp.cmd_err(&format!("fd.delete\t{c}"), "File descriptor cannot be altered");
    }
    let dump = dp.statedump();
    let fds: Vec<&String> = dump.iter().filter(|l| l.starts_with("fd.state\t")).collect();
    assert_eq!(fds.len(), 6, "4 constants + stderr + stdout: {fds:#?}");
}

#[test]
fn constants_cannot_be_altered() {
    let mut dp = Dp::interactive(&[]);
    let dump = dp.statedump();
    for c in CONSTANTS {
        assert!(dump.contains(&c.to_string()), "{c:?} in {dump:#?}");
    }
    for c in ["null", "control.cmd", "control.event", "control.socket"] {
        dp.cmd_err(&format!("fd.open\t{c}\tread\t/dev/null"), "File descriptor cannot be altered");
        dp.cmd_err(&format!("fd.pipe\t{c}\tx.w"), "File descriptor cannot be altered");
        dp.cmd_err(&format!("fd.pipe\tx.r\t{c}"), "File descriptor cannot be altered");
        dp.cmd_err(&format!("fd.socket\t{c}\tunix"), "File descriptor cannot be altered");
        dp.cmd_err(&format!("fd.delete\t{c}"), "File descriptor cannot be altered");
    }
    let after = dp.statedump();
    assert_eq!(dump, after, "nothing changed");
}

#[test]
fn running_service_keeps_its_copy_after_delete() {
    let mut dp = Dp::interactive(&[]);
    dp.cmd("fd.open\tout\twrite,create\tkeep.txt", &["fd.state\tout\tfile\twrite,create\tkeep.txt"]);
    dp.cmd("fd.pipe\tgo.r\tgo.w", &["fd.state\tgo.r\tpipe\tfrom\tgo.w", "fd.state\tgo.w\tpipe\tto\tgo.r"]);
    // waits for one line on stdin, then writes to stdout
    dp.args("k", "sh\t-c\tread x; echo after-$x");
    dp.fds("k", "go.r\tout\tnull");
    let pid = dp.start("k");
    dp.cmd("fd.delete\tout", &["fd.state\tout\tdeleted"]);
    // feed the pipe through a second service
    dp.args("feed", "sh\t-c\techo go");
    dp.fds("feed", "null\tgo.w\tnull");
    dp.start("feed");
    dp.wait_match(&format!("service.state\tk\tdown\t*\t{pid}\texit\t0\t*\t0"), T);
    assert_eq!(dp.dir.read("keep.txt"), "after-go\n");
}

#[test]
fn inherited_descriptors_become_fd_n() {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let tmp = TempDir::new("inh-src");
    let mut p = [0i32; 2];
    // SAFETY: pipe writes two new descriptors into the array.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are fresh and owned from here on.
    let (pr, pw) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    let (s1, _s2) = UnixStream::pair().unwrap();
    let file = std::fs::OpenOptions::new().read(true).append(true).create(true).open(tmp.join("f")).unwrap();
    let mut dp = Dp::interactive_inherit(&[], &[(pw.as_raw_fd(), 5), (s1.as_raw_fd(), 6), (file.as_raw_fd(), 9)]);
    drop(pw);
    drop(s1);
    drop(file);
    let dump = dp.statedump();
    assert_lines(
        &dump,
        &[
            CONSTANTS[0],
            CONSTANTS[1],
            CONSTANTS[2],
            "fd.state\tfd_5\tfile\twrite\tunknown",
            "fd.state\tfd_6\tsocket\tunix,stream\tunknown",
            "fd.state\tfd_9\tfile\tread,write,append\tunknown",
            CONSTANTS[3],
            "fd.state\tstderr\tfile\twrite\tunknown",
            "fd.state\tstdin\tfile\tread\tunknown",
            "fd.state\tstdout\tfile\twrite\tunknown",
        ],
        "statedump with inherited descriptors",
    );
    // a service can use the inherited pipe
    dp.args("w", "sh\t-c\techo via-fd5");
    dp.fds("w", "null\tfd_5\tnull");
    let pid = dp.start("w");
    dp.wait_match(&format!("service.state\tw\tdown\t*\t{pid}\texit\t0\t0\t0"), T);
    dp.cmd("fd.delete\tfd_5", &["fd.state\tfd_5\tdeleted"]);
    let mut r = std::fs::File::from(pr);
    let mut got = String::new();
    // the daemon and the service closed their copies: read to EOF
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = r.read_to_string(&mut got);
        let _ = tx.send(got);
    });
    let got = rx.recv_timeout(T).expect("inherited pipe reaches EOF after fd.delete");
    assert_eq!(got, "via-fd5\n");
}
