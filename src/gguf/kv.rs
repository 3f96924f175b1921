//! Metadata exactly as stored: every key in file order with its GGUF value type, for tools
//! that copy a file's metadata into another (`lumen quantize`). The typed getters in
//! [`super::Metadata`] go through gguf-rs, which keeps neither the order nor the integer widths.
//!
//! The file has already been validated by [`GgufFile::open`]; this parser still checks every
//! length against the bytes it has, so a file that changed underneath cannot make it panic.

use super::writer::MetaValue;
use super::{GgufError, GgufFile, MAX_ARRAY_LEN};

/// Nested arrays deeper than this are refused (GGUF files in the wild use one level).
const MAX_DEPTH: usize = 4;
/// The key count sits after magic (4), version (4) and tensor count (8); pairs follow it.
const KV_COUNT_OFFSET: usize = 16;

/// All metadata of `file` in stored order, with stored types.
pub fn read_kv(file: &GgufFile) -> Result<Vec<(String, MetaValue)>, GgufError> {
    let bytes = file.bytes_at(0, file.file_len());
    let mut r = Cursor {
        bytes,
        pos: KV_COUNT_OFFSET,
        file,
    };
    let n_kv = r.u64("metadata key count")?;
    // Each pair takes at least 13 bytes, so a count beyond that is a lie (checked on open too).
    let n_kv = usize::try_from(n_kv)
        .ok()
        .filter(|&n| n <= bytes.len() / 13)
        .ok_or_else(|| r.parse(format!("metadata key count {n_kv} is impossible")))?;
    let mut out = Vec::with_capacity(n_kv);
    for _ in 0..n_kv {
        let key = r.string("metadata key")?;
        let ty = r.u32(&key)?;
        let value = r.value(&key, ty, 0)?;
        out.push((key, value));
    }
    Ok(out)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: &'a GgufFile,
}

impl<'a> Cursor<'a> {
    fn parse(&self, message: String) -> GgufError {
        GgufError::Parse {
            path: self.file.path().to_path_buf(),
            message,
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| GgufError::Truncated {
            path: self.file.path().to_path_buf(),
            what: format!("metadata '{what}'"),
            needed: (self.pos as u64).saturating_add(n as u64),
            file_len: self.bytes.len() as u64,
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let s = self.take(len, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.parse(format!("'{what}': invalid UTF-8")))
    }

    fn value(&mut self, key: &str, ty: u32, depth: usize) -> Result<MetaValue, GgufError> {
        Ok(match ty {
            0 => MetaValue::U8(u8::from_le_bytes(self.array(key)?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(key)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(key)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => MetaValue::Bool(self.array::<1>(key)?[0] != 0),
            8 => MetaValue::Str(self.string(key)?),
            9 => self.array_value(key, depth)?,
            10 => MetaValue::U64(u64::from_le_bytes(self.array(key)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(self.parse(format!("key '{key}': unknown value type {other}"))),
        })
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<MetaValue, GgufError> {
        if depth >= MAX_DEPTH {
            return Err(self.parse(format!(
                "key '{key}': arrays nested deeper than {MAX_DEPTH}"
            )));
        }
        let item_ty = self.u32(key)?;
        let len = self.u64(key)?;
        // Same cap as the reader's (every element takes at least one byte, too).
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n < MAX_ARRAY_LEN && n <= self.bytes.len() - self.pos)
            .ok_or_else(|| {
                self.parse(format!(
                    "key '{key}': array length {len} is impossible (cap {MAX_ARRAY_LEN})"
                ))
            })?;
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(self.value(key, item_ty, depth + 1)?);
        }
        Ok(MetaValue::Array(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::writer::{GgufWriter, TensorData};
    use lumen_kernels::GgmlType;

    #[test]
    fn round_trips_every_value_type_in_order() {
        let kv = vec![
            ("z.first".to_string(), MetaValue::U32(7)),
            ("a.u8".into(), MetaValue::U8(250)),
            ("a.i8".into(), MetaValue::I8(-3)),
            ("a.u16".into(), MetaValue::U16(65000)),
            ("a.i16".into(), MetaValue::I16(-300)),
            ("a.i32".into(), MetaValue::I32(-70000)),
            ("a.f32".into(), MetaValue::F32(0.25)),
            ("a.bool".into(), MetaValue::Bool(true)),
            ("a.str".into(), MetaValue::Str("héllo".into())),
            (
                "a.arr".into(),
                MetaValue::Array(vec![MetaValue::Str("x".into()), MetaValue::Str("".into())]),
            ),
            ("a.u64".into(), MetaValue::U64(1 << 40)),
            ("a.i64".into(), MetaValue::I64(-(1 << 40))),
            ("a.f64".into(), MetaValue::F64(-0.5)),
        ];
        let mut w = GgufWriter::new();
        for (k, v) in &kv {
            w.add_meta(k.clone(), v.clone());
        }
        w.add_tensor(TensorData {
            name: "t".into(),
            ty: GgmlType::F32,
            shape: vec![2],
            data: vec![0; 8],
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.gguf");
        w.write_atomic(&path).unwrap();
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(read_kv(&file).unwrap(), kv);
    }
}
