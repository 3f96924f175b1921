//! The kernels one instruction-set level provides, chosen once at run time.
//!
//! A [`KernelSet`] holds, for every weight type, a row dot product (one weight row × one
//! activation row), a 1×4 variant (one weight row × four activation rows, so a prefill unpacks
//! each weight block once for four tokens), and for every activation type a row quantizer.
//! Levels overlay each other: the AVX-512 set starts from the AVX2 set, which starts from the
//! scalar reference set, so a level only lists the kernels it improves.
//!
//! Contract for every kernel: `w` holds `nb` whole blocks of the weight type, each activation
//! row holds `nb` whole blocks of its `vec_dot_type`; quantizers get `x.len()` a multiple of the
//! block size and `out.len()` the matching byte count. Callers (the matmul driver) check this
//! once per matrix, not per call.

use std::sync::OnceLock;

use crate::cpu::Isa;
use crate::formats::{
    ActivationFormat, BlockQ2_K, BlockQ3_K, BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1,
    BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K, WeightFormat,
};
use crate::packed::{GROUP_ROWS, TILE_TOKENS};
use crate::table::GgmlType;

/// One weight row · one activation row.
pub type RowDotFn = fn(w: &[u8], a: &[u8]) -> f32;
/// One weight row · four activation rows.
pub type RowDot4Fn = fn(w: &[u8], a: [&[u8]; 4]) -> [f32; 4];
/// f32 row → activation blocks.
pub type QuantizeRowFn = fn(x: &[f32], out: &mut [u8]);
/// Four weight rows · four activation rows → `out[r][t]`: the prefill GEMM micro-kernel, with
/// all sixteen accumulators in registers, each weight block unpacked once for four tokens and
/// each activation block loaded once for four rows.
pub type Tile4x4Fn = fn(w: [&[u8]; 4], a: [&[u8]; 4]) -> [[f32; 4]; 4];
/// Four weight rows · one activation row: the decode matvec micro-kernel.
pub type Rows4DotFn = fn(w: [&[u8]; 4], a: &[u8]) -> [f32; 4];
/// One packed group of eight weight rows ([`crate::packed`]) · one activation row (Q8_0 or
/// Q8_K blocks) with its per-block aux records (`crate::packed::fill_aux`) → the eight rows'
/// dots.
pub type PackedGemvFn = fn(group: &[u8], a: &[u8], aux: &[u8]) -> [f32; GROUP_ROWS];
/// One packed group · [`TILE_TOKENS`] activation rows → `out[t][r]`: the packed prefill
/// micro-kernel.
pub type PackedTileFn = fn(
    group: &[u8],
    a: [&[u8]; TILE_TOKENS],
    aux: [&[u8]; TILE_TOKENS],
) -> [[f32; GROUP_ROWS]; TILE_TOKENS];

const N_TYPES: usize = GgmlType::ALL.len();

#[derive(Clone)]
pub struct KernelSet {
    pub isa: Isa,
    row_dot: [Option<RowDotFn>; N_TYPES],
    row_dot4: [Option<RowDot4Fn>; N_TYPES],
    quantize: [Option<QuantizeRowFn>; N_TYPES],
    tile4x4: [Option<Tile4x4Fn>; N_TYPES],
    rows4: [Option<Rows4DotFn>; N_TYPES],
    packed_gemv: [Option<PackedGemvFn>; N_TYPES],
    packed_tile: [Option<PackedTileFn>; N_TYPES],
    /// Per type and [`KernelKind`], the provider that supplied the kernel (for printing).
    sources: [[Option<&'static str>; KernelKind::ALL.len()]; N_TYPES],
}

/// The kinds of kernel a set holds for each type; the discriminant is the column of
/// [`KernelSet::sources`] (declaration order = `ALL` order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelKind {
    RowDot,
    RowDot4,
    Tile4x4,
    Rows4,
    PackedGemv,
    PackedTile,
    Quantize,
}

impl KernelKind {
    pub const ALL: [KernelKind; 7] = [
        KernelKind::RowDot,
        KernelKind::RowDot4,
        KernelKind::Tile4x4,
        KernelKind::Rows4,
        KernelKind::PackedGemv,
        KernelKind::PackedTile,
        KernelKind::Quantize,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KernelKind::RowDot => "row_dot",
            KernelKind::RowDot4 => "row_dot4",
            KernelKind::Tile4x4 => "tile4x4",
            KernelKind::Rows4 => "rows4",
            KernelKind::PackedGemv => "packed_gemv",
            KernelKind::PackedTile => "packed_tile",
            KernelKind::Quantize => "quantize",
        }
    }
}

