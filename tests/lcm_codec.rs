//! The procman_lcm codec against the real LCM library (lcm 1.5.3 from
//! PyPI): golden vectors written by lcm-gen's Python code, fingerprints
//! from lcm-gen, and the library decoding what we encode, with and without
//! a PMA1 trailer.

mod lcm_util;

use daemonproxy::procman::Message;
use daemonproxy::procman::auth::{Key, Signer};
use daemonproxy::procman::fingerprint::{base_hash, fingerprint};
use daemonproxy::procman::types::ALL;
use daemonproxy::procman::value::Value;
use daemonproxy::procman::{CmdDesired, CmdStatus, CmdT, DeputyInfo, Discovery, Orders, Output};
use lcm_util::golden::cases;
use lcm_util::{Peer, golden_file, golden_names, hex, python, root, script, unhex};

#[test]
fn every_golden_file_has_a_rust_case() {
    let mut ours: Vec<String> = cases().iter().map(|(n, _)| n.to_string()).collect();
    ours.sort();
    assert_eq!(golden_names(&root().join("tests/golden")), ours);
}

#[test]
fn golden_vectors_decode_reencode_and_build() {
    for (name, case) in cases() {
        let want = golden_file(name);
        let (back, used) = case.decode_like(&want).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(used, want.len(), "{name}: bytes consumed");
        assert_eq!(back, case, "{name}: decoded value");
        assert_eq!(back.encode().unwrap(), want, "{name}: re-encoded");
        assert_eq!(case.encode().unwrap(), want, "{name}: built from scratch");
    }
}

#[test]
fn golden_vectors_fit_the_tables() {
    for (name, case) in cases() {
        let want = golden_file(name);
        let def = ALL.iter().find(|d| d.name == case.type_name()).expect("table");
        let (v, used) = Value::decode(def, &want).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(used, want.len(), "{name}");
        let mut again = Vec::new();
        v.encode(def, &mut again).unwrap();
        assert_eq!(again, want, "{name}: table walker re-encoded");
    }
}

#[test]
fn golden_files_are_what_the_library_writes() {
    let out = std::env::temp_dir().join(format!("dp-golden-{}", std::process::id()));
    let status = std::process::Command::new(python())
        .arg(script("golden.py"))
        .arg("--out")
        .arg(&out)
        .current_dir(root().join("tests/lcm_py"))
        .status()
        .expect("run golden.py");
    assert!(status.success(), "golden.py failed");
    let committed = root().join("tests/golden");
    assert_eq!(golden_names(&out), golden_names(&committed));
    for name in golden_names(&committed) {
        let file = format!("{name}.hex");
        let fresh = std::fs::read(out.join(&file)).unwrap();
        assert!(fresh == std::fs::read(committed.join(&file)).unwrap(), "{file} differs from the library's output");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

/// Spec §2.5's table, against lcm-gen's generated code and `lcm-gen -d`.
#[test]
fn fingerprints_match_lcm_gen() {
    let mut peer = Peer::start();
    let reply = peer.cmd("fingerprints");
    let words: Vec<&str> = reply.strip_prefix("fp ").unwrap_or_else(|| panic!("peer: {reply}")).split(' ').collect();
    let theirs: Vec<(&str, u64, u64)> = words
        .chunks(3)
        .map(|w| (w[0], u64::from_str_radix(w[1], 16).unwrap(), u64::from_str_radix(w[2], 16).unwrap()))
        .collect();
    let ours: Vec<(&str, u64, u64)> = ALL.iter().map(|d| (d.name, fingerprint(d), base_hash(d))).collect();
    assert_eq!(theirs, ours);
    let consts = [
        CmdT::FINGERPRINT,
        CmdDesired::FINGERPRINT,
        CmdStatus::FINGERPRINT,
        DeputyInfo::FINGERPRINT,
        Orders::FINGERPRINT,
        Output::FINGERPRINT,
        Discovery::FINGERPRINT,
    ];
    assert_eq!(consts.to_vec(), theirs.iter().map(|t| t.1).collect::<Vec<_>>());
    let table = [
        (0x113bfa24d42ae998, 0x2277f449a855d330),
        (0xb6db6f86a57ccf6c, 0xb2a6c7a09ba54539),
        (0xb1f81bfa1b11f041, 0xa8e0208786cf86e3),
        (0x1b5b36d099a8612c, 0x8876aeb040efd01f),
        (0x36fb328cefe816f1, 0xd343f45b171ab855),
        (0xc77d2e57aed00f59, 0x8efa5caf5da01eb3),
        (0xd8e418c15f6ba5ca, 0xb1c83182bed74b95),
    ];
    assert_eq!(theirs.iter().map(|t| (t.2, t.1)).collect::<Vec<_>>(), table, "docs/fleet.md §2.5 table");
}

/// The real library decodes what we encode (it re-encodes what it read, so
/// every member must have been read right), and ignores a PMA1 trailer.
#[test]
fn library_decodes_our_output_with_and_without_trailer() {
    let mut peer = Peer::start();
    let mut signer = Signer::new(Key::from_bytes(&[0x5a; 32]).unwrap());
    for (name, case) in cases() {
        let ours = case.encode().unwrap();
        let reply = peer.cmd(&format!("decode {} {}", case.type_name(), hex(&ours)));
        assert_eq!(reply, format!("ok {}", hex(&ours)), "{name}: plain");
        let mut signed = ours.clone();
        signer.append("PM_INFO", &mut signed, 0);
        assert_eq!(signed.len(), ours.len() + 48);
        let reply = peer.cmd(&format!("decode {} {}", case.type_name(), hex(&signed)));
        assert_eq!(reply, format!("ok {}", hex(&ours)), "{name}: with trailer");
    }
}

/// And we decode the library's output with a trailer after it, as the
/// bridge will when a signing sheriff sends orders.
#[test]
fn we_ignore_trailing_bytes_as_the_library_does() {
    let want = golden_file("orders_t-two");
    let mut data = want.clone();
    data.extend_from_slice(&unhex(&"ab".repeat(48)));
    let (o, used) = Orders::decode(&data).unwrap();
    assert_eq!(used, want.len());
    assert_eq!(o.to_bytes().unwrap(), want);
    assert!(<Orders as Message>::decode(&want[..want.len() - 1]).is_err());
}
