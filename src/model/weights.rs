//! Weights inside a mapped GGUF file, checked at load, and the matmuls that read them: shared by
//! every architecture (Llama text, mllama text and vision).

use std::sync::Arc;

use lumen_kernels::matmul::{matmul_many, matmul_reference, QuantizedRows, WeightView};
use lumen_kernels::{GgmlType, KernelSet, PackedMatrix};

use super::ModelError;
use crate::gguf::GgufFile;

/// A matrix inside the GGUF file, checked at load: `rows` outputs of `cols` inputs.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub offset: usize,
    pub n_bytes: usize,
    /// An interleaved copy for the packed kernels (`lumen_kernels::packed`), made at load.
    pub packed: Option<Arc<PackedMatrix>>,
}

impl Matrix {
    pub fn view<'a>(&'a self, file: &'a GgufFile) -> WeightView<'a> {
        WeightView {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            bytes: file.bytes_at(self.offset, self.n_bytes),
            packed: self.packed.as_deref(),
        }
    }

    /// Copies the matrix into the interleaved layout when `ks` has packed kernels for its type.
    pub fn pack(&mut self, file: &GgufFile, ks: &KernelSet) -> Result<(), ModelError> {
        if ks.packed_gemv(self.ty).is_none()
            || !PackedMatrix::supports(self.ty, self.rows, self.cols)
        {
            return Ok(());
        }
        let bytes = file.bytes_at(self.offset, self.n_bytes);
        let packed = PackedMatrix::pack(self.ty, self.rows, self.cols, bytes)?;
        self.packed = Some(Arc::new(packed));
        // The kernels read the packed copy from now on; the mapped original need not stay
        // resident too (it is read back from the file if a fallback path ever touches it).
        file.release_range(self.offset, self.n_bytes);
        Ok(())
    }

    /// Output rows `start..start + n` as a matrix of their own: a fused tensor (Phi-3's QKV and
    /// gate+up) is its parts' rows one after another, so each part is a byte range of it.
    pub fn rows(&self, start: usize, n: usize) -> Matrix {
        assert!(
            self.packed.is_none() && start + n <= self.rows,
            "rows of an unpacked matrix"
        );
        let row_bytes = self.n_bytes / self.rows;
        Matrix {
            rows: n,
            offset: self.offset + start * row_bytes,
            n_bytes: n * row_bytes,
            ..self.clone()
        }
    }

    /// Heap bytes of the packed copy (0 when not packed).
    pub fn packed_bytes(&self) -> usize {
        self.packed.as_ref().map_or(0, |p| p.heap_bytes())
    }
}

/// What a matmul needs besides the weights: the mapped file, the kernel set, and whether to
/// compute in dequantized f32 (validation against float references).
pub struct Weights<'a> {
    pub file: &'a GgufFile,
    pub kernels: &'static KernelSet,
    pub reference_matmul: bool,
}

impl Weights<'_> {
    /// Applies several weight matrices to the same activations `x` (rows of `cols` values),
    /// quantizing the activations once per distinct vec-dot type.
    pub fn matmuls(
        &self,
        x: &[f32],
        targets: &mut [(&Matrix, &mut [f32])],
    ) -> Result<(), ModelError> {
        if self.reference_matmul {
            for (m, out) in targets.iter_mut() {
                matmul_reference(&m.view(self.file), x, out)?;
            }
            return Ok(());
        }
        // Matrices reading the same activations share one quantization and one parallel region
        // (in practice every matrix of a layer has the same vec-dot type).
        let mut rest: Vec<(&Matrix, &mut [f32])> = targets
            .iter_mut()
            .map(|(m, out)| (*m, &mut **out))
            .collect();
        while let Some((first, _)) = rest.first() {
            let act_ty = first.ty.vec_dot_type();
            let (group, others): (Vec<_>, Vec<_>) = rest
                .into_iter()
                .partition(|(m, _)| m.ty.vec_dot_type() == act_ty);
            rest = others;
            let qr = QuantizedRows::quantize(self.kernels, act_ty, x, group[0].0.cols)?;
            let views: Vec<WeightView> = group.iter().map(|(m, _)| m.view(self.file)).collect();
            let mut outs: Vec<&mut [f32]> = group.into_iter().map(|(_, out)| out).collect();
            matmul_many(self.kernels, &views, &qr, &mut outs)?;
        }
        Ok(())
    }
}

/// The matrix `name`: `rows` outputs of `cols` inputs (GGUF shape `[cols, rows]`).
pub fn matrix(file: &GgufFile, name: &str, cols: usize, rows: usize) -> Result<Matrix, ModelError> {
    let t = file.require(name)?;
    let expected = [cols, rows];
    let found: Vec<usize> = t.shape.iter().copied().filter(|&d| d != 1).collect();
    if t.shape.len() > 2 && found.len() > 2 || t.shape[0] != cols || t.n_elements() != cols * rows {
        return Err(ModelError::BadShape {
            path: file.path().to_path_buf(),
            tensor: name.to_string(),
            expected: expected.to_vec(),
            found: t.shape.clone(),
        });
    }
    if matches!(t.ty, GgmlType::Q8_1 | GgmlType::Q8_K) {
        return Err(ModelError::BadShape {
            path: file.path().to_path_buf(),
            tensor: format!("{name} (type {} is an activation-only format)", t.ty.name()),
            expected: expected.to_vec(),
            found: t.shape.clone(),
        });
    }
    Ok(Matrix {
        ty: t.ty,
        rows,
        cols,
        offset: t.offset,
        n_bytes: t.n_bytes,
        packed: None,
    })
}

/// `LUMEN_REPACK=0` keeps every weight in the GGUF layout (A/B measurements).
pub fn repack_enabled() -> bool {
    std::env::var("LUMEN_REPACK").map_or(true, |v| v != "0")
}

/// A tensor of `len` elements (norm weight, bias, gate, rope factors) dequantized to f32.
pub fn vector(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
    let t = file.require(name)?;
    if t.n_elements() != len {
        return Err(ModelError::BadShape {
            path: file.path().to_path_buf(),
            tensor: name.to_string(),
            expected: vec![len],
            found: t.shape.clone(),
        });
    }
    let mut out = vec![0.0f32; len];
    lumen_kernels::dequantize_row(t.ty, file.tensor_bytes(t), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::test_files::{one_tensor, touch};

    /// The text side's twin of the vision encoder's test: a packed copy releases the mapped
    /// original, so a model's resident set holds one copy of each packed matrix, not two.
    #[test]
    fn the_mapped_original_is_released_once_the_packed_copy_exists() {
        let (rows, cols) = (1024, 2048);
        let ty = GgmlType::Q4_0;
        let src: Vec<f32> = (0..rows * cols).map(|i| (i % 31) as f32 - 15.0).collect();
        let mut data = vec![0u8; rows * ty.row_bytes(cols).unwrap()];
        lumen_kernels::quantize_weights(ty, &src, &mut data).unwrap();
        let (_dir, file) = one_tensor(ty, rows, cols, data);
        let mut m = matrix(&file, "w", cols, rows).unwrap();
        let (offset, n_bytes) = (m.offset, m.n_bytes);
        touch(&file, offset, n_bytes);
        m.pack(&file, lumen_kernels::kernels()).unwrap();
        assert!(m.packed.is_some(), "Q4_0 has packed kernels on every level");
        assert_eq!(file.resident_bytes(offset, n_bytes), 0);
    }
}
