//! Host-side tensors read from and written to safetensors: one
//! `model.safetensors`, or shards listed by `model.safetensors.index.json`.
//! Values are widened to f32 (the backend decides how to store them).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::Deserialize;

use super::error::{ModelError, Result};

/// One tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape, data }
    }
}

/// Named tensors, sorted by name.
pub type TensorMap = BTreeMap<String, HostTensor>;

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

/// Reads the weights of a model directory (a folder made from a GGUF file
/// reads them from the file it links to).
pub fn load_dir(dir: &Path) -> Result<TensorMap> {
    match open_dir(dir)? {
        DirTensors::Map(map) => Ok(map),
        DirTensors::Files(files) => files.read_all(),
    }
}

/// The tensors of a model directory, to be taken one at a time.
#[derive(Debug)]
pub enum DirTensors {
    /// safetensors files, mapped: a tensor is widened to f32 only when it is
    /// taken, so loading never holds the whole model in f32 on the host.
    Files(SafetensorsFiles),
    /// Already in memory (a GGUF file is dequantized as a whole).
    Map(TensorMap),
}

/// Mapped safetensors files and which file holds each tensor.
#[derive(Debug)]
pub struct SafetensorsFiles {
    files: Vec<(PathBuf, memmap2::Mmap)>,
    names: BTreeMap<String, usize>,
}

/// Opens a model directory's weights without reading them: one
/// `model.safetensors`, the shards of `model.safetensors.index.json`, or
/// the GGUF file a converted folder links to.
pub fn open_dir(dir: &Path) -> Result<DirTensors> {
    match locate(dir)? {
        Located::Gguf(path) => super::gguf::load_tensors(&path).map(DirTensors::Map),
        Located::Safetensors { shards, .. } => {
            SafetensorsFiles::open(shards).map(DirTensors::Files)
        }
    }
}

/// Where a model directory's weights are, in the order [`open_dir`] looks:
/// one `model.safetensors`, a GGUF link, or an index and its shards.
enum Located {
    Gguf(PathBuf),
    Safetensors {
        index: Option<PathBuf>,
        shards: Vec<PathBuf>,
    },
}

fn locate(dir: &Path) -> Result<Located> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(Located::Safetensors {
            index: None,
            shards: vec![single],
        });
    }
    let gguf = dir.join(super::gguf::GGUF_LINK);
    if gguf.exists() {
        return Ok(Located::Gguf(gguf));
    }
    let index_path = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index_path).map_err(|e| ModelError::io(&index_path, e))?;
    let index: ShardIndex = serde_json::from_str(&text).map_err(|e| ModelError::Safetensors {
        path: index_path.clone(),
        reason: e.to_string(),
    })?;
    let mut shards: Vec<&String> = index.weight_map.values().collect();
    shards.sort();
    shards.dedup();
    Ok(Located::Safetensors {
        shards: shards.into_iter().map(|s| dir.join(s)).collect(),
        index: Some(index_path),
    })
}

/// Every file [`open_dir`] reads a model directory's weights from (a
/// shard index and its shards, or the GGUF link itself), for a stage that
/// publishes a model beside its base's weights.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(match locate(dir)? {
        Located::Gguf(link) => vec![link],
        Located::Safetensors { index, shards } => index.into_iter().chain(shards).collect(),
    })
}

impl SafetensorsFiles {
    /// Maps `paths` and indexes their tensors by name, reading no values.
    pub fn open(paths: Vec<PathBuf>) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut names = BTreeMap::new();
        for path in paths {
            let file = std::fs::File::open(&path).map_err(|e| ModelError::io(&path, e))?;
            // SAFETY: the map is read-only; a file truncated underneath us is
            // the same hazard every safetensors reader accepts.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(&path, e))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| ModelError::Safetensors {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            for name in st.names() {
                names.insert(name.to_string(), files.len());
            }
            files.push((path, map));
        }
        Ok(SafetensorsFiles { files, names })
    }

    /// Every tensor, widened to f32 and checked finite.
    pub fn read_all(&self) -> Result<TensorMap> {
        self.names
            .iter()
            .map(|(name, &i)| {
                let (path, map) = &self.files[i];
                Ok((name.clone(), read_tensor(path, map, name)?))
            })
            .collect()
    }

    /// The shape of `name`, if a file holds it.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let (_, map) = &self.files[*self.names.get(name)?];
        let st = SafeTensors::deserialize(map).ok()?;
        st.tensor(name).ok().map(|view| view.shape().to_vec())
    }

    /// Reads `name`, widened to f32 and checked finite.
    pub fn read(&self, name: &str, dir: &Path) -> Result<HostTensor> {
        let missing = || ModelError::MissingTensor {
            name: name.to_string(),
            dir: PathBuf::from(dir),
        };
        let (path, map) = &self.files[*self.names.get(name).ok_or_else(missing)?];
        read_tensor(path, map, name)
    }
}

