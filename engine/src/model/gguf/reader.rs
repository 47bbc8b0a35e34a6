//! Parsing a GGUF file (llama.cpp's format, versions 2 and 3): header,
//! metadata and tensor table, over a read-only memory map. Every count,
//! length and offset is checked against the bytes that remain before
//! anything is allocated, so a truncated or hostile file gets an error and
//! memory bounded by the file's size, never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::quant::{self, GgmlType};
use crate::model::error::{ModelError, Result};

/// Most dimensions a ggml tensor has.
const MAX_DIMS: usize = 4;
/// Most elements of one metadata array (a 256k vocabulary and its merges
/// fit; a lying length cannot make us allocate gigabytes).
const MAX_ARRAY: u64 = 1 << 22;
/// Default alignment of the tensor data section.
const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            Value::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// A tensor's entry in the table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (a row's length).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte range of the data in the file.
    pub start: usize,
    pub len: usize,
}

impl TensorInfo {
    /// The shape in row-major (PyTorch) order: ggml's dims reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn elements(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

/// An opened GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    map: memmap2::Mmap,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

type Parse<T> = std::result::Result<T, String>;

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Parse<&'a [u8]> {
        if n > self.remaining() {
            return Err(format!(
                "{what} at byte {} needs {n} bytes but the file ends after {} more (truncated?)",
                self.pos,
                self.remaining()
            ));
        }
        let n = n as usize;
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Parse<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Parse<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Parse<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Parse<String> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    /// A value of GGUF type `ty`; arrays nest at most one level.
    fn value(&mut self, ty: u32, what: &str, nested: bool) -> Parse<Value> {
        Ok(match ty {
            0 => Value::Int(self.array::<1>(what)?[0].into()),
            1 => Value::Int((self.array::<1>(what)?[0] as i8).into()),
            2 => Value::Int(u16::from_le_bytes(self.array(what)?).into()),
            3 => Value::Int(i16::from_le_bytes(self.array(what)?).into()),
            4 => Value::Int(self.u32(what)?.into()),
            5 => Value::Int(i32::from_le_bytes(self.array(what)?).into()),
            6 => Value::Float(f32::from_le_bytes(self.array(what)?).into()),
            7 => Value::Bool(self.array::<1>(what)?[0] != 0),
            8 => Value::Str(self.string(what)?),
            9 if !nested => {
                let elem = self.u32(what)?;
                let count = self.u64(what)?;
                let min_size = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => return Err(format!("{what} has unknown element type {other}")),
                };
                if count > MAX_ARRAY || count.saturating_mul(min_size) > self.remaining() {
                    return Err(format!(
                        "{what} claims {count} elements, more than the file can hold"
                    ));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, what, true)?);
                }
                Value::Array(items)
            }
            10 => Value::Int(self.u64(what)?.into()),
            11 => Value::Int(i64::from_le_bytes(self.array(what)?).into()),
            12 => Value::Float(f64::from_le_bytes(self.array(what)?)),
            other => return Err(format!("{what} has unknown value type {other}")),
        })
    }
}

impl GgufFile {
    /// Opens and checks `path`: the header, every metadata value, and that
    /// every tensor's data lies inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: read-only map; a file truncated underneath us is the hazard
        // every memory-mapped model reader accepts.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let (metadata, tensors) = parse(&map).map_err(|reason| ModelError::Gguf {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            metadata,
            tensors,
        })
    }

    /// A metadata value, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's values as f32, in row-major order of [`TensorInfo::shape`].
    pub fn dequantize(&self, info: &TensorInfo) -> Vec<f32> {
        let mut out = vec![0.0f32; info.elements()];
        let data = &self.map[info.start..info.start + info.len];
        quant::dequantize(info.ty, data, &mut out);
        out
    }
}

