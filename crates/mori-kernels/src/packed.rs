//! Q4_0, Q5_0 and Q8_0 weights (and Q4_K, Q6_K) repacked once, at load, into groups of 16 rows
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
//!   row (lane j), stored as `q + 128` (unsigned, for `vpdpbusd`);
//! - Q5_0: the rows' 32 high bits (`qh`, 4 bytes each, row r at `4r`), then
//!   the nibbles as Q4_0's 4 chunks; the kernel adds each element's fifth
//!   bit to its nibble (`q5_high`), levels `q + 16`.
//!
//! - Q4_K (super-blocks of 256): 32 bytes of the rows' f16 `d`, 32 of their
//!   f16 `dmin`, the 6-bit scales and mins unpacked to bytes (128 each,
//!   `[sub-block][row]`), then 32 chunks of 64 bytes: chunk (c, j) holds
//!   bytes `32c + 4j .. + 4` of each row's 128 packed bytes (low nibbles:
//!   sub-block 2c, high: 2c + 1; both lane j).
//!
//! - Q6_K (super-blocks of 256): 32 bytes of f16 `d`, the 16 scales of each
//!   row (`[group][row]`, 256 bytes), 32 chunks of low 4 bits (chunk m: per
//!   row, byte i holds elements `8m + i` and, high nibble, `8m + 4 + i`) and
//!   16 chunks of high 2 bits (chunk m: per row, byte i holds at bits 2s
//!   those of element `16m + 4s + i`). The -32 of the levels goes in per lane
//!   through the activations' group sums, as the plain kernel takes it.
//!
//! A Q4_0, Q8_0 or Q6_K group takes as many bytes as its 16 rows did; a Q4_K
//! group 64 bytes more per super-block (2.8%).
//!
//! The unsigned levels `u = q + o` (o = 8 for Q4_0, 16 for Q5_0, 128 for Q8_0) give
//! `Σ q·x = Σ u·x - o·Σ x`: the activation's per-lane sums times `-o` are
//! prepared once per activation block ([`crate::ActBuf`]) and start each
//! lane's integer sum, so every lane holds the exact integer the plain
//! kernels compute.

use crate::{Error, GgmlType, Result};

/// Rows per group.
pub const GROUP: usize = 16;

/// Elements per block, bytes of one row's block in the file, and bytes of a
/// group's block when repacked; `None` for types without a repacked layout.
fn geometry(ty: GgmlType) -> Option<(usize, usize, usize)> {
    match ty {
        GgmlType::Q4_0 => Some((32, 18, 16 * 18)),
        GgmlType::Q5_0 => Some((32, 22, 16 * 22)),
        GgmlType::Q8_0 => Some((32, 34, 16 * 34)),
        GgmlType::Q4K => Some((256, 144, Q4K_GROUP_BLOCK)),
        GgmlType::Q6K => Some((256, 210, 16 * 210)),
        _ => None,
    }
}

/// Bytes of a Q4_K group's super-block: d, dmin, scales, mins, 32 chunks.
const Q4K_GROUP_BLOCK: usize = 32 + 32 + 128 + 128 + 32 * 64;
/// Offset of the chunks in a Q4_K group's super-block.
const Q4K_CHUNKS: usize = 320;

/// The types with a repacked layout.
pub fn packed_types() -> impl Iterator<Item = GgmlType> {
    GgmlType::ALL
        .into_iter()
        .filter(|&ty| geometry(ty).is_some())
}

/// Whether weights of type `ty`, `n_rows × n_cols`, can be repacked.
pub fn packable(ty: GgmlType, n_rows: usize, n_cols: usize) -> bool {
    match geometry(ty) {
        Some((qk, _, _)) => {
            n_rows > 0 && n_rows.is_multiple_of(GROUP) && n_cols > 0 && n_cols.is_multiple_of(qk)
        }
        None => false,
    }
}

/// Bytes of a repacked `n_rows × n_cols` matrix of `ty` (0 if not packable).
pub fn packed_size(ty: GgmlType, n_rows: usize, n_cols: usize) -> usize {
    if !packable(ty, n_rows, n_cols) {
        return 0;
    }
    let (qk, _, gb) = geometry(ty).expect("packable");
    n_rows / GROUP * (n_cols / qk) * gb
}

/// Bytes of one repacked group of `n_cols` columns.
pub fn group_bytes(ty: GgmlType, n_cols: usize) -> usize {
    geometry(ty).map_or(0, |(qk, _, gb)| n_cols / qk * gb)
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
    let mut out = vec![0u8; packed_size(ty, n_rows, n_cols)];
    pack_into(ty, data, n_rows, n_cols, n_threads, &mut out)?;
    Ok(out)
}

/// [`pack`] into `out`, which must hold [`packed_size`] bytes (a buffer the
/// caller chose, e.g. one backed by huge pages).
pub fn pack_into(
    ty: GgmlType,
    data: &[u8],
    n_rows: usize,
    n_cols: usize,
    n_threads: usize,
    out: &mut [u8],
) -> Result<()> {
    if !packable(ty, n_rows, n_cols) {
        return Err(Error::Unsupported(format!(
            "{ty} weights of {n_rows} × {n_cols} cannot be repacked in groups of {GROUP} rows"
        )));
    }
    let (qk, bb, _) = geometry(ty).expect("packable");
    let nb = n_cols / qk;
    let row_bytes = nb * bb;
    if data.len() != row_bytes * n_rows {
        return Err(Error::Size {
            what: "weight matrix bytes",
            expected: row_bytes * n_rows,
            got: data.len(),
        });
    }
    let (src_group, dst_group) = (GROUP * row_bytes, group_bytes(ty, n_cols));
    if out.len() != packed_size(ty, n_rows, n_cols) {
        return Err(Error::Size {
            what: "repacked weight bytes",
            expected: packed_size(ty, n_rows, n_cols),
            got: out.len(),
        });
    }
    let n_groups = n_rows / GROUP;
    let per = n_groups.div_ceil(n_threads.max(1));
    std::thread::scope(|s| {
        for (src, dst) in data
            .chunks(per * src_group)
            .zip(out.chunks_mut(per * dst_group))
        {
            s.spawn(move || {
                for (g, d) in src
                    .chunks_exact(src_group)
                    .zip(dst.chunks_exact_mut(dst_group))
                {
                    match ty {
                        GgmlType::Q4K => pack_group_q4k(g, d, nb),
                        GgmlType::Q6K => pack_group_q6k(g, d, nb),
                        _ => pack_group(ty, g, d, nb),
                    }
                }
            });
        }
    });
    Ok(())
}

