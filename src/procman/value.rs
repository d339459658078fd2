//! Generic LCM values: any type described by a [`StructDef`] table, decoded
//! from or encoded to the wire by walking the table (for generic tools and
//! for checking the typed codecs of [`super::types`] against their tables).
//!
//! This module uses the description ([`super::schema`]), the wire primitives
//! ([`super::codec`]) and the fingerprint ([`super::fingerprint`]); none of
//! them uses it.

use super::codec::{DecodeError, EncodeError, Reader, Writer};
use super::fingerprint::fingerprint;
use super::schema::{Dim, Field, Prim, StructDef, Type};

/// A decoded value of any table-described type, for generic tools and for
/// checking the typed codecs against their tables.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any integer primitive (`int8_t` … `int64_t`, `byte`).
    Int(i64),
    /// A `float`, kept as its bits so re-encoding is exact.
    Float(u32),
    /// A `double`, kept as its bits.
    Double(u64),
    /// A `boolean`.
    Bool(bool),
    /// A `string`.
    Str(String),
    /// An array (one level of dimensions).
    Array(Vec<Value>),
    /// A struct's members in declaration order.
    Struct(Vec<Value>),
}

impl Value {
    /// Decodes one message of type `def` (fingerprint first); returns the
    /// value and the number of bytes it took. Trailing bytes are ignored.
    pub fn decode(def: &'static StructDef, data: &[u8]) -> Result<(Value, usize), DecodeError> {
        let mut r = Reader::new(data);
        r.fingerprint(fingerprint(def))?;
        let v = decode_struct(def, &mut r)?;
        Ok((v, r.position()))
    }

    /// Encodes `self` as a message of type `def` (fingerprint first).
    pub fn encode(&self, def: &'static StructDef, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        Writer::message(out, fingerprint(def), |w| encode_struct(def, self, w))
    }
}

fn decode_struct(def: &'static StructDef, r: &mut Reader<'_>) -> Result<Value, DecodeError> {
    let mut members: Vec<Value> = Vec::with_capacity(def.fields.len());
    for f in def.fields {
        let v = decode_dims(def, &members, f, f.dims, r)?;
        members.push(v);
    }
    Ok(Value::Struct(members))
}

fn decode_dims(
    def: &'static StructDef,
    earlier: &[Value],
    f: &Field,
    dims: &[Dim],
    r: &mut Reader<'_>,
) -> Result<Value, DecodeError> {
    let Some((first, rest)) = dims.split_first() else {
        return decode_elem(f, r);
    };
    let n = match *first {
        Dim::Const(n) => n as usize,
        Dim::Var(name) => {
            let v = length_of(def, earlier, name).ok_or(DecodeError::Schema { field: f.name })?;
            r.check_count(f.name, v)?
        }
    };
    let mut items = Vec::with_capacity(n.min(r.remaining()));
    for _ in 0..n {
        items.push(decode_dims(def, earlier, f, rest, r)?);
    }
    Ok(Value::Array(items))
}

fn decode_elem(f: &Field, r: &mut Reader<'_>) -> Result<Value, DecodeError> {
    let name = f.name;
    Ok(match f.ty {
        Type::Struct(s) => decode_struct(s, r)?,
        Type::Prim(p) => match p {
            Prim::Int8 => Value::Int(r.i8(name)?.into()),
            Prim::Int16 => Value::Int(r.i16(name)?.into()),
            Prim::Int32 => Value::Int(r.i32(name)?.into()),
            Prim::Int64 => Value::Int(r.i64(name)?),
            Prim::Byte => Value::Int(r.u8(name)?.into()),
            Prim::Float => Value::Float(r.f32(name)?.to_bits()),
            Prim::Double => Value::Double(r.f64(name)?.to_bits()),
            Prim::Boolean => Value::Bool(r.boolean(name)?),
            Prim::String => Value::Str(r.string(name)?),
        },
    })
}