// `KernelSet::source` indexes columns by discriminant.
const _: () = {
    let mut i = 0;
    while i < KernelKind::ALL.len() {
        assert!(KernelKind::ALL[i] as usize == i);
        i += 1;
    }
};

fn slot(ty: GgmlType) -> usize {
    GgmlType::ALL
        .iter()
        .position(|&t| t == ty)
        .expect("every type is in ALL")
}

impl KernelSet {
    /// Row dot for weight type `ty` (activations in `ty.vec_dot_type()`); `None` for
    /// activation-only types.
    pub fn row_dot(&self, ty: GgmlType) -> Option<RowDotFn> {
        self.row_dot[slot(ty)]
    }

    pub fn row_dot4(&self, ty: GgmlType) -> Option<RowDot4Fn> {
        self.row_dot4[slot(ty)]
    }

    /// The 4×4 GEMM tile for weight type `ty`, where a level provides one.
    pub fn tile4x4(&self, ty: GgmlType) -> Option<Tile4x4Fn> {
        self.tile4x4[slot(ty)]
    }

    /// The four-row matvec kernel for weight type `ty`, where a level provides one.
    pub fn rows4(&self, ty: GgmlType) -> Option<Rows4DotFn> {
        self.rows4[slot(ty)]
    }

    /// The packed-layout matvec kernel for weight type `ty`, where a level provides one. A
    /// model packs a matrix at load time only if this is `Some`.
    pub fn packed_gemv(&self, ty: GgmlType) -> Option<PackedGemvFn> {
        self.packed_gemv[slot(ty)]
    }

    /// The packed-layout prefill tile for weight type `ty` (present whenever `packed_gemv` is).
    pub fn packed_tile(&self, ty: GgmlType) -> Option<PackedTileFn> {
        self.packed_tile[slot(ty)]
    }

    /// Quantizer into activation type `ty`; `None` for weight-only types.
    pub fn quantize(&self, ty: GgmlType) -> Option<QuantizeRowFn> {
        self.quantize[slot(ty)]
    }

    /// Which source file supplied the `kind` kernel for `ty` (e.g. `simd::avx2::packed`,
    /// `kernel_set` for the scalar references), or `None` if this set has none: what
    /// `lumen inspect --kernels` prints.
    pub fn source(&self, ty: GgmlType, kind: KernelKind) -> Option<&'static str> {
        self.sources[slot(ty)][kind as usize]
    }

    /// Replaces the entries `provider` has for this level.
    fn overlay(&mut self, provider: &Provider) {
        let source = provider
            .name
            .strip_prefix("lumen_kernels::")
            .unwrap_or(provider.name);
        for ty in GgmlType::ALL {
            let s = slot(ty);
            // In `KernelKind::ALL` order, so position = column.
            let found = [
                (provider.row_dot)(ty).map(|f| self.row_dot[s] = Some(f)),
                (provider.row_dot4)(ty).map(|f| self.row_dot4[s] = Some(f)),
                (provider.tile4x4)(ty).map(|f| self.tile4x4[s] = Some(f)),
                (provider.rows4)(ty).map(|f| self.rows4[s] = Some(f)),
                (provider.packed_gemv)(ty).map(|f| self.packed_gemv[s] = Some(f)),
                (provider.packed_tile)(ty).map(|f| self.packed_tile[s] = Some(f)),
                (provider.quantize)(ty).map(|f| self.quantize[s] = Some(f)),
            ];
            for (column, found) in found.iter().enumerate() {
                if found.is_some() {
                    self.sources[s][column] = Some(source);
                }
            }
        }
    }

    fn scalar() -> Self {
        let mut set = Self {
            isa: Isa::Scalar,
            row_dot: [None; N_TYPES],
            row_dot4: [None; N_TYPES],
            quantize: [None; N_TYPES],
            tile4x4: [None; N_TYPES],
            rows4: [None; N_TYPES],
            packed_gemv: [None; N_TYPES],
            packed_tile: [None; N_TYPES],
            sources: [[None; KernelKind::ALL.len()]; N_TYPES],
        };
        set.overlay(&SCALAR);
        set
    }

    fn scalar_with_tiles() -> Self {
        let mut set = Self::scalar();
        set.overlay(&SCALAR_TILES);
        set
    }

    fn build(isa: Isa) -> Self {
        if isa == Isa::Scalar {
            return Self::scalar_with_tiles();
        }
        let mut set = Self::scalar();
        for level in isa.chain() {
            for provider in providers(level) {
                set.overlay(provider);
            }
        }
        set.isa = isa;
        set
    }
}