/// Header, metadata and tensor table of the bytes of a GGUF file.
fn parse(bytes: &[u8]) -> Parse<(BTreeMap<String, Value>, Vec<TensorInfo>)> {
    let mut c = Cursor { bytes, pos: 0 };
    if c.take(4, "the magic number")? != b"GGUF" {
        return Err("it does not start with the magic `GGUF`".into());
    }
    let version = c.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(format!("GGUF version {version} (only 2 and 3 are read)"));
    }
    let tensor_count = c.u64("the tensor count")?;
    let kv_count = c.u64("the metadata count")?;
    // A key-value pair takes at least 13 bytes, a tensor entry at least 32.
    if kv_count.saturating_mul(13) > c.remaining() {
        return Err(format!(
            "it claims {kv_count} metadata entries, more than fit in the file"
        ));
    }
    if tensor_count.saturating_mul(32) > c.remaining() {
        return Err(format!(
            "it claims {tensor_count} tensors, more than fit in the file"
        ));
    }
    let mut metadata = BTreeMap::new();
    for i in 0..kv_count {
        let key = c.string(&format!("metadata key #{i}"))?;
        let ty = c.u32(&format!("the type of `{key}`"))?;
        let value = c.value(ty, &format!("metadata `{key}`"), false)?;
        metadata.insert(key, value);
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::Int(a)) if *a > 0 && *a <= 1 << 16 && (*a as u64).is_power_of_two() => {
            *a as u64
        }
        Some(other) => return Err(format!("general.alignment {other:?} is not a power of two")),
    };
    let mut raw = Vec::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let name = c.string(&format!("the name of tensor #{i}"))?;
        let n_dims = c.u32(&format!("the rank of `{name}`"))? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!(
                "tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS})"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(c.u64(&format!("the shape of `{name}`"))?);
        }
        let ty_id = c.u32(&format!("the type of `{name}`"))?;
        let offset = c.u64(&format!("the offset of `{name}`"))?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| {
            format!(
                "tensor `{name}` has ggml type {ty_id}, which is not read here \
                 (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K and Q6_K are)"
            )
        })?;
        raw.push((name, dims, ty, offset));
    }
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = bytes.len() as u64;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, ty, offset) in raw {
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d).filter(|_| d > 0))
            .ok_or_else(|| format!("tensor `{name}` has an empty or absurd shape {dims:?}"))?;
        let len = ty.bytes_of(elements).ok_or_else(|| {
            format!("tensor `{name}` of {elements} elements is not a whole number of {ty:?} blocks")
        })?;
        if !dims[0].is_multiple_of(ty.block().0 as u64) {
            return Err(format!(
                "tensor `{name}`: rows of {} are not whole {ty:?} blocks",
                dims[0]
            ));
        }
        let start = data_start
            .checked_add(offset)
            .filter(|s| s.checked_add(len).is_some_and(|end| end <= file_len))
            .ok_or_else(|| {
                format!(
                    "tensor `{name}` ({len} bytes at data offset {offset}) lies outside the file \
                     of {file_len} bytes (truncated?)"
                )
            })?;
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            start: start as usize,
            len: len as usize,
        });
    }
    Ok((metadata, tensors))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::writer::{Meta, TensorEntry, write};
    use super::*;

    /// A small valid file: two metadata values and an F32 and a Q8_0 tensor.
    fn valid(dir: &Path) -> Vec<u8> {
        let path = dir.join("ok.gguf");
        let meta = vec![
            (
                "general.architecture".to_string(),
                Meta::Str("llama".into()),
            ),
            (
                "tokenizer.ggml.tokens".to_string(),
                Meta::StrArray(vec!["a".into(), "bc".into()]),
            ),
        ];
        let tensors = vec![
            TensorEntry {
                name: "w".into(),
                shape: vec![2, 32],
                ty: GgmlType::F32,
            },
            TensorEntry {
                name: "q".into(),
                shape: vec![32],
                ty: GgmlType::Q8_0,
            },
        ];
        let values: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        write(&path, &meta, &tensors, |i| {
            Ok(if i == 0 {
                quant::quantize(GgmlType::F32, &values).unwrap()
            } else {
                quant::quantize(GgmlType::Q8_0, &values[..32]).unwrap()
            })
        })
        .unwrap();
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(
            file.get("tokenizer.ggml.tokens")
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(file.tensor("w").unwrap().shape(), vec![2, 32]);
        assert_eq!(file.dequantize(file.tensor("w").unwrap()), values);
        std::fs::read(&path).unwrap()
    }

    fn open_bytes(dir: &Path, bytes: &[u8]) -> Result<GgufFile> {
        let path = dir.join("bad.gguf");
        std::fs::write(&path, bytes).unwrap();
        GgufFile::open(&path)
    }

    fn patch(bytes: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        out[at..at + with.len()].copy_from_slice(with);
        out
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = valid(dir.path());
        let file = open_bytes(dir.path(), &bytes).unwrap();
        let end = file.tensors.iter().map(|t| t.start + t.len).max().unwrap();
        for len in 0..end {
            let err = open_bytes(dir.path(), &bytes[..len]).unwrap_err();
            assert!(matches!(err, ModelError::Gguf { .. }), "{len}: {err}");
        }
        // Only the last tensor's padding may go.
        assert!(open_bytes(dir.path(), &bytes[..end]).is_ok());
    }

    #[test]
    fn lying_counts_lengths_and_offsets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = valid(dir.path());
        let find = |needle: &[u8]| {
            bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap()
        };
        let huge = u64::MAX.to_le_bytes();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (patch(&bytes, 0, b"GGUX"), "magic"),
            (patch(&bytes, 4, &9u32.to_le_bytes()), "version"),
            (patch(&bytes, 8, &huge), "tensors"),
            (
                patch(&bytes, 16, &(1u64 << 40).to_le_bytes()),
                "metadata entries",
            ),
            // The key length of the first metadata entry.
            (patch(&bytes, 24, &huge), "needs"),
            // The element count of the token array.
            (
                patch(
                    &bytes,
                    find(b"tokenizer.ggml.tokens") + 21 + 4 + 4,
                    &(1u64 << 60).to_le_bytes(),
                ),
                "elements",
            ),
            // The value type of the first entry.
            (
                patch(&bytes, 24 + 8 + 20, &99u32.to_le_bytes()),
                "unknown value type",
            ),
        ];
        for (bad, needle) in cases {
            let err = open_bytes(dir.path(), &bad).unwrap_err().to_string();
            assert!(err.contains(needle), "expected `{needle}` in: {err}");
        }
        // Tensor `q`: name, rank 1, dim, type, offset.
        let q = find(&[1, 0, 0, 0, 0, 0, 0, 0, b'q']) + 9;
        for (at, value, needle) in [
            (q, 7u64, "dimensions"),
            (q + 4, 0, "empty or absurd"),
            (q + 4, 1 << 62, "outside the file"),
            (q + 4, 33, "blocks"),
            (q + 16, 1 << 50, "outside the file"),
        ] {
            let bytes = if at == q {
                patch(&bytes, at, &(value as u32).to_le_bytes())
            } else {
                patch(&bytes, at, &value.to_le_bytes())
            };
            let err = open_bytes(dir.path(), &bytes).unwrap_err().to_string();
            assert!(err.contains(needle), "expected `{needle}` in: {err}");
        }
        let err = open_bytes(dir.path(), &patch(&bytes, q + 12, &6u32.to_le_bytes()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ggml type 6"), "{err}");
    }
}
