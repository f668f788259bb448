//! Q4_0 and Q8_0 weights repacked once, at load, into groups of 16 rows
//! ("x16"), so that one 512-bit register holds four bytes of each of 16 rows
//! and a VNNI byte product (`vpdpbusd`) works on 16 output rows at once.
//!
//! The products keep the float order of the plain kernels (and so their bits):
//! per (row, token), 8 lane accumulators, lane k = the elements with
//! (e mod 32) / 4 == k, one fused multiply-add of `d_w * d_x` times the lane's
//! exact integer sum per block, and the halves-then-pairs sum at the end. In
//! the x16 layout the 8 lanes are 8 registers of 16 rows each instead of the 8
//! lanes of one register: the same values, without any horizontal sums, and
//! each weight register serves every token of a tile. A 4×4 tile of the plain
//! layout spends about 90 vector instructions per 512 multiply-adds; a 16×2
//! tile of this one about 60 per 1024.
//!
//! Layout of a group (rows `16g .. 16g + 16`), block after block; per block:
//! - 32 bytes: the 16 rows' f16 scales;
//! - Q4_0: 4 chunks of 64 bytes; chunk j holds bytes `4j .. 4j + 4` of each
//!   row's 16 packed bytes, row r at `4r` (low nibbles: elements `4j ..`,
//!   lane j; high nibbles: elements `16 + 4j ..`, lane 4 + j);
//! - Q8_0: 8 chunks of 64 bytes; chunk j holds bytes `4j .. 4j + 4` of each
//!   row (lane j), stored as `q + 128` (unsigned, for `vpdpbusd`).
//!
//! A group takes as many bytes as its 16 rows did, so the repacked matrix is
//! the size of the file's.
//!
//! The unsigned levels `u = q + o` (o = 8 for Q4_0, 128 for Q8_0) give
//! `Σ q·x = Σ u·x - o·Σ x`: the activation's per-lane sums times `-o` are
//! prepared once per activation block ([`crate::ActBuf`]) and start each
//! lane's integer sum, so every lane holds the exact integer the plain
//! kernels compute.

use crate::{Error, GgmlType, Result};

/// Rows per group.
pub const GROUP: usize = 16;

/// Whether weights of type `ty`, `n_rows × n_cols`, can be repacked.
pub fn packable(ty: GgmlType, n_rows: usize, n_cols: usize) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0)
        && n_rows > 0
        && n_rows.is_multiple_of(GROUP)
        && n_cols > 0
        && n_cols.is_multiple_of(32)
}

/// Bytes of one block of a weight row of `ty` (Q4_0: 18, Q8_0: 34).
fn block_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_0 => 18,
        _ => 34,
    }
}

/// Repacks `data` (`n_rows` rows of `n_cols` elements of `ty`, as in a GGUF
/// file) into the x16 layout. Uses up to `n_threads` threads.
pub fn pack(
    ty: GgmlType,
    data: &[u8],
    n_rows: usize,
    n_cols: usize,
    n_threads: usize,
) -> Result<Vec<u8>> {
    if !packable(ty, n_rows, n_cols) {
        return Err(Error::Unsupported(format!(
            "{ty} weights of {n_rows} × {n_cols} cannot be repacked in groups of {GROUP} rows"
        )));
    }
    let bb = block_bytes(ty);
    let nb = n_cols / 32;
    let row_bytes = nb * bb;
    if data.len() != row_bytes * n_rows {
        return Err(Error::Size {
            what: "weight matrix bytes",
            expected: row_bytes * n_rows,
            got: data.len(),
        });
    }
    let group_bytes = GROUP * row_bytes;
    let mut out = vec![0u8; data.len()];
    let n_groups = n_rows / GROUP;
    let per = n_groups.div_ceil(n_threads.max(1));
    std::thread::scope(|s| {
        for (src, dst) in data
            .chunks(per * group_bytes)
            .zip(out.chunks_mut(per * group_bytes))
        {
            s.spawn(move || {
                for (g, d) in src
                    .chunks_exact(group_bytes)
                    .zip(dst.chunks_exact_mut(group_bytes))
                {
                    pack_group(ty, g, d, nb);
                }
            });
        }
    });
    Ok(out)
}

