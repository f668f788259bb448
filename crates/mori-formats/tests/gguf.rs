//! GGUF reading and writing: a round trip of every value type, real files
//! from llama.cpp, and one broken file per failure mode, each of which must
//! give an error naming the file and the key or tensor, never a panic.

use mori_formats::{Array, Error, GgufFile, GgufWriter, Value};
use mori_kernels::GgmlType;

fn sample() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("llama".into()));
    w.add("u8", Value::U8(7));
    w.add("i8", Value::I8(-7));
    w.add("u16", Value::U16(700));
    w.add("i16", Value::I16(-700));
    w.add("u32", Value::U32(70000));
    w.add("i32", Value::I32(-70000));
    w.add("u64", Value::U64(1 << 40));
    w.add("i64", Value::I64(-(1 << 40)));
    w.add("f32", Value::F32(0.5));
    w.add("f64", Value::F64(-0.25));
    w.add("bool", Value::Bool(true));
    w.add(
        "strs",
        Value::Array(Array::String(["a", "ü▁"].into_iter().collect())),
    );
    w.add(
        "nested",
        Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::F32(vec![3.0]),
        ])),
    );
    w.add_tensor("a.weight", vec![32, 2], GgmlType::F32, vec![1u8; 256])
        .unwrap();
    w.add_tensor("b.weight", vec![64], GgmlType::Q8_0, vec![2u8; 68])
        .unwrap();
    w.add_tensor("c.weight", vec![256, 3], GgmlType::Q4K, vec![3u8; 144 * 3])
        .unwrap();
    w
}

#[test]
fn round_trip_keeps_every_value_and_tensor() {
    let w = sample();
    let f = GgufFile::from_bytes(w.to_bytes().unwrap(), "sample.gguf").unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.get_u32("u32").unwrap(), Some(70000));
    assert_eq!(f.get_i32("i32").unwrap(), Some(-70000));
    assert_eq!(f.get_u64("u64").unwrap(), Some(1 << 40));
    assert_eq!(f.get_u32("u8").unwrap(), Some(7), "narrow integers widen");
    assert_eq!(f.get_f32("f64").unwrap(), Some(-0.25));
    assert_eq!(f.get_bool("bool").unwrap(), Some(true));
    assert_eq!(f.get("i64"), Some(&Value::I64(-(1 << 40))));
    assert_eq!(
        f.get("nested"),
        Some(&Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::F32(vec![3.0])
        ])))
    );
    assert_eq!(
        f.get_array("strs").unwrap(),
        Some(&Array::String(["a", "ü▁"].into_iter().collect()))
    );
    assert_eq!(f.get_u32("missing").unwrap(), None);
    let (info, data) = f.tensor("c.weight").unwrap();
    assert_eq!(
        (info.ty, info.dims.clone(), data.len()),
        (GgmlType::Q4K, vec![256, 3], 432)
    );
    assert!(data.iter().all(|&b| b == 3));
    assert_eq!(f.tensor("a.weight").unwrap().1.len(), 256);
    assert_eq!(
        f.metadata()[0].0,
        "general.architecture",
        "insertion order kept"
    );
    for t in f.tensors() {
        assert_eq!(
            (f.data_offset() + t.offset) % f.alignment(),
            0,
            "{} aligned",
            t.name
        );
    }
}

#[test]
fn open_maps_a_file_written_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    sample().write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.path(), path);
    assert_eq!(f.tensors().len(), 3);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        1,
        "no temporary file is left behind: {names:?}"
    );
}

#[test]
fn version_2_files_are_read() {
    let mut bytes = sample().to_bytes().unwrap();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let f = GgufFile::from_bytes(bytes, "v2.gguf").unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.get_u32("u32").unwrap(), Some(70000));
}

/// Offset of the first tensor info: the 24-byte header plus every key/value.
fn tensor_infos_offset(bytes: &[u8]) -> usize {
    let f = GgufFile::from_bytes(bytes.to_vec(), "x").unwrap();
    24 + f
        .metadata()
        .iter()
        .map(|(k, v)| 8 + k.len() + 4 + value_len(v))
        .sum::<usize>()
}

