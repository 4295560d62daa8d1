//! The payload codec: how the uplink turns the bytes to deliver into fewer bytes on the air
//! (a zstd frame, or a zstd patch against the previous version, `zstd --patch-from` style),
//! and how a receiver turns them back, streaming, with bounded memory, into exactly the bytes
//! the signed manifest declares (size and BLAKE3), or a typed refusal.
//!
//! No files here: readers and writers in, so the uplink, the receiver's store, the simulator
//! and the bench share one codec. The window and base limits below bound the memory of both
//! sides whatever a manifest or a frame claims.

use std::io::{self, BufRead, Read, Write};

use crate::manifest::Kind;

/// Largest zstd window a receiver accepts, as log2 bytes (2^27 = 128 MiB, zstd's own
/// default limit for `--long`): a frame asking for more is refused before any allocation,
/// so a frame cannot make the decoder reserve more than this.
pub const WINDOW_LOG_MAX: u32 = 27;
/// Largest base (and largest new version) a patch is built against: the receiver holds the
/// base in memory while it applies the patch, and base plus new version must fit one window
/// ([`WINDOW_LOG_MAX`]) for matches to reach back into the base.
pub const DELTA_BASE_BYTES_MAX: u64 = 32 << 20;
/// Payloads smaller than this are aired as they are: a zstd frame's header and the
/// compressor's start-up cost more than they could save.
pub const COMPRESS_BYTES_MIN: u64 = 256;
/// Compression is kept only if it saves at least this many percent of the bytes on the air;
/// below that (already compressed media, archives) the receiver's decoding is not worth it.
pub const COMPRESSION_SAVING_PERCENT_MIN: u64 = 5;
/// The fast zstd level that probes whether a payload compresses at all before a strong
/// level is spent on it: hundreds of MB a second, where level 19 takes about a second per MB.
pub const PROBE_LEVEL: i32 = 3;
/// A payload the probe cannot shrink by this many percent is aired as it is without trying
/// the strong level: random, encrypted or already compressed bytes, which no level makes
/// 5% smaller. (Repeats farther apart than the probe's 2 MiB window are missed.)
pub const PROBE_SAVING_PERCENT_MIN: u64 = 1;
/// Size of the buffer the decoder writes through, in bytes (with the window, all the memory
/// decoding needs).
pub const DECODE_BUFFER_BYTES: usize = 256 * 1024;

/// The zstd level for a payload of this kind and size: the strongest levels for what is
/// small or aired often (code tables, documents; seconds at most), faster ones as size
/// grows, so a multi-gigabyte payload is prepared in minutes, not hours, on one core.
pub fn level_for(kind: Kind, size_bytes: u64) -> i32 {
    let small = match kind {
        // Executables compress less and gain most from the long window of a patch; the
        // strongest level costs little on agent-sized binaries.
        Kind::Software => 19,
        Kind::Policy | Kind::CodeTable => 19,
    };
    match size_bytes {
        0..=16_777_216 => small,
        16_777_217..=268_435_456 => 12,
        _ => 6,
    }
}

/// Whether `aired_bytes` is worth airing instead of the `delivered_bytes` themselves.
pub fn pays(aired_bytes: u64, delivered_bytes: u64) -> bool {
    delivered_bytes >= COMPRESS_BYTES_MIN
        && aired_bytes.saturating_mul(100) <= delivered_bytes.saturating_mul(100 - COMPRESSION_SAVING_PERCENT_MIN)
}

/// Compresses `input` (`size_bytes` long) into one zstd frame written to `output`; returns
/// the frame's length. The frame declares its content size, so decoding sizes its window to
/// the payload when the payload is smaller than the level's window.
pub fn compress(input: &mut dyn Read, size_bytes: u64, level: i32, output: &mut dyn Write) -> io::Result<u64> {
    let mut counted = CountingWriter { inner: output, written: 0 };
    {
        let mut encoder = zstd::stream::write::Encoder::new(&mut counted, level)?;
        encoder.set_pledged_src_size(Some(size_bytes))?;
        encoder.include_contentsize(true)?;
        encoder.include_checksum(false)?;
        io::copy(input, &mut encoder)?;
        encoder.finish()?;
    }
    Ok(counted.written)
}

