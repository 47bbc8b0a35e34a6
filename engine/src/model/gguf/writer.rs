//! Writing GGUF version 3: metadata, the tensor table, then each tensor's
//! data (32-byte aligned), streamed one tensor at a time so a large model
//! is never held twice.

use std::io::Write;
use std::path::Path;

use super::quant::GgmlType;
use crate::model::error::{ModelError, Result};

/// Alignment of the data section and of every tensor in it.
const ALIGNMENT: u64 = 32;

/// A metadata value as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Meta {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
}

/// A tensor's table entry: HF-order shape (reversed on disk) and type.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub ty: GgmlType,
}

impl TensorEntry {
    fn bytes(&self) -> u64 {
        let n = self.shape.iter().product::<usize>() as u64;
        self.ty.bytes_of(n).unwrap_or(0)
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_meta(out: &mut Vec<u8>, value: &Meta) {
    match value {
        Meta::U32(v) => {
            out.extend(4u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Meta::I32(v) => {
            out.extend(5u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Meta::F32(v) => {
            out.extend(6u32.to_le_bytes());
            out.extend(v.to_le_bytes());
        }
        Meta::Bool(v) => {
            out.extend(7u32.to_le_bytes());
            out.push(u8::from(*v));
        }
        Meta::Str(s) => {
            out.extend(8u32.to_le_bytes());
            put_str(out, s);
        }
        Meta::StrArray(items) => {
            out.extend(9u32.to_le_bytes());
            out.extend(8u32.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            items.iter().for_each(|s| put_str(out, s));
        }
        Meta::I32Array(items) => {
            out.extend(9u32.to_le_bytes());
            out.extend(5u32.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            items.iter().for_each(|v| out.extend(v.to_le_bytes()));
        }
    }
}

/// Writes a GGUF file: `data(i)` gives the encoded bytes of `tensors[i]`
/// (it is called in order, once each, and must give exactly the entry's
/// size). The bytes go to `<path>.part`, renamed to `path` once complete,
/// so an interrupted export never leaves a truncated model behind.
pub fn write(
    path: &Path,
    metadata: &[(String, Meta)],
    tensors: &[TensorEntry],
    mut data: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    let mut head = Vec::new();
    head.extend(b"GGUF");
    head.extend(3u32.to_le_bytes());
    head.extend((tensors.len() as u64).to_le_bytes());
    head.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut head, key);
        put_meta(&mut head, value);
    }
    let mut offset = 0u64;
    for t in tensors {
        put_str(&mut head, &t.name);
        head.extend((t.shape.len() as u32).to_le_bytes());
        for &d in t.shape.iter().rev() {
            head.extend((d as u64).to_le_bytes());
        }
        head.extend(t.ty.id().to_le_bytes());
        head.extend(offset.to_le_bytes());
        offset = (offset + t.bytes()).div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    head.extend(padding(head.len() as u64));
    let io = |source: std::io::Error| ModelError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let written = write_to(&part, &head, tensors, &mut data, path);
    match written {
        Ok(()) => std::fs::rename(&part, path).map_err(io),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// Zeros from `len` up to the next multiple of [`ALIGNMENT`].
fn padding(len: u64) -> Vec<u8> {
    vec![0u8; (len.div_ceil(ALIGNMENT) * ALIGNMENT - len) as usize]
}

/// The header, then every tensor's bytes, padded, into `part`; errors name
/// `path`, the file the user asked for.
fn write_to(
    part: &Path,
    head: &[u8],
    tensors: &[TensorEntry],
    data: &mut impl FnMut(usize) -> Result<Vec<u8>>,
    path: &Path,
) -> Result<()> {
    let io = |source: std::io::Error| ModelError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(part).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    out.write_all(head).map_err(io)?;
    for (i, t) in tensors.iter().enumerate() {
        let bytes = data(i)?;
        if bytes.len() as u64 != t.bytes() {
            return Err(ModelError::Write {
                path: path.to_path_buf(),
                source: std::io::Error::other(format!(
                    "tensor `{}` encoded to {} bytes, expected {}",
                    t.name,
                    bytes.len(),
                    t.bytes()
                )),
            });
        }
        out.write_all(&bytes).map_err(io)?;
        out.write_all(&padding(bytes.len() as u64)).map_err(io)?;
    }
    out.flush().map_err(io)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A finished file appears under its name only; a failed one leaves
    /// nothing, not even the temporary file.
    #[test]
    fn the_file_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let entry = TensorEntry {
            name: "w".into(),
            shape: vec![2, 3],
            ty: GgmlType::F32,
        };
        let bytes: Vec<u8> = (0..6u8).flat_map(|i| f32::from(i).to_le_bytes()).collect();
        write(&path, &[], std::slice::from_ref(&entry), |_| {
            Ok(bytes.clone())
        })
        .unwrap();
        assert!(path.is_file());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let broken = dir.path().join("broken.gguf");
        let failed = write(&broken, &[], &[entry], |_| Ok(vec![1, 2, 3]));
        assert!(matches!(failed, Err(ModelError::Write { .. })));
        assert!(!broken.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