fn value_len(v: &Value) -> usize {
    match v {
        Value::U8(_) | Value::I8(_) | Value::Bool(_) => 1,
        Value::U16(_) | Value::I16(_) => 2,
        Value::U32(_) | Value::I32(_) | Value::F32(_) => 4,
        Value::U64(_) | Value::I64(_) | Value::F64(_) => 8,
        Value::String(s) => 8 + s.len(),
        Value::Array(a) => array_len(a),
    }
}

fn array_len(a: &Array) -> usize {
    12 + match a {
        Array::U8(v) => v.len(),
        Array::I8(v) => v.len(),
        Array::Bool(v) => v.len(),
        Array::U16(v) => 2 * v.len(),
        Array::I16(v) => 2 * v.len(),
        Array::U32(v) => 4 * v.len(),
        Array::I32(v) => 4 * v.len(),
        Array::F32(v) => 4 * v.len(),
        Array::U64(v) => 8 * v.len(),
        Array::I64(v) => 8 * v.len(),
        Array::F64(v) => 8 * v.len(),
        Array::String(v) => v.iter().map(|s| 8 + s.len()).sum(),
        Array::Array(v) => v.iter().map(array_len).sum(),
    }
}

fn err_of(bytes: Vec<u8>) -> Error {
    match GgufFile::from_bytes(bytes, "bad.gguf") {
        Ok(_) => panic!("a broken file was accepted"),
        Err(e) => {
            assert!(
                e.to_string().starts_with("bad.gguf: "),
                "error must name the file: {e}"
            );
            e
        }
    }
}

#[test]
fn wrong_magic() {
    let mut b = sample().to_bytes().unwrap();
    b[0..4].copy_from_slice(b"GGML");
    assert!(matches!(err_of(b), Error::BadMagic { .. }));
}

#[test]
fn unsupported_and_byte_swapped_versions() {
    let mut b = sample().to_bytes().unwrap();
    b[4..8].copy_from_slice(&4u32.to_le_bytes());
    assert!(matches!(
        err_of(b.clone()),
        Error::BadVersion { version: 4, .. }
    ));
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    let e = err_of(b);
    assert!(e.to_string().contains("big-endian"), "{e}");
}

#[test]
fn truncation_anywhere_is_an_error() {
    let b = sample().to_bytes().unwrap();
    // The last cut removes bytes of c.weight's data (not only its padding).
    for cut in [0, 3, 7, 20, 30, 60, 200, b.len() / 2, b.len() - 20] {
        let e = err_of(b[..cut].to_vec());
        assert!(
            matches!(e, Error::Truncated { .. } | Error::Invalid { .. }),
            "cut at {cut}: {e}"
        );
    }
}

