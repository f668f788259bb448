//! Typed GGUF metadata values and their on-disk type ids.

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Array),
}

/// A homogeneous metadata array. Kept typed (not `Vec<Value>`) because
/// vocabularies hold hundreds of thousands of entries.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(StrArray),
    Array(Vec<Array>),
}

/// A list of strings kept as one text buffer and the end offset of each
/// element: a vocabulary of 150,000 tokens takes about 1.6 MB this way,
/// against 8 MB or more as separate `String`s (each a 24-byte header and its
/// own allocation).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StrArray {
    text: String,
    /// `ends[i]` is where element `i` ends in `text`; it starts where `i - 1` ends.
    ends: Vec<u32>,
}

impl StrArray {
    pub fn new() -> StrArray {
        StrArray::default()
    }

    pub fn with_capacity(n: usize, text_bytes: usize) -> StrArray {
        StrArray {
            text: String::with_capacity(text_bytes),
            ends: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends `s`, or returns `false` (and appends nothing) when the text
    /// would pass 4 GiB.
    pub fn try_push(&mut self, s: &str) -> bool {
        match u32::try_from(self.text.len() + s.len()) {
            Ok(end) => {
                self.text.push_str(s);
                self.ends.push(end);
                true
            }
            Err(_) => false,
        }
    }

    /// Appends `s`.
    ///
    /// # Panics
    /// When the text would pass 4 GiB ([`StrArray::try_push`] reports that
    /// instead); no metadata array comes near it.
    pub fn push(&mut self, s: &str) {
        assert!(
            self.try_push(s),
            "a string array holds at most 4 GiB of text"
        );
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.text[start..end])
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| &self[i])
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

impl std::ops::Index<usize> for StrArray {
    type Output = str;

    fn index(&self, i: usize) -> &str {
        match self.get(i) {
            Some(s) => s,
            None => panic!("index {i} out of {} strings", self.len()),
        }
    }
}

impl std::fmt::Debug for StrArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<S: AsRef<str>> FromIterator<S> for StrArray {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> StrArray {
        let mut a = StrArray::new();
        for s in iter {
            a.push(s.as_ref());
        }
        a
    }
}

impl From<Vec<String>> for StrArray {
    fn from(v: Vec<String>) -> StrArray {
        let mut a = StrArray::with_capacity(v.len(), v.iter().map(String::len).sum());
        for s in &v {
            a.push(s);
        }
        a
    }
}

// GGUF's value type ids.
pub(crate) const T_U8: u32 = 0;
pub(crate) const T_I8: u32 = 1;
pub(crate) const T_U16: u32 = 2;
pub(crate) const T_I16: u32 = 3;
pub(crate) const T_U32: u32 = 4;
pub(crate) const T_I32: u32 = 5;
pub(crate) const T_F32: u32 = 6;
pub(crate) const T_BOOL: u32 = 7;
pub(crate) const T_STRING: u32 = 8;
pub(crate) const T_ARRAY: u32 = 9;
pub(crate) const T_U64: u32 = 10;
pub(crate) const T_I64: u32 = 11;
pub(crate) const T_F64: u32 = 12;

impl Value {
    /// The GGUF type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }

    pub(crate) fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => T_U8,
            Value::I8(_) => T_I8,
            Value::U16(_) => T_U16,
            Value::I16(_) => T_I16,
            Value::U32(_) => T_U32,
            Value::I32(_) => T_I32,
            Value::U64(_) => T_U64,
            Value::I64(_) => T_I64,
            Value::F32(_) => T_F32,
            Value::F64(_) => T_F64,
            Value::Bool(_) => T_BOOL,
            Value::String(_) => T_STRING,
            Value::Array(_) => T_ARRAY,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v as i64),
            Value::U16(v) => Some(v as i64),
            Value::U32(v) => Some(v as i64),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type name, for error messages.
    pub fn elem_type_name(&self) -> &'static str {
        match self {
            Array::U8(_) => "u8",
            Array::I8(_) => "i8",
            Array::U16(_) => "u16",
            Array::I16(_) => "i16",
            Array::U32(_) => "u32",
            Array::I32(_) => "i32",
            Array::U64(_) => "u64",
            Array::I64(_) => "i64",
            Array::F32(_) => "f32",
            Array::F64(_) => "f64",
            Array::Bool(_) => "bool",
            Array::String(_) => "string",
            Array::Array(_) => "array",
        }
    }

    pub(crate) fn elem_type_id(&self) -> u32 {
        match self {
            Array::U8(_) => T_U8,
            Array::I8(_) => T_I8,
            Array::U16(_) => T_U16,
            Array::I16(_) => T_I16,
            Array::U32(_) => T_U32,
            Array::I32(_) => T_I32,
            Array::U64(_) => T_U64,
            Array::I64(_) => T_I64,
            Array::F32(_) => T_F32,
            Array::F64(_) => T_F64,
            Array::Bool(_) => T_BOOL,
            Array::String(_) => T_STRING,
            Array::Array(_) => T_ARRAY,
        }
    }

    /// The elements as i64 if this is an integer array whose values all fit.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match self {
            Array::U8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Array::I8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Array::U16(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Array::I16(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Array::U32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Array::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Array::U64(v) => v.iter().map(|&x| i64::try_from(x).ok()).collect(),
            Array::I64(v) => Some(v.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StrArray;

    #[test]
    fn str_array_keeps_every_string_and_its_bounds() {
        let words = ["", "a", "ü▁", "", "longer text"];
        let a: StrArray = words.iter().collect();
        assert_eq!(a.len(), 5);
        assert_eq!(a.iter().collect::<Vec<_>>(), words);
        assert_eq!(&a[2], "ü▁");
        assert_eq!(a.get(3), Some(""));
        assert_eq!(a.get(5), None);
        assert_eq!(StrArray::from(a.to_vec()), a);
        assert_eq!(format!("{a:?}"), format!("{words:?}"));
        assert!(StrArray::new().is_empty());
    }
}
