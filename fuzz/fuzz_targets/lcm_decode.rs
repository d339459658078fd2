//! Decoding of every procman_lcm type (docs/fleet.md §2.4, §6.4) from
//! hostile bytes, two ways: the typed decoders the bridge uses and the
//! table walker of `procman::schema`. They must agree on success, on the
//! bytes taken and on the re-encoding; a decoded message re-encodes to the
//! bytes it came from (only booleans are normalised to 0/1) and decodes
//! again to itself.

#![no_main]

use daemonproxy::procman::schema::Value;
use daemonproxy::procman::types::ALL;
use daemonproxy::procman::{CmdDesired, CmdStatus, CmdT, DeputyInfo, Discovery, Message, Orders, Output};
use libfuzzer_sys::fuzz_target;

fn check<T: Message>(data: &[u8]) {
    let def = T::DEF;
    let typed = T::decode(data);
    let table = Value::decode(def, data);
    match (typed, table) {
        (Ok((m, used)), Ok((v, used2))) => {
            assert_eq!(used, used2, "{}: the decoders took different lengths", def.name);
            let mut a = Vec::new();
            m.encode(&mut a).expect("a decoded message encodes");
            assert_eq!(a.len(), used, "{}: re-encoded length", def.name);
            let mut b = Vec::new();
            v.encode(def, &mut b).expect("a decoded value encodes");
            assert_eq!(a, b, "{}: the encoders disagree", def.name);
            for (i, (&x, &y)) in a.iter().zip(&data[..used]).enumerate() {
                assert!(x == y || (x == 1 && y != 0), "{}: byte {i} re-encoded as {x:#x}, was {y:#x}", def.name);
            }
            let (m2, used3) = T::decode(&a).expect("a re-encoded message decodes");
            assert_eq!(used3, a.len());
            let mut c = Vec::new();
            m2.encode(&mut c).expect("encodes");
            assert_eq!(c, a, "{}: not a fixed point", def.name);
        }
        (Err(_), Err(_)) => {}
        (t, v) => panic!("{}: typed {:?} but table {:?}", def.name, t.map(|x| x.1), v.map(|x| x.1)),
    }
}

fn one(which: u8, data: &[u8]) {
    match which % 7 {
        0 => check::<CmdT>(data),
        1 => check::<CmdDesired>(data),
        2 => check::<CmdStatus>(data),
        3 => check::<DeputyInfo>(data),
        4 => check::<Orders>(data),
        5 => check::<Output>(data),
        _ => check::<Discovery>(data),
    }
}

fuzz_target!(|data: &[u8]| {
    // As received: the bytes as they are, under every type.
    for k in 0..7 {
        one(k, data);
    }
    // With the right fingerprint put in front, so the members get fuzzed.
    let Some((&which, rest)) = data.split_first() else { return };
    let mut buf = ALL[usize::from(which % 7)].fingerprint().to_be_bytes().to_vec();
    buf.extend_from_slice(rest);
    one(which, &buf);
});