#[test]
fn unknown_tensor_type_names_the_tensor() {
    let b = sample().to_bytes().unwrap();
    let off = tensor_infos_offset(&b);
    // First tensor info: name (8 + len) + n_dims (4) + dims (8 each) + type.
    let name_len = "a.weight".len();
    let type_at = off + 8 + name_len + 4 + 2 * 8;
    let mut b2 = b.clone();
    b2[type_at..type_at + 4].copy_from_slice(&99u32.to_le_bytes());
    match err_of(b2) {
        Error::UnknownTensorType { tensor, id: 99, .. } => assert_eq!(tensor, "a.weight"),
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn tensor_past_the_end_names_the_tensor() {
    let b = sample().to_bytes().unwrap();
    // Drop the last tensor's data: its extent now runs past the end.
    let e = err_of(b[..b.len() - 100].to_vec());
    assert!(e.to_string().contains("c.weight"), "{e}");
}

#[test]
fn bad_offsets_and_shapes_name_the_tensor() {
    let b = sample().to_bytes().unwrap();
    let off = tensor_infos_offset(&b);
    let name_len = "a.weight".len();
    let dims_at = off + 8 + name_len + 4;
    let offset_at = dims_at + 2 * 8 + 4;
    // Misaligned data offset.
    let mut m = b.clone();
    m[offset_at..offset_at + 8].copy_from_slice(&3u64.to_le_bytes());
    assert!(err_of(m).to_string().contains("a.weight"));
    // Overlap: point a.weight into b.weight's data.
    let mut o = b.clone();
    o[offset_at..offset_at + 8].copy_from_slice(&256u64.to_le_bytes());
    let e = err_of(o);
    assert!(e.to_string().contains("overlaps"), "{e}");
    // A dimension so large the byte count overflows.
    let mut big = b.clone();
    big[dims_at..dims_at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(err_of(big).to_string().contains("a.weight"));
    // Zero and too many dimensions.
    let mut z = b.clone();
    z[dims_at - 4..dims_at].copy_from_slice(&0u32.to_le_bytes());
    assert!(err_of(z).to_string().contains("a.weight"));
    let mut many = b.clone();
    many[dims_at - 4..dims_at].copy_from_slice(&9u32.to_le_bytes());
    assert!(err_of(many).to_string().contains("a.weight"));
}

#[test]
fn row_not_a_whole_number_of_blocks() {
    let mut w = GgufWriter::new();
    assert!(
        w.add_tensor("q.weight", vec![33], GgmlType::Q8_0, vec![0u8; 34])
            .is_err(),
        "writer refuses it too"
    );
    w.add_tensor("q.weight", vec![64], GgmlType::Q8_0, vec![0u8; 68])
        .unwrap();
    let mut b = w.to_bytes().unwrap();
    let dims_at = 24 + 8 + "q.weight".len() + 4;
    b[dims_at..dims_at + 8].copy_from_slice(&48u64.to_le_bytes());
    let e = err_of(b);
    assert!(
        e.to_string().contains("q.weight") && e.to_string().contains("block"),
        "{e}"
    );
}

#[test]
fn lying_counts_do_not_allocate() {
    let mut b = sample().to_bytes().unwrap();
    b[16..24].copy_from_slice(&u64::MAX.to_le_bytes()); // metadata count
    assert!(err_of(b).to_string().contains("metadata"));
    let mut w = GgufWriter::new();
    w.add("arr", Value::Array(Array::U32(vec![1, 2, 3])));
    let mut b = w.to_bytes().unwrap();
    let len_at = 24 + 8 + 3 + 4 + 4;
    b[len_at..len_at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let e = err_of(b);
    assert!(e.to_string().contains("'arr'"), "names the key: {e}");
}

#[test]
fn bad_values_name_the_key() {
    let mut w = GgufWriter::new();
    w.add("flag", Value::Bool(true));
    w.add("text", Value::String("ok".into()));
    let b = w.to_bytes().unwrap();
    let flag_val = 24 + 8 + 4 + 4;
    let mut bool_bad = b.clone();
    bool_bad[flag_val] = 7;
    assert!(err_of(bool_bad).to_string().contains("'flag'"));
    let mut type_bad = b.clone();
    type_bad[flag_val - 4..flag_val].copy_from_slice(&77u32.to_le_bytes());
    assert!(err_of(type_bad).to_string().contains("'flag'"));
    let text_val = flag_val + 1 + 8 + 4 + 4 + 8;
    let mut utf8_bad = b.clone();
    utf8_bad[text_val] = 0xff;
    assert!(err_of(utf8_bad).to_string().contains("UTF-8"));
    let mut dup = GgufWriter::new();
    dup.add("a", Value::U8(1));
    dup.add("b", Value::U8(2));
    let mut d = dup.to_bytes().unwrap();
    let second_key = 24 + 8 + 1 + 4 + 1 + 8;
    d[second_key] = b'a';
    assert!(err_of(d).to_string().contains("twice"));
    let mut align = GgufWriter::new();
    align.add("general.alignment", Value::U32(48));
    assert!(err_of(align.to_bytes().unwrap())
        .to_string()
        .contains("general.alignment"));
}

#[test]
fn typed_getters_name_the_key_on_wrong_types() {
    let f = GgufFile::from_bytes(sample().to_bytes().unwrap(), "s.gguf").unwrap();
    let e = f.get_str("u32").unwrap_err().to_string();
    assert!(e.contains("s.gguf") && e.contains("'u32'"), "{e}");
    assert!(f.get_u32("i32").is_err(), "a negative value is not a u32");
    assert!(matches!(
        f.require_u32("nope"),
        Err(Error::MissingKey { .. })
    ));
    assert!(matches!(f.tensor("nope"), Err(Error::MissingTensor { .. })));
}

/// Random byte flips, truncations and splices of a valid file: the parser
/// must return (accept or reject), never panic, and an accepted file's
/// tensors must all be readable. A stable-Rust stand-in for the fuzz target
/// under `fuzz/`, small enough for every test run.
#[test]
fn mutated_files_never_panic() {
    use rand::{Rng, SeedableRng};
    let base = sample().to_bytes().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1234);
    let start = std::time::Instant::now();
    let mut n = 0;
    while n < 20000 && start.elapsed().as_secs() < 4 {
        let mut b = base.clone();
        match rng.gen_range(0..3) {
            0 => {
                for _ in 0..rng.gen_range(1..8) {
                    let i = rng.gen_range(0..b.len());
                    b[i] = rng.gen();
                }
            }
            1 => b.truncate(rng.gen_range(0..b.len())),
            _ => {
                let i = rng.gen_range(0..b.len() - 8);
                let v: u64 = if rng.gen() {
                    rng.gen()
                } else {
                    rng.gen_range(0..1000)
                };
                b[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
        if let Ok(f) = GgufFile::from_bytes(b, "m.gguf") {
            for t in f.tensors() {
                assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
            }
        }
        n += 1;
    }
    assert!(n >= 1000, "only {n} mutations ran");
}

/// Real files written by llama.cpp's tooling (its tokenizer test vocabularies).
#[test]
fn reads_llama_cpp_vocab_files() {
    let Some(dir) = std::env::var_os("MORI_VOCAB_DIR") else {
        eprintln!("MORI_VOCAB_DIR is not set: llama.cpp's GGUF files were NOT read (scripts/test sets it)");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    for name in [
        "llama-spm",
        "llama-bpe",
        "qwen2",
        "gpt-2",
        "phi-3",
        "deepseek-llm",
    ] {
        let f = GgufFile::open(dir.join(format!("ggml-vocab-{name}.gguf"))).unwrap();
        assert!(
            f.get_str("general.architecture").unwrap().is_some(),
            "{name}"
        );
        let tokens = f
            .get_array("tokenizer.ggml.tokens")
            .unwrap()
            .expect("tokens");
        assert!(tokens.len() > 30000, "{name}: {} tokens", tokens.len());
    }
}

#[test]
fn streamed_file_equals_the_in_memory_one() {
    use mori_formats::TensorLayout;
    let whole = sample();
    let f = GgufFile::from_bytes(whole.to_bytes().unwrap(), "sample.gguf").unwrap();
    let mut meta = GgufWriter::new();
    for (k, v) in f.metadata() {
        meta.add(k.clone(), v.clone());
    }
    let layout: Vec<TensorLayout> = f
        .tensors()
        .iter()
        .map(|t| TensorLayout {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamed.gguf");
    let mut s = meta.stream(&path, layout.clone()).unwrap();
    for t in f.tensors() {
        s.write_tensor(f.tensor_data(t)).unwrap();
    }
    s.finish().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), whole.to_bytes().unwrap());

    // A wrong size is refused, and an unfinished stream leaves no file behind.
    let partial = dir.path().join("partial.gguf");
    let mut s = meta.stream(&partial, layout).unwrap();
    let err = s.write_tensor(&[0u8; 3]).unwrap_err().to_string();
    assert!(err.contains("a.weight") && err.contains("3 bytes"), "{err}");
    let err = s.finish().unwrap_err().to_string();
    assert!(err.contains("0 of 3 tensors"), "{err}");
    assert!(!partial.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