/// One Q4_K group (see the layout above).
fn pack_group_q4k(src: &[u8], dst: &mut [u8], nb: usize) {
    let row_bytes = nb * 144;
    for b in 0..nb {
        let d = &mut dst[b * Q4K_GROUP_BLOCK..(b + 1) * Q4K_GROUP_BLOCK];
        for r in 0..GROUP {
            let blk = &src[r * row_bytes + b * 144..r * row_bytes + (b + 1) * 144];
            d[2 * r..2 * r + 2].copy_from_slice(&blk[0..2]);
            d[32 + 2 * r..34 + 2 * r].copy_from_slice(&blk[2..4]);
            for sub in 0..8 {
                let (sc, m) = crate::kquants::scale_min_k4(sub, &blk[4..16]);
                d[64 + 16 * sub + r] = sc;
                d[192 + 16 * sub + r] = m;
            }
            for c in 0..4 {
                for j in 0..8 {
                    let at = Q4K_CHUNKS + (8 * c + j) * 64 + 4 * r;
                    d[at..at + 4].copy_from_slice(&blk[16 + 32 * c + 4 * j..20 + 32 * c + 4 * j]);
                }
            }
        }
    }
}

/// Offsets in a Q6_K group's super-block: scales, low bits, high bits.
const Q6K_SCALES: usize = 32;
const Q6K_LOW: usize = 32 + 256;
const Q6K_HIGH: usize = 32 + 256 + 32 * 64;

/// One Q6_K group (see the layout above).
fn pack_group_q6k(src: &[u8], dst: &mut [u8], nb: usize) {
    use crate::kquants::q6_level;
    let row_bytes = nb * 210;
    for b in 0..nb {
        let d = &mut dst[b * 16 * 210..(b + 1) * 16 * 210];
        for r in 0..GROUP {
            let blk = &src[r * row_bytes + b * 210..r * row_bytes + (b + 1) * 210];
            let lev = |e: usize| q6_level(blk, e) as u8;
            d[2 * r..2 * r + 2].copy_from_slice(&blk[208..210]);
            for g in 0..16 {
                d[Q6K_SCALES + 16 * g + r] = blk[192 + g];
            }
            for m in 0..32 {
                for i in 0..4 {
                    d[Q6K_LOW + 64 * m + 4 * r + i] =
                        (lev(8 * m + i) & 0x0f) | ((lev(8 * m + 4 + i) & 0x0f) << 4);
                }
            }
            for m in 0..16 {
                for i in 0..4 {
                    d[Q6K_HIGH + 64 * m + 4 * r + i] =
                        (0..4).fold(0, |h, s| h | ((lev(16 * m + 4 * s + i) >> 4) << (2 * s)));
                }
            }
        }
    }
}

/// Row `rr` of one Q6_K group block back in the file's 210 bytes.
fn unpack_q6k(d: &[u8], rr: usize, blk: &mut [u8]) {
    blk[208..210].copy_from_slice(&d[2 * rr..2 * rr + 2]);
    for g in 0..16 {
        blk[192 + g] = d[Q6K_SCALES + 16 * g + rr];
    }
    for e in 0..256 {
        let (m, i) = (e / 8, e % 8);
        let low = d[Q6K_LOW + 64 * m + 4 * rr + i % 4] >> (4 * (i / 4)) & 0x0f;
        let (m, s, i) = (e / 16, (e % 16) / 4, e % 4);
        let high = (d[Q6K_HIGH + 64 * m + 4 * rr + i] >> (2 * s)) & 3;
        crate::kquants::set_q6_level(blk, e, low | (high << 4));
    }
}

/// Row `rr` of one Q4_K group block back in the file's 144 bytes.
fn unpack_q4k(d: &[u8], rr: usize, blk: &mut [u8]) {
    blk[0..2].copy_from_slice(&d[2 * rr..2 * rr + 2]);
    blk[2..4].copy_from_slice(&d[32 + 2 * rr..34 + 2 * rr]);
    let sc = |sub: usize| d[64 + 16 * sub + rr];
    let m = |sub: usize| d[192 + 16 * sub + rr];
    // The inverse of `scale_min_k4`: every bit of the 12 bytes is used.
    for j in 0..4 {
        blk[4 + j] = (sc(j) & 63) | ((sc(j + 4) >> 4) << 6);
        blk[8 + j] = (m(j) & 63) | ((m(j + 4) >> 4) << 6);
        blk[12 + j] = (sc(j + 4) & 0x0f) | ((m(j + 4) & 0x0f) << 4);
    }
    for c in 0..4 {
        for j in 0..8 {
            let at = Q4K_CHUNKS + (8 * c + j) * 64 + 4 * rr;
            blk[16 + 32 * c + 4 * j..20 + 32 * c + 4 * j].copy_from_slice(&d[at..at + 4]);
        }
    }
}

