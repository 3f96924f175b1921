//! Typed access to GGUF metadata.
//!
//! gguf-rs hands metadata over as `serde_json::Value`s and does not keep the stored integer
//! width, so every getter checks the range it needs and names the key and file when it fails.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::GgufError;

pub struct Metadata {
    path: PathBuf,
    kv: BTreeMap<String, Value>,
}

impl Metadata {
    pub(crate) fn new(path: PathBuf, kv: BTreeMap<String, Value>) -> Self {
        Self { path, kv }
    }

    pub fn raw(&self) -> &BTreeMap<String, Value> {
        &self.kv
    }

    pub fn contains(&self, key: &str) -> bool {
        self.kv.contains_key(key)
    }

    fn missing(&self, key: &str) -> GgufError {
        GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        }
    }

    fn bad(&self, key: &str, message: impl Into<String>) -> GgufError {
        GgufError::BadValue {
            path: self.path.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn value(&self, key: &str) -> Result<&Value, GgufError> {
        self.kv.get(key).ok_or_else(|| self.missing(key))
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.value(key)?
            .as_str()
            .ok_or_else(|| self.bad(key, "expected a string"))
    }

    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.value(key)?
            .as_u64()
            .ok_or_else(|| self.bad(key, "expected a non-negative integer"))
    }

    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.get_u64(key)?;
        u32::try_from(v).map_err(|_| self.bad(key, format!("{v} does not fit in 32 bits")))
    }

    /// A count or size: a positive integer no larger than `cap`.
    pub fn get_usize_capped(&self, key: &str, cap: usize) -> Result<usize, GgufError> {
        let v = self.get_u64(key)?;
        if v == 0 || v > cap as u64 {
            return Err(self.bad(key, format!("{v} is outside 1..={cap}")));
        }
        Ok(v as usize)
    }

    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self
            .value(key)?
            .as_f64()
            .ok_or_else(|| self.bad(key, "expected a number"))?;
        Ok(v as f32)
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.value(key)?
            .as_bool()
            .ok_or_else(|| self.bad(key, "expected a boolean"))
    }

    /// `Ok(None)` when the key is absent, an error when it is present with the wrong type.
    pub fn opt<T>(
        &self,
        key: &str,
        get: impl Fn(&Self, &str) -> Result<T, GgufError>,
    ) -> Result<Option<T>, GgufError> {
        if self.contains(key) {
            get(self, key).map(Some)
        } else {
            Ok(None)
        }
    }

    fn get_array(&self, key: &str) -> Result<&[Value], GgufError> {
        self.value(key)?
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| self.bad(key, "expected an array"))
    }

    pub fn get_str_array(&self, key: &str) -> Result<Vec<String>, GgufError> {
        self.get_array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.bad(key, format!("entry {i} is not a string")))
            })
            .collect()
    }

    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        self.get_array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| self.bad(key, format!("entry {i} is not a number")))
            })
            .collect()
    }

    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        self.get_array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_i64()
                    .and_then(|x| i32::try_from(x).ok())
                    .ok_or_else(|| self.bad(key, format!("entry {i} is not a 32-bit integer")))
            })
            .collect()
    }
}