/// What one source file of kernels offers.
pub(crate) struct Provider {
    /// The file's module path (`module_path!()`), printed as the kernels' source.
    pub name: &'static str,
    pub row_dot: fn(GgmlType) -> Option<RowDotFn>,
    pub row_dot4: fn(GgmlType) -> Option<RowDot4Fn>,
    pub quantize: fn(GgmlType) -> Option<QuantizeRowFn>,
    pub tile4x4: fn(GgmlType) -> Option<Tile4x4Fn>,
    pub rows4: fn(GgmlType) -> Option<Rows4DotFn>,
    pub packed_gemv: fn(GgmlType) -> Option<PackedGemvFn>,
    pub packed_tile: fn(GgmlType) -> Option<PackedTileFn>,
}

impl Provider {
    /// A provider offering nothing; files start from it with struct-update syntax.
    pub const NONE: Provider = Provider {
        name: "",
        row_dot: |_| None,
        row_dot4: |_| None,
        quantize: |_| None,
        tile4x4: |_| None,
        rows4: |_| None,
        packed_gemv: |_| None,
        packed_tile: |_| None,
    };
}

fn providers(isa: Isa) -> Vec<&'static Provider> {
    match isa {
        Isa::Scalar => vec![],
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => crate::simd::avx2_providers(),
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => crate::simd::avxvnni_providers(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => crate::simd::avx512_providers(),
        #[cfg(not(target_arch = "x86_64"))]
        _ => vec![],
    }
}

/// The kernel set of `isa`, or `None` if this CPU cannot run it. Built once per level.
pub fn kernels_for(isa: Isa) -> Option<&'static KernelSet> {
    static SETS: [OnceLock<KernelSet>; Isa::ALL.len()] =
        [const { OnceLock::new() }; Isa::ALL.len()];
    if !isa.is_available() {
        return None;
    }
    let index = Isa::ALL.iter().position(|&l| l == isa).unwrap_or(0);
    Some(SETS[index].get_or_init(|| KernelSet::build(isa)))
}

/// The kernel set used by default: `LUMEN_KERNELS=scalar|avx2|avxvnni|avx512` if set and available,
/// else the best level this CPU runs. Chosen once per process.
pub fn kernels() -> &'static KernelSet {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    let isa = *CHOSEN.get_or_init(|| {
        let forced = std::env::var("LUMEN_KERNELS")
            .ok()
            .and_then(|v| Isa::from_name(&v));
        match forced {
            Some(isa) if isa.is_available() => isa,
            _ => Isa::best_available(),
        }
    });
    kernels_for(isa).unwrap_or_else(|| kernels_for(Isa::Scalar).expect("scalar always runs"))
}

/// Why `LUMEN_KERNELS` was not honoured, if it was set to something unusable.
pub fn forced_kernels_problem() -> Option<String> {
    let value = std::env::var("LUMEN_KERNELS").ok()?;
    match Isa::from_name(&value) {
        None => Some(format!(
            "LUMEN_KERNELS={value} is not one of {}",
            Isa::ALL.map(Isa::name).join(", ")
        )),
        Some(isa) if !isa.is_available() => {
            Some(format!("LUMEN_KERNELS={value}: this CPU cannot run it"))
        }
        Some(_) => None,
    }
}

// ---- The scalar reference set: the format files' `_ref` kernels behind the byte interface.

fn scalar_dot<W: WeightFormat>(w: &[u8], a: &[u8]) -> f32 {
    let w = crate::dispatch::blocks_of::<W>(w).expect("whole blocks (kernel contract)");
    let a = crate::dispatch::blocks_of::<W::Act>(a).expect("whole blocks (kernel contract)");
    W::vec_dot(&w, &a)
}

fn scalar_dot4<W: WeightFormat>(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
    a.map(|a| scalar_dot::<W>(w, a))
}

fn scalar_tile<W: WeightFormat>(w: [&[u8]; 4], a: [&[u8]; 4]) -> [[f32; 4]; 4] {
    w.map(|w| a.map(|a| scalar_dot::<W>(w, a)))
}

fn scalar_rows4<W: WeightFormat>(w: [&[u8]; 4], a: &[u8]) -> [f32; 4] {
    w.map(|w| scalar_dot::<W>(w, a))
}

fn scalar_packed_gemv<W: WeightFormat>(group: &[u8], a: &[u8], _: &[u8]) -> [f32; GROUP_ROWS] {
    crate::packed::packed_gemv_ref(W::TYPE, group, a)
}

fn scalar_packed_tile<W: WeightFormat>(
    group: &[u8],
    a: [&[u8]; TILE_TOKENS],
    aux: [&[u8]; TILE_TOKENS],
) -> [[f32; GROUP_ROWS]; TILE_TOKENS] {
    std::array::from_fn(|t| scalar_packed_gemv::<W>(group, a[t], aux[t]))
}