/// The value of the earlier integer member `name`, for a variable dimension.
fn length_of(def: &StructDef, earlier: &[Value], name: &str) -> Option<i64> {
    let i = def.fields.iter().position(|g| g.name == name)?;
    match earlier.get(i)? {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn encode_struct(def: &'static StructDef, v: &Value, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    let Value::Struct(members) = v else {
        return Err(EncodeError::Schema { field: def.name });
    };
    if members.len() != def.fields.len() {
        return Err(EncodeError::Schema { field: def.name });
    }
    for (f, m) in def.fields.iter().zip(members) {
        encode_dims(def, members, f, f.dims, m, w)?;
    }
    Ok(())
}

fn encode_dims(
    def: &'static StructDef,
    members: &[Value],
    f: &Field,
    dims: &[Dim],
    v: &Value,
    w: &mut Writer<'_>,
) -> Result<(), EncodeError> {
    let Some((first, rest)) = dims.split_first() else {
        return encode_elem(f, v, w);
    };
    let Value::Array(items) = v else {
        return Err(EncodeError::Schema { field: f.name });
    };
    let want = match *first {
        Dim::Const(n) => Some(n as i64),
        Dim::Var(name) => length_of(def, members, name),
    };
    if want != Some(items.len() as i64) {
        return Err(EncodeError::CountMismatch { field: f.name });
    }
    w.check_count(f.name, items.len())?;
    for item in items {
        encode_dims(def, members, f, rest, item, w)?;
    }
    Ok(())
}

fn encode_elem(f: &Field, v: &Value, w: &mut Writer<'_>) -> Result<(), EncodeError> {
    let bad = || EncodeError::Schema { field: f.name };
    match (f.ty, v) {
        (Type::Struct(s), v) => encode_struct(s, v, w)?,
        (Type::Prim(Prim::Int8), Value::Int(n)) => w.i8(i8::try_from(*n).map_err(|_| bad())?),
        (Type::Prim(Prim::Int16), Value::Int(n)) => w.i16(i16::try_from(*n).map_err(|_| bad())?),
        (Type::Prim(Prim::Int32), Value::Int(n)) => w.i32(i32::try_from(*n).map_err(|_| bad())?),
        (Type::Prim(Prim::Int64), Value::Int(n)) => w.i64(*n),
        (Type::Prim(Prim::Byte), Value::Int(n)) => w.u8(u8::try_from(*n).map_err(|_| bad())?),
        (Type::Prim(Prim::Float), Value::Float(b)) => w.f32(f32::from_bits(*b)),
        (Type::Prim(Prim::Double), Value::Double(b)) => w.f64(f64::from_bits(*b)),
        (Type::Prim(Prim::Boolean), Value::Bool(b)) => w.boolean(*b),
        (Type::Prim(Prim::String), Value::Str(s)) => w.string(f.name, s)?,
        _ => return Err(bad()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    static POINT: StructDef = StructDef {
        package: "t",
        name: "point_t",
        fields: &[
            Field { name: "n", ty: Type::Prim(Prim::Byte), dims: &[] },
            Field { name: "xy", ty: Type::Prim(Prim::Double), dims: &[Dim::Var("n"), Dim::Const(2)] },
            Field { name: "label", ty: Type::Prim(Prim::String), dims: &[] },
        ],
    };

    fn point() -> Value {
        let pair = |a: f64, b: f64| Value::Array(vec![Value::Double(a.to_bits()), Value::Double(b.to_bits())]);
        Value::Struct(vec![Value::Int(2), Value::Array(vec![pair(1.0, 2.0), pair(-0.5, 8.0)]), Value::Str("p".into())])
    }

    #[test]
    fn multi_dimensional_round_trip() {
        let mut out = Vec::new();
        point().encode(&POINT, &mut out).unwrap();
        assert_eq!(out.len(), 8 + 1 + 4 * 8 + 4 + 2);
        assert_eq!(out[8], 2);
        out.extend_from_slice(b"trailing");
        let (v, used) = Value::decode(&POINT, &out).unwrap();
        assert_eq!(used, out.len() - 8);
        assert_eq!(v, point());
    }

    #[test]
    fn count_must_match_the_length_member() {
        let Value::Struct(mut m) = point() else { unreachable!() };
        m[0] = Value::Int(3);
        let mut out = vec![7];
        assert_eq!(Value::Struct(m).encode(&POINT, &mut out), Err(EncodeError::CountMismatch { field: "xy" }));
        assert_eq!(out, [7], "a failed encode leaves the buffer as it was");
    }

    #[test]
    fn wrong_shape_is_a_schema_error() {
        let mut out = Vec::new();
        assert_eq!(Value::Int(1).encode(&POINT, &mut out), Err(EncodeError::Schema { field: "point_t" }));
        let v = Value::Struct(vec![Value::Int(300), Value::Array(vec![]), Value::Str(String::new())]);
        assert_eq!(v.encode(&POINT, &mut out), Err(EncodeError::Schema { field: "n" }));
    }
}
