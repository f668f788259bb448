//! The GGUF writer: metadata and tensors in, a v3 file out.

use std::io::Write;
use std::path::{Path, PathBuf};

use mori_kernels::GgmlType;

use crate::value::{Array, Value};
use crate::{Error, Result, DEFAULT_ALIGNMENT, GGUF_MAGIC};

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then writes a GGUF v3 file.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer holding a copy of everything in `f`, to modify and write anew.
    pub fn from_file(f: &crate::GgufFile) -> Result<Self> {
        let mut w = GgufWriter::new();
        for (k, v) in f.metadata() {
            w.add(k.clone(), v.clone());
        }
        for t in f.tensors() {
            w.add_tensor(
                t.name.clone(),
                t.dims.clone(),
                t.ty,
                f.tensor_data(t).to_vec(),
            )?;
        }
        Ok(w)
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.metadata.len();
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.len() != before
    }

    /// Removes tensor `name`; returns whether it was there.
    pub fn remove_tensor(&mut self, name: &str) -> bool {
        let before = self.tensors.len();
        self.tensors.retain(|t| t.name != name);
        self.tensors.len() != before
    }

    /// Sets `key`, keeping the order of first insertion.
    pub fn add(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
    }

    /// Adds a tensor; `dims` in ggml order (`dims[0]` is the row length) and
    /// `data` already encoded in `ty`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<()> {
        let name = name.into();
        let err = |msg: String| Error::Invalid {
            path: "<writer>".into(),
            what: format!("tensor '{name}'"),
            msg,
        };
        if dims.is_empty() || dims.len() > 4 {
            return Err(err(format!("{} dimensions (1 to 4 allowed)", dims.len())));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(err("added twice".into()));
        }
        let row = ty
            .row_size(dims[0] as usize)
            .map_err(|e| err(e.to_string()))?;
        let n_rows: u64 = dims[1..].iter().product();
        let expected = row as u64 * n_rows;
        if data.len() as u64 != expected {
            return Err(err(format!(
                "{} bytes given, shape {dims:?} of {ty} needs {expected}",
                data.len()
            )));
        }
        self.tensors.push(PendingTensor {
            name,
            dims,
            ty,
            data,
        });
        Ok(())
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .filter(|a| a.is_power_of_two())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// The whole file in memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(&mut out).map_err(|source| Error::Io {
            path: "<memory>".into(),
            source,
        })?;
        Ok(out)
    }

    /// Writes the file next to `path` and renames it into place, so a reader
    /// never sees a half-written model.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = temp_path(path);
        let result = (|| {
            let f = std::fs::File::create(&tmp)?;
            let mut w = std::io::BufWriter::new(f);
            self.write_to(&mut w)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let align = self.alignment();
        let layout: Vec<(&str, &[u64], GgmlType, u64)> = self
            .tensors
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.dims.as_slice(),
                    t.ty,
                    t.data.len() as u64,
                )
            })
            .collect();
        write_header(w, &self.metadata, &layout, align)?;
        let zeros = vec![0u8; align as usize];
        for t in &self.tensors {
            w.write_all(&t.data)?;
            w.write_all(&zeros[..pad_len(t.data.len() as u64, align)])?;
        }
        Ok(())
    }

    /// Starts writing a file with this writer's metadata whose tensors are
    /// described by `layout` and handed over one at a time, in that order, to
    /// [`GgufStream::write_tensor`]: only one tensor's bytes need to be in
    /// memory at once. The writer must hold no tensors of its own. The file
    /// appears at `path` only when [`GgufStream::finish`] succeeds.
    pub fn stream(&self, path: impl AsRef<Path>, layout: Vec<TensorLayout>) -> Result<GgufStream> {
        let path = path.as_ref().to_path_buf();
        let invalid = |msg: String| Error::Invalid {
            path: path.display().to_string(),
            what: "streamed tensors".into(),
            msg,
        };
        if !self.tensors.is_empty() {
            return Err(invalid(format!(
                "the writer already holds {} tensors",
                self.tensors.len()
            )));
        }
        let mut sizes = Vec::with_capacity(layout.len());
        for (i, t) in layout.iter().enumerate() {
            if t.dims.is_empty() || t.dims.len() > 4 {
                return Err(invalid(format!(
                    "tensor '{}': {} dimensions (1 to 4 allowed)",
                    t.name,
                    t.dims.len()
                )));
            }
            if layout[..i].iter().any(|o| o.name == t.name) {
                return Err(invalid(format!("tensor '{}' given twice", t.name)));
            }
            let row =
                t.ty.row_size(t.dims[0] as usize)
                    .map_err(|e| invalid(format!("tensor '{}': {e}", t.name)))?;
            sizes.push(row as u64 * t.dims[1..].iter().product::<u64>());
        }
        let align = self.alignment();
        let tmp = temp_path(&path);
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut stream = GgufStream {
            out: Some(std::io::BufWriter::new(file)),
            tmp,
            path: path.clone(),
            layout,
            sizes,
            next: 0,
            align,
        };
        let entries: Vec<(&str, &[u64], GgmlType, u64)> = stream
            .layout
            .iter()
            .zip(&stream.sizes)
            .map(|(t, &n)| (t.name.as_str(), t.dims.as_slice(), t.ty, n))
            .collect();
        let out = stream.out.as_mut().expect("just created");
        write_header(out, &self.metadata, &entries, align).map_err(io)?;
        Ok(stream)
    }
}

