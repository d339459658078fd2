//! The LCM type fingerprint, computed from a [`StructDef`] table exactly as
//! `lcm-gen` computes it (docs/fleet.md §2.5), at compile time.
//!
//! The base hash folds each member's name, its type name (primitives only),
//! and its dimensions into a 64-bit value; the fingerprint adds the
//! fingerprints of nested struct types (skipping any type already on the
//! path, so recursive types terminate) and rotates left by one. Struct,
//! package and nested type names are not hashed.

use super::schema::{Dim, StructDef, Type};

/// One step of lcm-gen's hash: the shift is arithmetic on the signed value,
/// `c` is a signed char, and everything wraps modulo 2^64.
const fn upd(v: u64, c: i8) -> u64 {
    let s = v as i64;
    (((s << 8) ^ (s >> 55)) as u64).wrapping_add(c as i64 as u64)
}

/// Folds a string: its length (as a signed char), then each byte.
const fn upd_str(mut v: u64, s: &[u8]) -> u64 {
    v = upd(v, s.len() as u8 as i8);
    let mut i = 0;
    while i < s.len() {
        v = upd(v, s[i] as i8);
        i += 1;
    }
    v
}

/// Folds the decimal spelling of `n` (a constant array size) as a string.
const fn upd_decimal(v: u64, n: u32) -> u64 {
    let mut digits = [0u8; 10];
    let mut len = 0;
    let mut m = n;
    loop {
        digits[9 - len] = b'0' + (m % 10) as u8;
        len += 1;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    let (_, tail) = digits.split_at(10 - len);
    upd_str(v, tail)
}

/// The base hash of `def` (what `lcm-gen -d` prints as its hash).
pub const fn base_hash(def: &StructDef) -> u64 {
    let mut v: u64 = 0x12345678;
    let mut i = 0;
    while i < def.fields.len() {
        let f = &def.fields[i];
        v = upd_str(v, f.name.as_bytes());
        if let Type::Prim(p) = f.ty {
            v = upd_str(v, p.name().as_bytes());
        }
        v = upd(v, f.dims.len() as u8 as i8);
        let mut d = 0;
        while d < f.dims.len() {
            match f.dims[d] {
                Dim::Const(n) => {
                    v = upd(v, 0);
                    v = upd_decimal(v, n);
                }
                Dim::Var(name) => {
                    v = upd(v, 1);
                    v = upd_str(v, name.as_bytes());
                }
            }
            d += 1;
        }
        i += 1;
    }
    v
}

/// The chain of struct types from the top-level type down to the one being
/// hashed, so a type that contains itself contributes 0 (as in lcm-gen).
struct Path<'a> {
    def: &'a StructDef,
    up: Option<&'a Path<'a>>,
}

const fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn same_type(a: &StructDef, b: &StructDef) -> bool {
    same_bytes(a.package.as_bytes(), b.package.as_bytes()) && same_bytes(a.name.as_bytes(), b.name.as_bytes())
}

const fn on_path(def: &StructDef, mut path: Option<&Path<'_>>) -> bool {
    while let Some(p) = path {
        if same_type(p.def, def) {
            return true;
        }
        path = p.up;
    }
    false
}

const fn fingerprint_on(def: &StructDef, parents: Option<&Path<'_>>) -> u64 {
    if on_path(def, parents) {
        return 0;
    }
    let here = Path { def, up: parents };
    let mut h = base_hash(def);
    let mut i = 0;
    while i < def.fields.len() {
        if let Type::Struct(s) = def.fields[i].ty {
            h = h.wrapping_add(fingerprint_on(s, Some(&here)));
        }
        i += 1;
    }
    h.rotate_left(1)
}

/// The fingerprint of `def`: the first eight bytes of every message of the type.
pub const fn fingerprint(def: &StructDef) -> u64 {
    fingerprint_on(def, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procman::schema::{Field, Prim};
    use crate::procman::types::{CMD_DESIRED_T, CMD_STATUS_T, CMD_T, DEPUTY_INFO_T, DISCOVERY_T, ORDERS_T, OUTPUT_T};

    /// Spec §2.5: base hashes as `lcm-gen -d` prints them, and fingerprints.
    #[test]
    fn procman_lcm_table() {
        let table: [(&StructDef, u64, u64); 7] = [
            (&CMD_T, 0x113bfa24d42ae998, 0x2277f449a855d330),
            (&CMD_DESIRED_T, 0xb6db6f86a57ccf6c, 0xb2a6c7a09ba54539),
            (&CMD_STATUS_T, 0xb1f81bfa1b11f041, 0xa8e0208786cf86e3),
            (&DEPUTY_INFO_T, 0x1b5b36d099a8612c, 0x8876aeb040efd01f),
            (&ORDERS_T, 0x36fb328cefe816f1, 0xd343f45b171ab855),
            (&OUTPUT_T, 0xc77d2e57aed00f59, 0x8efa5caf5da01eb3),
            (&DISCOVERY_T, 0xd8e418c15f6ba5ca, 0xb1c83182bed74b95),
        ];
        for (def, base, fp) in table {
            assert_eq!(base_hash(def), base, "base hash of {}", def.name);
            assert_eq!(fingerprint(def), fp, "fingerprint of {}", def.name);
        }
    }

    /// The spec's worked example of how nesting composes.
    #[test]
    fn nesting_composes_as_in_the_spec() {
        let cmd = base_hash(&CMD_T).rotate_left(1);
        let desired = base_hash(&CMD_DESIRED_T).wrapping_add(cmd).rotate_left(1);
        assert_eq!(fingerprint(&ORDERS_T), base_hash(&ORDERS_T).wrapping_add(desired).rotate_left(1));
    }

    #[test]
    fn update_step_is_signed() {
        // The arithmetic shift copies the sign bit; a byte >= 0x80 subtracts.
        assert_eq!(upd(1 << 63, 0), 0xffff_ffff_ffff_ff00, "a logical shift would give 0x100");
        assert_eq!(upd(0, -1), u64::MAX);
        assert_eq!(upd_str(0, &[0x80]), upd(upd(0, 1), -128));
    }

    #[test]
    fn constant_dimensions_hash_their_decimal_spelling() {
        assert_eq!(upd_decimal(5, 0), upd_str(5, b"0"));
        assert_eq!(upd_decimal(5, 4096), upd_str(5, b"4096"));
        assert_eq!(upd_decimal(5, u32::MAX), upd_str(5, b"4294967295"));
    }

    static SELF_REF: StructDef = StructDef {
        package: "t",
        name: "node_t",
        fields: &[
            Field { name: "value", ty: Type::Prim(Prim::Int32), dims: &[] },
            Field { name: "next", ty: Type::Struct(&SELF_REF), dims: &[Dim::Const(1)] },
        ],
    };

    #[test]
    fn recursive_type_terminates() {
        assert_eq!(fingerprint(&SELF_REF), base_hash(&SELF_REF).rotate_left(1));
    }
}