/// One tensor of a mapped safetensors file, widened to f32; non-finite
/// values are refused, naming the tensor.
fn read_tensor(path: &Path, map: &[u8], name: &str) -> Result<HostTensor> {
    let bad = |reason: String| ModelError::Safetensors {
        path: path.to_path_buf(),
        reason,
    };
    let st = SafeTensors::deserialize(map).map_err(|e| bad(e.to_string()))?;
    let view = st.tensor(name).map_err(|e| bad(e.to_string()))?;
    let data =
        to_f32(&view).map_err(|d| bad(format!("tensor `{name}` has unsupported dtype {d:?}")))?;
    let non_finite = data.iter().filter(|x| !x.is_finite()).count();
    if non_finite > 0 {
        return Err(ModelError::NonFinite {
            path: path.to_path_buf(),
            name: name.to_string(),
            count: non_finite,
            len: data.len(),
        });
    }
    Ok(HostTensor::new(view.shape().to_vec(), data))
}

/// Reads every tensor of one safetensors file.
pub fn load_file(path: &Path) -> Result<TensorMap> {
    SafetensorsFiles::open(vec![path.to_path_buf()])?.read_all()
}

fn to_f32(view: &TensorView<'_>) -> std::result::Result<Vec<f32>, Dtype> {
    let bytes = view.data();
    let words = |n: usize| bytes.chunks_exact(n);
    Ok(match view.dtype() {
        Dtype::F32 => words(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::BF16 => words(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F16 => words(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => words(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        Dtype::I64 => words(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        other => return Err(other),
    })
}

/// Writes tensors as f32 safetensors, with `metadata` in the header (PEFT
/// and transformers write `{"format": "pt"}`).
pub fn save_file(
    path: &Path,
    tensors: &TensorMap,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let raw = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), raw, t.shape.clone())
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(name, raw, shape)| {
            TensorView::new(Dtype::F32, shape.clone(), raw)
                .map(|v| (name.clone(), v))
                .map_err(|e| ModelError::Safetensors {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, metadata, path).map_err(|e| ModelError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// `{"format": "pt"}`, the header metadata PyTorch tools expect.
pub fn pt_metadata() -> Option<HashMap<String, String>> {
    Some(HashMap::from([("format".to_string(), "pt".to_string())]))
}

/// Takes a tensor out of the map, checking its shape.
pub fn take(map: &mut TensorMap, name: &str, shape: &[usize], dir: &Path) -> Result<HostTensor> {
    let t = map.remove(name).ok_or_else(|| ModelError::MissingTensor {
        name: name.to_string(),
        dir: PathBuf::from(dir),
    })?;
    has_shape(t, name, shape)
}

/// `t` if it has the shape the model expects of `name`.
pub fn has_shape(t: HostTensor, name: &str, shape: &[usize]) -> Result<HostTensor> {
    if t.shape != shape {
        return Err(ModelError::Shape {
            name: name.to_string(),
            found: t.shape,
            expected: shape.to_vec(),
        });
    }
    Ok(t)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_weights_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let mut data: Vec<f32> = (0..6).map(|i| i as f32 * 0.37 - 1.0).collect();
        data[4] = f32::NAN;
        let tensors = BTreeMap::from([("a.weight".to_string(), HostTensor::new(vec![2, 3], data))]);
        save_file(&path, &tensors, None).unwrap();
        let err = load_file(&path).unwrap_err();
        assert!(
            matches!(&err, ModelError::NonFinite { name, count: 1, .. } if name == "a.weight"),
            "{err:?}"
        );
    }

    #[test]
    fn save_then_load_round_trips_and_shards_are_merged() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = TensorMap::new();
        a.insert(
            "x".into(),
            HostTensor::new(vec![2, 3], vec![1.0, -2.0, 3.5, 0.25, 5.0, 6.0]),
        );
        let mut b = TensorMap::new();
        b.insert("y".into(), HostTensor::new(vec![1], vec![7.0]));
        save_file(&dir.path().join("s1.safetensors"), &a, pt_metadata()).unwrap();
        save_file(&dir.path().join("s2.safetensors"), &b, None).unwrap();
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"metadata": {}, "weight_map": {"x": "s1.safetensors", "y": "s2.safetensors"}}"#,
        )
        .unwrap();
        let all = load_dir(dir.path()).unwrap();
        assert_eq!(all["x"], a["x"]);
        assert_eq!(all["y"], b["y"]);
        let mut all = all;
        let err = take(&mut all, "x", &[3, 2], dir.path()).unwrap_err();
        assert!(err.to_string().contains("[2, 3]"));
        assert!(take(&mut all, "z", &[1], dir.path()).is_err());

        // Opened without reading, each tensor is read when asked for.
        let DirTensors::Files(files) = open_dir(dir.path()).unwrap() else {
            panic!("safetensors are mapped, not read")
        };
        assert_eq!(files.shape("x"), Some(vec![2, 3]));
        assert_eq!(files.read("x", dir.path()).unwrap(), a["x"]);
        assert_eq!(files.read("y", dir.path()).unwrap(), b["y"]);
        assert!(files.shape("z").is_none() && files.read("z", dir.path()).is_err());
    }
}
