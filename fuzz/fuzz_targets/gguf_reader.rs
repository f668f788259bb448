//! Fuzz target: arbitrary bytes through the GGUF reader. Any input must give
//! a file or an error, never a panic, an abort or an out-of-bounds read; for
//! an accepted file every metadata value and every tensor's bytes are touched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mori_formats::GgufFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") {
        for (k, v) in f.metadata() {
            std::hint::black_box((k.len(), v.type_name()));
            let _ = f.get_u64(k);
            let _ = f.get_str(k);
        }
        for t in f.tensors() {
            let bytes = f.tensor_data(t);
            assert_eq!(bytes.len() as u64, t.n_bytes);
            std::hint::black_box(bytes.iter().fold(0u8, |a, &b| a ^ b));
        }
    }
});
