//! A tiny random-weight Llama GGUF built with Lumen's writer, for bad-input tests: the tests
//! damage it in one specific way and check the error names the problem.
#![allow(dead_code)]

use lumen::gguf::keys;
use lumen::gguf::names;
use lumen::gguf::writer::{GgufWriter, MetaValue, TensorData};
use lumen::kernels::GgmlType;

pub const N_EMBD: usize = 32;
pub const N_FF: usize = 64;
pub const N_VOCAB: usize = 16;
pub const N_LAYER: usize = 1;

pub fn f32_tensor(name: &str, shape: &[usize], seed: u32) -> TensorData {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
    let data = (0..n)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            ((state as f32 / u32::MAX as f32 - 0.5) * 0.2).to_le_bytes()
        })
        .collect();
    TensorData {
        name: name.to_string(),
        ty: GgmlType::F32,
        shape: shape.to_vec(),
        data,
    }
}

/// Metadata and tensors of a valid 1-layer model; `skip` leaves one tensor out.
pub fn tiny_llama_writer(arch: &str, skip: Option<&str>) -> GgufWriter {
    let mut w = GgufWriter::new();
    let k = |s| keys::arch_key(arch, s);
    w.add_meta(keys::GENERAL_ARCHITECTURE, MetaValue::Str(arch.into()))
        .add_meta(k(keys::CONTEXT_LENGTH), MetaValue::U32(64))
        .add_meta(k(keys::EMBEDDING_LENGTH), MetaValue::U32(N_EMBD as u32))
        .add_meta(k(keys::BLOCK_COUNT), MetaValue::U32(N_LAYER as u32))
        .add_meta(k(keys::FEED_FORWARD_LENGTH), MetaValue::U32(N_FF as u32))
        .add_meta(k(keys::HEAD_COUNT), MetaValue::U32(4))
        .add_meta(k(keys::HEAD_COUNT_KV), MetaValue::U32(2))
        .add_meta(k(keys::RMS_EPS), MetaValue::F32(1e-5));
    let (e, kv) = (N_EMBD, N_EMBD / 2);
    let mut tensors = vec![
        f32_tensor(names::TOKEN_EMBD, &[e, N_VOCAB], 1),
        f32_tensor(names::OUTPUT_NORM, &[e], 2),
    ];
    for (i, (suffix, shape)) in [
        (names::ATTN_NORM, vec![e]),
        (names::ATTN_Q, vec![e, e]),
        (names::ATTN_K, vec![e, kv]),
        (names::ATTN_V, vec![e, kv]),
        (names::ATTN_OUTPUT, vec![e, e]),
        (names::FFN_NORM, vec![e]),
        (names::FFN_GATE, vec![e, N_FF]),
        (names::FFN_UP, vec![e, N_FF]),
        (names::FFN_DOWN, vec![N_FF, e]),
    ]
    .into_iter()
    .enumerate()
    {
        tensors.push(f32_tensor(&names::blk(0, suffix), &shape, 10 + i as u32));
    }
    for t in tensors
        .into_iter()
        .filter(|t| Some(t.name.as_str()) != skip)
    {
        w.add_tensor(t);
    }
    w
}

pub fn tiny_llama_bytes() -> Vec<u8> {
    tiny_llama_writer("llama", None).to_bytes()
}

/// Byte position of the `type` field in the tensor-info record of `name`.
pub fn tensor_type_field(bytes: &[u8], name: &str) -> usize {
    let needle = name.as_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("name present");
    let n_dims_at = at + needle.len();
    let n_dims = u32::from_le_bytes(bytes[n_dims_at..n_dims_at + 4].try_into().unwrap()) as usize;
    n_dims_at + 4 + 8 * n_dims
}

/// GGUF metadata value type ids (the GGUF spec's `gguf_metadata_value_type`).
pub const GGUF_TYPE_U32: u32 = 4;
pub const GGUF_TYPE_STRING: u32 = 8;
pub const GGUF_TYPE_ARRAY: u32 = 9;

/// A GGUF v3 file written field by field, for hostile inputs the writer refuses to produce
/// (lengths that lie, counts past the end of the file).
pub struct RawGguf {
    pub bytes: Vec<u8>,
}

impl RawGguf {
    /// Magic, version 3, and the two counts.
    pub fn new(n_tensors: u64, n_kv: u64) -> Self {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&n_tensors.to_le_bytes());
        bytes.extend_from_slice(&n_kv.to_le_bytes());
        RawGguf { bytes }
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A GGUF string: u64 length, then the bytes.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.bytes.extend_from_slice(s.as_bytes());
        self
    }

    /// A string whose announced length (`len`) need not match the bytes that follow.
    pub fn str_claiming(&mut self, len: u64, s: &str) -> &mut Self {
        self.u64(len);
        self.bytes.extend_from_slice(s.as_bytes());
        self
    }

    /// The head of an array value: its element type and announced length.
    pub fn array_head(&mut self, key: &str, elem_type: u32, len: u64) -> &mut Self {
        self.str(key).u32(GGUF_TYPE_ARRAY).u32(elem_type).u64(len)
    }

    pub fn pad(&mut self, n: usize) -> &mut Self {
        self.bytes.resize(self.bytes.len() + n, 0);
        self
    }
}