/// Whether `input` is worth compressing at `level`: true at once for a level no stronger
/// than [`PROBE_LEVEL`], else whether [`PROBE_LEVEL`] saves [`PROBE_SAVING_PERCENT_MIN`].
pub fn worth_compressing(input: &mut dyn Read, size_bytes: u64, level: i32) -> io::Result<bool> {
    if level <= PROBE_LEVEL {
        return Ok(true);
    }
    let probed = compress(input, size_bytes, PROBE_LEVEL, &mut io::sink())?;
    Ok(probed.saturating_mul(100) <= size_bytes.saturating_mul(100 - PROBE_SAVING_PERCENT_MIN))
}

/// The window (log2 bytes) a patch from a base of `base_len` to `new_len` bytes needs, so
/// that every match into the base is in reach: zstd's `--patch-from` rule.
pub fn patch_window_log(base_len: u64, new_len: u64) -> u32 {
    let span = base_len.saturating_add(new_len).max(1);
    // ceil(log2(span)), at least zstd's minimum of 10.
    let log = 64 - (span - 1).leading_zeros();
    log.clamp(10, WINDOW_LOG_MAX)
}

/// Builds a patch: `new` compressed with `base` as zstd's reference prefix, long-distance
/// matching on and a window that reaches back over the whole base. Both are in memory; the
/// caller keeps them within [`DELTA_BASE_BYTES_MAX`] ([`PatchError::TooLarge`] otherwise).
pub fn make_patch(base: &[u8], new: &[u8], level: i32) -> Result<Vec<u8>, PatchError> {
    for len in [base.len(), new.len()] {
        if len as u64 > DELTA_BASE_BYTES_MAX {
            return Err(PatchError::TooLarge { len: len as u64 });
        }
    }
    let mut out = Vec::new();
    let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(&mut out, level, base)?;
    encoder.window_log(patch_window_log(base.len() as u64, new.len() as u64))?;
    encoder.long_distance_matching(true)?;
    encoder.set_pledged_src_size(Some(new.len() as u64))?;
    encoder.include_contentsize(true)?;
    encoder.include_checksum(false)?;
    encoder.write_all(new)?;
    encoder.finish()?;
    Ok(out)
}

/// Why a patch could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The base or the new version is larger than [`DELTA_BASE_BYTES_MAX`].
    #[error("{len} bytes, more than the {DELTA_BASE_BYTES_MAX} a patch may span")]
    TooLarge {
        /// The length that is too large.
        len: u64,
    },
    /// zstd failed.
    #[error("zstd: {0}")]
    Zstd(#[from] io::Error),
}

/// Why aired bytes did not decode to the declared ones. None of them is a panic, and none
/// costs more memory than the window and [`DECODE_BUFFER_BYTES`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The output grew past the declared size: a decompression bomb, or a wrong manifest.
    /// Decoding stopped at the declared size plus one buffer.
    #[error("expands beyond its declared {declared_bytes} bytes")]
    Oversize {
        /// The size the manifest declares.
        declared_bytes: u64,
    },
    /// The output ended before the declared size.
    #[error("decodes to {decoded_bytes} bytes, {declared_bytes} declared")]
    Short {
        /// What came out.
        decoded_bytes: u64,
        /// The size the manifest declares.
        declared_bytes: u64,
    },
    /// The output has the declared size but not the declared BLAKE3.
    #[error("decodes to bytes whose BLAKE3 is not the declared one")]
    HashMismatch,
    /// The base of a patch is larger than [`DELTA_BASE_BYTES_MAX`].
    #[error("base of {len} bytes is larger than the {DELTA_BASE_BYTES_MAX} a patch may span")]
    BaseTooLarge {
        /// Its length.
        len: u64,
    },
    /// The frame is not valid zstd (corrupt, truncated, or asks for a window over
    /// [`WINDOW_LOG_MAX`]), or the base is not the one it was made against.
    #[error("not a valid frame: {0}")]
    Corrupt(String),
    /// Writing the output failed (a full disk, say): not the payload's fault.
    #[error("cannot write the output: {0}")]
    Write(io::Error),
}

