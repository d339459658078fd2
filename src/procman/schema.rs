//! The LCM type tables: each message type described as data (its members,
//! their types and array dimensions), the way an `.lcm` file declares it.
//!
//! The tables only describe; they depend on nothing else in this module.
//! The users of the description are [`super::fingerprint`] (computes each
//! type's fingerprint from its table), [`super::codec`] (the typed message
//! codecs of [`super::types`], led by that fingerprint) and
//! [`super::value`] (walks any table over encoded bytes, so the hand-written
//! codecs can be checked against their tables). A later protocol
//! (libbot2's `bot_procman`, docs/fleet.md §3.3) needs only new tables and
//! structs.

/// An LCM primitive type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prim {
    /// `int8_t`
    Int8,
    /// `int16_t`
    Int16,
    /// `int32_t`
    Int32,
    /// `int64_t`
    Int64,
    /// `byte` (unsigned)
    Byte,
    /// `float` (IEEE-754 binary32)
    Float,
    /// `double` (IEEE-754 binary64)
    Double,
    /// `string`
    String,
    /// `boolean`
    Boolean,
}

impl Prim {
    /// The type's name as an `.lcm` file spells it (and as lcm-gen hashes it).
    pub const fn name(self) -> &'static str {
        match self {
            Prim::Int8 => "int8_t",
            Prim::Int16 => "int16_t",
            Prim::Int32 => "int32_t",
            Prim::Int64 => "int64_t",
            Prim::Byte => "byte",
            Prim::Float => "float",
            Prim::Double => "double",
            Prim::String => "string",
            Prim::Boolean => "boolean",
        }
    }
}

/// The type of a member: a primitive or another struct (inlined on the wire).
#[derive(Clone, Copy, Debug)]
pub enum Type {
    /// A primitive.
    Prim(Prim),
    /// A nested struct.
    Struct(&'static StructDef),
}

/// One array dimension of a member.
#[derive(Clone, Copy, Debug)]
pub enum Dim {
    /// A fixed length (`T x[4]`).
    Const(u32),
    /// A length held by an earlier integer member of that name (`T x[n]`).
    Var(&'static str),
}

/// One member of a struct.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The member's name.
    pub name: &'static str,
    /// Its element type.
    pub ty: Type,
    /// Its array dimensions, outermost first; empty for a scalar.
    pub dims: &'static [Dim],
}

/// An LCM struct: its package, name and members in declaration order.
#[derive(Debug)]
pub struct StructDef {
    /// The package (`procman_lcm`); not part of the fingerprint.
    pub package: &'static str,
    /// The struct's name (`deputy_info_t`); not part of the fingerprint.
    pub name: &'static str,
    /// The members, in declaration order (which is wire order).
    pub fields: &'static [Field],
}