/// The scalar packed entries, one per type with a packed layout, each with its format struct:
/// one list generates the gemv and tile lookups and the compile-time check that no packed
/// layout lacks its reference kernels.
macro_rules! scalar_packed {
    ($($t:ident => $b:ty),+ $(,)?) => {
        const SCALAR_PACKED: &[GgmlType] = &[$(GgmlType::$t),+];

        fn scalar_packed_gemv_fn(ty: GgmlType) -> Option<PackedGemvFn> {
            match ty {
                $(GgmlType::$t => Some(scalar_packed_gemv::<$b> as _),)+
                _ => None,
            }
        }

        fn scalar_packed_tile_fn(ty: GgmlType) -> Option<PackedTileFn> {
            match ty {
                $(GgmlType::$t => Some(scalar_packed_tile::<$b> as _),)+
                _ => None,
            }
        }
    };
}

scalar_packed!(
    Q4_0 => BlockQ4_0,
    Q4_1 => BlockQ4_1,
    Q5_0 => BlockQ5_0,
    Q8_0 => BlockQ8_0,
    Q4_K => BlockQ4_K,
    Q5_K => BlockQ5_K,
    Q6_K => BlockQ6_K,
);

const _: () = assert!(crate::packed::covers_packed_formats(&[SCALAR_PACKED]));

fn scalar_quantize<A: ActivationFormat>(x: &[f32], out: &mut [u8]) {
    crate::dispatch::quantize_blocks::<A>(x, out).expect("whole blocks (kernel contract)")
}

macro_rules! per_weight_type {
    ($ty:expr, $f:ident) => {
        match $ty {
            GgmlType::F32 => Some($f::<f32> as _),
            GgmlType::F16 => Some($f::<half::f16> as _),
            GgmlType::BF16 => Some($f::<half::bf16> as _),
            GgmlType::Q4_0 => Some($f::<BlockQ4_0> as _),
            GgmlType::Q4_1 => Some($f::<BlockQ4_1> as _),
            GgmlType::Q5_0 => Some($f::<BlockQ5_0> as _),
            GgmlType::Q5_1 => Some($f::<BlockQ5_1> as _),
            GgmlType::Q8_0 => Some($f::<BlockQ8_0> as _),
            GgmlType::Q2_K => Some($f::<BlockQ2_K> as _),
            GgmlType::Q3_K => Some($f::<BlockQ3_K> as _),
            GgmlType::Q4_K => Some($f::<BlockQ4_K> as _),
            GgmlType::Q5_K => Some($f::<BlockQ5_K> as _),
            GgmlType::Q6_K => Some($f::<BlockQ6_K> as _),
            GgmlType::Q8_1 | GgmlType::Q8_K => None,
        }
    };
}

fn scalar_row_dot(ty: GgmlType) -> Option<RowDotFn> {
    per_weight_type!(ty, scalar_dot)
}

fn scalar_row_dot4(ty: GgmlType) -> Option<RowDot4Fn> {
    per_weight_type!(ty, scalar_dot4)
}

fn scalar_tile4x4(ty: GgmlType) -> Option<Tile4x4Fn> {
    per_weight_type!(ty, scalar_tile)
}

fn scalar_rows4_dot(ty: GgmlType) -> Option<Rows4DotFn> {
    per_weight_type!(ty, scalar_rows4)
}

fn scalar_quantize_row(ty: GgmlType) -> Option<QuantizeRowFn> {
    match ty {
        GgmlType::F32 => Some(scalar_quantize::<f32>),
        GgmlType::F16 => Some(scalar_quantize::<half::f16>),
        GgmlType::BF16 => Some(scalar_quantize::<half::bf16>),
        GgmlType::Q8_0 => Some(scalar_quantize::<BlockQ8_0>),
        GgmlType::Q8_1 => Some(scalar_quantize::<BlockQ8_1>),
        GgmlType::Q8_K => Some(scalar_quantize::<BlockQ8_K>),
        _ => None,
    }
}

static SCALAR: Provider = Provider {
    name: module_path!(),
    row_dot: scalar_row_dot,
    row_dot4: scalar_row_dot4,
    quantize: scalar_quantize_row,
    ..Provider::NONE
};

/// Tile kernels made of reference dots, for the scalar level only: they let the drivers' tile
/// paths run (and be tested) everywhere, but would be slower than a SIMD level's row kernels,
/// so SIMD levels do not inherit them.
static SCALAR_TILES: Provider = Provider {
    name: module_path!(),
    tile4x4: scalar_tile4x4,
    rows4: scalar_rows4_dot,
    packed_gemv: scalar_packed_gemv_fn,
    packed_tile: scalar_packed_tile_fn,
    ..Provider::NONE
};