/// What a successful decode produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes written.
    pub size_bytes: u64,
    /// Their BLAKE3.
    pub hash: [u8; 32],
}

/// Decodes one zstd frame from `aired` (with `base` as its reference prefix for a patch)
/// into `output`, stopping as soon as it would exceed `declared_bytes`, and checks the
/// result against `declared_bytes` and `declared_hash`. The output must be discarded on any
/// error: it may hold a prefix of the bytes.
pub fn decode(
    aired: &mut dyn BufRead,
    base: Option<&[u8]>,
    declared_bytes: u64,
    declared_hash: &[u8; 32],
    output: &mut dyn Write,
) -> Result<Decoded, DecodeError> {
    let corrupt = |e: io::Error| DecodeError::Corrupt(e.to_string());
    let mut decoder = match base {
        Some(base) => {
            if base.len() as u64 > DELTA_BASE_BYTES_MAX {
                return Err(DecodeError::BaseTooLarge { len: base.len() as u64 });
            }
            zstd::stream::read::Decoder::with_ref_prefix(aired, base).map_err(corrupt)?
        }
        None => zstd::stream::read::Decoder::with_buffer(aired).map_err(corrupt)?,
    };
    decoder.window_log_max(WINDOW_LOG_MAX).map_err(corrupt)?;
    // One frame: bytes after it are not part of the payload.
    let mut decoder = decoder.single_frame();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; DECODE_BUFFER_BYTES];
    let mut written: u64 = 0;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e)),
        };
        written += n as u64;
        if written > declared_bytes {
            return Err(DecodeError::Oversize { declared_bytes });
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(DecodeError::Write)?;
    }
    if written < declared_bytes {
        return Err(DecodeError::Short { decoded_bytes: written, declared_bytes });
    }
    let hash = *hasher.finalize().as_bytes();
    if &hash != declared_hash {
        return Err(DecodeError::HashMismatch);
    }
    Ok(Decoded { size_bytes: written, hash })
}

