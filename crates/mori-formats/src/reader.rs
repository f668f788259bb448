//! The GGUF reader: parses and validates a whole file up front so that every
//! later access is a plain slice of the mapping.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use memmap2::Mmap;
use mori_kernels::GgmlType;

use crate::value::*;
use crate::{Error, Result, DEFAULT_ALIGNMENT, GGUF_MAGIC};

/// GGUF allows at most this many dimensions per tensor.
const MAX_DIMS: usize = 4;
/// Arrays nest rarely and shallowly; deeper nesting is taken as corruption
/// rather than risking the stack.
const MAX_ARRAY_DEPTH: usize = 8;

/// Where one tensor lives and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (row) length, so a `[n_out, n_in]`
    /// matrix has `dims = [n_in, n_out]`.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

enum Backing {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// An open, fully validated GGUF file.
pub struct GgufFile {
    path: PathBuf,
    backing: Backing,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Byte ranges handed to [`GgufFile::release`], for [`GgufFile::trim`].
    released: Mutex<Vec<(usize, usize)>>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps and validates the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and Mori never writes model files it
        // has open. A file truncated by another process while mapped would fault
        // on access; that is the documented contract of every mmap-based loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(path.to_path_buf(), Backing::Mmap(mmap))
    }

    /// Parses an in-memory file; `name` stands for the path in errors.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<GgufFile> {
        Self::parse(PathBuf::from(name), Backing::Owned(bytes))
    }

    fn parse(path: PathBuf, backing: Backing) -> Result<GgufFile> {
        let shown = path.display().to_string();
        let bytes = backing.bytes();
        let mut c = Cursor {
            b: bytes,
            pos: 0,
            path: &shown,
        };
        let magic: [u8; 4] = c.take(4, "magic")?.try_into().expect("4 bytes");
        if magic != GGUF_MAGIC {
            return Err(Error::BadMagic {
                path: shown,
                found: magic,
            });
        }
        let version = c.u32("version")?;
        if version != 2 && version != 3 {
            let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
                " — this looks like a big-endian file; Mori reads little-endian GGUF only"
            } else {
                ""
            };
            return Err(Error::BadVersion {
                path: shown,
                version,
                hint,
            });
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // Every key/value takes at least 12 bytes and every tensor info 24, so
        // counts larger than the file allows are corruption; checking here keeps
        // a lying header from causing a huge allocation.
        let remaining = (bytes.len() - c.pos) as u64;
        if n_kv > remaining / 12 {
            return Err(c.invalid(
                "header",
                format!("claims {n_kv} metadata entries, more than the file can hold"),
            ));
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut meta_index = HashMap::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key = c.string(&format!("key of metadata entry {i}"))?;
            let ty = c.u32(&format!("type of key '{key}'"))?;
            let value = c.value(ty, &key, 0)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(c.invalid(&format!("key '{key}'"), "appears twice".into()));
            }
            metadata.push((key, value));
        }
        let alignment = match meta_index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(c.invalid(
                        "key 'general.alignment'",
                        format!("{v:?} is not a power of two"),
                    ));
                }
            },
        };

        let remaining = (bytes.len() - c.pos) as u64;
        if n_tensors > remaining / 24 {
            return Err(c.invalid(
                "header",
                format!("claims {n_tensors} tensors, more than the file can hold"),
            ));
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(&format!("name of tensor {i}"))?;
            let what = format!("tensor '{name}'");
            let n_dims = c.u32(&what)? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.invalid(
                    &what,
                    format!("has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64(&what)?);
            }
            let type_id = c.u32(&what)?;
            let ty = GgmlType::from_u32(type_id).ok_or_else(|| Error::UnknownTensorType {
                path: shown.clone(),
                tensor: name.clone(),
                id: type_id,
            })?;
            let offset = c.u64(&what)?;
            let n_bytes = tensor_bytes(&dims, ty).map_err(|msg| c.invalid(&what, msg))?;
            if offset % alignment != 0 {
                return Err(c.invalid(
                    &what,
                    format!("data offset {offset} is not a multiple of the alignment {alignment}"),
                ));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(c.invalid(&what, "appears twice".into()));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                n_bytes,
            });
        }
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = bytes.len() as u64;

        // Extents: every tensor inside the file, none overlapping another.
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors[i].offset);
        let mut prev_end = 0u64;
        let mut prev_name: Option<&str> = None;
        for &i in &order {
            let t = &tensors[i];
            let start = data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.n_bytes));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(Error::Truncated {
                        path: shown,
                        what: format!("data of tensor '{}'", t.name),
                        offset: data_offset.saturating_add(t.offset),
                        needed: t.n_bytes,
                        len: file_len,
                    })
                }
            }
            if t.offset < prev_end {
                return Err(Error::Invalid {
                    path: shown,
                    what: format!("tensor '{}'", t.name),
                    msg: format!("its data overlaps tensor '{}'", prev_name.unwrap_or("?")),
                });
            }
            prev_end = t.offset + t.n_bytes;
            prev_name = Some(&t.name);
        }

        Ok(GgufFile {
            path,
            backing,
            version,
            alignment,
            data_offset,
            metadata,
            meta_index,
            tensors,
            tensor_index,
            released: Mutex::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Offset of the data section from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Every key/value in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn wrong_type(&self, key: &str, v: &Value, expected: &'static str) -> Error {
        Error::WrongType {
            path: self.shown(),
            key: key.to_string(),
            found: v.type_name(),
            expected,
        }
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    /// Any non-negative integer value that fits in a u64.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, v, "unsigned integer")),
        }
    }

    pub fn get_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, v, "u32")),
        }
    }

    pub fn get_i32(&self, key: &str) -> Result<Option<i32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .and_then(|x| i32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, v, "i32")),
        }
    }

    /// An F32 or F64 value as f32.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x)),
            Some(Value::F64(x)) => Ok(Some(*x as f32)),
            Some(v) => Err(self.wrong_type(key, v, "f32")),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong_type(key, v, "bool")),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, v, "string")),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&Array>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong_type(key, v, "array")),
        }
    }

    fn missing(&self, key: &str) -> Error {
        Error::MissingKey {
            path: self.shown(),
            key: key.to_string(),
        }
    }

    pub fn require_u32(&self, key: &str) -> Result<u32> {
        self.get_u32(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn require_f32(&self, key: &str) -> Result<f32> {
        self.get_f32(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn require_str(&self, key: &str) -> Result<&str> {
        self.get_str(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor of this file (validated at open, so this cannot fail
    /// for an info taken from [`GgufFile::tensors`]).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        &self.backing.bytes()[start..start + info.n_bytes as usize]
    }

    /// Drops the mapped pages of `info`'s data from this process's resident
    /// set, for data copied elsewhere at load (repacked weights, norms turned
    /// into f32): reading them again brings them back from the page cache. A
    /// no-op for a file read into memory.
    pub fn release(&self, info: &TensorInfo) {
        let range = (
            (self.data_offset + info.offset) as usize,
            info.n_bytes as usize,
        );
        self.drop_pages(range);
        self.released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(range);
    }

    /// Drops again the pages of everything released so far, and those of the
    /// header (parsed into owned values at open): a page fault maps up to
    /// 64 KiB of cached neighbours around the page it needs, so reading one
    /// tensor brings back the edges of released ones. For the end of a load.
    pub fn trim(&self) {
        self.drop_pages((0, self.data_offset as usize));
        for &range in self
            .released
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            self.drop_pages(range);
        }
    }

    /// Advises that `info`'s data is read a row at a time in no order (the
    /// token embedding when it is not also the output matrix): a page fault
    /// there then maps that page alone, not its neighbours.
    pub fn read_randomly(&self, info: &TensorInfo) {
        if let Backing::Mmap(m) = &self.backing {
            let start = (self.data_offset + info.offset) as usize;
            // Only advice: failure keeps the default read-around.
            let _ = m.advise_range(memmap2::Advice::Random, start, info.n_bytes as usize);
        }
    }

    fn drop_pages(&self, (start, len): (usize, usize)) {
        if let Backing::Mmap(m) = &self.backing {
            // SAFETY: the mapping is private and never written, so dropping
            // its pages changes no byte any reference sees: the next read
            // faults them in again from the file. Failure only keeps them.
            let _ =
                unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
        }
    }

    /// A tensor by name, with its data.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self.tensor_info(name).ok_or_else(|| Error::MissingTensor {
            path: self.shown(),
            name: name.to_string(),
        })?;
        Ok((info, self.tensor_data(info)))
    }

    /// An error about this file with a caller's message, e.g. a shape that
    /// contradicts the metadata.
    pub fn error_at(&self, what: String) -> Error {
        Error::Other {
            path: self.shown(),
            msg: what,
        }
    }
}

/// Bytes of a tensor of `dims` and `ty`, or why it cannot exist.
fn tensor_bytes(dims: &[u64], ty: GgmlType) -> std::result::Result<u64, String> {
    let bs = ty.block_size() as u64;
    if !dims[0].is_multiple_of(bs) {
        return Err(format!(
            "rows of {} elements are not a whole number of {ty} blocks ({bs} elements)",
            dims[0]
        ));
    }
    let mut n: u64 = 1;
    for &d in dims {
        n = n
            .checked_mul(d)
            .ok_or_else(|| format!("shape {dims:?} overflows"))?;
    }
    (n / bs)
        .checked_mul(ty.type_size() as u64)
        .ok_or_else(|| format!("shape {dims:?} overflows"))
}

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    path: &'a str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.b.len() => {
                let s = &self.b[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(Error::Truncated {
                path: self.path.to_string(),
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n as u64,
                len: self.b.len() as u64,
            }),
        }
    }

    fn invalid(&self, what: &str, msg: String) -> Error {
        Error::Invalid {
            path: self.path.to_string(),
            what: what.to_string(),
            msg,
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        self.str_ref(what).map(str::to_string)
    }

    /// A length-prefixed string, borrowed from the file's bytes.
    fn str_ref(&mut self, what: &str) -> Result<&'a str> {
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .map_err(|_| self.invalid(what, format!("string length {len} is absurd")))?;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes)
            .map_err(|e| self.invalid(what, format!("string is not UTF-8: {e}")))
    }

    /// Checks that `count` elements of at least `elem` bytes each can fit in
    /// what is left, before anything is allocated for them.
    fn check_count(&self, count: u64, elem: u64, what: &str) -> Result<usize> {
        let left = (self.b.len() - self.pos) as u64;
        if count.checked_mul(elem).is_none_or(|need| need > left) {
            return Err(Error::Truncated {
                path: self.path.to_string(),
                what: format!("{what} ({count} elements)"),
                offset: self.pos as u64,
                needed: count.saturating_mul(elem),
                len: self.b.len() as u64,
            });
        }
        Ok(count as usize)
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        let what = format!("value of key '{key}'");
        Ok(match ty {
            T_U8 => Value::U8(self.u8(&what)?),
            T_I8 => Value::I8(self.u8(&what)? as i8),
            T_U16 => Value::U16(self.u16(&what)?),
            T_I16 => Value::I16(self.u16(&what)? as i16),
            T_U32 => Value::U32(self.u32(&what)?),
            T_I32 => Value::I32(self.u32(&what)? as i32),
            T_U64 => Value::U64(self.u64(&what)?),
            T_I64 => Value::I64(self.u64(&what)? as i64),
            T_F32 => Value::F32(f32::from_bits(self.u32(&what)?)),
            T_F64 => Value::F64(f64::from_bits(self.u64(&what)?)),
            T_BOOL => match self.u8(&what)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(self.invalid(
                        &format!("key '{key}'"),
                        format!("bool byte {b} is neither 0 nor 1"),
                    ))
                }
            },
            T_STRING => Value::String(self.string(&what)?),
            T_ARRAY => {
                let elem_ty = self.u32(&what)?;
                let n = self.u64(&what)?;
                Value::Array(self.array(elem_ty, n, key, depth)?)
            }
            other => {
                return Err(self.invalid(
                    &format!("key '{key}'"),
                    format!("unknown value type {other}"),
                ))
            }
        })
    }

    fn array(&mut self, elem_ty: u32, n: u64, key: &str, depth: usize) -> Result<Array> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.invalid(
                &format!("key '{key}'"),
                format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
            ));
        }
        let what = format!("array of key '{key}'");
        macro_rules! fixed {
            ($variant:ident, $size:expr, $read:expr) => {{
                let n = self.check_count(n, $size, &what)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push($read(self)?);
                }
                Array::$variant(v)
            }};
        }
        Ok(match elem_ty {
            T_U8 => fixed!(U8, 1, |c: &mut Self| c.u8(&what)),
            T_I8 => fixed!(I8, 1, |c: &mut Self| c.u8(&what).map(|x| x as i8)),
            T_U16 => fixed!(U16, 2, |c: &mut Self| c.u16(&what)),
            T_I16 => fixed!(I16, 2, |c: &mut Self| c.u16(&what).map(|x| x as i16)),
            T_U32 => fixed!(U32, 4, |c: &mut Self| c.u32(&what)),
            T_I32 => fixed!(I32, 4, |c: &mut Self| c.u32(&what).map(|x| x as i32)),
            T_U64 => fixed!(U64, 8, |c: &mut Self| c.u64(&what)),
            T_I64 => fixed!(I64, 8, |c: &mut Self| c.u64(&what).map(|x| x as i64)),
            T_F32 => fixed!(F32, 4, |c: &mut Self| c.u32(&what).map(f32::from_bits)),
            T_F64 => fixed!(F64, 8, |c: &mut Self| c.u64(&what).map(f64::from_bits)),
            T_BOOL => fixed!(Bool, 1, |c: &mut Self| match c.u8(&what)? {
                0 => Ok(false),
                1 => Ok(true),
                b => Err(c.invalid(
                    &format!("key '{key}'"),
                    format!("bool byte {b} is neither 0 nor 1")
                )),
            }),
            T_STRING => {
                let n = self.check_count(n, 8, &what)?;
                let mut v = StrArray::with_capacity(n, 0);
                for i in 0..n {
                    let s = self.str_ref(&what)?;
                    if !v.try_push(s) {
                        return Err(
                            self.invalid(&what, format!("more than 4 GiB of text by element {i}"))
                        );
                    }
                }
                Array::String(v)
            }
            T_ARRAY => {
                let n = self.check_count(n, 12, &what)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let ty = self.u32(&what)?;
                    let len = self.u64(&what)?;
                    v.push(self.array(ty, len, key, depth + 1)?);
                }
                Array::Array(v)
            }
            other => {
                return Err(self.invalid(
                    &format!("key '{key}'"),
                    format!("unknown array element type {other}"),
                ))
            }
        })
    }
}