/// One group: `src` is 16 plain rows, `dst` the same bytes in the x16 layout.
fn pack_group(ty: GgmlType, src: &[u8], dst: &mut [u8], nb: usize) {
    let bb = block_bytes(ty);
    let row_bytes = nb * bb;
    for b in 0..nb {
        let d = &mut dst[b * GROUP * bb..(b + 1) * GROUP * bb];
        for r in 0..GROUP {
            let blk = &src[r * row_bytes + b * bb..r * row_bytes + (b + 1) * bb];
            d[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
            let q = &blk[2..];
            for j in 0..q.len() / 4 {
                for i in 0..4 {
                    let v = q[4 * j + i];
                    d[32 + 64 * j + 4 * r + i] = if ty == GgmlType::Q8_0 { v ^ 0x80 } else { v };
                }
            }
        }
    }
}

/// Row `r` of a repacked matrix back in the file's layout (`out`: one row's bytes).
pub fn unpack_row(ty: GgmlType, packed: &[u8], n_cols: usize, r: usize, out: &mut [u8]) {
    let bb = block_bytes(ty);
    let nb = n_cols / 32;
    let g = &packed[(r / GROUP) * GROUP * nb * bb..];
    let rr = r % GROUP;
    for b in 0..nb {
        let d = &g[b * GROUP * bb..(b + 1) * GROUP * bb];
        let blk = &mut out[b * bb..(b + 1) * bb];
        blk[..2].copy_from_slice(&d[2 * rr..2 * rr + 2]);
        for j in 0..(bb - 2) / 4 {
            for i in 0..4 {
                let v = d[32 + 64 * j + 4 * rr + i];
                blk[2 + 4 * j + i] = if ty == GgmlType::Q8_0 { v ^ 0x80 } else { v };
            }
        }
    }
}

/// The AVX-512 VNNI kernel over x16 groups.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// The products of one group (16 rows) with `T` Q8_0 activation rows over
    /// `nb` blocks: `out[t][r]`. `Q4` picks Q4_0 (else Q8_0) weights.
    ///
    /// `x[t]` points at activation row t (34-byte Q8_0 blocks), `dx[t]` at its
    /// scales as f32 (one per block), `corr[t]` at its 16 lane corrections per
    /// block (`-8·Σ`, then `-128·Σ`, of each lane's 4 values).
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL and VNNI; `g` holds `nb` blocks of a group
    /// and each pointer `nb` blocks of its row.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn group<const Q4: bool, const T: usize>(
        nb: usize,
        g: *const u8,
        x: [*const u8; T],
        dx: [*const f32; T],
        corr: [*const i32; T],
    ) -> [[f32; 16]; T] {
        let wbytes = if Q4 { 16 * 18 } else { 16 * 34 };
        let coff = if Q4 { 0 } else { 8 };
        let mut acc = [[_mm512_setzero_ps(); 8]; T];
        let low = _mm512_set1_epi8(0x0f);
        for b in 0..nb {
            let gb = g.add(b * wbytes);
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
            let mut wk = [_mm512_setzero_si512(); 8];
            if Q4 {
                for j in 0..4 {
                    let v = _mm512_loadu_si512(gb.add(32 + 64 * j) as *const _);
                    wk[j] = _mm512_and_si512(v, low);
                    wk[j + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
                }
            } else {
                for (j, w) in wk.iter_mut().enumerate() {
                    *w = _mm512_loadu_si512(gb.add(32 + 64 * j) as *const _);
                }
            }
            for t in 0..T {
                let d = _mm512_mul_ps(dw, _mm512_set1_ps(*dx[t].add(b)));
                let xb = x[t].add(b * 34 + 2);
                let cb = corr[t].add(b * 16 + coff);
                for k in 0..8 {
                    let xk = _mm512_set1_epi32((xb.add(4 * k) as *const i32).read_unaligned());
                    let lane = _mm512_dpbusd_epi32(_mm512_set1_epi32(*cb.add(k)), wk[k], xk);
                    acc[t][k] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lane), acc[t][k]);
                }
            }
        }
        let mut out = [[0.0f32; 16]; T];
        for t in 0..T {
            let a = &acc[t];
            // quants::hsum8: halves, then pairs.
            let r0 = _mm512_add_ps(a[4], a[0]);
            let r1 = _mm512_add_ps(a[5], a[1]);
            let r2 = _mm512_add_ps(a[6], a[2]);
            let r3 = _mm512_add_ps(a[7], a[3]);
            let s = _mm512_add_ps(_mm512_add_ps(r0, r2), _mm512_add_ps(r1, r3));
            _mm512_storeu_ps(out[t].as_mut_ptr(), s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_and_keeps_the_size() {
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
            let (n_rows, n_cols) = (48, 96);
            let bytes = ty.row_size(n_cols).unwrap() * n_rows;
            let data: Vec<u8> = (0..bytes).map(|i| (i * 7 + i / 13) as u8).collect();
            let p = pack(ty, &data, n_rows, n_cols, 2).unwrap();
            assert_eq!(p.len(), data.len());
            let rb = ty.row_size(n_cols).unwrap();
            let mut row = vec![0u8; rb];
            for r in 0..n_rows {
                unpack_row(ty, &p, n_cols, r, &mut row);
                assert_eq!(row, data[r * rb..(r + 1) * rb], "{ty} row {r}");
            }
        }
        assert!(pack(GgmlType::Q4_0, &[0u8; 18 * 8], 8, 32, 1).is_err());
        assert!(pack(GgmlType::Q4K, &[0u8; 144 * 16], 16, 256, 1).is_err());
    }
}