struct CountingWriter<'a> {
    inner: &'a mut dyn Write,
    written: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    fn text(seed: u64, len: usize) -> Vec<u8> {
        // Words from a small vocabulary: compressible like a document.
        let words = ["通知", "county", "policy", "2027", "the", "relief", "民政", "code", "table", "\n"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            out.extend_from_slice(words[rng.random_range(0..words.len())].as_bytes());
            out.push(b' ');
        }
        out.truncate(len);
        out
    }

    fn decode_vec(aired: &[u8], base: Option<&[u8]>, declared: u64, hash: &[u8; 32]) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        decode(&mut &aired[..], base, declared, hash, &mut out)?;
        Ok(out)
    }

    #[test]
    fn the_probe_spares_the_strong_level_for_random_bytes_only() {
        let mut random = vec![0u8; 300_000];
        rand::rngs::StdRng::seed_from_u64(3).fill(&mut random[..]);
        let level = level_for(Kind::Software, random.len() as u64);
        assert!(!worth_compressing(&mut &random[..], random.len() as u64, level).expect("probe"));
        let document = text(2, 300_000);
        assert!(worth_compressing(&mut &document[..], document.len() as u64, level).expect("probe"));
        assert!(worth_compressing(&mut &random[..], random.len() as u64, PROBE_LEVEL).expect("no probe below it"));
    }

    #[test]
    fn compressed_text_decodes_to_the_declared_bytes() {
        let data = text(1, 200_000);
        let mut aired = Vec::new();
        let len = compress(&mut &data[..], data.len() as u64, level_for(Kind::Policy, 200_000), &mut aired).expect("compress");
        assert_eq!(len, aired.len() as u64);
        assert!(pays(len, data.len() as u64), "{len} of {}", data.len());
        let hash = *blake3::hash(&data).as_bytes();
        assert_eq!(decode_vec(&aired, None, data.len() as u64, &hash).expect("decode"), data);
    }

    #[test]
    fn a_patch_rebuilds_the_new_version_from_the_base() {
        let base = text(2, 1_000_000);
        let mut new = base.clone();
        new[500_000..500_010].copy_from_slice(b"0123456789");
        new.extend_from_slice(b"appended line\n");
        let patch = make_patch(&base, &new, 19).expect("patch");
        assert!(patch.len() < 1000, "a 24-byte change costs {} bytes", patch.len());
        let hash = *blake3::hash(&new).as_bytes();
        assert_eq!(decode_vec(&patch, Some(&base), new.len() as u64, &hash).expect("apply"), new);
    }

    #[test]
    fn a_patch_applied_to_another_base_is_refused_never_delivered() {
        let base = text(3, 300_000);
        let mut new = base.clone();
        new[1000] ^= 1;
        let patch = make_patch(&base, &new, 19).expect("patch");
        let mut other = base.clone();
        other[2000] ^= 1;
        let hash = *blake3::hash(&new).as_bytes();
        let refused = decode_vec(&patch, Some(&other), new.len() as u64, &hash);
        assert!(matches!(refused, Err(DecodeError::HashMismatch | DecodeError::Corrupt(_))), "{refused:?}");
        let refused = decode_vec(&patch, None, new.len() as u64, &hash);
        assert!(refused.is_err(), "without its base a patch does not decode to the new version");
    }

    #[test]
    fn a_bomb_stops_at_its_declared_size() {
        // 64 MiB of zeros compress to a few KiB; the manifest declares 1 MiB.
        let zeros = vec![0u8; 64 << 20];
        let mut aired = Vec::new();
        compress(&mut &zeros[..], zeros.len() as u64, 3, &mut aired).expect("compress");
        assert!(aired.len() < 64 * 1024);
        let mut written = CountingSink(0);
        let refused = decode(&mut &aired[..], None, 1 << 20, &[0; 32], &mut written);
        assert!(matches!(refused, Err(DecodeError::Oversize { declared_bytes: 1_048_576 })), "{refused:?}");
        assert!(written.0 <= (1 << 20), "wrote {} bytes before stopping", written.0);
    }

    #[test]
    fn garbage_sizes_and_hashes_are_refused_without_panicking() {
        let data = text(4, 10_000);
        let mut aired = Vec::new();
        compress(&mut &data[..], data.len() as u64, 19, &mut aired).expect("compress");
        let hash = *blake3::hash(&data).as_bytes();
        assert!(matches!(decode_vec(&aired, None, data.len() as u64 + 1, &hash), Err(DecodeError::Short { .. })));
        assert!(matches!(decode_vec(&aired, None, data.len() as u64, &[1; 32]), Err(DecodeError::HashMismatch)));
        let seed: u64 = rand::random();
        println!("garbage seed {seed}: replay with the same seed in this test");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..200 {
            let mut bad = aired.clone();
            let at = rng.random_range(0..bad.len());
            bad[at] = rng.random();
            bad.truncate(rng.random_range(0..=bad.len()));
            let _ = decode_vec(&bad, None, data.len() as u64, &hash);
            let _ = decode_vec(&bad, Some(&data[..100]), data.len() as u64, &hash);
        }
        assert!(decode_vec(&[], None, 0, blake3::hash(&[]).as_bytes()).is_err(), "an empty input is no frame");
    }

    #[test]
    fn a_frame_asking_for_a_window_over_the_limit_is_refused() {
        let data = text(5, 4096);
        let mut aired = Vec::new();
        {
            let mut encoder = zstd::stream::write::Encoder::new(&mut aired, 3).expect("encoder");
            encoder.window_log(WINDOW_LOG_MAX + 1).expect("window");
            encoder.long_distance_matching(true).expect("ldm");
            encoder.write_all(&data).expect("write");
            encoder.finish().expect("finish");
        }
        let hash = *blake3::hash(&data).as_bytes();
        assert!(matches!(decode_vec(&aired, None, data.len() as u64, &hash), Err(DecodeError::Corrupt(_))));
    }

    #[test]
    fn small_or_incompressible_payloads_do_not_pay() {
        assert!(!pays(10, 100), "below the minimum size");
        assert!(!pays(980, 1000), "2% saved");
        assert!(pays(900, 1000));
        assert_eq!(patch_window_log(1 << 20, 1 << 20), 21);
        assert_eq!(patch_window_log(0, 0), 10);
        assert_eq!(patch_window_log(u64::MAX, 1), WINDOW_LOG_MAX);
    }

    struct CountingSink(u64);

    impl Write for CountingSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