/// Where a tensor goes in a streamed file: its name, `dims` in ggml order
/// (`dims[0]` is the row length) and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorLayout {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

/// A GGUF file being written tensor by tensor (from [`GgufWriter::stream`]).
/// Dropped before [`GgufStream::finish`], it removes its partial file.
pub struct GgufStream {
    out: Option<std::io::BufWriter<std::fs::File>>,
    tmp: PathBuf,
    path: PathBuf,
    layout: Vec<TensorLayout>,
    sizes: Vec<u64>,
    next: usize,
    align: u64,
}

impl GgufStream {
    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Writes the next tensor's bytes; `data` must be exactly its size.
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<()> {
        let Some(t) = self.layout.get(self.next) else {
            return Err(Error::Invalid {
                path: self.path.display().to_string(),
                what: "streamed tensors".into(),
                msg: format!("more than the {} tensors laid out", self.layout.len()),
            });
        };
        if data.len() as u64 != self.sizes[self.next] {
            return Err(Error::Invalid {
                path: self.path.display().to_string(),
                what: format!("tensor '{}'", t.name),
                msg: format!(
                    "{} bytes given, shape {:?} of {} needs {}",
                    data.len(),
                    t.dims,
                    t.ty,
                    self.sizes[self.next]
                ),
            });
        }
        let pad = pad_len(data.len() as u64, self.align);
        let zeros = vec![0u8; pad];
        let out = self.out.as_mut().expect("open until finished");
        let result = out.write_all(data).and_then(|()| out.write_all(&zeros));
        result.map_err(|e| self.io(e))?;
        self.next += 1;
        Ok(())
    }

    /// Checks every tensor was written, flushes, and renames the file into place.
    pub fn finish(mut self) -> Result<()> {
        if self.next != self.layout.len() {
            return Err(Error::Invalid {
                path: self.path.display().to_string(),
                what: "streamed tensors".into(),
                msg: format!(
                    "only {} of {} tensors were written",
                    self.next,
                    self.layout.len()
                ),
            });
        }
        let out = self.out.take().expect("open until finished");
        let result = (|| {
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&self.tmp, &self.path)
        })();
        result.map_err(|e| self.io(e))
    }
}

impl Drop for GgufStream {
    fn drop(&mut self) {
        // Still open: not finished (or the rename failed), so the file is partial.
        if self.out.take().is_some() || self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A hidden name beside `path` to write to before renaming into place.
fn temp_path(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{file_name}.tmp-{}", std::process::id()))
}

/// Zero bytes that follow `len` bytes to reach the next multiple of `align`.
fn pad_len(len: u64, align: u64) -> usize {
    (len.div_ceil(align) * align - len) as usize
}

/// Header, metadata and tensor descriptions, padded to the data section.
/// `tensors` holds (name, dims, type, byte size).
fn write_header(
    w: &mut impl Write,
    metadata: &[(String, Value)],
    tensors: &[(&str, &[u64], GgmlType, u64)],
    align: u64,
) -> std::io::Result<()> {
    let mut n = 0u64; // bytes written so far, for padding
    let mut put = |w: &mut dyn Write, b: &[u8]| -> std::io::Result<()> {
        n += b.len() as u64;
        w.write_all(b)
    };
    put(w, &GGUF_MAGIC)?;
    put(w, &3u32.to_le_bytes())?;
    put(w, &(tensors.len() as u64).to_le_bytes())?;
    put(w, &(metadata.len() as u64).to_le_bytes())?;
    let mut buf = Vec::new();
    for (k, v) in metadata {
        buf.clear();
        put_str(&mut buf, k);
        buf.extend_from_slice(&v.type_id().to_le_bytes());
        put_value(&mut buf, v);
        put(w, &buf)?;
    }
    let mut offset = 0u64;
    for (name, dims, ty, size) in tensors {
        buf.clear();
        put_str(&mut buf, name);
        buf.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in *dims {
            buf.extend_from_slice(&d.to_le_bytes());
        }
        buf.extend_from_slice(&(*ty as u32).to_le_bytes());
        buf.extend_from_slice(&offset.to_le_bytes());
        put(w, &buf)?;
        offset += size + pad_len(*size, align) as u64;
    }
    w.write_all(&vec![0u8; pad_len(n, align)])
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => buf.push(*x),
        Value::I8(x) => buf.push(*x as u8),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(*x as u8),
        Value::String(s) => put_str(buf, s),
        Value::Array(a) => put_array(buf, a),
    }
}

fn put_array(buf: &mut Vec<u8>, a: &Array) {
    buf.extend_from_slice(&a.elem_type_id().to_le_bytes());
    buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr, |$x:ident| $body:expr) => {
            for $x in $v {
                $body;
            }
        };
    }
    match a {
        Array::U8(v) => buf.extend_from_slice(v),
        Array::I8(v) => each!(v, |x| buf.push(*x as u8)),
        Array::U16(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::U64(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => each!(v, |x| buf.extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => each!(v, |x| buf.push(*x as u8)),
        Array::String(v) => each!(v.iter(), |s| put_str(buf, s)),
        Array::Array(v) => each!(v, |inner| put_array(buf, inner)),
    }
}