/// One group: `src` is 16 plain rows, `dst` the same bytes in the x16 layout.
fn pack_group(ty: GgmlType, src: &[u8], dst: &mut [u8], nb: usize) {
    let (_, bb, _) = geometry(ty).expect("packable");
    let row_bytes = nb * bb;
    for b in 0..nb {
        let d = &mut dst[b * GROUP * bb..(b + 1) * GROUP * bb];
        for r in 0..GROUP {
            let blk = &src[r * row_bytes + b * bb..r * row_bytes + (b + 1) * bb];
            d[2 * r..2 * r + 2].copy_from_slice(&blk[..2]);
            let flip = if ty == GgmlType::Q8_0 {
                0x8080_8080u32
            } else {
                0
            };
            for (j, q) in blk[2..].chunks_exact(4).enumerate() {
                let v = u32::from_le_bytes([q[0], q[1], q[2], q[3]]) ^ flip;
                d[32 + 64 * j + 4 * r..36 + 64 * j + 4 * r].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// Row `r` of a repacked matrix back in the file's layout (`out`: one row's bytes).
pub fn unpack_row(ty: GgmlType, packed: &[u8], n_cols: usize, r: usize, out: &mut [u8]) {
    let (qk, bb, gbb) = geometry(ty).expect("a packable type");
    let nb = n_cols / qk;
    let g = &packed[(r / GROUP) * nb * gbb..];
    let rr = r % GROUP;
    if matches!(ty, GgmlType::Q4K | GgmlType::Q6K) {
        for b in 0..nb {
            let (d, blk) = (&g[b * gbb..(b + 1) * gbb], &mut out[b * bb..(b + 1) * bb]);
            if ty == GgmlType::Q4K {
                unpack_q4k(d, rr, blk);
            } else {
                unpack_q6k(d, rr, blk);
            }
        }
        return;
    }
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
// Lane k, token t and chunk j index several arrays at once in these loops.
#[allow(clippy::needless_range_loop)]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    /// Asks for the `bytes` that lie `L1` bytes past `p` (the same span of a
    /// later block) to be brought into L1, and those `L2` bytes past it into
    /// L2. A group's blocks are read in order, once per token pair; when
    /// generating (one token) the weights stream from memory, and this keeps
    /// enough lines in flight: on the 2-core AVX-512 machine of
    /// docs/PERFORMANCE.md it took llama-1b's generation from 58% of the
    /// measured bandwidth limit to 80-96%. The distances were tuned there
    /// (1 and 4 KiB for the K-types, which do more work per byte, 3 and
    /// 12 KiB for Q4_0/Q8_0). The addresses may pass the end of the matrix: a
    /// prefetch never faults.
    #[inline(always)]
    unsafe fn prefetch<const L1: usize, const L2: usize>(p: *const u8, bytes: usize) {
        let mut o = 0;
        while o < bytes {
            _mm_prefetch(p.wrapping_add(L1 + o) as *const i8, _MM_HINT_T0);
            _mm_prefetch(p.wrapping_add(L2 + o) as *const i8, _MM_HINT_T1);
            o += 64;
        }
    }

    /// The products of one group (16 rows) with `T` Q8_0 activation rows over
    /// `nb` blocks: `out[t][r]`. `BITS` picks the weights: 4 (Q4_0), 5 (Q5_0)
    /// or 8 (Q8_0).
    ///
    /// `x[t]` points at activation row t (34-byte Q8_0 blocks), `dx[t]` at its
    /// scales as f32 (one per block), `corr[t]` at its 16 lane corrections per
    /// block (`-8·Σ`, then `-128·Σ`, of each lane's 4 values; Q5_0's `-16·Σ`
    /// is twice the first).
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL and VNNI; `g` holds `nb` blocks of a group
    /// and each pointer `nb` blocks of its row.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn group<const BITS: u8, const T: usize>(
        nb: usize,
        g: *const u8,
        x: [*const u8; T],
        dx: [*const f32; T],
        corr: [*const i32; T],
    ) -> [[f32; 16]; T] {
        let wbytes = match BITS {
            4 => 16 * 18,
            5 => 16 * 22,
            _ => 16 * 34,
        };
        let coff = if BITS == 8 { 8 } else { 0 };
        let mut acc = [[_mm512_setzero_ps(); 8]; T];
        let low = _mm512_set1_epi8(0x0f);
        for b in 0..nb {
            let gb = g.add(b * wbytes);
            prefetch::<3072, 12288>(gb, wbytes);
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
            let mut wk = [_mm512_setzero_si512(); 8];
            match BITS {
                4 => {
                    for j in 0..4 {
                        let v = _mm512_loadu_si512(gb.add(32 + 64 * j) as *const _);
                        wk[j] = _mm512_and_si512(v, low);
                        wk[j + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
                    }
                }
                5 => {
                    let qh = _mm512_loadu_si512(gb.add(32) as *const _);
                    for j in 0..4 {
                        let v = _mm512_loadu_si512(gb.add(96 + 64 * j) as *const _);
                        wk[j] = q5_high(_mm512_and_si512(v, low), qh, j);
                        wk[j + 4] =
                            q5_high(_mm512_and_si512(_mm512_srli_epi16(v, 4), low), qh, 4 + j);
                    }
                }
                _ => {
                    for (j, w) in wk.iter_mut().enumerate() {
                        *w = _mm512_loadu_si512(gb.add(32 + 64 * j) as *const _);
                    }
                }
            }
            for t in 0..T {
                let d = _mm512_mul_ps(dw, _mm512_set1_ps(*dx[t].add(b)));
                let xb = x[t].add(b * 34 + 2);
                let cb = corr[t].add(b * 16 + coff);
                for k in 0..8 {
                    let xk = _mm512_set1_epi32((xb.add(4 * k) as *const i32).read_unaligned());
                    let c = if BITS == 5 {
                        2 * *cb.add(k)
                    } else {
                        *cb.add(k)
                    };
                    let lane = _mm512_dpbusd_epi32(_mm512_set1_epi32(c), wk[k], xk);
                    acc[t][k] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lane), acc[t][k]);
                }
            }
        }
        lane_sums(&acc)
    }

    /// Q5_0 lane k's levels: the nibbles `q` (byte i of row r's dword holds
    /// element `4k + i` of the block, k < 4, or `16 + 4(k - 4) + i`) with
    /// each element's fifth bit from the rows' `qh` dwords (bit e for element
    /// e) added as 16. The 4 bits of lane k sit in byte k / 2 of `qh`, at
    /// 4 · (k % 2) + i: that byte is copied to all four bytes of the dword,
    /// and byte i keeps its bit i.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn q5_high(q: __m512i, qh: __m512i, k: usize) -> __m512i {
        // Byte 4d + k / 2 (dword d of each 128-bit lane) to all of dword d.
        let ctrl = _mm512_add_epi8(
            _mm512_set4_epi32(0x0c0c_0c0c, 0x0808_0808, 0x0404_0404, 0),
            _mm512_set1_epi8((k / 2) as i8),
        );
        let spread = _mm512_shuffle_epi8(qh, ctrl);
        let shift = 4 * (k % 2) as u32;
        let bits = _mm512_set1_epi32((0x0804_0201u32 << shift) as i32);
        let set = _mm512_test_epi8_mask(spread, bits);
        _mm512_mask_add_epi8(q, set, q, _mm512_set1_epi8(16))
    }

    /// `acc + a·b` over i16 pairs (`vpdpwssd`), kept as one instruction: LLVM
    /// otherwise splits most of these into `vpmaddwd` + `vpaddd` under its
    /// generic tuning, 50% more work in the K-type kernels' inner loops.
    #[target_feature(enable = "avx512f,avx512vnni")]
    #[inline]
    unsafe fn dpwssd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        let mut acc = acc;
        // SAFETY: a register-only VNNI instruction; the caller's target
        // features include AVX-512 VNNI.
        std::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
        acc
    }

    /// Each token's 16 results: its 8 lane registers summed as `hsum8` does.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn lane_sums<const T: usize>(acc: &[[__m512; 8]; T]) -> [[f32; 16]; T] {
        let mut out = [[0.0f32; 16]; T];
        for t in 0..T {
            _mm512_storeu_ps(out[t].as_mut_ptr(), hsum8(&acc[t]));
        }
        out
    }

    /// `quants::hsum8` of 8 lane registers: halves, then pairs.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn hsum8(a: &[__m512; 8]) -> __m512 {
        let r0 = _mm512_add_ps(a[4], a[0]);
        let r1 = _mm512_add_ps(a[5], a[1]);
        let r2 = _mm512_add_ps(a[6], a[2]);
        let r3 = _mm512_add_ps(a[7], a[3]);
        _mm512_add_ps(_mm512_add_ps(r0, r2), _mm512_add_ps(r1, r3))
    }

    /// 16 bytes (one per row) as 16 dwords holding the value in both halves.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn twice(p: *const u8) -> __m512i {
        let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm512_or_si512(v, _mm512_slli_epi32(v, 16))
    }

    /// 2 × 16 bytes (one per row each) as 16 dwords: the first in the low
    /// half, the second in the high.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn pair(p: *const u8, q: *const u8) -> __m512i {
        let lo = _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i));
        let hi = _mm512_cvtepu8_epi32(_mm_loadu_si128(q as *const __m128i));
        _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16))
    }

    /// Q4_K: one group with `T` Q8_K activation rows (`x[t]`: 292-byte
    /// blocks; `ksub[t]`: per block, 4 dwords of the sub-block sum pairs
    /// `(Σ sub 2k, Σ sub 2k+1)` as i16) over `nb` super-blocks.
    ///
    /// Each lane's integer sum takes the sub-block scale per 4-element step:
    /// `vpmaddubsw` makes pair sums, `vpdpwssd` multiplies them by the scale
    /// (held in both halves of the row's dword) and accumulates: the same
    /// integers as `kquants::vec_dot_q4_k_q8_k_scalar`'s lanes.
    ///
    /// # Safety
    /// As [`group`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn group_q4k<const T: usize>(
        nb: usize,
        g: *const u8,
        x: [*const u8; T],
        ksub: [*const i32; T],
    ) -> [[f32; 16]; T] {
        let mut acc = [[_mm512_setzero_ps(); 8]; T];
        let mut acc_m = [[_mm512_setzero_ps(); 4]; T];
        let low = _mm512_set1_epi8(0x0f);
        for b in 0..nb {
            let gb = g.add(b * super::Q4K_GROUP_BLOCK);
            // The 37 lines 1 KiB (L1) and 4 KiB (L2) ahead, spread over the
            // 32 chunk steps rather than asked for at once: a burst of 74
            // prefetches fills the line-fill buffers and stalls the loads.
            prefetch::<1024, 4096>(gb.add(2048), super::Q4K_GROUP_BLOCK - 2048);
            let mut lanes = [[_mm512_setzero_si512(); 8]; T];
            for c in 0..4 {
                let s_lo = twice(gb.add(64 + 16 * 2 * c));
                let s_hi = twice(gb.add(64 + 16 * (2 * c + 1)));
                for j in 0..8 {
                    prefetch::<1024, 4096>(gb.add(64 * (8 * c + j)), 64);
                    let w = _mm512_loadu_si512(
                        gb.add(super::Q4K_CHUNKS + (8 * c + j) * 64) as *const _
                    );
                    let lo = _mm512_and_si512(w, low);
                    let hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), low);
                    for t in 0..T {
                        let xb = x[t].add(b * 292 + 4 + 64 * c + 4 * j);
                        let xl = _mm512_set1_epi32((xb as *const i32).read_unaligned());
                        let xh = _mm512_set1_epi32((xb.add(32) as *const i32).read_unaligned());
                        let l = dpwssd(lanes[t][j], _mm512_maddubs_epi16(lo, xl), s_lo);
                        lanes[t][j] = dpwssd(l, _mm512_maddubs_epi16(hi, xh), s_hi);
                    }
                }
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
            for t in 0..T {
                let dx = (x[t].add(b * 292) as *const f32).read_unaligned();
                let d = _mm512_mul_ps(_mm512_set1_ps(dx), dw);
                for k in 0..8 {
                    acc[t][k] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lanes[t][k]), acc[t][k]);
                }
            }
            let acc_m = acc_m.as_mut_ptr() as *mut __m512;
            q4k_mins::<T, false>(q4k_min_factors(gb), b, &x, &ksub, acc_m);
        }
        q4k_sum(&acc, &acc_m)
    }

    /// A Q4_K group super-block's (at `gb`) min factors: the rows' `dmin` as
    /// f32, and per lane pair k the rows' mins of sub-blocks 2k and 2k + 1
    /// as the i16 halves of their dwords.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn q4k_min_factors(gb: *const u8) -> (__m512, [__m512i; 4]) {
        let dmw = _mm512_cvtph_ps(_mm256_loadu_si256(gb.add(32) as *const __m256i));
        let mins =
            std::array::from_fn(|k| pair(gb.add(192 + 16 * 2 * k), gb.add(192 + 16 * (2 * k + 1))));
        (dmw, mins)
    }

    /// The min terms of super-block `b` of a Q4_K group for `T` tokens: per
    /// lane pair, the rows' mins (`q4k_min_factors`) times the activations'
    /// sub-block sums, one fused multiply-add by `-dx · dmin` into `acc_m`
    /// (`[T][4]` registers, read unless `FIRST`).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn q4k_mins<const T: usize, const FIRST: bool>(
        (dmw, mins): (__m512, [__m512i; 4]),
        b: usize,
        x: &[*const u8; T],
        ksub: &[*const i32; T],
        acc_m: *mut __m512,
    ) {
        for t in 0..T {
            let dx = (x[t].add(b * 292) as *const f32).read_unaligned();
            let dm = _mm512_mul_ps(_mm512_set1_ps(-dx), dmw);
            for k in 0..4 {
                let s = _mm512_set1_epi32(*ksub[t].add(b * 4 + k));
                let m = _mm512_dpwssd_epi32(_mm512_setzero_si512(), mins[k], s);
                let a = acc_m.add(4 * t + k);
                let prev = if FIRST { _mm512_setzero_ps() } else { *a };
                *a = _mm512_fmadd_ps(dm, _mm512_cvtepi32_ps(m), prev);
            }
        }
    }

    /// A Q4_K group's results: the 8 lanes' sum plus the 4 min lanes' sum.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn q4k_sum<const T: usize>(
        acc: &[[__m512; 8]; T],
        acc_m: &[[__m512; 4]; T],
    ) -> [[f32; 16]; T] {
        let mut out = [[0.0f32; 16]; T];
        for t in 0..T {
            let m = &acc_m[t];
            let mins = _mm512_add_ps(_mm512_add_ps(m[0], m[2]), _mm512_add_ps(m[1], m[3]));
            _mm512_storeu_ps(out[t].as_mut_ptr(), _mm512_add_ps(hsum8(&acc[t]), mins));
        }
        out
    }

    /// Bytes of one super-block of a Q4_K group widened for batches
    /// ([`widen_q4k`]).
    pub const Q4K_WIDE: usize = 896;
    /// Bytes of one super-block of a Q6_K group widened for batches
    /// ([`widen_q6k`]).
    pub const Q6K_WIDE: usize = 5696;

    /// A Q4_K group's (`nb` super-blocks at `g`) factors widened for
    /// [`group_q4k_batch`]: per super-block, at `out + b · Q4K_WIDE`, what
    /// its lanes need besides the nibbles that does not depend on the
    /// tokens, so that a prompt's batches of tokens read it instead of
    /// forming it again:
    /// - at 64c and 256 + 64c: the scales of sub-blocks 2c and 2c + 1 as each
    ///   row's dword (`twice`);
    /// - at 512 + 64k: the min pairs of `q4k_min_factors`;
    /// - at 768: `d` as f32; at 832: `dmin` as f32.
    ///
    /// (Widening the nibbles too, 4 KiB more per super-block, saves three
    /// instructions per 35 in the inner loop but lost more to L1 misses.)
    ///
    /// # Safety
    /// As [`group`]; `out` holds `nb · Q4K_WIDE` bytes, 64-byte aligned.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn widen_q4k(nb: usize, g: *const u8, out: *mut u8) {
        for b in 0..nb {
            let gb = g.add(b * super::Q4K_GROUP_BLOCK);
            let wb = out.add(b * Q4K_WIDE) as *mut __m512i;
            for c in 0..4 {
                *wb.add(c) = twice(gb.add(64 + 16 * 2 * c));
                *wb.add(4 + c) = twice(gb.add(64 + 16 * (2 * c + 1)));
            }
            let (dmw, mins) = q4k_min_factors(gb);
            for (k, m) in mins.into_iter().enumerate() {
                *wb.add(8 + k) = m;
            }
            *(wb.add(12) as *mut __m512) =
                _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
            *(wb.add(13) as *mut __m512) = dmw;
        }
    }

    /// [`group_q4k`] for a batch of `T` tokens (prompt processing) over a
    /// group widened by [`widen_q4k`] (`wide`), lane by lane: the 8 registers
    /// of one lane's weights (4 chunks, low and high nibbles) serve all `T`
    /// tokens, whose lane sums then go into float accumulators that live in
    /// L1, not registers. The same integers and the same float operations in
    /// the same order as [`group_q4k`], so the same bits.
    ///
    /// # Safety
    /// As [`group`], with `wide` as [`widen_q4k`] leaves it.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn group_q4k_batch<const T: usize>(
        nb: usize,
        g: *const u8,
        wide: *const u8,
        x: [*const u8; T],
        ksub: [*const i32; T],
    ) -> [[f32; 16]; T] {
        if nb == 0 {
            return [[0.0; 16]; T];
        }
        // The float sums live in L1 across super-blocks. The first one
        // writes them: its fused multiply-adds start from +0, as a zeroed
        // sum's would, and 6 KiB need no zeroing per call.
        let mut acc = std::mem::MaybeUninit::<[[__m512; 8]; T]>::uninit();
        let mut acc_m = std::mem::MaybeUninit::<[[__m512; 4]; T]>::uninit();
        let (accp, accmp) = (
            acc.as_mut_ptr() as *mut __m512,
            acc_m.as_mut_ptr() as *mut __m512,
        );
        q4k_batch_block::<T, true>(g, wide, 0, &x, &ksub, accp, accmp);
        for b in 1..nb {
            q4k_batch_block::<T, false>(g, wide, b, &x, &ksub, accp, accmp);
        }
        q4k_sum(&*acc.as_ptr(), &*acc_m.as_ptr())
    }

    /// Super-block `b` of [`group_q4k_batch`]: `acc` (`[T][8]`) and `acc_m`
    /// (`[T][4]`) are read unless `FIRST`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn q4k_batch_block<const T: usize, const FIRST: bool>(
        g: *const u8,
        wide: *const u8,
        b: usize,
        x: &[*const u8; T],
        ksub: &[*const i32; T],
        acc: *mut __m512,
        acc_m: *mut __m512,
    ) {
        let low = _mm512_set1_epi8(0x0f);
        let gb = g.add(b * super::Q4K_GROUP_BLOCK);
        let wb = wide.add(b * Q4K_WIDE);
        prefetch_following(gb, super::Q4K_GROUP_BLOCK);
        prefetch_following(wb, Q4K_WIDE);
        prefetch_tokens(x, b);
        let v = wb as *const __m512i;
        let dw = *(v.add(12) as *const __m512);
        let d: [__m512; T] = std::array::from_fn(|t| {
            let dx = (x[t].add(b * 292) as *const f32).read_unaligned();
            _mm512_mul_ps(_mm512_set1_ps(dx), dw)
        });
        for j in 0..8 {
            // Tokens innermost: consecutive products feed different tokens'
            // sums, so none waits on the one before it and few wait in the
            // scheduler. Integers, so the order of the additions does not
            // matter.
            let mut lane = [_mm512_setzero_si512(); T];
            for c in 0..4 {
                let w =
                    _mm512_loadu_si512(gb.add(super::Q4K_CHUNKS + (8 * c + j) * 64) as *const _);
                let lo = _mm512_and_si512(w, low);
                let hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), low);
                let (s_lo, s_hi) = (*v.add(c), *v.add(4 + c));
                for t in 0..T {
                    let xb = x[t].add(b * 292 + 4 + 64 * c + 4 * j);
                    let xl = _mm512_set1_epi32((xb as *const i32).read_unaligned());
                    let xh = _mm512_set1_epi32((xb.add(32) as *const i32).read_unaligned());
                    lane[t] = dpwssd(lane[t], _mm512_maddubs_epi16(lo, xl), s_lo);
                    lane[t] = dpwssd(lane[t], _mm512_maddubs_epi16(hi, xh), s_hi);
                }
            }
            for t in 0..T {
                let a = acc.add(8 * t + j);
                let prev = if FIRST { _mm512_setzero_ps() } else { *a };
                *a = _mm512_fmadd_ps(d[t], _mm512_cvtepi32_ps(lane[t]), prev);
            }
        }
        let mins = std::array::from_fn(|k| *v.add(8 + k));
        q4k_mins::<T, FIRST>((*(v.add(13) as *const __m512), mins), b, x, ksub, acc_m);
    }

    /// Brings the `bytes` after `p` (the next super-block of a group, plain
    /// or widened) into L1: in a prompt they live in L2 or further.
    #[inline(always)]
    unsafe fn prefetch_following(p: *const u8, bytes: usize) {
        let next = p.wrapping_add(bytes);
        let mut o = 0;
        while o < bytes {
            _mm_prefetch(next.wrapping_add(o) as *const i8, _MM_HINT_T0);
            o += 64;
        }
    }

    /// Brings each token's Q8_K block `b + 1` into L1.
    #[inline(always)]
    unsafe fn prefetch_tokens<const T: usize>(x: &[*const u8; T], b: usize) {
        for xt in x {
            let xb = xt.wrapping_add((b + 1) * 292);
            for o in (0..292).step_by(64) {
                _mm_prefetch(xb.wrapping_add(o) as *const i8, _MM_HINT_T0);
            }
        }
    }

    /// 16 signed bytes (one per row) as 16 dwords holding the value as an
    /// i16 in both halves.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn twice_signed(p: *const u8) -> __m512i {
        let v = _mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm512_or_si512(
            _mm512_and_si512(v, _mm512_set1_epi32(0xffff)),
            _mm512_slli_epi32(v, 16),
        )
    }

    /// A Q6_K group (`nb` super-blocks at `g`) widened for
    /// [`group_q6k_batch`], per super-block at `out + b · Q6K_WIDE`:
    /// - at `64 · (8k + i)`: lane k's 6-bit levels of step i (group
    ///   `k / 4 + 2i`, position k % 4), as bytes;
    /// - at 4096 + 64m: the scales of group m (`twice_signed`);
    /// - at 5120 + 64k: lane k's doubled correction scales;
    /// - at 5632: `d` as f32.
    ///
    /// # Safety
    /// As [`group`]; `out` holds `nb · Q6K_WIDE` bytes, 64-byte aligned.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn widen_q6k(nb: usize, g: *const u8, out: *mut u8) {
        use super::{Q6K_HIGH, Q6K_LOW, Q6K_SCALES};
        let low = _mm512_set1_epi8(0x0f);
        let two = _mm512_set1_epi8(0x30);
        for b in 0..nb {
            let gb = g.add(b * 16 * 210);
            let wb = out.add(b * Q6K_WIDE) as *mut __m512i;
            for k in 0..8 {
                let (par, s) = (k / 4, k % 4);
                for i in 0..8 {
                    let m = par + 2 * i;
                    let ql = _mm512_loadu_si512(gb.add(Q6K_LOW + 64 * (2 * m + s / 2)) as *const _);
                    let qh = _mm512_loadu_si512(gb.add(Q6K_HIGH + 64 * m) as *const _);
                    let lo4 = if s % 2 == 0 {
                        _mm512_and_si512(ql, low)
                    } else {
                        _mm512_and_si512(_mm512_srli_epi16(ql, 4), low)
                    };
                    let hi2 = match s {
                        0 => _mm512_slli_epi16(qh, 4),
                        1 => _mm512_slli_epi16(qh, 2),
                        2 => qh,
                        _ => _mm512_srli_epi16(qh, 2),
                    };
                    *wb.add(8 * k + i) = _mm512_or_si512(lo4, _mm512_and_si512(hi2, two));
                }
            }
            for m in 0..16 {
                *wb.add(64 + m) = twice_signed(gb.add(Q6K_SCALES + 16 * m));
            }
            for k in 0..8 {
                *wb.add(80 + k) = q6k_doubled_scales(gb, k);
            }
            *(wb.add(88) as *mut __m512) =
                _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
        }
    }

    /// [`group_q6k`] for a batch of `T` tokens over a group widened by
    /// [`widen_q6k`], lane by lane as [`group_q4k_batch`]: lane k reads the
    /// 6-bit levels of the groups of parity k / 4 at position k % 4. Same
    /// integers, same float order, same bits.
    ///
    /// # Safety
    /// As [`group`], with `wide` as [`widen_q6k`] leaves it.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn group_q6k_batch<const T: usize>(
        nb: usize,
        wide: *const u8,
        x: [*const u8; T],
        q6c: [*const i32; T],
    ) -> [[f32; 16]; T] {
        if nb == 0 {
            return [[0.0; 16]; T];
        }
        // Written by the first super-block, as in `group_q4k_batch`.
        let mut acc = std::mem::MaybeUninit::<[[__m512; 8]; T]>::uninit();
        let accp = acc.as_mut_ptr() as *mut __m512;
        q6k_batch_block::<T, true>(wide, 0, &x, &q6c, accp);
        for b in 1..nb {
            q6k_batch_block::<T, false>(wide, b, &x, &q6c, accp);
        }
        lane_sums(&*acc.as_ptr())
    }

    /// Super-block `b` of [`group_q6k_batch`]: `acc` (`[T][8]`) is read
    /// unless `FIRST`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn q6k_batch_block<const T: usize, const FIRST: bool>(
        wide: *const u8,
        b: usize,
        x: &[*const u8; T],
        q6c: &[*const i32; T],
        acc: *mut __m512,
    ) {
        let wb = wide.add(b * Q6K_WIDE);
        prefetch_following(wb, Q6K_WIDE);
        prefetch_tokens(x, b);
        let v = wb as *const __m512i;
        let dw = *(v.add(88) as *const __m512);
        let d: [__m512; T] = std::array::from_fn(|t| {
            let dx = (x[t].add(b * 292) as *const f32).read_unaligned();
            _mm512_mul_ps(_mm512_set1_ps(dx), dw)
        });
        for k in 0..8 {
            let (par, s) = (k / 4, k % 4);
            // Tokens innermost, as in `group_q4k_batch`.
            let mut lane = [_mm512_setzero_si512(); T];
            for i in 0..8 {
                let m = par + 2 * i;
                let (lev, sc) = (*v.add(8 * k + i), *v.add(64 + m));
                for t in 0..T {
                    let xb = x[t].add(b * 292 + 4 + 4 * s + 16 * m);
                    let xk = _mm512_set1_epi32((xb as *const i32).read_unaligned());
                    lane[t] = dpwssd(lane[t], _mm512_maddubs_epi16(lev, xk), sc);
                }
            }
            let sc2 = *v.add(80 + k);
            for t in 0..T {
                let c = _mm512_set1_epi32(*q6c[t].add(b * 8 + k));
                let l = dpwssd(lane[t], sc2, c);
                let a = acc.add(8 * t + k);
                let prev = if FIRST { _mm512_setzero_ps() } else { *a };
                *a = _mm512_fmadd_ps(d[t], _mm512_cvtepi32_ps(l), prev);
            }
        }
    }

    /// Q6_K lane k's correction scales for a group's super-block at `gb`:
    /// (2·scale 2k, 2·scale 2k+1) of each row as the i16 halves of its dword.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn q6k_doubled_scales(gb: *const u8, k: usize) -> __m512i {
        use super::Q6K_SCALES;
        let lo = _mm512_cvtepi8_epi32(_mm_loadu_si128(
            gb.add(Q6K_SCALES + 16 * 2 * k) as *const __m128i
        ));
        let hi = _mm512_cvtepi8_epi32(_mm_loadu_si128(
            gb.add(Q6K_SCALES + 16 * (2 * k + 1)) as *const __m128i
        ));
        _mm512_slli_epi16(
            _mm512_or_si512(
                _mm512_and_si512(lo, _mm512_set1_epi32(0xffff)),
                _mm512_slli_epi32(hi, 16),
            ),
            1,
        )
    }

    /// Q6_K: one group with `T` Q8_K activation rows (`x[t]`: 292-byte
    /// blocks; `q6c[t]`: per block, 8 dwords `(-16·Σ group 2k, -16·Σ group
    /// 2k+1)` as i16) over `nb` super-blocks.
    ///
    /// Lane k's integer is `Σ scale·level·x - 32·(scale 2k · Σ group 2k +
    /// scale 2k+1 · Σ group 2k+1)`, as `kquants::vec_dot_q6_k_q8_k_scalar`
    /// forms it; the correction is one `vpdpwssd` of the doubled scales with
    /// the prepared `-16·Σ` (both fit in i16, `-32·Σ` would not).
    ///
    /// # Safety
    /// As [`group`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn group_q6k<const T: usize>(
        nb: usize,
        g: *const u8,
        x: [*const u8; T],
        q6c: [*const i32; T],
    ) -> [[f32; 16]; T] {
        use super::{Q6K_HIGH, Q6K_LOW, Q6K_SCALES};
        let mut acc = [[_mm512_setzero_ps(); 8]; T];
        let low = _mm512_set1_epi8(0x0f);
        let two = _mm512_set1_epi8(0x30);
        for b in 0..nb {
            let gb = g.add(b * 16 * 210);
            // Spread over the 16 steps, as in `group_q4k`.
            let mut lanes = [[_mm512_setzero_si512(); 8]; T];
            for m in 0..16 {
                prefetch::<1024, 4096>(gb.add(210 * m), 210);
                let sc = twice_signed(gb.add(Q6K_SCALES + 16 * m));
                let qh = _mm512_loadu_si512(gb.add(Q6K_HIGH + 64 * m) as *const _);
                let ql0 = _mm512_loadu_si512(gb.add(Q6K_LOW + 64 * (2 * m)) as *const _);
                let ql1 = _mm512_loadu_si512(gb.add(Q6K_LOW + 64 * (2 * m + 1)) as *const _);
                let lev = [
                    _mm512_or_si512(
                        _mm512_and_si512(ql0, low),
                        _mm512_and_si512(_mm512_slli_epi16(qh, 4), two),
                    ),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16(ql0, 4), low),
                        _mm512_and_si512(_mm512_slli_epi16(qh, 2), two),
                    ),
                    _mm512_or_si512(_mm512_and_si512(ql1, low), _mm512_and_si512(qh, two)),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16(ql1, 4), low),
                        _mm512_and_si512(_mm512_srli_epi16(qh, 2), two),
                    ),
                ];
                for (s, &l) in lev.iter().enumerate() {
                    let k = 4 * (m % 2) + s;
                    for t in 0..T {
                        let xb = x[t].add(b * 292 + 4 + 16 * m + 4 * s);
                        let xk = _mm512_set1_epi32((xb as *const i32).read_unaligned());
                        lanes[t][k] = dpwssd(lanes[t][k], _mm512_maddubs_epi16(l, xk), sc);
                    }
                }
            }
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(gb as *const __m256i));
            for k in 0..8 {
                let sc2 = q6k_doubled_scales(gb, k);
                for t in 0..T {
                    let c = _mm512_set1_epi32(*q6c[t].add(b * 8 + k));
                    lanes[t][k] = dpwssd(lanes[t][k], sc2, c);
                }
            }
            for t in 0..T {
                let dx = (x[t].add(b * 292) as *const f32).read_unaligned();
                let d = _mm512_mul_ps(_mm512_set1_ps(dx), dw);
                for k in 0..8 {
                    acc[t][k] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lanes[t][k]), acc[t][k]);
                }
            }
        }
        lane_sums(&acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips_and_keeps_the_size() {
        assert_eq!(packed_types().count(), 5);
        for ty in packed_types() {
            let (n_rows, n_cols) = (48, 512);
            let bytes = ty.row_size(n_cols).unwrap() * n_rows;
            let data: Vec<u8> = (0..bytes).map(|i| (i * 7 + i / 13) as u8).collect();
            let p = pack(ty, &data, n_rows, n_cols, 2).unwrap();
            assert_eq!(p.len(), packed_size(ty, n_rows, n_cols));
            if ty != GgmlType::Q4K {
                assert_eq!(p.len(), data.len());
            }
            let rb = ty.row_size(n_cols).unwrap();
            let mut row = vec![0u8; rb];
            for r in 0..n_rows {
                unpack_row(ty, &p, n_cols, r, &mut row);
                assert_eq!(row, data[r * rb..(r + 1) * rb], "{ty} row {r}");
            }
        }
        assert!(pack(GgmlType::Q4_0, &[0u8; 18 * 8], 8, 32, 1).is_err());
        assert!(pack(GgmlType::Q5K, &[0u8; 176 * 16], 16, 256, 1).is_err());
    }
}
