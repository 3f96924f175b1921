//! The ggml tensor types Lumen knows, and one table with everything about them.

use std::fmt;

/// A ggml tensor element type (the `ggml_type` ids stored in GGUF files).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
}

/// Static facts about one [`GgmlType`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeInfo {
    pub ty: GgmlType,
    /// ggml's numeric id (`enum ggml_type`).
    pub id: u32,
    /// llama.cpp's name (`ggml_type_name`).
    pub name: &'static str,
    /// Elements per block (1 for the float types).
    pub block_elems: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    /// The type activations are converted to for `vec_dot` with weights of this type
    /// (llama.cpp's `type_traits_cpu[..].vec_dot_type`; activation-only types name themselves).
    pub vec_dot_type: GgmlType,
    /// Whether an f32 row can be quantized into this type (activation formats).
    pub activation: bool,
}

const fn info(
    ty: GgmlType,
    id: u32,
    name: &'static str,
    block_elems: usize,
    block_bytes: usize,
    vec_dot_type: GgmlType,
    activation: bool,
) -> TypeInfo {
    TypeInfo {
        ty,
        id,
        name,
        block_elems,
        block_bytes,
        vec_dot_type,
        activation,
    }
}

use GgmlType as G;

/// One entry per [`GgmlType`], in declaration order (`TYPE_TABLE[ty as usize].ty == ty`).
pub const TYPE_TABLE: [TypeInfo; 15] = [
    info(G::F32, 0, "F32", 1, 4, G::F32, true),
    info(G::F16, 1, "F16", 1, 2, G::F16, true),
    info(G::BF16, 30, "BF16", 1, 2, G::BF16, true),
    info(G::Q4_0, 2, "Q4_0", 32, 18, G::Q8_0, false),
    info(G::Q4_1, 3, "Q4_1", 32, 20, G::Q8_1, false),
    info(G::Q5_0, 6, "Q5_0", 32, 22, G::Q8_0, false),
    info(G::Q5_1, 7, "Q5_1", 32, 24, G::Q8_1, false),
    info(G::Q8_0, 8, "Q8_0", 32, 34, G::Q8_0, true),
    info(G::Q8_1, 9, "Q8_1", 32, 36, G::Q8_1, true),
    info(G::Q2_K, 10, "Q2_K", 256, 84, G::Q8_K, false),
    info(G::Q3_K, 11, "Q3_K", 256, 110, G::Q8_K, false),
    info(G::Q4_K, 12, "Q4_K", 256, 144, G::Q8_K, false),
    info(G::Q5_K, 13, "Q5_K", 256, 176, G::Q8_K, false),
    info(G::Q6_K, 14, "Q6_K", 256, 210, G::Q8_K, false),
    info(G::Q8_K, 15, "Q8_K", 256, 292, G::Q8_K, true),
];

impl GgmlType {
    /// Every type, in table order.
    pub const ALL: [GgmlType; 15] = [
        G::F32,
        G::F16,
        G::BF16,
        G::Q4_0,
        G::Q4_1,
        G::Q5_0,
        G::Q5_1,
        G::Q8_0,
        G::Q8_1,
        G::Q2_K,
        G::Q3_K,
        G::Q4_K,
        G::Q5_K,
        G::Q6_K,
        G::Q8_K,
    ];

    /// This type's table entry.
    pub const fn info(self) -> &'static TypeInfo {
        &TYPE_TABLE[self as usize]
    }

    /// The type with ggml id `id`, if Lumen supports it.
    pub fn from_id(id: u32) -> Option<Self> {
        TYPE_TABLE.iter().find(|t| t.id == id).map(|t| t.ty)
    }

    pub const fn id(self) -> u32 {
        self.info().id
    }

    /// The type's name as gguf-py / llama.cpp tools spell it: `"F32"`, `"Q4_0"`, `"Q4_K"`, ...
    /// (`ggml_type_name` prints the same names in lower case except the `K`).
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// Parse a type name, ASCII case-insensitively (`"Q4_K"`, `"q4_k"` and ggml's `"q4_K"` all work).
    pub fn from_name(name: &str) -> Option<Self> {
        TYPE_TABLE
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
            .map(|t| t.ty)
    }

    pub const fn block_elems(self) -> usize {
        self.info().block_elems
    }

    pub const fn block_bytes(self) -> usize {
        self.info().block_bytes
    }

    /// Bytes taken by `n_elems` elements; `None` if `n_elems` is not a whole number of blocks
    /// or the size overflows `usize`.
    pub const fn row_bytes(self, n_elems: usize) -> Option<usize> {
        let be = self.block_elems();
        if !n_elems.is_multiple_of(be) {
            return None;
        }
        (n_elems / be).checked_mul(self.block_bytes())
    }

    /// The activation type `vec_dot` expects for weights of this type.
    pub const fn vec_dot_type(self) -> GgmlType {
        self.info().vec_dot_type
    }

    /// Whether `quantize_row` can produce this type (F32, F16, BF16, Q8_0, Q8_1, Q8_K).
    pub const fn is_activation_format(self) -> bool {
        self.info().activation
    }

    /// Whether this type can be the weight side of `vec_dot` (all but Q8_1 and Q8_K).
    pub const fn is_weight_format(self) -> bool {
        !matches!(self, G::Q8_1 | G::Q8_K)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_declaration_order_and_consistent() {
        for (i, t) in TYPE_TABLE.iter().enumerate() {
            assert_eq!(t.ty as usize, i, "{:?}", t.ty);
            assert_eq!(GgmlType::ALL[i], t.ty);
            assert_eq!(GgmlType::from_id(t.id), Some(t.ty));
            assert_eq!(GgmlType::from_name(t.name), Some(t.ty));
            assert_eq!(GgmlType::from_name(&t.name.to_uppercase()), Some(t.ty));
            assert!(t.vec_dot_type.is_activation_format());
        }
        assert_eq!(GgmlType::from_id(4), None); // removed Q4_2
        assert_eq!(GgmlType::from_name("q4_2"), None);
        assert_eq!(GgmlType::Q4_K.to_string(), "Q4_K");
        assert_eq!(GgmlType::from_name("q4_K"), Some(GgmlType::Q4_K));
    }

    #[test]
    fn row_bytes() {
        assert_eq!(GgmlType::Q4_0.row_bytes(64), Some(36));
        assert_eq!(GgmlType::Q4_0.row_bytes(33), None);
        assert_eq!(GgmlType::Q6_K.row_bytes(512), Some(420));
        assert_eq!(GgmlType::F32.row_bytes(3), Some(12));
        assert_eq!(GgmlType::F32.row_bytes(usize::MAX), None);
        assert_eq!(GgmlType::Q8_0.row_bytes(0), Some(0));
    }
}
